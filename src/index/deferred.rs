//! The deferred index: the watermark up to which the (stream, version) index and the stream
//! heads on disk are complete, the flush that advances it, and the views that merge the index
//! on disk with the unindexed [`Tail`] for one transaction.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::index::tail::{merge_head, Entry, Tail};
use crate::index::{parse_stream_key, stream_version_key, Head};
use crate::storage::{Commit, Dbs, Shared};
use crate::types::{Direction, StreamId, StreamInfo};

/// The `meta` key of the index watermark: the (stream, version) index and the stream heads hold
/// every event up to this sequence and none after it (u64, little-endian).
const KEY_INDEXED_THROUGH: &str = "indexed_through";

/// Default number of appended events between two index flushes.
pub const DEFAULT_INDEX_INTERVAL: u64 = 100_000;

pub(crate) fn read(lock: &RwLock<Tail>) -> RwLockReadGuard<'_, Tail> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write(lock: &RwLock<Tail>) -> RwLockWriteGuard<'_, Tail> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The index watermark in `txn`.
pub(crate) fn watermark(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<u64> {
    match dbs.meta.get(txn, KEY_INDEXED_THROUGH)? {
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::corrupted(0, "the index watermark in meta is not 8 bytes")),
        None => Err(Error::corrupted(
            0,
            "the index watermark is missing from meta",
        )),
    }
}

/// Stores the index watermark in `meta` (also at open, where only `meta` is open yet).
pub(crate) fn set_watermark(
    meta: heed::Database<heed::types::Str, heed::types::Bytes>,
    wtxn: &mut heed::RwTxn<'_>,
    seq: u64,
) -> Result<()> {
    meta.put(wtxn, KEY_INDEXED_THROUGH, &seq.to_le_bytes())?;
    Ok(())
}

/// The last sequence of the log in `txn` (0 when empty).
pub(crate) fn last_seq(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<u64> {
    Ok(dbs.log.last(txn)?.map_or(0, |(seq, _)| seq))
}

/// What one transaction sees: the index up to `watermark`, the log up to `head`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub watermark: u64,
    pub head: u64,
}

impl Snapshot {
    pub(crate) fn of(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<Snapshot> {
        Ok(Snapshot {
            watermark: watermark(dbs, txn)?,
            head: last_seq(dbs, txn)?,
        })
    }
}

/// Runs `f` on a tail that covers `snap` in `txn`: the store's own, caught up from the log if
/// needed, or, for a snapshot older than what the store's tail kept, one read from the log for
/// this call.
pub(crate) fn with_tail<R>(
    shared: &Shared,
    txn: &heed::RoTxn<'_>,
    snap: Snapshot,
    f: impl FnOnce(&Tail) -> R,
) -> Result<R> {
    let covers = |t: &Tail| t.covered_from() <= snap.watermark && t.covered_to() >= snap.head;
    {
        let tail = read(&shared.tail);
        if covers(&tail) {
            return Ok(f(&tail));
        }
    }
    {
        let mut tail = write(&shared.tail);
        if tail.covered_to() < snap.head {
            tail.catch_up(&shared.dbs, txn, snap.watermark, snap.head)?;
        }
        if covers(&tail) {
            return Ok(f(&tail));
        }
    }
    let mut own = Tail::new(snap.watermark);
    own.catch_up(&shared.dbs, txn, snap.watermark, snap.head)?;
    if !covers(&own) {
        return Err(Error::corrupted(
            snap.head,
            "the index watermark is past the end of the log",
        ));
    }
    Ok(f(&own))
}

/// The head of `stream` as `txn` sees it (the last event up to the snapshot's head).
pub(crate) fn head_in(
    shared: &Shared,
    txn: &heed::RoTxn<'_>,
    stream: StreamId,
) -> Result<Option<Head>> {
    let snap = Snapshot::of(&shared.dbs, txn)?;
    let disk = Head::read(&shared.dbs, txn, stream)?;
    let tail = with_tail(shared, txn, snap, |t| t.bounds(stream, snap.head))?;
    Ok(merge_head(disk, tail))
}

/// The events of `stream` after the snapshot's watermark, up to its head, that a read from
/// version `from` in `direction` yields after the index's entries (forward) or before them
/// (backward), in that order.
pub(crate) fn tail_entries(
    shared: &Shared,
    txn: &heed::RoTxn<'_>,
    stream: StreamId,
    from: u64,
    direction: Direction,
) -> Result<Vec<Entry>> {
    let snap = Snapshot::of(&shared.dbs, txn)?;
    let mut tail = with_tail(shared, txn, snap, |t| {
        t.entries(stream, snap.watermark, snap.head)
    })?;
    match direction {
        Direction::Forward => tail.retain(|e| e.version >= from),
        Direction::Backward => {
            tail.retain(|e| e.version <= from);
            tail.reverse();
        }
    }
    Ok(tail)
}

/// The heads of the streams with events after the snapshot's watermark, sorted by stream.
pub(crate) fn tail_heads(
    shared: &Shared,
    txn: &heed::RoTxn<'_>,
) -> Result<Vec<(StreamId, Entry, Entry)>> {
    let snap = Snapshot::of(&shared.dbs, txn)?;
    with_tail(shared, txn, snap, |t| t.heads(snap.watermark, snap.head))
}

/// Every stream as `txn` sees it, ordered by id: the heads on disk merged with the tail's.
pub(crate) fn streams<'t>(
    shared: &Shared,
    txn: &'t heed::RoTxn<'_>,
) -> Result<impl Iterator<Item = Result<StreamInfo>> + 't> {
    let tail = tail_heads(shared, txn)?;
    let disk = shared.dbs.heads.iter(txn)?.map(|entry| {
        let (key, value) = entry?;
        let stream = parse_stream_key(key)?;
        Ok((stream, Head::decode(stream, value)?))
    });
    Ok(MergedHeads {
        disk: disk.peekable(),
        tail: tail.into_iter().peekable(),
    })
}

/// The stream heads on disk merged with those of the unindexed tail, in stream order.
struct MergedHeads<D: Iterator<Item = Result<(StreamId, Head)>>> {
    disk: std::iter::Peekable<D>,
    tail: std::iter::Peekable<std::vec::IntoIter<(StreamId, Entry, Entry)>>,
}

impl<D: Iterator<Item = Result<(StreamId, Head)>>> Iterator for MergedHeads<D> {
    type Item = Result<StreamInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let next_tail = self.tail.peek().map(|(s, _, _)| *s);
        let next_disk = match self.disk.peek() {
            Some(Ok((s, _))) => Some(*s),
            Some(Err(_)) => return self.disk.next().map(|r| r.map(|(s, h)| h.info(s))),
            None => None,
        };
        let (stream, disk, tail) = match (next_disk, next_tail) {
            (None, None) => return None,
            (Some(d), Some(t)) if d == t => {
                let disk = self.disk.next().and_then(Result::ok).map(|(_, h)| h);
                let (_, first, last) = self.tail.next().expect("peeked");
                (d, disk, Some((first, last)))
            }
            (Some(d), t) if t.is_none_or(|t| d < t) => {
                let disk = self.disk.next().and_then(Result::ok).map(|(_, h)| h);
                (d, disk, None)
            }
            _ => {
                let (s, first, last) = self.tail.next().expect("peeked");
                (s, None, Some((first, last)))
            }
        };
        merge_head(disk, tail).map(|h| Ok(h.info(stream)))
    }
}

/// Writes the index entries and stream heads of every event after the watermark, sorted by
/// stream, and moves the watermark to the end of the log, in one durable transaction. Returns the
/// new watermark, or `None` when everything was indexed already.
///
/// Appends of this process must not run meanwhile (the caller holds the commit lock, or has the
/// only handle); appends of other processes are serialised by LMDB and caught up first.
pub(crate) fn flush(shared: &Shared) -> Result<Option<u64>> {
    let dbs = &shared.dbs;
    let done = shared.env.write(|wtxn| {
        let last = last_seq(dbs, wtxn)?;
        let mark = watermark(dbs, wtxn)?;
        if last <= mark {
            return Ok(Commit::Abort(None));
        }
        let unindexed = {
            let mut tail = write(&shared.tail);
            tail.catch_up(dbs, wtxn, mark, last)?;
            if tail.covered_from() > mark {
                return Err(Error::corrupted(
                    mark + 1,
                    "the index watermark went back: the store was replaced while open",
                ));
            }
            if tail.covered_to() < last {
                return Err(Error::corrupted(
                    tail.covered_to() + 1,
                    "the tail does not reach the end of the log: nothing was flushed",
                ));
            }
            tail.unindexed(mark, last)
        };
        // Sorted keys: each index and heads page is dirtied once per flush.
        for (stream, entries) in &unindexed {
            for e in entries {
                dbs.put_index_entry(wtxn, &stream_version_key(*stream, e.version), e.seq)?;
            }
        }
        for (stream, entries) in &unindexed {
            let disk = Head::read(dbs, wtxn, *stream)?;
            let range = (entries[0], entries[entries.len() - 1]);
            let head = merge_head(disk, Some(range)).expect("a stream with entries has a head");
            dbs.heads
                .put(wtxn, &stream.to_key(), &head.encode(*stream))?;
        }
        set_watermark(dbs.meta, wtxn, last)?;
        Ok(Commit::Commit(Some(last)))
    })?;
    if let Some(mark) = done {
        write(&shared.tail).flushed_to(mark);
    }
    Ok(done)
}
