//! Poisoning: after a write fails at the I/O level, the store refuses every write until it is
//! reopened.
//!
//! A failed commit or `fdatasync` leaves the page cache in an unknown state: the kernel may have
//! dropped the dirty pages it could not write, so a later commit could succeed on top of pages
//! that never reached the disk. Like fjall's `Poisoned` and redb's `PreviousIo`, the only safe
//! answer is to stop writing until the store is opened again, which reads the disk afresh. One
//! [`Poison`] is shared by every write transaction of a store, of its data environment and of
//! its keystore; [`super::Env::write`] and the keystore's writes consult and set it, so no write
//! path can forget to.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::WriteKind;
use crate::error::{Error, Result};

/// Whether the store refuses writes after an I/O failure. Cheap to clone: clones share the flag.
#[derive(Clone, Debug, Default)]
pub(crate) struct Poison(Arc<AtomicBool>);

impl Poison {
    /// `Err(Error::Poisoned)` once the store is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_set() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Whether the store is poisoned.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Poisons the store: `what` failed at the I/O level with `e`.
    pub(crate) fn set(&self, path: &Path, what: &str, e: &Error) {
        if !self.0.swap(true, Ordering::AcqRel) {
            tracing::error!(path = %path.display(), error = %e, "{what} failed at the I/O level; the store refuses writes until it is reopened");
        }
    }

    /// Takes note of a failed write transaction and returns its error: a failure of the commit
    /// itself (writing the pages and syncing them) always poisons, since it may have left part of
    /// the transaction in the page cache or on disk; a failure before the commit poisons when it
    /// came from the operating system (see [`is_io_failure`]). "Map full" never poisons: the
    /// caller grows the map and retries.
    pub(crate) fn failed(&self, path: &Path, kind: WriteKind, e: Error, in_commit: bool) -> Error {
        if !e.is_map_full() && (in_commit || is_io_failure(&e)) {
            self.set(path, &kind.to_string(), &e);
        }
        e
    }
}

/// Whether an error comes from the operating system below LMDB (a failed `pwrite`, `fdatasync`,
/// a full disk) rather than from the data: LMDB reports those as plain `errno` codes, which heed
/// turns into `heed::Error::Io` (`MdbError::Other` is their raw form), and an environment LMDB
/// gave up on as `MdbError::Panic`.
pub(crate) fn is_io_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Io(_)
            | Error::Lmdb(
                heed::Error::Io(_)
                    | heed::Error::Mdb(heed::MdbError::Panic | heed::MdbError::Other(_))
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_failures_and_os_errors_poison_data_errors_do_not() {
        let path = Path::new("/store");
        let enospc = || Error::Lmdb(heed::Error::Io(std::io::Error::from_raw_os_error(28)));
        let map_full = || Error::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull));
        let corrupted = || Error::corrupted(3, "checksum mismatch");

        let poison = Poison::default();
        assert!(matches!(
            poison.failed(path, WriteKind::Append, corrupted(), false),
            Error::Corrupted { .. }
        ));
        assert!(matches!(
            poison.failed(path, WriteKind::Append, map_full(), true),
            Error::Lmdb(_)
        ));
        assert!(poison.check().is_ok());
        // A full disk while the transaction's pages are written is an OS error.
        poison.failed(path, WriteKind::Append, enospc(), false);
        assert!(matches!(poison.check(), Err(Error::Poisoned)));

        // Whatever made the commit itself fail poisons.
        let poison = Poison::default();
        let clone = poison.clone();
        poison.failed(
            path,
            WriteKind::Checkpoint,
            Error::Lmdb(heed::Error::Mdb(heed::MdbError::Corrupted)),
            true,
        );
        assert!(matches!(clone.check(), Err(Error::Poisoned)));
    }
}
