//! One write transaction, run the same way everywhere: commit or abort as the work says,
//! poison the store after an I/O failure (see [`super::poison`]), and, in tests built with the
//! `failpoints` feature, fail on purpose.
//!
//! [`super::Env::write`] wraps an [`Attempt`] in the map's gate and grows the map when it is
//! full; the keystore, whose map never grows, runs one attempt per write. Every write
//! transaction of a store goes through [`WriteGuard::attempt`].

use std::path::Path;

use super::poison::Poison;
use crate::error::{Error, Result};

/// What a write closure asks the runner to do with its transaction.
pub(crate) enum Commit<T> {
    /// Commit, then return the value.
    Commit(T),
    /// Abort (nothing to write), then return the value.
    Abort(T),
}

/// What a write transaction is for: named in logs when it fails, and the target of injected
/// failures in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteKind {
    /// A commit group of appends.
    Append,
    /// A multi-stream transaction.
    Transaction,
    /// A batch of imported events.
    Import,
    /// A projector's batch: its read model and checkpoint.
    Projection,
    /// Processor checkpoints committed without an append.
    Checkpoint,
    /// A deferred flush of the stream index and heads.
    IndexFlush,
    /// Creating the keys of new streams (keystore).
    KeyCreation,
    /// Batches of a cluster's log applied by its replica, with how far it is applied.
    Replicate,
    /// Shredding a stream (keystore).
    Shred,
    /// Rotating the master key (keystore).
    KeyRotation,
    /// Creating a projection database.
    CreateDatabase,
}

impl std::fmt::Display for WriteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteKind::Append => "an append",
            WriteKind::Transaction => "a multi-stream transaction",
            WriteKind::Import => "an import batch",
            WriteKind::Projection => "a projection batch",
            WriteKind::Checkpoint => "a checkpoint commit",
            WriteKind::IndexFlush => "an index flush",
            WriteKind::KeyCreation => "creating stream keys",
            WriteKind::Replicate => "applying the cluster's log",
            WriteKind::Shred => "a shred",
            WriteKind::KeyRotation => "a master key rotation",
            WriteKind::CreateDatabase => "creating a database",
        })
    }
}

/// How one attempt at a write transaction ended.
pub(crate) enum Attempt<T> {
    /// Committed, or aborted because the work said so.
    Done(T),
    /// The map is full: grow it and run the work again.
    MapFull(Error),
    /// Failed; the store is poisoned if the failure calls for it.
    Failed(Error),
}

/// Shared by every write transaction of one store, of its data environment and its keystore:
/// the poison flag, and in tests the injected failures.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteGuard {
    pub(crate) poison: Poison,
    #[cfg(feature = "failpoints")]
    injected: std::sync::Arc<std::sync::Mutex<Vec<WriteKind>>>,
}

impl WriteGuard {
    /// Runs `f` in `wtxn` and commits or aborts it as `f` says. `path` names the environment in
    /// logs.
    pub(crate) fn attempt<T>(
        &self,
        path: &Path,
        kind: WriteKind,
        mut wtxn: heed::RwTxn<'_>,
        f: &mut impl FnMut(&mut heed::RwTxn<'_>) -> Result<Commit<T>>,
    ) -> Attempt<T> {
        let (outcome, in_commit) = match f(&mut wtxn) {
            Ok(Commit::Abort(value)) => {
                wtxn.abort();
                return Attempt::Done(value);
            }
            Ok(Commit::Commit(value)) => (self.commit(kind, wtxn).map(|()| value), true),
            Err(e) => {
                wtxn.abort();
                (Err(e), false)
            }
        };
        match outcome {
            Ok(value) => Attempt::Done(value),
            Err(e) if e.is_map_full() => Attempt::MapFull(e),
            Err(e) => Attempt::Failed(self.poison.failed(path, kind, e, in_commit)),
        }
    }

    fn commit(&self, kind: WriteKind, wtxn: heed::RwTxn<'_>) -> Result<()> {
        #[cfg(feature = "failpoints")]
        if self.take_injected(kind) {
            // What LMDB reports (through heed) when the disk fails while it writes or syncs the
            // transaction's pages: an OS error. Aborting leaves the store as a failed commit
            // leaves it on disk: the meta page still names the previous transaction.
            wtxn.abort();
            return Err(Error::Lmdb(heed::Error::Io(
                std::io::Error::from_raw_os_error(libc_eio()),
            )));
        }
        let _ = kind;
        wtxn.commit().map_err(Error::from)
    }

    /// Makes the next commit of a `kind` write fail as if the disk had failed.
    #[cfg(feature = "failpoints")]
    pub(crate) fn inject(&self, kind: WriteKind) {
        self.injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(kind);
    }

    #[cfg(feature = "failpoints")]
    fn take_injected(&self, kind: WriteKind) -> bool {
        let mut injected = self
            .injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match injected.iter().position(|k| *k == kind) {
            Some(i) => {
                injected.remove(i);
                true
            }
            None => false,
        }
    }
}

/// `EIO`, the errno of an I/O error (5 on every Unix).
#[cfg(feature = "failpoints")]
const fn libc_eio() -> i32 {
    5
}
