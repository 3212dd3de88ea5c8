//! The iterator of a typed read in the caller's transaction.

use super::readable::Readable;
use super::reader::Reader;
use super::ViewMemo;
use crate::env::ReadTxn;
use crate::error::{Error, Result};
use crate::format::index::parse_index_entry;
use crate::index::tail::Entry;
use crate::log::Scan;
use crate::metrics::handles::ReadKind;
use crate::types::StreamId;
use heed::types::Bytes;

/// An iterator over events, borrowing the caller's read transaction. Made by
/// [`Reader::read_log`] and [`Reader::read_stream`].
pub struct Events<'t, R: Readable> {
    pub(super) reader: Reader<R>,
    pub(super) txn: &'t ReadTxn,
    pub(super) source: Source<'t, R>,
    /// The stream key of the last encrypted record, for the next one.
    pub(super) memo: ViewMemo,
    /// Items yielded, added to the transaction's read counts when the iterator is dropped.
    pub(super) read: u64,
    /// For a stream read: the names newer versions of the reader's types are stored under
    /// (renamed by newer builds), whose events are errors, not another type to pass over;
    /// looked up at the first event of another type.
    pub(super) renamed: Option<Vec<String>>,
    /// Whether the read goes backwards: the parts of a split record come last first.
    pub(super) backward: bool,
}

impl<R: Readable> Drop for Events<'_, R> {
    fn drop(&mut self) {
        let mut source = &self.source;
        while let Source::Parts(_, read) = source {
            source = read;
        }
        let kind = match source {
            Source::Log(_) | Source::Done => ReadKind::Log,
            Source::StreamForward(..) | Source::StreamBackward(..) => ReadKind::Stream,
            Source::Parts(..) => unreachable!("passed over above"),
        };
        self.txn.count_reads(kind, self.read);
    }
}

pub(super) enum Source<'t, R: Readable> {
    Log(Scan<'t>),
    /// The index on disk, then the unindexed tail's entries.
    StreamForward(
        StreamId,
        heed::RoRange<'t, Bytes, Bytes>,
        std::vec::IntoIter<Entry>,
    ),
    /// The unindexed tail's entries (newest first), then the index on disk.
    StreamBackward(
        StreamId,
        std::vec::IntoIter<Entry>,
        heed::RoRevRange<'t, Bytes, Bytes>,
    ),
    /// The parts of a split record still to yield, then the read they interrupted.
    Parts(std::vec::IntoIter<R::View<'t>>, Box<Source<'t, R>>),
    /// Only while a read goes back from `Parts` to the read it interrupted.
    Done,
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
    /// Whether parts of a split record are still to come before the next record.
    pub(super) fn has_parts(&self) -> bool {
        matches!(self.source, Source::Parts(..))
    }

    /// A failed item: counted in the metrics, or, for a record an upcast splits, replaced with
    /// its first part to yield, the others kept for the next calls.
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
        let seq = parts.seq;
        let views = self
            .reader
            .log()
            .dbs
            .get_record(self.txn.raw(), seq)
            .and_then(|bytes| {
                let bytes = bytes.ok_or_else(|| {
                    Error::corrupted(seq, "the record vanished from the snapshot")
                })?;
                let rec = crate::format::record::decode_event(seq, bytes)?;
                super::parts::of(&self.reader, rec, Error::Split(parts), self.backward)
            });
        match views {
            Ok(views) => {
                let mut views = views.into_iter();
                *item = views.next().map(Ok);
                let read = std::mem::replace(&mut self.source, Source::Done);
                self.source = Source::Parts(views, Box::new(read));
            }
            Err(e) => {
                self.reader.read_failed(&e);
                *item = Some(Err(e));
            }
        }
    }

    #[inline]
    fn next_item(&mut self) -> Option<Result<R::View<'t>>> {
        loop {
            let (stream, entry) = match &mut self.source {
                Source::Log(scan) => {
                    let (reader, memo) = (&self.reader, &mut self.memo);
                    let txn = self.txn.raw();
                    return scan.next_map(|rec| reader.view_of(txn, rec, memo));
                }
                Source::StreamForward(stream, range, tail) => {
                    (*stream, index_or_tail(range.next(), || tail.next())?)
                }
                Source::StreamBackward(stream, tail, range) => match tail.next() {
                    Some(e) => (*stream, Ok((e.version, e.seq))),
                    None => (*stream, index_or_tail(range.next(), || None)?),
                },
                Source::Parts(parts, _) => match parts.next() {
                    Some(view) => return Some(Ok(view)),
                    None => {
                        let Source::Parts(_, read) =
                            std::mem::replace(&mut self.source, Source::Done)
                        else {
                            unreachable!("matched above")
                        };
                        self.source = *read;
                        continue;
                    }
                },
                Source::Done => return None,
            };
            match entry.and_then(|(version, seq)| self.stream_event(stream, version, seq)) {
                Ok(Some(view)) => return Some(Ok(view)),
                // Another type: passed over.
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The event an index entry leads to, checked against the entry; `None` for an event of a
    /// type the reader does not accept.
    #[inline]
    fn stream_event(
        &mut self,
        stream: StreamId,
        version: u64,
        seq: u64,
    ) -> Result<Option<R::View<'t>>> {
        let bytes = self
            .reader
            .log()
            .dbs
            .get_record(self.txn.raw(), seq)?
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
