//! The store: [`Storage`], the handle every part of the API starts from, and what one open
//! store is made of ([`Store`]): its log, stream index and write path, the processors'
//! checkpoints, and its configuration.

mod config;
mod open;
mod registry;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

pub use config::{
    Durability, StorageConfig, DEFAULT_MAP_SIZE, DEFAULT_MAX_EVENT_SIZE, MAX_EVENT_SIZE_LIMIT,
};
pub(crate) use registry::open_stores;
pub use stats::Stats;

use crate::crypto::Crypto;
use crate::env::{Env, ReadTxn, WriteKind};
use crate::error::{Error, Result};
use crate::format::index::Head;
use crate::index::StreamIndex;
use crate::log::Log;
use crate::metrics::handles::{checkpoints_committed, StoreValues};
use crate::subscribe::CheckpointBoard;
use crate::types::{Appended, IntoStreamId, StreamId};
use crate::write::{Done, Request, Sequencer, WritePath};

/// One open store, shared by every handle on it.
pub(crate) struct Store {
    /// The write path, which owns the commit thread; closed first when the store drops.
    pub(crate) writes: Arc<WritePath>,
    pub(crate) log: Arc<Log>,
    pub(crate) index: Arc<StreamIndex>,
    /// Processors' checkpoints waiting to ride along with a commit.
    pub(crate) checkpoints: Arc<CheckpointBoard>,
    pub(crate) config: StorageConfig,
    pub(crate) path: PathBuf,
    pub(crate) stale_readers_cleared: u64,
    /// Payloads copied because they were misaligned in the map.
    pub(crate) unaligned_copies: AtomicU64,
    /// Where appends go when the store replicates a cluster's log; unset, the write path
    /// orders them.
    pub(crate) sequencer: std::sync::OnceLock<Arc<dyn Sequencer>>,
}

impl Store {
    /// Appends one batch, blocking the thread until it is durable (or failed).
    pub(crate) fn submit_sync(&self, mut request: Request) -> Done {
        match self.sequencer.get() {
            None => self.writes.submit_sync(request),
            Some(sequencer) => {
                let result = sequencer
                    .commit(std::slice::from_mut(&mut request))
                    .map(|mut appended| appended.remove(0));
                Done { result, request }
            }
        }
    }

    /// Appends one batch; the receiver yields once it is durable (or failed).
    pub(crate) fn submit_async(
        self: &Arc<Self>,
        request: Request,
    ) -> tokio::sync::oneshot::Receiver<Done> {
        if self.sequencer.get().is_none() {
            return self.writes.submit_async(request);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = Arc::clone(self);
        off_runtime(move || drop(tx.send(store.submit_sync(request))));
        rx
    }

    /// Appends the parts of one multi-stream transaction atomically, blocking the thread.
    pub(crate) fn commit_atomic(&self, parts: &mut [Request]) -> Result<Vec<Appended>> {
        match self.sequencer.get() {
            None => self.writes.commit_atomic(parts),
            Some(sequencer) => sequencer.commit(parts),
        }
    }

    /// [`Store::commit_atomic`] without blocking the async runtime.
    pub(crate) async fn commit_atomic_async(
        self: Arc<Self>,
        mut parts: Vec<Request>,
    ) -> Result<Vec<Appended>> {
        if self.sequencer.get().is_none() {
            return Arc::clone(&self.writes).commit_atomic_async(parts).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        off_runtime(move || drop(tx.send(self.commit_atomic(&mut parts))));
        rx.await.unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(
                "the thread committing this transaction stopped before it finished",
            )))
        })
    }
}

/// Runs `work` off the async runtime's threads: on tokio's blocking pool when called inside a
/// runtime, else on a thread of its own.
fn off_runtime(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(work)),
        Err(_) => {
            if let Err(e) = std::thread::Builder::new()
                .name("varvedb-append".into())
                .spawn(work)
            {
                tracing::error!(error = %e, "could not start a thread for an append");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writes.close();
        if let Durability::Relaxed { .. } = self.config.durability {
            // Commits did not sync: flush them before LMDB closes the environment.
            if let Err(e) = self.log.env.force_sync() {
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
    /// The LMDB environment, for read transactions: `storage.env.read_txn()` (or
    /// [`Storage::read_txn`]).
    pub env: Env,
    pub(crate) store: Arc<Store>,
    /// Held by every handle a user has, so that the registry knows when the user let go of the
    /// store even while a background thread of the store still finishes with it.
    user: Arc<UserToken>,
}

/// See [`Storage::user`](Storage): one per open store, shared by the user's handles.
pub(crate) struct UserToken {
    store: Arc<Store>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.store.path)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// A user's handle on an open store.
    pub(crate) fn from_user(token: Arc<UserToken>) -> Storage {
        Storage {
            env: token.store.log.env.clone(),
            store: Arc::clone(&token.store),
            user: token,
        }
    }

    /// The token that the registry tracks for this store.
    pub(crate) fn user_token(&self) -> &Arc<UserToken> {
        &self.user
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
    /// use varvedb::{Storage, StorageConfig};
    /// let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().join("store"), ..Default::default() })?;
    /// assert_eq!(storage.head(), 0);
    /// # Ok::<(), varvedb::error::Error>(())
    /// ```
    pub fn open(config: StorageConfig) -> Result<Storage> {
        config.validate()?;
        registry::open(config, |config, path| open::open_new(config, path, None))
    }

    /// [`Storage::open`], giving a store it creates `store_id` as its id (a replica of a
    /// cluster's log takes the log's id). A store that exists keeps its own: the caller checks.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn open_as(config: StorageConfig, store_id: u128) -> Result<Storage> {
        config.validate()?;
        registry::open(config, |config, path| {
            open::open_new(config, path, Some(store_id))
        })
    }

    /// Begins a read transaction: a consistent snapshot of the store, for the readers' calls
    /// that take one. The same as `storage.env.read_txn()`.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`] when LMDB cannot begin a transaction, for example when every reader slot
    /// (`max_readers`) is taken.
    ///
    /// ```
    /// use varvedb::{Reader, Storage, StorageConfig, Writer};
    /// # let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// Writer::<u64>::new(storage.clone()).append(1, 1, 42)?;
    /// let txn = storage.read_txn()?;
    /// assert_eq!(*Reader::<u64>::new(storage.clone()).get(&txn, 1)?.unwrap(), 42);
    /// # Ok::<(), varvedb::Error>(())
    /// ```
    pub fn read_txn(&self) -> Result<ReadTxn> {
        self.env.read_txn()
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.store.config
    }

    /// The store's random 128-bit identity, fixed at creation.
    pub fn store_id(&self) -> u128 {
        self.store.log.store_id
    }

    /// Global sequence of the last committed event as this process knows it (0 when the log is
    /// empty): the head read at open, moved by this process's commits (which also take in what
    /// other processes appended before them). A read transaction sees every committed event,
    /// other processes' included, at once.
    pub fn head(&self) -> u64 {
        self.store.writes.head()
    }

    /// A receiver of the committed head: it changes only after a commit, so every sequence up to
    /// the value it holds is readable. Starts at the head read from disk.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.store.writes.subscribe()
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
    /// use varvedb::{Storage, StorageConfig};
    /// use varvedb::Writer;
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
        match self.store.writes.flush_index()? {
            Some(mark) => Ok(mark),
            None => {
                let txn = self.env.read_txn()?;
                self.store.log.dbs.watermark(txn.raw())
            }
        }
    }

    /// Counters and sizes of the store.
    pub fn stats(&self) -> Stats {
        let (info, page_size) = self.env.info();
        let writes = self.store.writes.stats();
        let keys = self
            .store
            .log
            .crypto
            .as_ref()
            .map(Crypto::stats)
            .unwrap_or_default();
        Stats {
            head: self.head(),
            map_size: info.map_size,
            used_bytes: (info.last_page_number as u64 + 1) * u64::from(page_size),
            map_resizes: self.env.resizes(),
            unaligned_copies: self.store.unaligned_copies.load(Ordering::Relaxed),
            commits: writes.commits,
            committed_batches: writes.committed_batches,
            stale_readers_cleared: self.store.stale_readers_cleared,
            encrypted: self.store.log.crypto.is_some(),
            key_cache_hits: keys.hits,
            key_cache_misses: keys.misses,
            indexed_through: self.store.index.indexed_through(),
        }
    }

    /// Number of shredded streams (0 for a plain store or when the keystore cannot be read).
    pub(crate) fn shredded_streams(&self) -> u64 {
        self.store
            .log
            .crypto
            .as_ref()
            .map_or(0, |c| c.shredded_count().unwrap_or(0))
    }

    /// Whether the store is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.store.log.crypto.is_some()
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
    /// On a replicated store (`Storage::open_replicated`, feature `cluster`) the stream is
    /// shredded on every node: its key is purged from the cluster's key bucket, and every
    /// replica destroys its copy as it applies the shred marker this puts in the log; the call
    /// returns once this node has (see `docs/cluster.md`).
    ///
    /// # Errors
    ///
    /// [`Error::NotEncrypted`] on a plain store, [`Error::InvalidStreamId`], [`Error::Lmdb`],
    /// [`Error::ReplicaNotWritable`] on a replica opened with [`Storage::open`]; on a replicated
    /// store, [`Error::Cluster`] when the cluster cannot be reached (shred again: it is
    /// idempotent).
    ///
    /// ```
    /// use varvedb::{Storage, StorageConfig};
    /// use varvedb::{Reader, Writer};
    /// use varvedb::error::Error;
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
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
        let crypto = self.crypto()?;
        match self.store.sequencer.get() {
            Some(sequencer) => sequencer.shred(stream),
            None => match self.store.writes.refuse_on_replica(WriteKind::Shred) {
                Some(refused) => Err(refused),
                None => crypto.shred(stream),
            },
        }
    }

    /// Re-wraps every live stream key under `new_master_key` in one durable keystore
    /// transaction, and makes it the key in force: from then on the store opens only with the
    /// new key, and the old one is no longer needed (discard it). Killed before the transaction
    /// commits, the store is unchanged and opens with the old key. Returns the number of stream
    /// keys re-wrapped.
    ///
    /// On a replicated store (`Storage::open_replicated`, feature `cluster`) every node rotates,
    /// with the same new key: the first re-wraps the keys of the cluster's key bucket and moves
    /// its master key version, each re-wraps what is still under the old key and then its own
    /// keystore. A node not rotated yet reads the streams it knew and refuses to create keys
    /// (see `docs/cluster.md`).
    ///
    /// # Errors
    ///
    /// [`Error::NotEncrypted`] on a plain store, [`Error::Keystore`] when a stored key fails to
    /// unwrap (nothing is changed then), [`Error::Lmdb`], [`Error::ReplicaNotWritable`] on a
    /// replica opened with [`Storage::open`]; on a replicated store, [`Error::WrongMasterKey`]
    /// when another node rotated the log to another key, and [`Error::Cluster`] when the
    /// cluster cannot be reached (rotate again: every step is idempotent).
    ///
    /// ```
    /// use varvedb::{Storage, StorageConfig};
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
        let crypto = self.crypto()?;
        match self.store.sequencer.get() {
            Some(sequencer) => sequencer.rotate_master_key(&new),
            None => match self.store.writes.refuse_on_replica(WriteKind::KeyRotation) {
                Some(refused) => Err(refused),
                None => crypto.rotate(&new),
            },
        }
    }

    /// Version of the master key in force: 1 at creation, one more per rotation. `None` for a
    /// plain store.
    pub fn master_key_version(&self) -> Option<u32> {
        self.store.log.crypto.as_ref().map(Crypto::master_version)
    }

    /// Whether `key` is the master key in force (the registry's check when a store is opened
    /// twice in one process).
    pub(crate) fn accepts_master_key(&self, key: Option<&[u8; 32]>) -> bool {
        match (&self.store.log.crypto, key) {
            (Some(crypto), Some(key)) => crypto.accepts(key),
            (None, None) => true,
            _ => false,
        }
    }

    fn crypto(&self) -> Result<&Crypto> {
        self.store
            .log
            .crypto
            .as_ref()
            .ok_or_else(|| Error::NotEncrypted {
                path: self.store.path.clone(),
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

    /// Publishes the values the store keeps in counters of its own to its metrics: the head,
    /// map size and use, map resizes, unaligned copies, key cache hits and misses, shredded
    /// streams, and every processor's committed checkpoint and lag.
    pub(crate) fn publish_metrics(&self) {
        let stats = self.stats();
        let metrics = self.env.metrics();
        metrics.store_values(StoreValues {
            head: stats.head,
            map_size: stats.map_size,
            used_bytes: stats.used_bytes,
            map_resizes: stats.map_resizes,
            unaligned_copies: stats.unaligned_copies,
            key_cache_hits: stats.key_cache_hits,
            key_cache_misses: stats.key_cache_misses,
            shredded_streams: self.shredded_streams(),
        });
        match self.processors() {
            Ok(processors) => checkpoints_committed(metrics, stats.head, &processors),
            Err(e) => {
                tracing::warn!(path = %self.path().display(), error = %e, "metrics: reading the processors' checkpoints failed");
            }
        }
    }

    /// The store's log: its environment, databases and keys.
    pub(crate) fn log(&self) -> &Log {
        &self.store.log
    }

    /// The head of `stream` as `txn` sees it: the index on disk merged with the unindexed tail.
    pub(crate) fn head_of(&self, txn: &heed::RoTxn<'_>, stream: StreamId) -> Result<Option<Head>> {
        self.store.index.head(&self.store.log.dbs, txn, stream)
    }
}
