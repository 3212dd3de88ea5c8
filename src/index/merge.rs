//! The events of a few streams in global order, from a sequence on: each stream's entries (the
//! index on disk, then the unindexed tail) merged by sequence. A reader of a few streams walks
//! them instead of the whole log.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};

use super::heads::read_head;
use super::tail::Entry;
use super::{Snapshot, StreamIndex};
use crate::env::Dbs;
use crate::error::{DamagedEntry, Error, Result};
use crate::format::index::{parse_stream_version_key, stream_version_key};
use crate::types::StreamId;

/// One stream's entries from the merge's start: the index on disk, then the tail.
struct Source<'t> {
    stream: StreamId,
    disk: Option<heed::RoRange<'t, Bytes, U64<BigEndian>>>,
    tail: std::vec::IntoIter<Entry>,
}

impl Source<'_> {
    fn next(&mut self) -> Option<Result<Entry>> {
        if let Some(disk) = &mut self.disk {
            match disk.next() {
                Some(Ok((key, seq))) => {
                    return Some(match parse_stream_version_key(key) {
                        Some((_, version)) => Ok(Entry { version, seq }),
                        None => Err(Error::corrupted(seq, "malformed stream index key")),
                    });
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
    /// The entry each source put on the heap, by source.
    next: Vec<Option<Entry>>,
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

    fn advance(&mut self, i: usize) {
        match self.sources[i].next() {
            Some(Ok(entry)) => {
                self.next[i] = Some(entry);
                self.heap.push(Reverse((entry.seq, i)));
            }
            Some(Err(e)) => {
                self.next[i] = None;
                self.failed.get_or_insert(e);
            }
            None => self.next[i] = None,
        }
    }
}

impl Iterator for Merged<'_> {
    /// A stream, and the version and sequence of its next event.
    type Item = Result<(StreamId, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let entry = self.next[i]
            .take()
            .expect("a source on the heap has an entry");
        let stream = self.sources[i].stream;
        self.advance(i);
        Some(Ok((stream, entry)))
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
            .stream_index
            .get(txn, &stream_version_key(stream, mid))?
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
