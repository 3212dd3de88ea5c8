//! Online, compacting, consistent backups.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use heed::CompactionOption;

use crate::error::{Error, Result};
use crate::store::{Storage, StorageConfig};

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
    /// Whether the store is encrypted (the copy then has its keystore in `DEST/keys`).
    pub encrypted: bool,
    /// Size of the copy's `keys/data.mdb`, in bytes (0 for a store without encryption).
    pub keystore_bytes: u64,
    /// Stream keys in the copy's keystore.
    pub keys: u64,
    /// Shredded streams (tombstones) in the copy's keystore.
    pub shredded: u64,
}

/// Name of a copy while it is being written; renamed to `data.mdb` once complete and synced.
const PARTIAL: &str = "data.mdb.partial";

/// Copies the store into `dest`, a new store directory, while writers go on.
///
/// The copy is LMDB's compacting copy (`mdb_env_copyfd2` with `MDB_CP_COMPACT`): it runs in one
/// read transaction, so it holds exactly the transactions committed before it began, in a file
/// without free pages. It runs while this process holds a read transaction of the store, so
/// the map cannot be resized under it. The file is written as `data.mdb.partial` and synced.
///
/// An encrypted store's keystore (`keys/`) is copied the same way into `dest/keys`, **after**
/// the log. A stream's key is made durable in the keystore before the log transaction that
/// first writes an event of the stream commits, so every stream with events in the log copy has
/// its key in the keystore copy, unless it was shredded in between, and then its events read as
/// shredded in the copy, as they do in the store. Keys created after the log copy began belong
/// to streams without events in the copy, which is harmless. A backup of an encrypted store
/// holds every key that was live when it was taken: a stream shredded later can still be read
/// from it, with the master key. Shredding erases a stream from the store, not from backups.
///
/// Both copies complete, the keystore's is renamed to `dest/keys/data.mdb` first and the log's
/// to `dest/data.mdb` last (each directory synced), so a crash never leaves a `data.mdb` that
/// is incomplete or lacks its keystore. The copy is then opened as a store, with
/// `master_key` for an encrypted one, to check it and read its head.
///
/// The copy holds the store's records as they are, damaged ones included: opening it reads
/// no payload. Run [`verify`](super::verify) on the copy to know that it is sound (`varve
/// backup` does, and keeps no copy of a damaged store unless asked to).
///
/// # Errors
///
/// - [`Error::InvalidConfig`] when the store is encrypted and `master_key` is `None`;
///   [`Error::WrongMasterKey`] when `master_key` is not the key in force (nothing is copied),
///   or when the keystore copy does not open with it (the key was rotated during the backup:
///   the copy opens with the new key).
/// - [`Error::Io`] when `dest` exists and is not an empty directory, or cannot be written.
/// - [`Error::Lmdb`] when a copy fails (the partial files are removed).
/// - Any error of [`Storage::open`] on the copy.
pub fn backup(storage: &Storage, dest: &Path, master_key: Option<&[u8; 32]>) -> Result<BackupInfo> {
    let crypto = storage.log().crypto.as_ref();
    if let Some(crypto) = crypto {
        let Some(key) = master_key else {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "{} is encrypted: give its master key, with which the backup is checked",
                    storage.path().display()
                ),
            });
        };
        if !crypto.accepts(key) {
            return Err(Error::WrongMasterKey {
                path: storage.path().to_owned(),
                master_version: crypto.master_version(),
            });
        }
    }
    prepare_dest(dest)?;
    let partial = dest.join(PARTIAL);
    write_partial(&partial, |file| copy(storage, file))?;
    let keys_dir = dest.join(crate::crypto::KEYSTORE_DIR);
    let keys_partial = keys_dir.join(PARTIAL);
    if let Some(crypto) = crypto {
        let keystore_copy = fs::DirBuilder::new()
            .mode(0o700)
            .create(&keys_dir)
            .map_err(Error::from)
            .and_then(|()| {
                write_partial(&keys_partial, |file| {
                    // The keystore's map is fixed and never resized: no retry needed.
                    Ok(crypto
                        .keystore()
                        .env
                        .copy_to_file(file, CompactionOption::Enabled)?)
                })
            })
            .and_then(|()| {
                fs::rename(&keys_partial, keys_dir.join("data.mdb"))?;
                Ok(File::open(&keys_dir)?.sync_all()?)
            });
        if let Err(e) = keystore_copy {
            let _ = fs::remove_file(&partial);
            let _ = fs::remove_file(&keys_partial);
            let _ = fs::remove_dir(&keys_dir);
            return Err(e);
        }
    }
    let data = dest.join("data.mdb");
    fs::rename(&partial, &data)?;
    File::open(dest)?.sync_all()?;

    let bytes = fs::metadata(&data)?.len();
    let keystore_bytes = match crypto {
        Some(_) => fs::metadata(keys_dir.join("data.mdb"))?.len(),
        None => 0,
    };
    let copy = Storage::open(StorageConfig {
        path: dest.to_owned(),
        map_size: usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .max(storage.config().map_size),
        encryption_enabled: crypto.is_some(),
        master_key: master_key.copied(),
        ..Default::default()
    })?;
    let txn = copy.env.read_txn()?;
    let raw = txn.raw();
    let head = copy.log().dbs.log.last(raw)?.map_or(0, |(seq, _)| seq);
    let events = copy.log().dbs.log.len(raw)?;
    let (keys, shredded) = match &copy.log().crypto {
        Some(c) => {
            let ks = c.keystore();
            let ktxn = ks.env.read_txn()?;
            (ks.keys.len(&ktxn)?, ks.shredded.len(&ktxn)?)
        }
        None => (0, 0),
    };
    Ok(BackupInfo {
        dest: dest.to_owned(),
        bytes,
        head,
        events,
        encrypted: crypto.is_some(),
        keystore_bytes,
        keys,
        shredded,
    })
}

/// Creates `partial` (mode 0600), fills it with `fill`, and syncs it; removes it on failure.
fn write_partial(partial: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)?;
    let written = fill(&mut file).and_then(|()| Ok(file.sync_all()?));
    drop(file);
    if written.is_err() {
        let _ = fs::remove_file(partial);
    }
    written
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
