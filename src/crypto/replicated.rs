//! The keystore of a replica of an encrypted cluster log: a copy of the cluster's key bucket.
//!
//! Every replica of one log has the log's id as its store id, so a stream key wrapped under
//! the master key is the same bytes in the cluster's bucket and in every replica's keystore:
//! a replica stores what it learns from the bucket as it is, and never creates a key on its own
//! (`crate::cluster::keys` does, in the bucket first). Shredding removes the key from the
//! bucket, then from every replica's keystore as each applies the log's shred marker.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::keystore::{Entry, WrappedEntry, META_MASTER_CHECK, META_MASTER_VERSION};
use super::{now_ns, rng_failed, Crypto, FIRST_KEY_VERSION};
use crate::cipher::aead::{check_aad, random_key, wrap_aad, SealingKey, KEY_LEN, WRAPPED_LEN};
use crate::cipher::StreamKey;
use crate::env::{Commit, WriteKind};
use crate::error::{Error, Result};
use crate::types::StreamId;

use super::cache::Slot;

/// What the cluster's key bucket holds for a stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Its wrapped key.
    Key(WrappedEntry),
    /// Nothing any more: the stream was shredded.
    Shredded,
}

impl Crypto {
    /// What the local keystore holds for `stream`.
    ///
    /// # Errors
    ///
    /// [`Error::Keystore`] for a damaged entry, [`Error::Lmdb`].
    pub(crate) fn local_entry(&self, stream: StreamId) -> Result<Entry> {
        let txn = self.keystore.env.read_txn()?;
        self.keystore.entry(&txn, stream)
    }

    /// The key for appending to `stream` when the local keystore knows it: `Ok(None)` when it
    /// holds nothing for the stream.
    ///
    /// # Errors
    ///
    /// [`Error::StreamShredded`] for a shredded stream, and those of [`Crypto::unwrap_for_check`].
    pub(crate) fn known_key(&self, stream: StreamId) -> Result<Option<Arc<StreamKey>>> {
        let generation = {
            let mut cache = self.cache();
            match cache.get(stream) {
                Some(Slot::Key(k)) => return Ok(Some(k)),
                Some(Slot::Shredded) => return Err(Error::StreamShredded { stream }),
                None => cache.generation(),
            }
        };
        match self.local_entry(stream)? {
            Entry::Missing => Ok(None),
            Entry::Shredded => {
                self.cache().insert_if(generation, stream, Slot::Shredded);
                Err(Error::StreamShredded { stream })
            }
            Entry::Key(e) => {
                let key = self.unwrap_for_check(stream, &e)?;
                self.cache()
                    .insert_if(generation, stream, Slot::Key(Arc::clone(&key)));
                Ok(Some(key))
            }
        }
    }

    /// A new random data key for `stream`, wrapped under the master key in force: for the
    /// cluster's bucket, before the local keystore learns it from there.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] when the random number generator fails.
    pub(crate) fn new_entry(&self, stream: StreamId) -> Result<WrappedEntry> {
        let master = self.current();
        let raw = random_key().map_err(rng_failed)?;
        let aad = wrap_aad(self.store_id, stream.0, master.version, FIRST_KEY_VERSION);
        Ok(WrappedEntry {
            key_version: FIRST_KEY_VERSION,
            master_version: master.version,
            wrapped: master.key.wrap(&aad, &raw).map_err(rng_failed)?,
        })
    }

    /// The master key version in force and its check value, as the keystore holds them.
    ///
    /// # Errors
    ///
    /// [`Error::Keystore`] when the check value is missing, [`Error::Lmdb`].
    pub(crate) fn check_value(&self) -> Result<(u32, [u8; WRAPPED_LEN])> {
        let txn = self.keystore.env.read_txn()?;
        let version = self
            .keystore
            .meta_u32(&txn, META_MASTER_VERSION)?
            .ok_or_else(|| self.keystore.damaged("it has no master key version"))?;
        let check = self
            .keystore
            .meta
            .get(&txn, META_MASTER_CHECK)?
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                self.keystore
                    .damaged("its master key check value is missing")
            })?;
        Ok((version, check))
    }

    /// Whether the master key in force opens the check value `check` of master key version
    /// `version` of this store.
    pub(crate) fn opens_check(&self, version: u32, check: &[u8; WRAPPED_LEN]) -> bool {
        self.check_opens_under(&self.current().key, version, check)
    }

    /// Whether master key `key` opens the check value `check` of master key version `version`
    /// of this store.
    pub(crate) fn check_opens_under(
        &self,
        key: &SealingKey,
        version: u32,
        check: &[u8; WRAPPED_LEN],
    ) -> bool {
        key.unwrap(&check_aad(self.store_id, version), check)
            .is_ok()
    }

    /// `e`, the key entry of `stream` under the master key in force, re-wrapped under `new` as
    /// master key version `new_version`.
    ///
    /// # Errors
    ///
    /// Those of [`Crypto::unwrap_for_check`], and [`Error::Crypto`] for a failed random number
    /// generator.
    pub(crate) fn rewrap(
        &self,
        stream: StreamId,
        e: &WrappedEntry,
        new: &SealingKey,
        new_version: u32,
    ) -> Result<WrappedEntry> {
        let master = self.current();
        if e.master_version != master.version {
            return Err(self.keystore.damaged(format!(
                "the key of stream {stream} is wrapped under master key version {}, not {}",
                e.master_version, master.version
            )));
        }
        let raw = master
            .key
            .unwrap(
                &wrap_aad(self.store_id, stream.0, e.master_version, e.key_version),
                &e.wrapped,
            )
            .map_err(|_| {
                self.keystore
                    .damaged(format!("the key of stream {stream} fails authentication"))
            })?;
        let aad = wrap_aad(self.store_id, stream.0, new_version, e.key_version);
        Ok(WrappedEntry {
            key_version: e.key_version,
            master_version: new_version,
            wrapped: new.wrap(&aad, &raw).map_err(rng_failed)?,
        })
    }

    /// Whether `e`, the key entry of `stream`, unwraps under `key`.
    pub(crate) fn entry_opens(&self, stream: StreamId, e: &WrappedEntry, key: &SealingKey) -> bool {
        key.unwrap(
            &wrap_aad(self.store_id, stream.0, e.master_version, e.key_version),
            &e.wrapped,
        )
        .is_ok()
    }

    /// The check value of master key `key` as version `version` of this store.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] for a failed random number generator.
    pub(crate) fn check_of(&self, key: &SealingKey, version: u32) -> Result<[u8; WRAPPED_LEN]> {
        key.wrap(&check_aad(self.store_id, version), &[0u8; KEY_LEN])
            .map_err(rng_failed)
    }

    /// Whether the keystore holds no key and no tombstone: a replica that has learned nothing
    /// from its log yet.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`].
    pub(crate) fn holds_nothing(&self) -> Result<bool> {
        let txn = self.keystore.env.read_txn()?;
        Ok(self.keystore.keys.is_empty(&txn)? && self.keystore.shredded.is_empty(&txn)?)
    }

    /// Makes the master key in force version `version`: for a new replica of a log whose master
    /// key was rotated before it joined (its keystore, made at version 1, holds nothing yet).
    ///
    /// # Errors
    ///
    /// [`Error::Keystore`] when the keystore holds keys or tombstones, [`Error::Lmdb`],
    /// [`Error::Crypto`].
    pub(crate) fn adopt_version(&self, version: u32) -> Result<()> {
        let mut master = self.master();
        let next = Arc::new(super::Master {
            key: Arc::clone(&master.key),
            version,
        });
        let check = self.check_of(&next.key, version)?;
        self.keystore.write(WriteKind::KeyRotation, |wtxn| {
            if !self.keystore.keys.is_empty(wtxn)? || !self.keystore.shredded.is_empty(wtxn)? {
                return Err(self
                    .keystore
                    .damaged("it holds keys: its master key version cannot be set"));
            }
            let meta = self.keystore.meta;
            meta.put(wtxn, META_MASTER_VERSION, &version.to_le_bytes())?;
            meta.put(wtxn, META_MASTER_CHECK, &check)?;
            Ok(Commit::Commit(()))
        })?;
        self.published
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .current = Arc::clone(&next);
        *master = next;
        Ok(())
    }

    /// Stores what the cluster's bucket holds for streams, in one keystore transaction: a key
    /// the keystore does not hold yet, as it is; a shredded stream's tombstone, its key
    /// destroyed. A stream the keystore holds a key or a tombstone for keeps it (a key entry
    /// changes only by shredding or by a rotation of this node).
    ///
    /// # Errors
    ///
    /// [`Error::Keystore`], [`Error::Lmdb`]; nothing is stored then.
    pub(crate) fn learn(&self, learned: &[(StreamId, Learned)]) -> Result<()> {
        if learned.is_empty() {
            return Ok(());
        }
        let master = self.master();
        let shredded = self.keystore.write(WriteKind::KeyCreation, |wtxn| {
            let mut shredded = Vec::new();
            let mut changed = false;
            for &(stream, what) in learned {
                match (self.keystore.entry(wtxn, stream)?, what) {
                    (Entry::Shredded, _) | (Entry::Key(_), Learned::Key(_)) => {}
                    (Entry::Missing, Learned::Key(e)) => {
                        self.keystore
                            .keys
                            .put(wtxn, &stream.to_key(), &e.encode())?;
                        changed = true;
                    }
                    (found, Learned::Shredded) => {
                        let key_version = match found {
                            Entry::Key(e) => e.key_version,
                            _ => 0,
                        };
                        self.keystore
                            .shred_in(wtxn, stream, key_version, now_ns())?;
                        shredded.push(stream);
                        changed = true;
                    }
                }
            }
            Ok(if changed {
                Commit::Commit(shredded)
            } else {
                Commit::Abort(shredded)
            })
        })?;
        drop(master);
        if !shredded.is_empty() {
            let mut cache = self.cache();
            for &stream in &shredded {
                cache.shred(stream);
                tracing::info!(%stream, "stream shredded on the cluster: its data key was destroyed");
            }
            self.shreds.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}
