//! One open environment per path and process.
//!
//! LMDB forbids opening the same environment twice in one process (its locks are per process).
//! The registry hands out the store that is already open instead.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{Shared, Storage, StorageConfig};
use crate::error::{Error, Result};

static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

/// Creates the directory if needed and returns the open store for it, opening it with `open_new`
/// when it is not open yet.
pub(super) fn open(
    config: StorageConfig,
    open_new: impl FnOnce(StorageConfig, PathBuf) -> Result<Storage>,
) -> Result<Storage> {
    if !config.path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.path)?;
    }
    let path = config.path.canonicalize()?;
    let mut guard = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    let open = guard.get_or_insert_with(HashMap::new);
    open.retain(|_, weak| weak.strong_count() > 0);
    if let Some(shared) = open.get(&path).and_then(Weak::upgrade) {
        let same = shared.config.encryption_enabled == config.encryption_enabled
            && shared.config.master_key == config.master_key
            && shared.config.durability == config.durability;
        if !same {
            return Err(Error::AlreadyOpen { path });
        }
        return Ok(Storage {
            env: shared.env.clone(),
            shared,
        });
    }
    let storage = open_new(config, path.clone()).map_err(|e| match e {
        Error::Lmdb(heed::Error::EnvAlreadyOpened) => Error::AlreadyOpen { path: path.clone() },
        other => other,
    })?;
    open.insert(path, Arc::downgrade(&storage.shared));
    Ok(storage)
}
