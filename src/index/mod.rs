//! The stream index: where each stream's events are. It owns the (stream, version) index and the
//! stream heads on disk, which are written behind the log in sorted batches up to a watermark
//! (see `docs/write-path.md`), and the in-memory [`tail`] of the events after the watermark.
//!
//! The invariant this module owns: **the tail covers every committed event after the
//! watermark**. The write path adds each committed transaction's events ([`StreamIndex::committed`])
//! and asks for a flush when the tail has grown past the interval; every reader and write
//! transaction that sees events the tail has not (appends of another process) catches it up from
//! the log first. A snapshot older than what the tail keeps gets a private tail read from the
//! log. So version checks are exact and reads by stream see every committed event.
//!
//! The log is the source of truth. Every lookup through these structures is checked against the
//! record it leads to (stream, version), so a damaged index entry gives
//! [`Error::Corrupted`](crate::Error::Corrupted) rather than another event's data.

mod flush;
mod heads;
mod labels;
mod merge;
pub(crate) mod tail;

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) use heads::read_head;
use heads::MergedHeads;
pub(crate) use merge::Merged;
use tail::{merge_head, Entry, Tail};

use crate::env::Dbs;
use crate::error::{DamagedEntry, Error, Result};
use crate::format::index::{parse_stream_key, Head};
use crate::types::{Direction, StreamId, StreamInfo};

/// Default number of appended events between two index flushes.
pub const DEFAULT_INDEX_INTERVAL: u64 = 100_000;

/// What one transaction sees: the index up to `watermark`, the log up to `head`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub watermark: u64,
    pub head: u64,
}

impl Snapshot {
    pub(crate) fn of(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<Snapshot> {
        Ok(Snapshot {
            watermark: dbs.watermark(txn)?,
            head: dbs.last_seq(txn)?,
        })
    }
}

/// The stream index of one open store: the tail of unindexed events, and the flush interval.
#[derive(Debug)]
pub(crate) struct StreamIndex {
    tail: RwLock<Tail>,
    interval: u64,
}

impl StreamIndex {
    /// Reads the events after the watermark back from the log, as `txn` sees it, into a new
    /// tail. Returns the index and the log's head.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the watermark is past the end of the log or the log has a gap
    /// after it, or a record after it has a damaged header: the index could not be completed.
    pub(crate) fn open(
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        interval: u64,
    ) -> Result<(StreamIndex, u64)> {
        let snap = Snapshot::of(dbs, txn)?;
        if snap.watermark > snap.head {
            return Err(Error::Corrupted {
                seq: snap.head + 1,
                reason: format!(
                    "the index watermark ({}) is past the end of the log ({}): events are missing",
                    snap.watermark, snap.head
                ),
            });
        }
        let mut tail = Tail::new(snap.watermark);
        tail.catch_up(dbs, txn, snap.watermark, snap.head)
            .map_err(|e| match e {
                Error::Corrupted { seq, reason } => Error::Corrupted {
                    seq,
                    reason: format!("{reason} (in the unindexed tail, read back at open: without it the stream index cannot be completed; restore the store from a backup)"),
                },
                other => other,
            })?;
        let index = StreamIndex {
            tail: RwLock::new(tail),
            interval: interval.max(1),
        };
        Ok((index, snap.head))
    }

    fn read(&self) -> RwLockReadGuard<'_, Tail> {
        self.tail.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tail> {
        self.tail.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sequence up to which the index on disk is written, as far as this process knows.
    pub(crate) fn indexed_through(&self) -> u64 {
        self.read().flushed_mark()
    }

    /// Whether the tail holds at least an interval of events not indexed on disk.
    pub(crate) fn flush_due(&self) -> bool {
        self.read().unflushed() >= self.interval
    }

    /// Runs `f` on a tail that covers `snap` in `txn`: the store's own, caught up from the log if
    /// needed, or, for a snapshot older than what the store's tail kept, one read from the log
    /// for this call.
    fn with_tail<R>(
        &self,
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        snap: Snapshot,
        f: impl FnOnce(&Tail) -> R,
    ) -> Result<R> {
        let covers = |t: &Tail| t.covered_from() <= snap.watermark && t.covered_to() >= snap.head;
        {
            let tail = self.read();
            if covers(&tail) {
                return Ok(f(&tail));
            }
        }
        {
            let mut tail = self.write();
            if tail.covered_to() < snap.head {
                tail.catch_up(dbs, txn, snap.watermark, snap.head)?;
            }
            if covers(&tail) {
                return Ok(f(&tail));
            }
        }
        let mut own = Tail::new(snap.watermark);
        own.catch_up(dbs, txn, snap.watermark, snap.head)?;
        if !covers(&own) {
            return Err(Error::Damaged {
                entry: DamagedEntry::IndexWatermark,
                reason: format!(
                    "it is past the end of the log ({} > {})",
                    snap.watermark, snap.head
                ),
            });
        }
        Ok(f(&own))
    }

    /// The head of `stream` as `txn` sees it (the last event up to the snapshot's head).
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] for a damaged head on disk, [`Error::Corrupted`] for a damaged record
    /// the tail had to read, [`Error::Lmdb`].
    pub(crate) fn head(
        &self,
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        stream: StreamId,
    ) -> Result<Option<Head>> {
        let snap = Snapshot::of(dbs, txn)?;
        let disk = read_head(dbs, txn, stream)?;
        let tail = self.with_tail(dbs, txn, snap, |t| t.bounds(stream, snap.head))?;
        Ok(merge_head(disk, tail))
    }

    /// The events of `stream` after the snapshot's watermark, up to its head, that a read from
    /// version `from` in `direction` yields after the index's entries (forward) or before them
    /// (backward), in that order.
    pub(crate) fn tail_entries(
        &self,
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        stream: StreamId,
        from: u64,
        direction: Direction,
    ) -> Result<Vec<Entry>> {
        let snap = Snapshot::of(dbs, txn)?;
        let mut tail = self.with_tail(dbs, txn, snap, |t| {
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

    /// Every stream as `txn` sees it, ordered by id: the heads on disk merged with the tail's.
    pub(crate) fn streams<'t>(
        &self,
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'_>,
    ) -> Result<impl Iterator<Item = Result<StreamInfo>> + 't> {
        let snap = Snapshot::of(dbs, txn)?;
        let tail = self.with_tail(dbs, txn, snap, |t| t.heads(snap.watermark, snap.head))?;
        let disk = dbs.heads.iter(txn)?.map(|entry| {
            let (key, value) = entry?;
            let stream = parse_stream_key(key)?;
            Ok((stream, Head::decode(stream, value)?))
        });
        Ok(MergedHeads::new(disk, tail))
    }

    /// The streams with events after the watermark, as `txn` sees them, sorted.
    pub(crate) fn tail_streams(&self, dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<Vec<StreamId>> {
        let snap = Snapshot::of(dbs, txn)?;
        let heads = self.with_tail(dbs, txn, snap, |t| t.heads(snap.watermark, snap.head))?;
        Ok(heads.into_iter().map(|(stream, _, _)| stream).collect())
    }

    /// Brings the tail up to `head`, the committed log a write transaction `wtxn` begins on
    /// (appends of other processes), so that its version checks see every event.
    pub(crate) fn catch_up_for_write(
        &self,
        dbs: &Dbs,
        wtxn: &heed::RoTxn<'_>,
        head: u64,
    ) -> Result<()> {
        if self.read().covered_to() < head {
            let mark = dbs.watermark(wtxn)?;
            self.write().catch_up(dbs, wtxn, mark, head)?;
        }
        Ok(())
    }

    /// The last entry of `stream` with `seq <= upto` in the tail. For a write transaction begun on
    /// a log that ends at `upto`, after [`StreamIndex::catch_up_for_write`]: a stream with an
    /// entry in the tail has its newest event there, since the heads on disk hold only events up
    /// to the watermark, which is not after the tail's start.
    pub(crate) fn last_in_tail(&self, stream: StreamId, upto: u64) -> Option<Entry> {
        self.read().last(stream, upto)
    }

    /// Adds the events of a committed write transaction, as (seq, stream, version) in sequence
    /// order. Returns whether a flush is due.
    pub(crate) fn committed(&self, entries: &[(u64, StreamId, u64)]) -> bool {
        if entries.is_empty() {
            return false;
        }
        let mut tail = self.write();
        for &(seq, stream, version) in entries {
            tail.push(seq, stream, version);
        }
        tail.unflushed() >= self.interval
    }
}
