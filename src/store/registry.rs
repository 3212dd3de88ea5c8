//! One open environment per path and process.
//!
//! LMDB forbids opening the same environment twice in one process (its locks are per process).
//! The registry hands out the store that is already open instead.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Storage, StorageConfig, UserToken};
use crate::error::{Error, Result};

static OPEN: Mutex<Option<HashMap<PathBuf, Weak<UserToken>>>> = Mutex::new(None);

/// How long opening waits for a store whose last user handle was just dropped to finish closing
/// (a background thread of the store may still be committing or syncing).
const CLOSING_WAIT: Duration = Duration::from_secs(5);

/// A handle on every store open in this process.
pub(crate) fn open_stores() -> Vec<Storage> {
    let mut guard = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    let open = guard.get_or_insert_with(HashMap::new);
    open.retain(|_, weak| weak.strong_count() > 0);
    open.values()
        .filter_map(Weak::upgrade)
        .map(Storage::from_user)
        .collect()
}

/// Creates the directory if needed and returns the open store for it, opening it with `open_new`
/// when it is not open yet.
pub(super) fn open(
    config: StorageConfig,
    open_new: impl Fn(StorageConfig, PathBuf) -> Result<Storage>,
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
    if let Some(token) = open.get(&path).and_then(Weak::upgrade) {
        let storage = Storage::from_user(token);
        let current = &storage.store.config;
        let same = current.encryption_enabled == config.encryption_enabled
            && storage.accepts_master_key(config.master_key.as_ref())
            && current.durability == config.durability;
        if !same {
            return Err(Error::AlreadyOpen { path });
        }
        return Ok(storage);
    }
    let storage = match open_new(config.clone(), path.clone()) {
        // The user let go of the store, but it is still closing on one of its threads.
        Err(Error::Lmdb(heed::Error::EnvAlreadyOpened)) => {
            if let Some(closing) = heed::env_closing_event(&path) {
                closing.wait_timeout(CLOSING_WAIT);
            }
            open_new(config, path.clone())
        }
        other => other,
    }
    .map_err(|e| match e {
        Error::Lmdb(heed::Error::EnvAlreadyOpened) => Error::AlreadyOpen { path: path.clone() },
        other => other,
    })?;
    open.insert(path, Arc::downgrade(storage.user_token()));
    Ok(storage)
}
