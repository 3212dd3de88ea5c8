//! The events of a few streams in global order, from a sequence on: each stream's entries (the
//! index on disk, then the unindexed tail) merged by sequence. A reader of a few streams walks
//! them instead of the whole log.
//!
//! Each entry is checked against the record it leads to when it joins the merge, not when it
//! leaves it: an entry that leads elsewhere (a damaged index) is an error before any later event
//! of another stream is yielded, so a reader that falls back to the log from its last event
//! neither skips nor repeats one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use heed::types::Bytes;

use super::heads::read_head;
use super::tail::Entry;
use super::{Snapshot, StreamIndex};
use crate::env::{Dbs, LogLookup};
use crate::error::{DamagedEntry, Error, Result};
use crate::format::index::{parse_index_entry, stream_version_key};
use crate::format::record::{self, DecodedRecord};
use crate::types::StreamId;

/// One stream's entries from the merge's start: the index on disk, then the tail; their records
/// looked up in increasing sequence, a run of the stream stepped through.
struct Source<'t> {
    stream: StreamId,
    disk: Option<heed::RoRange<'t, Bytes, Bytes>>,
    tail: std::vec::IntoIter<Entry>,
    log: LogLookup<'t>,
}

impl Source<'_> {
    fn next(&mut self) -> Option<Result<Entry>> {
        if let Some(disk) = &mut self.disk {
            match disk.next() {
                Some(Ok((key, value))) => {
                    return Some(
                        parse_index_entry(key, value)
                            .map(|(_, version, seq)| Entry { version, seq }),
                    );
                }
                Some(Err(e)) => return Some(Err(e.into())),
                None => self.disk = None,
            }
        }
        self.tail.next().map(Ok)
    }
}

/// The entries of some streams, in global order (see the module documentation).
pub(crate) struct Merged<'t> {
    sources: Vec<Source<'t>>,
    /// The next entry of each source that has one: (sequence, source).
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// The record each source put on the heap (its header checked against the entry), by source.
    next: Vec<Option<DecodedRecord<'t>>>,
    /// The head of the log in the transaction: the merge covers every sequence up to it.
    head: u64,
    /// A source's error, handed out before anything else.
    failed: Option<Error>,
}

impl<'t> Merged<'t> {
    /// The head of the log in the merge's transaction: once the merge is exhausted, every event
    /// of its streams up to here was yielded.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Puts source `i`'s next entry on the heap, with its record; an entry that cannot be read
    /// or does not lead to its stream's record fails the merge.
    fn advance(&mut self, i: usize) {
        self.next[i] = None;
        let source = &mut self.sources[i];
        let checked = match source.next() {
            Some(Ok(entry)) => Merged::record(source, entry),
            Some(Err(e)) => Err(e),
            None => return,
        };
        match checked {
            Ok(rec) => {
                self.heap.push(Reverse((rec.seq(), i)));
                self.next[i] = Some(rec);
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// The record an entry of `source` leads to, its header checked against the entry.
    fn record(source: &mut Source<'t>, entry: Entry) -> Result<DecodedRecord<'t>> {
        let (seq, stream) = (entry.seq, source.stream);
        let bytes = source
            .log
            .get(seq)?
            .ok_or_else(|| Error::corrupted(seq, "stream index points at a missing record"))?;
        let rec = record::decode_header(seq, bytes)?;
        if rec.stream() != stream || rec.version() != entry.version {
            return Err(Error::corrupted(
                seq,
                format!(
                    "index says stream {stream} version {}, record says stream {} version {}",
                    entry.version,
                    rec.stream(),
                    rec.version()
                ),
            ));
        }
        Ok(rec)
    }
}

impl<'t> Iterator for Merged<'t> {
    /// The next event of the streams: its record, header checked, payload not yet.
    type Item = Result<DecodedRecord<'t>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let rec = self.next[i]
            .take()
            .expect("a source on the heap has a record");
        self.advance(i);
        Some(Ok(rec))
    }
}

impl StreamIndex {
    /// The events of `streams` with a sequence of at least `from`, in global order, as `txn`
    /// sees them.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged stream head, [`Error::Corrupted`] for an
    /// index that lacks an entry its head promises; an entry that cannot be read is an error
    /// item.
    pub(crate) fn merged<'t>(
        &self,
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        streams: &[StreamId],
        from: u64,
    ) -> Result<Merged<'t>> {
        let snap = Snapshot::of(dbs, txn)?;
        let tails: Vec<Vec<Entry>> = self.with_tail(dbs, txn, snap, |t| {
            streams
                .iter()
                .map(|s| t.entries(*s, snap.watermark, snap.head))
                .collect()
        })?;
        let mut merged = Merged {
            sources: Vec::with_capacity(streams.len()),
            heap: BinaryHeap::with_capacity(streams.len()),
            next: Vec::with_capacity(streams.len()),
            head: snap.head,
            failed: None,
        };
        for (&stream, mut tail) in streams.iter().zip(tails) {
            tail.retain(|e| e.seq >= from);
            let disk = match first_on_disk(dbs, txn, stream, from)? {
                Some(version) => {
                    let lo = stream_version_key(stream, version);
                    let hi = stream_version_key(stream, u64::MAX);
                    let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
                    Some(dbs.stream_index.range(txn, &bounds)?)
                }
                None => None,
            };
            merged.sources.push(Source {
                stream,
                disk,
                tail: tail.into_iter(),
                log: LogLookup::new(dbs, txn),
            });
            merged.next.push(None);
            merged.advance(merged.sources.len() - 1);
        }
        Ok(merged)
    }
}

/// The first version of `stream` in the index on disk whose sequence is at least `from`, found
/// by a binary search over the versions its head on disk names; `None` when there is none.
fn first_on_disk(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    stream: StreamId,
    from: u64,
) -> Result<Option<u64>> {
    let Some(head) = read_head(dbs, txn, stream)? else {
        return Ok(None);
    };
    if head.last_seq < from {
        return Ok(None);
    }
    if head.first_seq >= from {
        return Ok(Some(1));
    }
    // Sequences grow with versions: find the first version at or after `from`.
    let (mut lo, mut hi) = (1u64, head.version);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let seq = dbs
            .get_index_seq(txn, stream, mid)?
            .ok_or_else(|| Error::Damaged {
                entry: DamagedEntry::StreamIndexEntry {
                    stream,
                    version: mid,
                },
                reason: "missing, although the stream's head names a later version".into(),
            })?;
        if seq < from {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}
