//! Records looked up by sequence one after another in one read transaction: a lookup of a
//! record a few on from the last one steps a range of the log instead of walking the B-tree
//! down from its root again.
//!
//! The events of one stream, category or type are read in increasing sequence and often come
//! in runs (a batch of one stream), whose records sit side by side on the same leaf pages.
//! Stepping to the next of them costs a comparison or two; a lookup from the root costs a key
//! search on every level of the tree. Lookups that met runs open a range at the next record
//! too, so that a run costs one walk from the root. Lookups that meet lone records (a stream
//! whose events are far apart) look each up as [`Dbs::get_record`] does, without a cursor to
//! open and close.

use heed::types::Bytes;

use super::dbs::Dbs;
use crate::error::{Error, Result};

/// How many records a lookup forward steps over rather than looking the next one up from the
/// root.
const STEP_AHEAD: u64 = 16;

/// Looks records up by sequence in one read transaction, stepping forward from the last one
/// found when the next is at most [`STEP_AHEAD`] records on.
pub(crate) struct LogLookup<'t> {
    dbs: Dbs,
    txn: &'t heed::RoTxn<'t>,
    /// The sequence of the last lookup.
    last: Option<u64>,
    /// Whether the last lookup was near the one before it: then the next lookup that is not
    /// opens a range, expecting a run.
    in_runs: bool,
    /// A range of the log whose next entry is the one after `last`.
    range: Option<heed::RoRange<'t, Bytes, Bytes>>,
}

impl<'t> LogLookup<'t> {
    /// Lookups in `txn`.
    pub(crate) fn new(dbs: &Dbs, txn: &'t heed::RoTxn<'t>) -> Self {
        LogLookup {
            dbs: *dbs,
            txn,
            last: None,
            in_runs: false,
            range: None,
        }
    }

    /// The record with sequence `seq` (inline, or behind its stub), or `None` when the log has
    /// none there.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], and [`Error::Corrupted`] for a log key that is not a sequence or a stub
    /// whose large record is missing.
    #[inline]
    pub(crate) fn get(&mut self, seq: u64) -> Result<Option<&'t [u8]>> {
        let near = self
            .last
            .is_some_and(|last| last < seq && seq - last <= STEP_AHEAD);
        let in_runs = std::mem::replace(&mut self.in_runs, near);
        self.last = Some(seq);
        if !near {
            self.range = None;
            if !in_runs {
                return self.dbs.get_record(self.txn, seq);
            }
        }
        let range = match &mut self.range {
            Some(range) => range,
            None => self.range.insert(self.dbs.log_from(self.txn, seq)?),
        };
        loop {
            let (key, value) = match range.next() {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    self.range = None;
                    return Err(e.into());
                }
                None => {
                    self.range = None;
                    return Ok(None);
                }
            };
            let Ok(at) = key.try_into().map(u64::from_be_bytes) else {
                self.range = None;
                return Err(Error::corrupted(seq, "a key of the log is not a sequence"));
            };
            if at == seq {
                return self.dbs.record(self.txn, seq, value).map(Some);
            }
            if at > seq {
                // Not in the log: the range stands past it, beyond the next lookup's reach.
                self.range = None;
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::env::{Commit, WriteKind};
    use crate::{ExpectedVersion, Storage, StorageConfig, Writer};

    use super::LogLookup;

    /// Every pattern of lookups (runs, gaps within and beyond the step, going back, missing
    /// sequences, large records behind stubs) finds what a lookup from the root finds.
    #[test]
    fn lookups_find_what_the_log_holds() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig {
            path: dir.path().to_path_buf(),
            map_size: 64 << 20,
            ..Default::default()
        })
        .unwrap();
        let mut small = Writer::<u64>::new(storage.clone());
        let mut large = Writer::<String>::new(storage.clone());
        for i in 0..100u64 {
            if i % 7 == 3 {
                large
                    .append_batch(1, ExpectedVersion::Any, ["x".repeat(6000)])
                    .unwrap();
            } else {
                small.append_batch(2, ExpectedVersion::Any, [i]).unwrap();
            }
        }
        // Take sequences 40..=45 out of the log, so that lookups meet holes.
        let dbs = storage.log().dbs;
        storage
            .env
            .write(WriteKind::Append, |wtxn| {
                for seq in 40..=45u64 {
                    dbs.log.delete(wtxn, &seq)?;
                }
                Ok(Commit::Commit(()))
            })
            .unwrap();
        let txn = storage.read_txn().unwrap();
        let raw = txn.raw();
        let patterns: [&[u64]; 8] = [
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &[1, 3, 17, 18, 34, 35, 60, 61, 62],
            &[10, 9, 8, 50, 49, 51, 52],
            &[38, 39, 40, 41, 46, 47, 44, 48],
            &[95, 96, 99, 100, 101, 102, 120, 1],
            &[4, 11, 18, 25, 32, 39, 46, 53, 60],
            &[1, 2, 3, 30, 31, 32, 40, 41, 70, 71, 100, 101],
            &[5, 6, 90, 91, 37, 38, 39, 46, 20, 21, 2],
        ];
        for pattern in patterns {
            let mut lookup = LogLookup::new(&dbs, raw);
            for &seq in pattern {
                let expected = dbs.get_record(raw, seq).unwrap();
                let found = lookup.get(seq).unwrap();
                assert_eq!(found, expected, "seq {seq} in {pattern:?}");
                assert_eq!(
                    found.is_some(),
                    (1..=100).contains(&seq) && !(40..=45).contains(&seq)
                );
            }
        }
    }
}
