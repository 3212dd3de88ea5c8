//! Online, compacting, consistent backups.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use heed::CompactionOption;

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageConfig};

/// What [`backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupInfo {
    /// The new store's directory.
    pub dest: PathBuf,
    /// Size of the copy's `data.mdb`, in bytes.
    pub bytes: u64,
    /// Last sequence in the copy: the copy holds exactly the events `1..=head`.
    pub head: u64,
    /// Events in the copy.
    pub events: u64,
}

/// Name of the copy while it is being written; renamed to `data.mdb` once complete and synced.
const PARTIAL: &str = "data.mdb.partial";

/// Copies the store into `dest`, a new store directory, while writers go on.
///
/// The copy is LMDB's compacting copy (`mdb_env_copyfd2` with `MDB_CP_COMPACT`): it runs in one
/// read transaction, so it holds exactly the transactions committed before it began, in a file
/// without free pages. It runs while this process holds a read transaction of the store, so
/// the map cannot be resized under it. The file is written as `data.mdb.partial`, synced, then
/// renamed to `data.mdb` (and the directory synced), so a crash never leaves a `data.mdb` that
/// is incomplete. The copy is then opened as a store to check it and read its head.
///
/// # Errors
///
/// - [`Error::Io`] when `dest` exists and is not an empty directory, or cannot be written.
/// - [`Error::Lmdb`] when the copy fails (the partial file is removed).
/// - Any error of [`Storage::open`] on the copy.
pub fn backup(storage: &Storage, dest: &Path) -> Result<BackupInfo> {
    prepare_dest(dest)?;
    let partial = dest.join(PARTIAL);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    let copied = copy(storage, &mut file).and_then(|()| Ok(file.sync_all()?));
    drop(file);
    if let Err(e) = copied {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    let data = dest.join("data.mdb");
    fs::rename(&partial, &data)?;
    File::open(dest)?.sync_all()?;
    // BACKUP OF THE KEYSTORE (encrypted stores): copy `<store>/keys` into `<dest>/keys` here,
    // consistently with the data copy.

    let bytes = fs::metadata(&data)?.len();
    let copy = Storage::open(StorageConfig {
        path: dest.to_owned(),
        map_size: usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .max(storage.config().map_size),
        ..Default::default()
    })?;
    let txn = copy.env.read_txn()?;
    let raw = txn.raw();
    let head = copy.shared.dbs.log.last(raw)?.map_or(0, |(seq, _)| seq);
    let events = copy.shared.dbs.log.len(raw)?;
    Ok(BackupInfo {
        dest: dest.to_owned(),
        bytes,
        head,
        events,
    })
}

/// Creates `dest` (mode 0700), or accepts it when it is an empty directory.
fn prepare_dest(dest: &Path) -> Result<()> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "backup destination {} is not empty; give a new directory",
                        dest.display()
                    ),
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)?),
        Err(e) => Err(Error::Io(std::io::Error::new(
            e.kind(),
            format!("backup destination {}: {e}", dest.display()),
        ))),
    }
}

/// Runs LMDB's compacting copy into `file` while holding a read transaction, which keeps this
/// process from resizing the map during the copy. Retries when another process grew the map
/// between the two transactions' starts.
fn copy(storage: &Storage, file: &mut File) -> Result<()> {
    let mut attempts = 0;
    loop {
        let txn = storage.env.read_txn()?;
        let result = storage
            .env
            .heed
            .copy_to_file(file, CompactionOption::Enabled);
        drop(txn);
        match result {
            Err(heed::Error::Mdb(heed::MdbError::MapResized)) if attempts < 3 => {
                attempts += 1;
                file.set_len(0)?;
                std::io::Seek::rewind(file)?;
            }
            other => return Ok(other?),
        }
    }
}
