//! Opening a store: the LMDB environment, its databases, and the format checks.

mod config;
mod env;
mod meta;
mod registry;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, PutFlags};
use tokio::sync::watch;

pub use crate::index::DEFAULT_INDEX_INTERVAL;
pub use config::{
    Durability, StorageConfig, DEFAULT_MAP_SIZE, DEFAULT_MAX_EVENT_SIZE, MAX_EVENT_SIZE_LIMIT,
};
pub(crate) use env::{open_keystore_env, truncation, Commit};
pub use env::{Env, ReadTxn};
pub use meta::FORMAT_VERSION;

use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::index::deferred::Snapshot;
use crate::index::tail::Tail;
use crate::index::Head;
use crate::log::group::Committer;
use crate::log::record;
use crate::types::{IntoStreamId, StreamId};

/// The LMDB databases of a store (see `docs/format.md`).
pub(crate) struct Dbs {
    pub meta: Database<'static, Str, Bytes>,
    pub log: Database<'static, U64<BigEndian>, Bytes>,
    pub heads: Database<'static, Bytes, Bytes>,
    pub stream_index: Database<'static, Bytes, U64<BigEndian>>,
    pub event_ids: Database<'static, Bytes, U64<BigEndian>>,
    pub checkpoints: Database<'static, Str, Bytes>,
    pub log_large: Database<'static, U64<BigEndian>, Bytes>,
    /// Records longer than this go to `log_large` (see `record::inline_limit`).
    pub inline_limit: usize,
}

impl Dbs {
    /// The record a `log` value stands for: the value itself, or the large record its stub
    /// points at.
    #[inline]
    pub(crate) fn record<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
        value: &'t [u8],
    ) -> Result<&'t [u8]> {
        if !record::is_stub(seq, value)? {
            return Ok(value);
        }
        by_bytes(self.log_large)
            .get(txn, &seq.to_be_bytes())?
            .ok_or_else(|| Error::corrupted(seq, "large record missing behind its stub"))
    }

    /// The record with global sequence `seq`.
    #[inline]
    pub(crate) fn get_record<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
    ) -> Result<Option<&'t [u8]>> {
        match by_bytes(self.log).get(txn, &seq.to_be_bytes())? {
            Some(value) => self.record(txn, seq, value).map(Some),
            None => Ok(None),
        }
    }

    /// Stores a record at the end of the log: inline, or in `log_large` behind a stub.
    pub(crate) fn put_record(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        seq: u64,
        rec: &[u8],
    ) -> Result<()> {
        let key = seq.to_be_bytes();
        if rec.len() <= self.inline_limit {
            by_bytes(self.log).put_with_flags(wtxn, PutFlags::APPEND, &key, rec)?;
        } else {
            by_bytes(self.log_large).put_with_flags(wtxn, PutFlags::APPEND, &key, rec)?;
            by_bytes(self.log).put_with_flags(wtxn, PutFlags::APPEND, &key, &record::stub(seq))?;
        }
        Ok(())
    }

    /// Stores `id → seq` in `event_ids`, refusing an id already there (LMDB's `KeyExist`).
    pub(crate) fn put_event_id(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        id: u128,
        seq: u64,
    ) -> Result<()> {
        self.event_ids.remap_data_type::<Bytes>().put_with_flags(
            wtxn,
            PutFlags::NO_OVERWRITE,
            &id.to_be_bytes(),
            &seq.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Stores `(stream, version) → seq` in `stream_index`.
    pub(crate) fn put_index_entry(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        key: &[u8],
        seq: u64,
    ) -> Result<()> {
        self.stream_index
            .remap_data_type::<Bytes>()
            .put(wtxn, key, &seq.to_be_bytes())?;
        Ok(())
    }
}

/// A `log` or `log_large` handle taking its keys as the big-endian bytes `U64<BigEndian>` would
/// encode: heed's integer codecs allocate a `Vec` for every encoded key or value, which was a
/// `malloc` and a `free` per point read and per put on the hot paths (perf of a many-streams
/// transaction). The bytes stored are the same.
#[inline]
fn by_bytes(db: Database<'static, U64<BigEndian>, Bytes>) -> Database<'static, Bytes, Bytes> {
    db.remap_key_type::<Bytes>()
}

/// State shared by every handle on one open store.
///
/// Fields drop in declaration order: the keystore (in `crypto`) closes before the data
/// environment, because a reopen waits for the data environment's closing event and then opens
/// both.
pub(crate) struct Shared {
    /// The keys of an encrypted store; `None` for a plain one.
    pub crypto: Option<Crypto>,
    pub dbs: Dbs,
    pub env: Env,
    pub config: StorageConfig,
    pub path: PathBuf,
    pub store_id: u128,
    pub head: watch::Sender<u64>,
    pub unaligned_copies: AtomicU64,
    pub commits: AtomicU64,
    pub committed_batches: AtomicU64,
    pub stale_readers_cleared: u64,
    pub poisoned: AtomicBool,
    pub committer: Arc<Committer>,
    /// The events after the index watermark (see [`crate::index::tail`]).
    pub tail: std::sync::RwLock<Tail>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.committer.close();
        // Index what the tail holds, so that the next open has nothing to read back. Best
        // effort: the next open recovers the tail from the log anyway.
        if !self.poisoned.load(Ordering::Acquire) {
            if let Err(e) = crate::index::deferred::flush(self) {
                tracing::warn!(path = %self.path.display(), error = %e, "indexing the tail at close failed; the next open reads it back");
            }
        }
        if let Durability::Relaxed { .. } = self.config.durability {
            // Commits did not sync: flush them before LMDB closes the environment.
            if let Err(e) = self.env.force_sync() {
                tracing::error!(path = %self.path.display(), error = %e, "final sync failed");
            }
        }
    }
}

/// An open store. Cheap to clone; every clone is the same store.
///
/// Opening a path that is already open in this process returns the same store (see
/// [`Storage::open`]).
#[derive(Clone)]
pub struct Storage {
    /// The LMDB environment, for read transactions: `storage.env.read_txn()`.
    pub env: Env,
    pub(crate) shared: Arc<Shared>,
    /// Held by every handle a user has (not by the store's own threads), so that the registry
    /// knows when the user let go of the store even while a background thread still finishes
    /// with it.
    user: Option<Arc<UserToken>>,
}

/// See [`Storage::user`](Storage): one per open store, shared by the user's handles.
pub(crate) struct UserToken {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.shared.path)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

/// Counters and sizes of an open store, readable without any metrics system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Global sequence of the last committed event (0 when the log is empty).
    pub head: u64,
    /// Current size of the memory map in bytes.
    pub map_size: usize,
    /// Bytes of the map in use (last used page, times the page size).
    pub used_bytes: u64,
    /// Times this process grew the map.
    pub map_resizes: u64,
    /// Payloads copied into an aligned buffer because they were not 16-byte aligned in the map.
    /// Zero-copy reads leave this unchanged.
    pub unaligned_copies: u64,
    /// Write transactions this process committed for appends (one fsync each).
    pub commits: u64,
    /// Batches (`append` or `append_batch` calls) those transactions carried; divided by
    /// `commits`, the average commit group size.
    pub committed_batches: u64,
    /// Reader slots of dead processes that LMDB still held and that were cleared when this
    /// process opened the store.
    pub stale_readers_cleared: u64,
    /// Whether the store is encrypted.
    pub encrypted: bool,
    /// Stream keys found in the key cache (encrypted stores).
    pub key_cache_hits: u64,
    /// Stream keys that had to be read from the keystore and unwrapped (encrypted stores).
    pub key_cache_misses: u64,
    /// The sequence up to which the stream index and heads on disk are written, as far as this
    /// process knows; later events are indexed in memory until the next index flush.
    pub indexed_through: u64,
}

impl Storage {
    /// A handle for the store's own threads: it does not keep the store open for the registry.
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Storage {
        Storage {
            env: shared.env.clone(),
            shared,
            user: None,
        }
    }

    /// A user's handle on an open store.
    pub(crate) fn from_user(token: Arc<UserToken>) -> Storage {
        Storage {
            env: token.shared.env.clone(),
            shared: Arc::clone(&token.shared),
            user: Some(token),
        }
    }

    /// The token that the registry tracks for this store.
    pub(crate) fn user_token(&self) -> Option<&Arc<UserToken>> {
        self.user.as_ref()
    }

    /// Opens the store at `config.path`, creating it (directory mode 0700) when missing.
    ///
    /// Opening a path that is already open in this process returns a handle on the same store
    /// when encryption and durability are the same (the first opener's sizes, limits and timeouts
    /// stay in force), and [`Error::AlreadyOpen`] otherwise.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidConfig`] for an invalid configuration (encryption without a key, ...),
    ///   before anything is created on disk.
    /// - [`Error::FormatVersion`] or [`Error::LayoutMismatch`] for a store written by an
    ///   incompatible build.
    /// - [`Error::AlreadyOpen`], [`Error::Io`], [`Error::Lmdb`].
    ///
    /// ```
    /// use varvedb::storage::{Storage, StorageConfig};
    /// let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().join("store"), ..Default::default() })?;
    /// assert_eq!(storage.head(), 0);
    /// # Ok::<(), varvedb::error::Error>(())
    /// ```
    pub fn open(config: StorageConfig) -> Result<Storage> {
        config.validate()?;
        registry::open(config, open_new)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.shared.config
    }

    /// The store's random 128-bit identity, fixed at creation.
    pub fn store_id(&self) -> u128 {
        self.shared.store_id
    }

    /// Global sequence of the last committed event (0 when the log is empty). Includes appends of
    /// this process; appends by other processes show after the next read transaction.
    pub fn head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    /// A receiver of the committed head: it changes only after a commit, so every sequence up to
    /// the value it holds is readable. Starts at the head read from disk.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// The current version of a stream (0 when it has no events), in a fresh read transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the stream's head entry is damaged; [`Error::Lmdb`].
    pub fn stream_version(&self, stream: impl IntoStreamId) -> Result<u64> {
        let stream = stream.into_stream_id()?;
        let txn = self.env.read_txn()?;
        Ok(self.head_of(txn.raw(), stream)?.map_or(0, |h| h.version))
    }

    /// Writes the stream index and stream heads of every event appended since the last index
    /// flush, now, in one durable transaction, and returns the sequence they now reach.
    ///
    /// Appends write only the log; the index follows every
    /// [`StorageConfig::index_interval`] events, on the store's background thread, and when the
    /// store is closed. Reads never need this: events after the index's watermark are found
    /// through memory. Calling it bounds what a reopen after a crash reads back from the log.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], [`Error::MapFull`], [`Error::Lmdb`]; [`Error::Corrupted`] when an
    /// unindexed record written by another process has a damaged header.
    ///
    /// ```
    /// use varvedb::storage::{Storage, StorageConfig};
    /// use varvedb::engine::Writer;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// let mut writer = Writer::<u32>::new(storage.clone());
    /// writer.append(1, 1, 10)?;
    /// assert_eq!(storage.stats().indexed_through, 0);
    /// assert_eq!(storage.flush_index()?, 1);
    /// assert_eq!(storage.stats().indexed_through, 1);
    /// # Ok::<(), varvedb::error::Error>(())
    /// ```
    pub fn flush_index(&self) -> Result<u64> {
        self.shared.check_not_poisoned()?;
        match self.shared.committer.flush_index(self)? {
            Some(mark) => Ok(mark),
            None => {
                let txn = self.env.read_txn()?;
                crate::index::deferred::watermark(&self.shared.dbs, txn.raw())
            }
        }
    }

    /// Counters and sizes of the store.
    pub fn stats(&self) -> Stats {
        let (info, page_size) = self.env.info();
        let keys = self
            .shared
            .crypto
            .as_ref()
            .map(Crypto::stats)
            .unwrap_or_default();
        Stats {
            head: self.head(),
            map_size: info.map_size,
            used_bytes: (info.last_page_number as u64 + 1) * u64::from(page_size),
            map_resizes: self.env.resizes(),
            unaligned_copies: self.shared.unaligned_copies.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
            committed_batches: self.shared.committed_batches.load(Ordering::Relaxed),
            stale_readers_cleared: self.shared.stale_readers_cleared,
            encrypted: self.shared.crypto.is_some(),
            key_cache_hits: keys.hits,
            key_cache_misses: keys.misses,
            indexed_through: crate::index::deferred::read(&self.shared.tail).flushed_mark(),
        }
    }

    /// Number of shredded streams (0 for a plain store or when the keystore cannot be read).
    pub(crate) fn shredded_streams(&self) -> u64 {
        self.shared
            .crypto
            .as_ref()
            .map_or(0, |c| c.shredded_count().unwrap_or(0))
    }

    /// Whether the store is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.shared.crypto.is_some()
    }

    /// Crypto-shreds a stream: destroys its data key and records a tombstone, in one durable
    /// keystore transaction. Afterwards its events read as [`Error::Shredded`] (iterations,
    /// subscriptions and processors go on past them), and appends to it fail with
    /// [`Error::StreamShredded`]: the stream id is burned. Other streams are untouched. Returns
    /// `false` when the stream was already shredded. A stream with no events yet is burned too.
    ///
    /// The destroyed key's wrapped bytes stay in the keystore's freed pages until they are
    /// reused; call [`Storage::rotate_master_key`] afterwards so that whoever holds the files
    /// and the master key can no longer unwrap them (see the README's security section).
    ///
    /// # Errors
    ///
    /// [`Error::NotEncrypted`] on a plain store, [`Error::InvalidStreamId`], [`Error::Lmdb`].
    ///
    /// ```
    /// use varvedb::storage::{Storage, StorageConfig};
    /// use varvedb::engine::{Reader, Writer};
    /// use varvedb::error::Error;
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    /// pub struct Profile { pub email: String }
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig {
    ///     path: dir.path().into(),
    ///     encryption_enabled: true,
    ///     master_key: Some([7; 32]),
    ///     ..Default::default()
    /// })?;
    /// let mut writer = Writer::<Profile>::new(storage.clone());
    /// writer.append(42, 1, Profile { email: "ada@example.com".into() })?;
    /// assert!(storage.shred_stream(42)?);
    /// let txn = storage.env.read_txn()?;
    /// let read = Reader::<Profile>::new(storage.clone()).get(&txn, 1);
    /// assert!(matches!(read, Err(Error::Shredded { seq: 1, .. })));
    /// assert!(matches!(
    ///     writer.append(42, 2, Profile { email: "again@example.com".into() }),
    ///     Err(Error::StreamShredded { .. })
    /// ));
    /// # Ok::<(), varvedb::error::Error>(())
    /// ```
    pub fn shred_stream(&self, stream: impl IntoStreamId) -> Result<bool> {
        let stream = stream.into_stream_id()?;
        self.crypto()?.shred(stream)
    }

    /// Re-wraps every live stream key under `new_master_key` in one durable keystore
    /// transaction, and makes it the key in force: from then on the store opens only with the
    /// new key, and the old one is no longer needed (discard it). Killed before the transaction
    /// commits, the store is unchanged and opens with the old key. Returns the number of stream
    /// keys re-wrapped.
    ///
    /// # Errors
    ///
    /// [`Error::NotEncrypted`] on a plain store, [`Error::Keystore`] when a stored key fails to
    /// unwrap (nothing is changed then), [`Error::Lmdb`].
    ///
    /// ```
    /// use varvedb::storage::{Storage, StorageConfig};
    /// let dir = tempfile::tempdir()?;
    /// let config = StorageConfig {
    ///     path: dir.path().into(),
    ///     encryption_enabled: true,
    ///     master_key: Some([1; 32]),
    ///     ..Default::default()
    /// };
    /// let storage = Storage::open(config.clone())?;
    /// storage.rotate_master_key([2; 32])?;
    /// drop(storage);
    /// assert!(matches!(Storage::open(config.clone()), Err(varvedb::error::Error::WrongMasterKey { .. })));
    /// Storage::open(StorageConfig { master_key: Some([2; 32]), ..config })?;
    /// # Ok::<(), varvedb::error::Error>(())
    /// ```
    pub fn rotate_master_key(&self, new_master_key: [u8; 32]) -> Result<u64> {
        let new = zeroize::Zeroizing::new(new_master_key);
        self.crypto()?.rotate(&new)
    }

    /// Version of the master key in force: 1 at creation, one more per rotation. `None` for a
    /// plain store.
    pub fn master_key_version(&self) -> Option<u32> {
        self.shared.crypto.as_ref().map(Crypto::master_version)
    }

    /// Whether `key` is the master key in force (the registry's check when a store is opened
    /// twice in one process).
    pub(crate) fn accepts_master_key(&self, key: Option<&[u8; 32]>) -> bool {
        match (&self.shared.crypto, key) {
            (Some(crypto), Some(key)) => crypto.accepts(key),
            (None, None) => true,
            _ => false,
        }
    }

    fn crypto(&self) -> Result<&Crypto> {
        self.shared
            .crypto
            .as_ref()
            .ok_or_else(|| Error::NotEncrypted {
                path: self.shared.path.clone(),
            })
    }

    /// Flushes the data file to disk. With [`Durability::Immediate`] (the default) every append is
    /// already durable when it returns; with [`Durability::Relaxed`] this makes every append that
    /// returned so far survive power loss.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`] when the flush fails.
    pub fn sync(&self) -> Result<()> {
        self.env.force_sync()
    }

    /// The head of `stream` as `txn` sees it: the index on disk merged with the unindexed tail.
    pub(crate) fn head_of(&self, txn: &heed::RoTxn<'_>, stream: StreamId) -> Result<Option<Head>> {
        crate::index::deferred::head_in(&self.shared, txn, stream)
    }

    /// Publishes a new committed head to subscribers. Commits are serialised by LMDB, so a
    /// sequence is published only after every lower one is committed.
    pub(crate) fn publish(&self, last_seq: u64) {
        self.shared.head.send_if_modified(|head| {
            if last_seq > *head {
                *head = last_seq;
                true
            } else {
                false
            }
        });
    }
}

/// Opens a store that is not open in this process yet.
fn open_new(mut config: StorageConfig, path: PathBuf) -> Result<Storage> {
    let env = Env::open(&path, &config)?;
    let stale = env.heed.clear_stale_readers()?;
    if stale > 0 {
        tracing::info!(stale, path = %path.display(), "cleared stale LMDB reader slots");
    }
    let meta::Opened {
        dbs,
        store_id,
        encrypted,
        empty,
    } = meta::open_databases(&env, &path, config.encryption_enabled)?;
    // The master key moves into the cipher context; the kept configuration does not hold it.
    let master_key = config.master_key.take().map(zeroize::Zeroizing::new);
    let crypto = match (encrypted, &master_key) {
        (true, Some(key)) => Some(Crypto::open(
            &path,
            &path.join(crate::crypto::KEYSTORE_DIR),
            store_id,
            key,
            empty,
            config.max_readers,
            config.key_cache_capacity,
        )?),
        _ => None,
    };
    drop(master_key);
    // The events after the index watermark, read back from the log.
    let (head, tail) = {
        let txn = env.read_txn()?;
        let snap = Snapshot::of(&dbs, txn.raw())?;
        if snap.watermark > snap.head {
            return Err(Error::Corrupted {
                seq: snap.head + 1,
                reason: format!(
                    "the index watermark ({}) is past the end of the log ({}): events are missing",
                    snap.watermark, snap.head
                ),
            });
        }
        let mut tail = Tail::new(snap.watermark);
        tail.catch_up(&dbs, txn.raw(), snap.watermark, snap.head)
            .map_err(|e| match e {
                Error::Corrupted { seq, reason } => Error::Corrupted {
                    seq,
                    reason: format!("{reason} (in the unindexed tail, read back at open: without it the stream index cannot be completed; restore the store from a backup)"),
                },
                other => other,
            })?;
        (snap.head, tail)
    };
    let (head_tx, _) = watch::channel(head);
    let config_group = config.group_commit;
    let sync_interval = match config.durability {
        Durability::Relaxed { sync_interval } => sync_interval,
        Durability::Immediate => None,
    };
    let shared = Arc::new(Shared {
        dbs,
        env: env.clone(),
        config,
        path,
        store_id,
        head: head_tx,
        unaligned_copies: AtomicU64::new(0),
        commits: AtomicU64::new(0),
        committed_batches: AtomicU64::new(0),
        stale_readers_cleared: stale as u64,
        poisoned: AtomicBool::new(false),
        committer: Arc::new(Committer::new(config_group)),
        crypto,
        tail: std::sync::RwLock::new(tail),
    });
    // A tail longer than the interval (a process killed before it flushed): index it now.
    let unflushed = crate::index::deferred::read(&shared.tail).unflushed();
    if unflushed >= shared.config.index_interval.max(1) {
        // The tail is complete in memory, so a failed flush (a full disk, say) must not keep
        // the store from opening: the next flush tries again.
        if let Err(e) = crate::index::deferred::flush(&shared) {
            tracing::warn!(error = %e, unflushed, "index flush at open failed; the store stays usable");
        }
    }
    if let Some(interval) = sync_interval {
        spawn_syncer(Arc::downgrade(&shared), interval);
    }
    crate::metrics::store_opened(&shared);
    drop(env);
    Ok(Storage::from_user(Arc::new(UserToken { shared })))
}

/// Syncs a store opened with `Durability::Relaxed` every `interval`, until it is closed.
fn spawn_syncer(weak: std::sync::Weak<Shared>, interval: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("varvedb-sync".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if let Err(e) = shared.env.force_sync() {
                tracing::error!(path = %shared.path.display(), error = %e, "periodic sync failed; store poisoned until reopened");
                shared.poisoned.store(true, Ordering::Release);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the sync thread; call Storage::sync yourself");
    }
}

impl Shared {
    pub(crate) fn check_not_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }
}
