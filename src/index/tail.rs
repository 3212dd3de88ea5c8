//! The unindexed tail: where the events appended since the last index flush are, in memory.
//!
//! Appends write only the log and the event-id index; the (stream, version) index and the stream
//! heads on disk are brought up to date in larger deferred batches (`StreamIndex::flush`), up to a
//! watermark `W` stored in `meta` with them. The tail maps each stream to the (version, seq) of
//! its events after the last flush this process saw, so that version checks stay exact and reads
//! by stream see every committed event at once.
//!
//! A reader's snapshot holds the index up to its own `W` and the log up to its own head `H`; it
//! takes from the tail the entries with `W < seq <= H`. The tail therefore keeps the entries of
//! the previous flush interval too (readers whose snapshot began before the last flush still
//! find them), and catches up from the log when a snapshot or a write transaction holds events it
//! has not seen (appends by another process). A snapshot older than what the tail kept falls
//! back to reading its part of the log.

use foldhash::HashMap;

use crate::env::Dbs;
use crate::error::{Error, Result};
use crate::format::index::Head;
use crate::format::record;
use crate::types::StreamId;

/// One event of the tail: its stream version and global sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub version: u64,
    pub seq: u64,
}

/// The entries of the unindexed tail, covering the sequences `(from, to]`.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Entries start after this sequence.
    from: u64,
    /// Every committed event up to this sequence is in the tail (or at or before `from`).
    to: u64,
    /// The watermark of the last flush this process made or found: entries after it are not
    /// indexed on disk yet. `from <= flushed <= to`.
    flushed: u64,
    /// Per stream, its entries in sequence order. Hashed with foldhash, not SipHash: every
    /// append looks its stream up here.
    streams: HashMap<StreamId, Vec<Entry>>,
    /// Number of entries after `flushed`.
    unflushed: u64,
}

impl Tail {
    /// An empty tail for a store indexed up to `watermark`.
    pub(crate) fn new(watermark: u64) -> Tail {
        Tail {
            from: watermark,
            to: watermark,
            flushed: watermark,
            streams: HashMap::default(),
            unflushed: 0,
        }
    }

    /// The last sequence covered: every committed event up to it is in the tail (or indexed).
    pub(crate) fn covered_to(&self) -> u64 {
        self.to
    }

    /// Entries start after this sequence.
    pub(crate) fn covered_from(&self) -> u64 {
        self.from
    }

    /// Entries appended since the last flush.
    pub(crate) fn unflushed(&self) -> u64 {
        self.unflushed
    }

    /// The watermark of the last index flush this process made or found.
    pub(crate) fn flushed_mark(&self) -> u64 {
        self.flushed
    }

    /// Adds the event at `seq` when it follows the covered range directly. Sequences already
    /// covered are ignored (a reader's catch-up may have added them first), and so is a sequence
    /// after a gap (the tail restarted past it): the tail stays gap-free, and a reader catches up
    /// from the log.
    pub(crate) fn push(&mut self, seq: u64, stream: StreamId, version: u64) {
        if seq != self.to + 1 {
            return;
        }
        self.streams
            .entry(stream)
            .or_default()
            .push(Entry { version, seq });
        self.to = seq;
        self.unflushed += 1;
    }

    /// Reads the log from the end of the covered range up to `head` (inclusive) in `txn`, a
    /// snapshot or write transaction holding at least that much, and adds every event. When the
    /// store's index watermark `watermark` in that transaction is past the covered range (another
    /// process flushed events this one never saw), the tail restarts at the watermark; when it is
    /// past this tail's last flush, the entries the flush before it indexed are let go, as after
    /// a flush of this process (so that a process that only reads does not keep every event).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`](crate::error::Error::Corrupted) for a record whose header is damaged
    /// (its stream cannot be known) or a sequence missing from the log; the tail then covers
    /// the events before it.
    pub(crate) fn catch_up(
        &mut self,
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        watermark: u64,
        head: u64,
    ) -> Result<()> {
        self.saw_watermark(watermark);
        if head <= self.to {
            return Ok(());
        }
        for entry in dbs.log.range(txn, &(self.to + 1..=head))? {
            let (seq, value) = entry?;
            if seq != self.to + 1 {
                return Err(Error::corrupted(
                    self.to + 1,
                    "the log has a gap after the index watermark: this event is missing",
                ));
            }
            let rec = record::decode(seq, dbs.record(txn, seq, value)?)?;
            self.push(seq, rec.stream(), rec.version());
        }
        if self.to < head {
            return Err(Error::corrupted(
                self.to + 1,
                "the log ends before its last sequence: this event is missing",
            ));
        }
        Ok(())
    }

    /// Takes note of the index watermark found in a transaction: past the covered range, the
    /// tail restarts there; past this tail's last flush (another process flushed), the entries
    /// before the previous flush are let go, as after a flush of this process.
    fn saw_watermark(&mut self, watermark: u64) {
        if watermark > self.to {
            *self = Tail::new(watermark);
        } else if watermark > self.flushed {
            self.flushed_to(watermark);
        }
    }

    /// The last entry of `stream` with `seq <= upto`, if it has any. A write transaction's `upto`
    /// is the tail's end, so the answer is the stream's last entry, read without a search.
    pub(crate) fn last(&self, stream: StreamId, upto: u64) -> Option<Entry> {
        let v = self.streams.get(&stream)?;
        match v.last() {
            Some(last) if last.seq <= upto => Some(*last),
            _ => v[..v.partition_point(|e| e.seq <= upto)].last().copied(),
        }
    }

    /// The first and the last entry of `stream` with `seq <= upto`, if it has any.
    pub(crate) fn bounds(&self, stream: StreamId, upto: u64) -> Option<(Entry, Entry)> {
        let v = self.streams.get(&stream)?;
        let hi = v.partition_point(|e| e.seq <= upto);
        (hi > 0).then(|| (v[0], v[hi - 1]))
    }

    /// The entries of `stream` with `after < seq <= upto`, in order. The caller checks that the
    /// tail covers that range.
    pub(crate) fn entries(&self, stream: StreamId, after: u64, upto: u64) -> Vec<Entry> {
        match self.streams.get(&stream) {
            None => Vec::new(),
            Some(v) => {
                let lo = v.partition_point(|e| e.seq <= after);
                let hi = v.partition_point(|e| e.seq <= upto);
                v[lo..hi.max(lo)].to_vec()
            }
        }
    }

    /// Every stream's entries with `after < seq <= upto` summed up as heads (first and last
    /// entries within that range), sorted by stream.
    pub(crate) fn heads(&self, after: u64, upto: u64) -> Vec<(StreamId, Entry, Entry)> {
        let mut out: Vec<(StreamId, Entry, Entry)> = self
            .streams
            .iter()
            .filter_map(|(stream, v)| {
                let lo = v.partition_point(|e| e.seq <= after);
                let hi = v.partition_point(|e| e.seq <= upto);
                (lo < hi).then(|| (*stream, v[lo], v[hi - 1]))
            })
            .collect();
        out.sort_unstable_by_key(|(s, _, _)| *s);
        out
    }

    /// Every entry with `after < seq <= upto`, as (stream, entries), sorted by stream.
    pub(crate) fn unindexed(&self, after: u64, upto: u64) -> Vec<(StreamId, Vec<Entry>)> {
        let mut out: Vec<(StreamId, Vec<Entry>)> = self
            .streams
            .iter()
            .filter_map(|(stream, v)| {
                let lo = v.partition_point(|e| e.seq <= after);
                let hi = v.partition_point(|e| e.seq <= upto);
                (lo < hi).then(|| (*stream, v[lo..hi].to_vec()))
            })
            .collect();
        out.sort_unstable_by_key(|(s, _)| *s);
        out
    }

    /// Records that the index on disk now reaches `watermark`, and forgets the entries of the
    /// flush interval before the previous one: they are kept one interval longer for readers
    /// whose snapshot began before this flush.
    pub(crate) fn flushed_to(&mut self, watermark: u64) {
        if watermark <= self.flushed {
            return;
        }
        let keep_after = self.flushed;
        self.streams.retain(|_, v| {
            let cut = v.partition_point(|e| e.seq <= keep_after);
            v.drain(..cut);
            !v.is_empty()
        });
        self.from = self.from.max(keep_after);
        self.flushed = watermark;
        self.unflushed = self
            .streams
            .values()
            .map(|v| v.len() - v.partition_point(|e| e.seq <= watermark))
            .sum::<usize>() as u64;
    }
}

/// A stream's head as a write transaction or snapshot sees it: the tail's last entry when it
/// has one in range, else the head on disk (indexed up to the watermark).
pub(crate) fn merge_head(disk: Option<Head>, tail: Option<(Entry, Entry)>) -> Option<Head> {
    match (disk, tail) {
        (disk, None) => disk,
        (Some(d), Some((_, last))) => Some(Head {
            version: last.version.max(d.version),
            first_seq: d.first_seq,
            last_seq: last.seq.max(d.last_seq),
        }),
        (None, Some((first, last))) => Some(Head {
            version: last.version,
            first_seq: first.seq,
            last_seq: last.seq,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_with(entries: &[(u64, u128, u64)]) -> Tail {
        let mut t = Tail::new(entries.first().map_or(0, |e| e.0 - 1));
        for &(seq, stream, version) in entries {
            t.push(seq, StreamId(stream), version);
        }
        t
    }

    #[test]
    fn entries_in_a_range_and_heads() {
        let t = tail_with(&[(11, 1, 4), (12, 2, 1), (13, 1, 5), (14, 1, 6), (15, 3, 9)]);
        assert_eq!(t.covered_to(), 15);
        let seqs = |v: Vec<Entry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(t.entries(StreamId(1), 10, 15)), vec![11, 13, 14]);
        assert_eq!(seqs(t.entries(StreamId(1), 11, 13)), vec![13]);
        assert!(t.entries(StreamId(9), 0, 99).is_empty());
        let heads = t.heads(11, 14);
        assert_eq!(
            heads
                .iter()
                .map(|(s, f, l)| (s.0, f.seq, l.seq))
                .collect::<Vec<_>>(),
            vec![(1, 13, 14), (2, 12, 12)]
        );
        // Already covered sequences are ignored.
        assert_eq!(
            t.bounds(StreamId(1), 13).map(|(f, l)| (f.seq, l.seq)),
            Some((11, 13))
        );
        assert!(t.bounds(StreamId(3), 14).is_none());
        // The last entry up to a sequence: the stream's last one when it is in range, else
        // found by a search, and none before the stream's first.
        let last = |t: &Tail, stream: u128, upto: u64| {
            t.last(StreamId(stream), upto).map(|e| (e.seq, e.version))
        };
        assert_eq!(last(&t, 1, 15), Some((14, 6)));
        assert_eq!(last(&t, 1, 13), Some((13, 5)));
        assert_eq!(last(&t, 1, 12), Some((11, 4)));
        assert_eq!(last(&t, 1, 10), None);
        assert_eq!(last(&t, 9, 15), None);
        let mut t = t;
        t.push(12, StreamId(7), 1);
        assert!(t.bounds(StreamId(7), 99).is_none());
        assert_eq!(t.unflushed(), 5);
    }

    #[test]
    fn a_flush_keeps_the_previous_interval() {
        let mut t = tail_with(&[(1, 1, 1), (2, 2, 1), (3, 1, 2)]);
        t.flushed_to(2);
        // Nothing flushed before: everything kept.
        assert_eq!(t.covered_from(), 0);
        assert_eq!(t.unflushed(), 1);
        t.push(4, StreamId(2), 2);
        t.flushed_to(4);
        // Entries up to the previous watermark (2) are gone; 3 and 4 stay.
        assert_eq!(t.covered_from(), 2);
        assert_eq!(t.bounds(StreamId(1), 9).unwrap().0.seq, 3);
        assert_eq!(t.bounds(StreamId(2), 9).unwrap().0.seq, 4);
        assert_eq!(t.unflushed(), 0);
    }

    #[test]
    fn heads_merge_with_the_disk() {
        let disk = Head {
            version: 3,
            first_seq: 2,
            last_seq: 9,
        };
        let first = Entry {
            version: 4,
            seq: 12,
        };
        let last = Entry {
            version: 6,
            seq: 20,
        };
        assert_eq!(merge_head(Some(disk), None), Some(disk));
        assert_eq!(
            merge_head(Some(disk), Some((first, last))),
            Some(Head {
                version: 6,
                first_seq: 2,
                last_seq: 20
            })
        );
        assert_eq!(
            merge_head(None, Some((first, last))),
            Some(Head {
                version: 6,
                first_seq: 12,
                last_seq: 20
            })
        );
    }

    /// A process that only reads sees other processes' flushes as watermarks: its tail lets go
    /// of what two flushes indexed, instead of growing for as long as it stays open.
    #[test]
    fn foreign_flushes_trim_the_tail() {
        let entries: Vec<(u64, u128, u64)> = (1..=30).map(|s| (s, (s % 3) as u128, s)).collect();
        let mut t = tail_with(&entries);
        assert_eq!(
            (t.covered_from(), t.covered_to(), t.unflushed()),
            (0, 30, 30)
        );
        t.saw_watermark(10);
        // The interval before the first flush is kept for older snapshots.
        assert_eq!(
            (t.covered_from(), t.flushed_mark(), t.unflushed()),
            (0, 10, 20)
        );
        t.saw_watermark(20);
        assert_eq!(
            (t.covered_from(), t.flushed_mark(), t.unflushed()),
            (10, 20, 10)
        );
        let kept: usize = (0..3).map(|s| t.entries(StreamId(s), 0, 30).len()).sum();
        assert_eq!(kept, 20);
        // An older watermark changes nothing; one past the tail restarts it.
        t.saw_watermark(15);
        assert_eq!((t.covered_from(), t.flushed_mark()), (10, 20));
        t.saw_watermark(40);
        assert_eq!(
            (t.covered_from(), t.covered_to(), t.unflushed()),
            (40, 40, 0)
        );
    }
}
