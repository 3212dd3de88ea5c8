//! Encryption at rest and crypto-shredding.
//!
//! Every stream of an encrypted store has its own random 256-bit data key, created (and made
//! durable in the keystore) before the first transaction that writes an event of the stream
//! commits. Payloads and metadata are sealed with AES-256-GCM under that key with a random nonce,
//! their associated data binding them to the store, stream, version, sequence, event id, type and
//! key version (`log::record`). Data keys are stored only wrapped, with AES-256-GCM under the
//! master key, in a keystore of their own ([`keystore`]); the master key is never written
//! anywhere. Shredding deletes a stream's wrapped key and records a tombstone; rotating the master
//! key re-wraps every live key, after which the old wrapped keys left in LMDB's freed pages are
//! useless to whoever holds the files and the new master key.

mod cache;
pub(crate) mod keystore;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod replicated;

#[cfg_attr(not(feature = "cluster"), allow(unused_imports))]
pub(crate) use replicated::Learned;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use cache::{Cache, Slot};
use keystore::{Entry, Keystore, WrappedEntry, KEYSTORE_FORMAT, META_FORMAT, META_MASTER_CHECK};
use keystore::{META_MASTER_VERSION, META_STORE_ID};

use crate::cipher::aead::{check_aad, random_key, wrap_aad, SealingKey, KEY_LEN, WRAPPED_LEN};
use crate::cipher::{aead, StreamKey};
use crate::env::{Commit, WriteGuard, WriteKind};
use crate::error::{Error, Result};
use crate::types::StreamId;

/// Name of the keystore's directory inside the store's.
pub(crate) const KEYSTORE_DIR: &str = "keys";

/// The version of a stream's first (and, so far, only) data key.
const FIRST_KEY_VERSION: u32 = 1;
/// Entries re-wrapped per read pass during a rotation (all in one write transaction).
const ROTATE_CHUNK: usize = 16_384;

/// The master key in force and its version (1, then one more per rotation).
struct Master {
    key: Arc<SealingKey>,
    version: u32,
}

/// The master keys readers unwrap stream keys with: the one in force and, while a rotation
/// commits, the one it puts in force. Readers never take the writers' lock ([`Crypto::master`]):
/// a rotation holds it while it waits for the store's write lock, which a reader may hold (a
/// projector reads events inside its write transaction).
struct Published {
    current: Arc<Master>,
    next: Option<Arc<Master>>,
}

/// How often a reader re-reads a key entry that a rotation re-wrapped after the reader's
/// snapshot was taken: once is enough unless rotations follow each other that fast.
const STALE_ENTRY_RETRIES: usize = 8;

/// Counters of the key cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyStats {
    pub hits: u64,
    pub misses: u64,
    pub shredded: u64,
}

/// The keys of an encrypted store: the keystore, the master key and the cache of unwrapped keys.
pub(crate) struct Crypto {
    store_id: u128,
    keystore: Keystore,
    /// Held while the keystore is written (creating, shredding, re-wrapping keys), so that keys
    /// are always wrapped under the master key the keystore says is in force.
    /// The master key in force, for the writers of the keystore (key creation, shredding,
    /// rotation), which hold it for their whole transaction so that none interleaves.
    master: Mutex<Arc<Master>>,
    published: RwLock<Published>,
    cache: Mutex<Cache>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Bumped by every shred, after the cache forgot the key: a [`KeyMemo`] taken before it is
    /// stale.
    shreds: AtomicU64,
}

/// The key of the last record an iterator opened, so that a scan through one stream's events
/// looks its key up once, not per record. Valid while no stream was shredded since it was taken
/// (any shred makes every memo stale; the next lookup goes through the cache, which knows).
#[derive(Debug, Default)]
pub(crate) struct KeyMemo(Option<(StreamId, u32, u64, Arc<StreamKey>)>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("keystore", &self.keystore.path)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn rng_failed(_: aead::Unavailable) -> Error {
    Error::Crypto {
        reason: "the random number generator or AES-GCM failed",
    }
}

impl Crypto {
    /// Opens the keystore of the store in `store_dir` (in its [`KEYSTORE_DIR`]) and checks the
    /// master key against it. A missing keystore is created only when `create` is set (the store
    /// has no events yet).
    pub(crate) fn open(
        store_dir: &Path,
        store_id: u128,
        master_key: &[u8; KEY_LEN],
        create: bool,
        max_readers: u32,
        cache_capacity: usize,
        guard: WriteGuard,
    ) -> Result<Crypto> {
        let keystore = Keystore::open(&store_dir.join(KEYSTORE_DIR), create, max_readers, guard)?;
        let master = SealingKey::new(master_key);
        let version = keystore.write(WriteKind::KeyCreation, |wtxn| {
            match keystore.meta_u32(wtxn, META_FORMAT)? {
                None if create && keystore.keys.is_empty(wtxn)? => {
                    let check = master
                        .wrap(&check_aad(store_id, 1), &[0u8; KEY_LEN])
                        .map_err(rng_failed)?;
                    let meta = keystore.meta;
                    meta.put(wtxn, META_FORMAT, &KEYSTORE_FORMAT.to_le_bytes())?;
                    meta.put(wtxn, META_STORE_ID, &store_id.to_le_bytes())?;
                    meta.put(wtxn, META_MASTER_VERSION, &1u32.to_le_bytes())?;
                    meta.put(wtxn, META_MASTER_CHECK, &check)?;
                    Ok(Commit::Commit(1))
                }
                None => Err(keystore.damaged("it has no format marker")),
                Some(KEYSTORE_FORMAT) => {
                    let id = keystore.meta.get(wtxn, META_STORE_ID)?;
                    if id != Some(&store_id.to_le_bytes()[..]) {
                        return Err(keystore.damaged(
                            "it belongs to another store (its store id differs from the log's)",
                        ));
                    }
                    let version = keystore
                        .meta_u32(wtxn, META_MASTER_VERSION)?
                        .ok_or_else(|| keystore.damaged("it has no master key version"))?;
                    let check: [u8; WRAPPED_LEN] = keystore
                        .meta
                        .get(wtxn, META_MASTER_CHECK)?
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| keystore.damaged("its master key check value is missing"))?;
                    if master
                        .unwrap(&check_aad(store_id, version), &check)
                        .is_err()
                    {
                        return Err(Error::WrongMasterKey {
                            path: store_dir.to_owned(),
                            master_version: version,
                        });
                    }
                    Ok(Commit::Abort(version))
                }
                Some(other) => Err(keystore.damaged(format!(
                    "keystore format version {other}; this build reads {KEYSTORE_FORMAT}"
                ))),
            }
        })?;
        let master = Arc::new(Master {
            key: Arc::new(master),
            version,
        });
        Ok(Crypto {
            store_id,
            keystore,
            master: Mutex::new(Arc::clone(&master)),
            published: RwLock::new(Published {
                current: master,
                next: None,
            }),
            cache: Mutex::new(Cache::new(cache_capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            shreds: AtomicU64::new(0),
        })
    }

    pub(crate) fn store_id(&self) -> u128 {
        self.store_id
    }

    fn master(&self) -> MutexGuard<'_, Arc<Master>> {
        self.master.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The master key in force, for readers.
    fn current(&self) -> Arc<Master> {
        let published = self
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&published.current)
    }

    /// The master key that unwraps `e` for a reader: the one in force, or the one a rotation is
    /// putting in force. `None` when `e` was read in a snapshot taken before a rotation that is
    /// now complete: read it again.
    fn master_for_read(&self, stream: StreamId, e: &WrappedEntry) -> Result<Option<Arc<Master>>> {
        let published = self
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if e.master_version == published.current.version {
            return Ok(Some(Arc::clone(&published.current)));
        }
        if let Some(next) = published
            .next
            .as_ref()
            .filter(|n| n.version == e.master_version)
        {
            return Ok(Some(Arc::clone(next)));
        }
        if e.master_version < published.current.version {
            return Ok(None);
        }
        Err(self.keystore.damaged(format!(
            "the key of stream {stream} is wrapped under master key version {}, but version {} is in force",
            e.master_version, published.current.version
        )))
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` is the master key in force (a trial unwrap of the check value).
    pub(crate) fn accepts(&self, key: &[u8; KEY_LEN]) -> bool {
        let version = self.current().version;
        let Ok(txn) = self.keystore.env.read_txn() else {
            return false;
        };
        let check: Option<[u8; WRAPPED_LEN]> = self
            .keystore
            .meta
            .get(&txn, META_MASTER_CHECK)
            .ok()
            .flatten()
            .and_then(|b| b.try_into().ok());
        check.is_some_and(|check| {
            SealingKey::new(key)
                .unwrap(&check_aad(self.store_id, version), &check)
                .is_ok()
        })
    }

    /// The version of the master key in force.
    pub(crate) fn master_version(&self) -> u32 {
        self.current().version
    }

    /// Cache and shredding counters.
    pub(crate) fn stats(&self) -> KeyStats {
        KeyStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            shredded: self.shredded_count().unwrap_or(0),
        }
    }

    /// Number of shredded streams.
    pub(crate) fn shredded_count(&self) -> Result<u64> {
        let txn = self.keystore.env.read_txn()?;
        Ok(self.keystore.shredded.len(&txn)?)
    }

    fn unwrap_with(
        &self,
        master: &Master,
        stream: StreamId,
        e: &WrappedEntry,
    ) -> Result<Arc<StreamKey>> {
        if e.master_version != master.version {
            return Err(self.keystore.damaged(format!(
                "the key of stream {stream} is wrapped under master key version {}, but version {} is in force",
                e.master_version, master.version
            )));
        }
        let aad = wrap_aad(self.store_id, stream.0, e.master_version, e.key_version);
        let raw = master.key.unwrap(&aad, &e.wrapped).map_err(|_| {
            self.keystore
                .damaged(format!("the key of stream {stream} fails authentication"))
        })?;
        Ok(Arc::new(StreamKey::from_bytes(&raw, e.key_version)))
    }

    /// [`Crypto::key_for_read`] through `memo`: the memo's key when it is `stream`'s at
    /// `key_version` and no shred happened since it was taken.
    ///
    /// # Errors
    ///
    /// Those of [`Crypto::key_for_read`].
    pub(crate) fn key_for_read_memo<'m>(
        &self,
        memo: &'m mut KeyMemo,
        stream: StreamId,
        key_version: u32,
        seq: u64,
    ) -> Result<&'m StreamKey> {
        let shreds = self.shreds.load(Ordering::SeqCst);
        let entry = match memo.0.take() {
            Some(m) if m.0 == stream && m.1 == key_version && m.2 == shreds => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                m
            }
            _ => (
                stream,
                key_version,
                shreds,
                self.key_for_read(stream, key_version, seq)?,
            ),
        };
        Ok(&memo.0.insert(entry).3)
    }

    /// The key that opens an event of `stream` sealed under `key_version`.
    ///
    /// # Errors
    ///
    /// [`Error::Shredded`] for a shredded stream, [`Error::Keystore`] when the key is missing or
    /// damaged, [`Error::Lmdb`].
    pub(crate) fn key_for_read(
        &self,
        stream: StreamId,
        key_version: u32,
        seq: u64,
    ) -> Result<Arc<StreamKey>> {
        let generation = {
            let mut cache = self.cache();
            match cache.get(stream) {
                Some(Slot::Key(k)) if k.version == key_version => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(k);
                }
                Some(Slot::Shredded) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Shredded { stream, seq });
                }
                _ => cache.generation(),
            }
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut retries = 0;
        let (e, master) = loop {
            let txn = self.keystore.env.read_txn()?;
            let entry = self.keystore.entry(&txn, stream)?;
            drop(txn);
            let e = match entry {
                Entry::Key(e) => e,
                Entry::Shredded => {
                    self.cache().insert_if(generation, stream, Slot::Shredded);
                    return Err(Error::Shredded { stream, seq });
                }
                Entry::Missing => {
                    return Err(self.keystore.damaged(format!(
                        "it holds no key for stream {stream}, which has encrypted events (sequence {seq})"
                    )))
                }
            };
            match self.master_for_read(stream, &e)? {
                Some(master) => break (e, master),
                None if retries < STALE_ENTRY_RETRIES => retries += 1,
                None => {
                    return Err(self.keystore.damaged(format!(
                        "the key of stream {stream} is wrapped under master key version {}, older than the one in force",
                        e.master_version
                    )))
                }
            }
        };
        if e.key_version != key_version {
            return Err(self.keystore.damaged(format!(
                "event {seq} of stream {stream} was sealed under key version {key_version}, the keystore holds version {}",
                e.key_version
            )));
        }
        let key = self.unwrap_with(&master, stream, &e)?;
        self.cache()
            .insert_if(generation, stream, Slot::Key(Arc::clone(&key)));
        Ok(key)
    }

    /// The data keys for appending to `streams`, creating (and making durable) the keys of new
    /// streams in one keystore transaction. One result per stream, in order.
    pub(crate) fn keys_for_append(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<Result<Arc<StreamKey>>>> {
        let (cached, generation) = {
            let mut cache = self.cache();
            let cached: Vec<Option<Slot>> = streams.iter().map(|s| cache.get(*s)).collect();
            (cached, cache.generation())
        };
        let from_cache = |stream: StreamId, slot: &Option<Slot>| match slot {
            Some(Slot::Key(k)) => Some(Ok(Arc::clone(k))),
            Some(Slot::Shredded) => Some(Err(Error::StreamShredded { stream })),
            None => None,
        };
        if cached.iter().all(Option::is_some) {
            self.hits.fetch_add(streams.len() as u64, Ordering::Relaxed);
            return Ok(streams
                .iter()
                .zip(&cached)
                .filter_map(|(s, slot)| from_cache(*s, slot))
                .collect());
        }
        // Look up, and create what is missing, under the master lock: a shred or a rotation
        // cannot interleave.
        let master = self.master();
        let out = self.keystore.write(WriteKind::KeyCreation, |wtxn| {
            let mut out: Vec<Option<Result<Arc<StreamKey>>>> = streams
                .iter()
                .zip(&cached)
                .map(|(s, slot)| from_cache(*s, slot))
                .collect();
            let mut created = 0usize;
            for (i, &stream) in streams.iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                if let Some(j) = streams[..i].iter().position(|s| *s == stream) {
                    out[i] = Some(match &out[j] {
                        Some(Ok(k)) => Ok(Arc::clone(k)),
                        _ => Err(Error::StreamShredded { stream }),
                    });
                    continue;
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                out[i] = Some(match self.keystore.entry(wtxn, stream)? {
                    Entry::Shredded => Err(Error::StreamShredded { stream }),
                    Entry::Key(e) => self.unwrap_with(&master, stream, &e),
                    Entry::Missing => {
                        let raw = random_key().map_err(rng_failed)?;
                        let entry = WrappedEntry {
                            key_version: FIRST_KEY_VERSION,
                            master_version: master.version,
                            wrapped: master
                                .key
                                .wrap(
                                    &wrap_aad(
                                        self.store_id,
                                        stream.0,
                                        master.version,
                                        FIRST_KEY_VERSION,
                                    ),
                                    &raw,
                                )
                                .map_err(rng_failed)?,
                        };
                        self.keystore
                            .keys
                            .put(wtxn, &stream.to_key(), &entry.encode())?;
                        created += 1;
                        Ok(Arc::new(StreamKey::from_bytes(&raw, FIRST_KEY_VERSION)))
                    }
                });
            }
            Ok(if created > 0 {
                Commit::Commit(out)
            } else {
                Commit::Abort(out)
            })
        })?;
        drop(master);
        let mut cache = self.cache();
        let out: Vec<Result<Arc<StreamKey>>> = out.into_iter().flatten().collect();
        for (stream, key) in streams.iter().zip(&out) {
            match key {
                Ok(k) => cache.insert_if(generation, *stream, Slot::Key(Arc::clone(k))),
                Err(Error::StreamShredded { .. }) => {
                    cache.insert_if(generation, *stream, Slot::Shredded)
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Destroys `stream`'s key and records its tombstone in one keystore transaction. Returns
    /// `false` when the stream was already shredded. A stream without a key (no events yet) is
    /// burned all the same.
    pub(crate) fn shred(&self, stream: StreamId) -> Result<bool> {
        let master = self.master();
        let shredded = self.keystore.write(WriteKind::Shred, |wtxn| {
            let key_version = match self.keystore.entry(wtxn, stream)? {
                Entry::Shredded => return Ok(Commit::Abort(false)),
                Entry::Key(e) => e.key_version,
                Entry::Missing => 0,
            };
            self.keystore
                .shred_in(wtxn, stream, key_version, now_ns())?;
            Ok(Commit::Commit(true))
        })?;
        if !shredded {
            return Ok(false);
        }
        drop(master);
        {
            let mut cache = self.cache();
            cache.shred(stream);
            self.shreds.fetch_add(1, Ordering::SeqCst);
        }
        tracing::info!(%stream, "stream shredded: its data key was destroyed");
        Ok(true)
    }

    /// Re-wraps every live stream key under `new_key` and makes it the master key in force, in
    /// one keystore transaction: killed before it commits, the keystore is still under the old
    /// key; after, only the new key opens it. Returns the number of keys re-wrapped.
    pub(crate) fn rotate(&self, new_key: &[u8; KEY_LEN]) -> Result<u64> {
        let mut master = self.master();
        let old_version = master.version;
        let new_version = old_version.checked_add(1).ok_or_else(|| {
            self.keystore
                .damaged("the master key version cannot grow past u32::MAX")
        })?;
        let next = Arc::new(Master {
            key: Arc::new(SealingKey::new(new_key)),
            version: new_version,
        });
        let new = &next.key;
        // Readers see the re-wrapped entries as soon as the transaction commits, before the new
        // key is put in force below: they find it here meanwhile.
        self.published
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .next = Some(Arc::clone(&next));
        let rewrapped = self.keystore.write(WriteKind::KeyRotation, |wtxn| {
        let mut rewrapped = 0u64;
        let mut after: Option<[u8; 16]> = None;
        let mut chunk: Vec<([u8; 16], [u8; keystore::ENTRY_LEN])> =
            Vec::with_capacity(ROTATE_CHUNK);
        loop {
            chunk.clear();
            {
                let range = match &after {
                    Some(k) => self.keystore.keys.range(
                        &*wtxn,
                        &(
                            std::ops::Bound::Excluded(&k[..]),
                            std::ops::Bound::Unbounded,
                        ),
                    )?,
                    None => self.keystore.keys.range(&*wtxn, &(..))?,
                };
                for item in range.take(ROTATE_CHUNK) {
                    let (k, v) = item?;
                    let stream_key: [u8; 16] = k.try_into().map_err(|_| {
                        self.keystore
                            .damaged("a key entry has a malformed stream id")
                    })?;
                    let stream = StreamId(u128::from_be_bytes(stream_key));
                    let e = WrappedEntry::decode(v).ok_or_else(|| {
                        self.keystore
                            .damaged(format!("the key entry of stream {stream} is malformed"))
                    })?;
                    let old_aad =
                        wrap_aad(self.store_id, stream.0, e.master_version, e.key_version);
                    // A replica of a cluster's log may hold keys it learned from the cluster's
                    // bucket already re-wrapped under the new key: kept as they are.
                    if e.master_version == new_version
                        && new
                            .unwrap(
                                &wrap_aad(self.store_id, stream.0, new_version, e.key_version),
                                &e.wrapped,
                            )
                            .is_ok()
                    {
                        continue;
                    }
                    if e.master_version != old_version {
                        return Err(self.keystore.damaged(format!(
                            "the key of stream {stream} is wrapped under master key version {}, not {old_version}",
                            e.master_version
                        )));
                    }
                    let raw: Zeroizing<[u8; KEY_LEN]> =
                        master.key.unwrap(&old_aad, &e.wrapped).map_err(|_| {
                            self.keystore
                                .damaged(format!("the key of stream {stream} fails authentication"))
                        })?;
                    let new_aad = wrap_aad(self.store_id, stream.0, new_version, e.key_version);
                    let entry = WrappedEntry {
                        key_version: e.key_version,
                        master_version: new_version,
                        wrapped: new.wrap(&new_aad, &raw).map_err(rng_failed)?,
                    };
                    chunk.push((stream_key, entry.encode()));
                }
            }
            if chunk.is_empty() {
                break;
            }
            for (k, v) in &chunk {
                self.keystore.keys.put(wtxn, &k[..], &v[..])?;
            }
            rewrapped += chunk.len() as u64;
            after = chunk.last().map(|(k, _)| *k);
        }
        let check = new
            .wrap(&check_aad(self.store_id, new_version), &[0u8; KEY_LEN])
            .map_err(rng_failed)?;
        let meta = self.keystore.meta;
        meta.put(wtxn, META_MASTER_VERSION, &new_version.to_le_bytes())?;
        meta.put(wtxn, META_MASTER_CHECK, &check)?;
        Ok(Commit::Commit(rewrapped))
        });
        let mut published = self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        published.next = None;
        let rewrapped = rewrapped?;
        published.current = Arc::clone(&next);
        drop(published);
        *master = next;
        tracing::info!(
            rewrapped,
            master_version = new_version,
            "master key rotated"
        );
        Ok(rewrapped)
    }

    /// The keystore, for tools that verify or back it up (`crate::admin`).
    #[allow(dead_code)]
    pub(crate) fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// Unwraps a stored key entry under the master key in force, without the cache: for the
    /// keystore checks of `crate::admin::verify`, and the keys a replica learns from its
    /// cluster.
    ///
    /// # Errors
    ///
    /// [`Error::Keystore`] when `e` is wrapped under another master key version, or fails
    /// authentication (the master key in force is not the one that wrapped it).
    pub(crate) fn unwrap_for_check(
        &self,
        stream: StreamId,
        e: &WrappedEntry,
    ) -> Result<Arc<StreamKey>> {
        self.unwrap_with(&self.current(), stream, e)
    }

    /// A random data key that is never stored anywhere: `crate::admin`'s import seals the
    /// events of a stream shredded in the source under it, after the stream's tombstone is
    /// written, so that they keep their place and read as shredded.
    pub(crate) fn throwaway_key(&self) -> Result<StreamKey> {
        let raw = random_key().map_err(rng_failed)?;
        Ok(StreamKey::from_bytes(&raw, FIRST_KEY_VERSION))
    }
}
