//! Processor checkpoints: the last handled global sequence of each named processor, in the
//! store's `checkpoints` database (layout in `crate::format::checkpoint`), and the board of
//! checkpoints waiting to ride along with the next commit of the log.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::env::{Commit, Dbs, WriteKind};
use crate::error::{Error, Result};
use crate::format::checkpoint::{decode, encode};
use crate::log::Log;
use crate::write::{Receipt, Rider, WritePath};

pub(crate) use crate::format::checkpoint::check_name;

/// How long a posted checkpoint waits for an append to carry it before the write path commits
/// it by itself.
pub(crate) const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_millis(50);

/// The checkpoint of `name` in `txn`: the last global sequence it handled, 0 when it never ran.
pub(crate) fn load_in(dbs: &Dbs, txn: &heed::RoTxn<'_>, name: &str) -> Result<u64> {
    match dbs.checkpoints.get(txn, name)? {
        Some(bytes) => decode(name, bytes),
        None => Ok(0),
    }
}

/// The checkpoint of `name`, in a fresh read transaction.
pub(crate) fn load(log: &Log, name: &str) -> Result<u64> {
    let txn = log.env.read_txn()?;
    load_in(&log.dbs, txn.raw(), name)
}

/// Writes the checkpoint of `name` inside a write transaction.
pub(crate) fn put_in(dbs: &Dbs, wtxn: &mut heed::RwTxn<'_>, name: &str, seq: u64) -> Result<()> {
    Ok(dbs.checkpoints.put(wtxn, name, &encode(name, seq))?)
}

/// Writes checkpoint `seq` of `name` in a write transaction unless the stored one is already at
/// or past it, so that a late write never moves a checkpoint back. Returns whether it wrote.
pub(crate) fn advance_in(
    dbs: &Dbs,
    wtxn: &mut heed::RwTxn<'_>,
    name: &str,
    seq: u64,
) -> Result<bool> {
    if load_in(dbs, wtxn, name)? < seq {
        put_in(dbs, wtxn, name, seq)?;
        return Ok(true);
    }
    Ok(false)
}

/// Durably advances the checkpoint of `name` to `seq` (never back); no commit when it is
/// already there.
pub(crate) fn advance(log: &Log, name: &str, seq: u64) -> Result<()> {
    log.env.write(WriteKind::Checkpoint, |wtxn| {
        Ok(if advance_in(&log.dbs, wtxn, name, seq)? {
            Commit::Commit(())
        } else {
            Commit::Abort(())
        })
    })
}

/// Stores the checkpoint of `name` durably, forward or back.
pub(crate) fn store(log: &Log, name: &str, seq: u64) -> Result<()> {
    log.env.write(WriteKind::Checkpoint, |wtxn| {
        put_in(&log.dbs, wtxn, name, seq)?;
        Ok(Commit::Commit(()))
    })
}

/// Every processor with its checkpoint, ordered by name.
pub(crate) fn list(log: &Log) -> Result<Vec<(String, u64)>> {
    let txn = log.env.read_txn()?;
    let mut out = Vec::new();
    for entry in log.dbs.checkpoints.iter(txn.raw())? {
        let (name, bytes) = entry?;
        out.push((name.to_string(), decode(name, bytes)?));
    }
    Ok(out)
}

/// Checkpoints posted by caught-up processors, waiting to ride along with the next commit of
/// the log (no fsync of their own, nothing on the delivery path), or to be committed by
/// themselves [`IDLE_CHECKPOINT_AFTER`] after they were posted.
pub(crate) struct CheckpointBoard {
    log: Arc<Log>,
    writes: Weak<WritePath>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    checkpoints: Vec<(String, u64)>,
    /// When the oldest pending checkpoint was posted.
    since: Option<Instant>,
}

impl CheckpointBoard {
    /// The board of a store's write path.
    pub(crate) fn new(writes: &Arc<WritePath>) -> Arc<CheckpointBoard> {
        Arc::new(CheckpointBoard {
            log: Arc::clone(&writes.log),
            writes: Arc::downgrade(writes),
            pending: Mutex::default(),
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts checkpoint `seq` of processor `name`. A later post for the same name replaces an
    /// earlier one (never moving it back).
    pub(crate) fn post(&self, name: &str, seq: u64) {
        {
            let mut pending = self.pending();
            match pending.checkpoints.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = entry.1.max(seq),
                None => pending.checkpoints.push((name.to_string(), seq)),
            }
            pending.since.get_or_insert_with(Instant::now);
        }
        if let Some(writes) = self.writes.upgrade() {
            writes.riders_changed();
        }
    }

    /// Drops the pending checkpoint of `name` (before a reset moves it back).
    pub(crate) fn forget(&self, name: &str) {
        let mut pending = self.pending();
        pending.checkpoints.retain(|(n, _)| n != name);
        if pending.checkpoints.is_empty() {
            pending.since = None;
        }
    }

    /// Drops pending checkpoints that `stored` covers: they are committed.
    pub(crate) fn stored(&self, stored: &[(String, u64)]) {
        let mut pending = self.pending();
        pending
            .checkpoints
            .retain(|(n, seq)| !stored.iter().any(|(m, s)| m == n && s >= seq));
        if pending.checkpoints.is_empty() {
            pending.since = None;
        }
    }
}

impl Rider for CheckpointBoard {
    fn kind(&self) -> WriteKind {
        WriteKind::Checkpoint
    }

    fn write(&self, wtxn: &mut heed::RwTxn<'_>) -> Result<Option<Receipt>> {
        let mut checkpoints = self.pending().checkpoints.clone();
        if checkpoints.is_empty() {
            return Ok(None);
        }
        let mut damaged = Vec::new();
        for (name, seq) in &checkpoints {
            match advance_in(&self.log.dbs, wtxn, name, *seq) {
                Ok(_) => {}
                // A damaged stored checkpoint cannot be advanced, and must not fail the commit
                // that carries it (an append of someone else): it is left as it is, and its
                // processor meets the damage when it next loads its checkpoint.
                Err(e @ Error::Damaged { .. }) => {
                    tracing::warn!(processor = %name, error = %e, "a pending checkpoint was dropped: the stored one is damaged");
                    damaged.push(name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        if !damaged.is_empty() {
            checkpoints.retain(|(n, _)| !damaged.contains(n));
            let mut pending = self.pending();
            pending.checkpoints.retain(|(n, _)| !damaged.contains(n));
            if pending.checkpoints.is_empty() {
                pending.since = None;
            }
        }
        if checkpoints.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(checkpoints)))
    }

    fn committed(&self, receipt: Receipt) {
        if let Ok(checkpoints) = receipt.downcast::<Vec<(String, u64)>>() {
            self.stored(&checkpoints);
            let head = self.writes.upgrade().map_or(0, |w| w.head());
            crate::metrics::handles::checkpoints_committed(
                self.log.env.metrics(),
                head,
                &checkpoints,
            );
        }
    }

    fn due(&self) -> Option<Instant> {
        self.pending().since.map(|t| t + IDLE_CHECKPOINT_AFTER)
    }

    fn postpone(&self) {
        let mut pending = self.pending();
        if pending.since.is_some() {
            pending.since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Storage, StorageConfig, Writer};

    /// A checkpoint posted to ride along with the next commit is committed when the store
    /// closes, not lost with it.
    #[test]
    fn a_posted_checkpoint_is_committed_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            path: dir.path().to_path_buf(),
            map_size: 1 << 20,
            ..Default::default()
        };
        {
            let storage = Storage::open(config.clone()).unwrap();
            let mut writer = Writer::<u64>::new(storage.clone());
            for n in 1..=5u64 {
                writer.append(1, n, n).unwrap();
            }
            storage.store.checkpoints.post("reader", 5);
        }
        let storage = Storage::open(config).unwrap();
        assert_eq!(storage.processors().unwrap(), [("reader".to_string(), 5)]);
    }
}
