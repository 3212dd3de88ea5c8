//! The iterator of a typed read in the caller's transaction.

use super::readable::{Readable, Record};
use super::reader::Reader;
use super::ViewMemo;
use crate::env::{LogLookup, ReadTxn};
use crate::error::{Error, Result};
use crate::event::SplitParts;
use crate::format::index::parse_index_entry;
use crate::index::tail::Entry;
use crate::log::Scan;
use crate::metrics::handles::ReadKind;
use crate::types::{Direction, StreamId};
use heed::types::Bytes;

/// An iterator over events, borrowing the caller's read transaction. Made by
/// [`Reader::read_log`] and [`Reader::read_stream`].
pub struct Events<'t, R: Readable> {
    pub(super) reader: Reader<R>,
    pub(super) txn: &'t ReadTxn,
    pub(super) source: Source<'t>,
    /// The stream key of the last encrypted record, for the next one.
    pub(super) memo: ViewMemo,
    /// Items yielded, added to the transaction's read counts when the iterator is dropped.
    pub(super) read: u64,
    /// For a stream read: the names newer versions of the reader's types are stored under
    /// (renamed by newer builds), whose events are errors, not another type to pass over;
    /// looked up at the first event of another type.
    pub(super) renamed: Option<Vec<String>>,
    /// The read's direction: the parts of a split record come last first backwards.
    pub(super) direction: Direction,
}

impl<R: Readable> Drop for Events<'_, R> {
    fn drop(&mut self) {
        let kind = match self.source {
            Source::Log(_) => ReadKind::Log,
            Source::StreamForward(..) | Source::StreamBackward(..) => ReadKind::Stream,
        };
        self.txn.count_reads(kind, self.read);
    }
}

/// Where an [`Events`] read takes its records from.
// The scan of the log is the hot path of every typed read: kept inline, not boxed.
#[allow(clippy::large_enum_variant)]
pub(super) enum Source<'t> {
    Log(Scan<'t>),
    /// The index on disk, then the unindexed tail's entries; their records looked up in
    /// increasing sequence, a run stepped through.
    StreamForward(
        StreamId,
        heed::RoRange<'t, Bytes, Bytes>,
        std::vec::IntoIter<Entry>,
        LogLookup<'t>,
    ),
    /// The unindexed tail's entries (newest first), then the index on disk.
    StreamBackward(
        StreamId,
        std::vec::IntoIter<Entry>,
        heed::RoRevRange<'t, Bytes, Bytes>,
    ),
}

impl<'t, R: Readable> Iterator for Events<'t, R> {
    type Item = Result<R::View<'t>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let mut item = self.next_item();
        if let Some(result) = &item {
            self.read += 1;
            if result.is_err() {
                self.failed(&mut item);
            }
        }
        item
    }
}

impl<'t, R: Readable> Events<'t, R> {
    /// A read by `reader` in `txn` of what `source` leads to, in `direction`.
    pub(super) fn new(
        reader: Reader<R>,
        txn: &'t ReadTxn,
        source: Source<'t>,
        direction: Direction,
    ) -> Self {
        Events {
            reader,
            txn,
            source,
            memo: ViewMemo::default(),
            read: 0,
            renamed: None,
            direction,
        }
    }

    /// Whether parts of a split record are still to come before the next record.
    pub(super) fn has_parts(&self) -> bool {
        self.memo.pending.is_some()
    }

    /// A failed item: counted in the metrics or, for a record an upcast splits, replaced with
    /// its next part to hand out. The parts are handed out one per call without a test on the
    /// path of other records: while some remain, the read is set back to the record, whose
    /// next read hands back the rest (`ViewMemo::pending`) as this error again.
    #[cold]
    #[inline(never)]
    fn failed(&mut self, item: &mut Option<Result<R::View<'t>>>) {
        let Some(Err(e)) = item.take() else {
            return;
        };
        let Error::Split(parts) = e else {
            self.reader.read_failed(&e);
            *item = Some(Err(e));
            return;
        };
        *item = Some(
            self.next_part(parts)
                .inspect_err(|e| self.reader.read_failed(e)),
        );
    }

    /// The next part of a split record to hand out; the rest kept for the next calls.
    fn next_part(&mut self, mut parts: SplitParts) -> Result<R::View<'t>> {
        let seq = parts.seq;
        let count = parts.count();
        let backward = self.direction == Direction::Backward;
        let index = parts.next.unwrap_or(if backward { count - 1 } else { 0 });
        let rec = self.reader.split_record(self.txn.raw(), seq)?;
        let view = R::split_view(self.reader.kinds(), Record(rec), &mut parts, index)?;
        let next = if backward {
            index.checked_sub(1)
        } else {
            Some(index + 1).filter(|&i| i < count)
        };
        if let Some(next) = next {
            parts.next = Some(next);
            // Read the record again at the next call.
            self.source = match &self.source {
                Source::Log(scan) => Source::Log(scan.again_at(seq)?),
                Source::StreamForward(stream, ..) | Source::StreamBackward(stream, ..) => self
                    .reader
                    .stream_source(self.txn.raw(), *stream, rec.version(), self.direction)?,
            };
            self.memo.pending = Some(parts);
        }
        Ok(view)
    }

    #[inline]
    fn next_item(&mut self) -> Option<Result<R::View<'t>>> {
        loop {
            let txn = self.txn.raw();
            let (stream, entry) = match &mut self.source {
                Source::Log(scan) => {
                    let (reader, memo) = (&self.reader, &mut self.memo);
                    return scan.next_map(|rec| reader.view_of(txn, rec, memo));
                }
                Source::StreamForward(stream, range, tail, log) => (
                    *stream,
                    index_or_tail(range.next(), || tail.next())?
                        .and_then(|(version, seq)| Ok((version, seq, log.get(seq)?))),
                ),
                Source::StreamBackward(stream, tail, range) => (
                    *stream,
                    match tail.next() {
                        Some(e) => Ok((e.version, e.seq)),
                        None => index_or_tail(range.next(), || None)?,
                    }
                    .and_then(|(version, seq)| {
                        Ok((version, seq, self.reader.log().dbs.get_record(txn, seq)?))
                    }),
                ),
            };
            match entry
                .and_then(|(version, seq, bytes)| self.stream_event(stream, version, seq, bytes))
            {
                Ok(Some(view)) => return Some(Ok(view)),
                // Another type: passed over.
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The event an index entry leads to (its record `bytes`, if the log holds it), checked
    /// against the entry; `None` for an event of a type the reader does not accept.
    #[inline]
    fn stream_event(
        &mut self,
        stream: StreamId,
        version: u64,
        seq: u64,
        bytes: Option<&'t [u8]>,
    ) -> Result<Option<R::View<'t>>> {
        let bytes = bytes
            .ok_or_else(|| Error::corrupted(seq, "stream index points at a missing record"))?;
        let rec = match self.reader.decode_own(seq, bytes)? {
            Ok(rec) => rec,
            // Another type: checked against the index entry, then passed over, unless it is
            // the new name of newer versions of the reader's type.
            Err(other) => {
                check_place(
                    other.seq(),
                    other.stream(),
                    other.version(),
                    stream,
                    version,
                )?;
                let name = other.event_type_bytes();
                let renamed = match &self.renamed {
                    Some(renamed) => renamed,
                    None => self.renamed.insert(self.reader.renamed_in(self.txn.raw())?),
                };
                if crate::log::has_name(renamed, name) {
                    return Err(super::readable::renamed(
                        other.seq(),
                        name,
                        other.schema_version(),
                    ));
                }
                return Ok(None);
            }
        };
        check_place(rec.seq(), rec.stream(), rec.version(), stream, version)?;
        self.reader
            .view_of(self.txn.raw(), rec, &mut self.memo)
            .map(Some)
    }
}

/// The next (version, seq) of a stream: from the index on disk while it has entries, then from
/// the unindexed tail.
#[inline]
fn index_or_tail(
    index: Option<heed::Result<(&[u8], &[u8])>>,
    tail: impl FnOnce() -> Option<Entry>,
) -> Option<Result<(u64, u64)>> {
    match index {
        Some(Ok((key, value))) => {
            Some(parse_index_entry(key, value).map(|(_, version, seq)| (version, seq)))
        }
        Some(Err(e)) => Some(Err(e.into())),
        None => tail().map(|e| Ok((e.version, e.seq))),
    }
}

/// Checks that a record reached through an index is the one the index names.
pub(super) fn check_place(
    seq: u64,
    found_stream: StreamId,
    found_version: u64,
    stream: StreamId,
    version: u64,
) -> Result<()> {
    if found_stream != stream || found_version != version {
        return Err(Error::corrupted(
            seq,
            format!(
                "index says stream {stream} version {version}, record says stream {found_stream} version {found_version}"
            ),
        ));
    }
    Ok(())
}
