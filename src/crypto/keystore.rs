//! The keystore: an LMDB environment of its own in `<store>/keys`, holding each stream's data key
//! wrapped under the master key, and a tombstone for each shredded stream.
//!
//! It is kept apart from the log so that the pages of a destroyed key are never shared with (or
//! copied along with) event pages, and so that it can be backed up and checked on its own. Its
//! layout is part of the file format (`docs/format.md`, "Keystore").

use std::path::{Path, PathBuf};

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, EnvOpenOptions, WithoutTls};

use crate::cipher::aead::WRAPPED_LEN;
use crate::env::{page_size, truncation, Attempt, Commit, WriteGuard, WriteKind};
use crate::error::{Error, Result};
use crate::types::StreamId;

/// Version of the keystore layout.
pub(crate) const KEYSTORE_FORMAT: u32 = 1;
/// Virtual size of the keystore's map: about 12 million streams. The file grows with use only.
const KEYSTORE_MAP_SIZE: usize = 4 << 30;
/// Length of a `keys` value: key version, master version, wrapped key.
pub(crate) const ENTRY_LEN: usize = 8 + WRAPPED_LEN;
/// Length of a `shredded` value: when, and which key version was destroyed.
const TOMBSTONE_LEN: usize = 12;

pub(crate) const META_FORMAT: &str = "format_version";
pub(crate) const META_STORE_ID: &str = "store_id";
pub(crate) const META_MASTER_VERSION: &str = "master_version";
pub(crate) const META_MASTER_CHECK: &str = "master_check";

/// A stream's data key as stored: which key and master-key versions, and the wrapped bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrappedEntry {
    pub key_version: u32,
    pub master_version: u32,
    pub wrapped: [u8; WRAPPED_LEN],
}

impl WrappedEntry {
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[..4].copy_from_slice(&self.key_version.to_le_bytes());
        out[4..8].copy_from_slice(&self.master_version.to_le_bytes());
        out[8..].copy_from_slice(&self.wrapped);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<WrappedEntry> {
        let b: &[u8; ENTRY_LEN] = bytes.try_into().ok()?;
        Some(WrappedEntry {
            key_version: u32::from_le_bytes(b[..4].try_into().ok()?),
            master_version: u32::from_le_bytes(b[4..8].try_into().ok()?),
            wrapped: b[8..].try_into().ok()?,
        })
    }
}

/// What the keystore holds for a stream.
pub(crate) enum Entry {
    Key(WrappedEntry),
    Shredded,
    Missing,
}

/// The open keystore environment and its databases.
pub(crate) struct Keystore {
    pub env: heed::Env<WithoutTls>,
    /// Shared with the store's data environment: a failed keystore write poisons the store.
    guard: WriteGuard,
    pub meta: Database<'static, Str, Bytes>,
    pub keys: Database<'static, Bytes, Bytes>,
    pub shredded: Database<'static, Bytes, Bytes>,
    pub path: PathBuf,
}

impl Keystore {
    /// Opens `dir`, creating it (mode 0700) only when `create` is set.
    pub(crate) fn open(
        dir: &Path,
        create: bool,
        max_readers: u32,
        guard: WriteGuard,
    ) -> Result<Keystore> {
        if !dir.join("data.mdb").exists() {
            if !create {
                return Err(Error::Keystore {
                    path: dir.to_owned(),
                    reason: "missing: the store is encrypted and has events, but its keys directory has no keystore".into(),
                });
            }
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        if let Some(reason) = truncation(dir)? {
            return Err(Error::Keystore {
                path: dir.to_owned(),
                reason,
            });
        }
        let damaged = |e: heed::Error| Error::Keystore {
            path: dir.to_owned(),
            reason: format!("cannot be opened ({e}); it is damaged or truncated"),
        };
        let env = open_env(dir, KEYSTORE_MAP_SIZE, max_readers).map_err(|e| match e {
            Error::Lmdb(e) => damaged(e),
            other => other,
        })?;
        let wtxn = env.write_txn().map_err(damaged)?;
        let (meta, keys, shredded) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let meta = opener.create_database(wtxn, Some("meta"))?;
                let keys = opener.create_database(wtxn, Some("keys"))?;
                let shredded = opener.create_database(wtxn, Some("shredded"))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((meta, keys, shredded)))
            })
            .map_err(damaged)?
            .unwrap_commit();
        Ok(Keystore {
            env,
            guard,
            meta,
            keys,
            shredded,
            path: dir.to_owned(),
        })
    }

    /// Runs `f` in a write transaction of the keystore: refused on a poisoned store, and
    /// poisoning it when the write fails at the I/O level, as every write of the store. The
    /// keystore's map is never grown: a full one is an error.
    pub(crate) fn write<T>(
        &self,
        kind: WriteKind,
        mut f: impl FnMut(&mut heed::RwTxn<'_>) -> Result<Commit<T>>,
    ) -> Result<T> {
        self.guard.poison.check()?;
        let wtxn = self
            .env
            .write_txn()
            .map_err(|e| self.guard.poison.failed(&self.path, kind, e.into(), false))?;
        match self.guard.attempt(&self.path, kind, wtxn, &mut f) {
            Attempt::Done(value) => Ok(value),
            Attempt::MapFull(e) | Attempt::Failed(e) => Err(e),
        }
    }

    /// A keystore error naming this keystore.
    pub(crate) fn damaged(&self, reason: impl Into<String>) -> Error {
        Error::Keystore {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// What the keystore holds for `stream`.
    pub(crate) fn entry(&self, txn: &heed::RoTxn<'_>, stream: StreamId) -> Result<Entry> {
        let key = stream.to_key();
        if self.shredded.get(txn, &key)?.is_some() {
            return Ok(Entry::Shredded);
        }
        match self.keys.get(txn, &key)? {
            Some(bytes) => WrappedEntry::decode(bytes).map(Entry::Key).ok_or_else(|| {
                self.damaged(format!("the key entry of stream {stream} is malformed"))
            }),
            None => Ok(Entry::Missing),
        }
    }

    /// Destroys `stream`'s key and records its tombstone, in the caller's transaction.
    pub(crate) fn shred_in(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        stream: StreamId,
        key_version: u32,
        now_ns: u64,
    ) -> Result<()> {
        let key = stream.to_key();
        self.keys.delete(wtxn, &key)?;
        let mut tomb = [0u8; TOMBSTONE_LEN];
        tomb[..8].copy_from_slice(&now_ns.to_le_bytes());
        tomb[8..].copy_from_slice(&key_version.to_le_bytes());
        self.shredded.put(wtxn, &key, &tomb)?;
        Ok(())
    }

    /// A `u32` of the meta database.
    pub(crate) fn meta_u32(&self, txn: &heed::RoTxn<'_>, name: &str) -> Result<Option<u32>> {
        match self.meta.get(txn, name)? {
            Some(b) => <[u8; 4]>::try_from(b)
                .map(|b| Some(u32::from_le_bytes(b)))
                .map_err(|_| self.damaged(format!("meta entry {name} is malformed"))),
            None => Ok(None),
        }
    }
}

/// Opens (creating if needed) the keystore's environment in `dir`, which must exist: a small
/// environment of its own, so that erasing a key never shares pages with the log (see
/// `crate::crypto`). Its map is fixed (`map_size`, sparse on disk) and never resized, so it needs
/// no gate.
#[allow(unsafe_code)]
fn open_env(dir: &Path, map_size: usize, max_readers: u32) -> Result<heed::Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(map_size.div_ceil(page_size()) * page_size())
        .max_dbs(8)
        .max_readers(max_readers);
    // SAFETY: as for the store's own environment (`crate::env::Env::open`): LMDB keeps its lock file, no
    // WRITE_MAP, no flag that weakens syncing, and the keystore directory is opened at most once
    // per process, because it is opened only while the store's registry lock is held for the
    // store that owns it, and heed refuses a second open of the same path. The map is never
    // resized, so no transaction can see it move. The caller checked the file with
    // `truncation` first.
    let env = unsafe { options.open(dir) }?;
    Ok(env)
}
