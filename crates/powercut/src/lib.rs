//! A FUSE filesystem that loses what was not synced, for power-cut tests.
//!
//! A killed process loses nothing the kernel already has: its page cache outlives the process.
//! A power cut loses the page cache. [`PowerCut`] mounts a filesystem that passes every operation
//! through to a backing directory, except file contents: a write stays in memory (in pages of
//! [`PAGE`] bytes) until `fsync` or `fdatasync` of its file makes it durable, and a write through a
//! descriptor opened with `O_DSYNC` or `O_SYNC` is durable when it returns. [`PowerCut::cut`]
//! turns the power off: every unsynced page is lost, or, with [`Keep::Random`], reaches the disk
//! or not page by page (the kernel may write dirty pages back at any time before the power goes,
//! in any order), or, with [`Keep::Sectors`], sector by sector (a page being written back when
//! the power went is torn), and every later request fails with `EIO`. After the program under test is
//! killed and the filesystem unmounted, the backing directory holds what a disk would have
//! kept, and the program's store is opened there.
//!
//! Reads see the file as it is now, so memory maps work (LMDB reads through one); writes to a
//! shared writable map arrive as ordinary writes when the kernel writes the pages back.
//!
//! What it does not model: directory entries (creating, renaming and removing files) reach the
//! backing directory at once, as on a filesystem that journals metadata before data; a rename
//! first syncs the renamed file. A sector (512 bytes) is written whole or not at all. An `fsync`
//! of a descriptor opened with `O_DSYNC` syncs nothing more: the kernel sends one after each
//! write through such a descriptor, and treating it as a sync of the whole file would make
//! durable what the program never synced.
//!
//! Mounting needs `/dev/fuse` and root (the mount is made directly, without `fusermount`).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let backing = tempfile::tempdir()?;
//! let mountpoint = tempfile::tempdir()?;
//! let fs = powercut::PowerCut::mount(backing.path(), mountpoint.path())?;
//! std::fs::write(mountpoint.path().join("a"), b"never synced")?;
//! fs.cut(powercut::Keep::Nothing)?;
//! fs.unmount()?;
//! assert_eq!(std::fs::read(backing.path().join("a"))?, b"");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod file;
mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use file::{PAGE, SECTOR};
pub use fs::{Counters, CutReport};

/// Which unsynced pages reach the disk when the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// None: the page cache is lost whole.
    Nothing,
    /// Each page whole or not at all, independently, with probability one half, drawn from this
    /// seed.
    Random(u64),
    /// Half the pages not at all; of the others, each 512-byte sector independently, with
    /// probability one half: a page being written back when the power went is torn.
    Sectors(u64),
}

/// A mounted power-cut filesystem. Unmounted when dropped.
pub struct PowerCut {
    state: Arc<Mutex<fs::State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for PowerCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCut")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl PowerCut {
    /// Mounts the filesystem at `mountpoint` (an empty directory) over `backing`.
    ///
    /// # Errors
    ///
    /// When either path is not a directory, or the mount fails (no `/dev/fuse`, not root).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerCut> {
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        let state = Arc::new(Mutex::new(fs::State::new(backing)));
        let options = [
            fuser::MountOption::FSName("powercut".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(fs::LossyFs(state.clone()), &mountpoint, &options)?;
        Ok(PowerCut {
            state,
            session: Some(session),
            mountpoint,
        })
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unsynced pages held in memory now.
    pub fn dirty_pages(&self) -> usize {
        self.lock().dirty_pages()
    }

    /// What the filesystem has seen so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters()
    }

    /// Cuts the power: unsynced pages are lost or kept as `keep` says, and every later request
    /// fails with `EIO`. A second cut finds nothing left to lose.
    ///
    /// # Errors
    ///
    /// When a kept page cannot be written to the backing file.
    pub fn cut(&self, keep: Keep) -> io::Result<CutReport> {
        self.lock().cut(keep)
    }

    /// Arms a cut at a point chosen by count: the power goes off just before the filesystem's
    /// `ops`-th write or sync (counting from when it was mounted), which is refused. Returns at
    /// once; [`PowerCut::cut_report`] tells when it has happened.
    pub fn arm(&self, ops: u64, keep: Keep) {
        self.lock().arm(ops, keep);
    }

    /// What the cut did, once the power is off.
    pub fn cut_report(&self) -> Option<CutReport> {
        self.lock().cut_report()
    }

    /// Unmounts the filesystem and stops serving it. Processes using it should be gone first.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the unmount (`EBUSY` while a file on it is open); the filesystem
    /// is then detached lazily when this value is dropped.
    pub fn unmount(mut self) -> io::Result<()> {
        umount(&self.mountpoint, 0)?;
        if let Some(session) = self.session.take() {
            // The kernel closes the connection of an unmounted filesystem; that ends the FUSE
            // server's loop.
            session.join();
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, fs::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unmounts `path` with `umount2(2)` and `flags`.
fn umount(path: &Path, flags: i32) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; umount2 reads it
    // and touches no memory of ours.
    if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // A lazy unmount detaches the filesystem even with files open on it. The FUSE
            // server's thread serves those files until the last one closes; nothing waits for it.
            let _ = umount(&self.mountpoint, libc::MNT_DETACH);
            drop(session);
        }
    }
}
