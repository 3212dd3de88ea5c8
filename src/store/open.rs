//! Opening a store that is not open in this process yet: the environment and format checks,
//! the keys, the stream index's tail, and the write path, put together.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Durability, Storage, StorageConfig, Store, UserToken};
use crate::crypto::Crypto;
use crate::env::{open_databases, Env, EnvOptions, Opened, WriteGuard};
use crate::error::Result;
use crate::index::StreamIndex;
use crate::log::Log;
use crate::schema::Schemas;
use crate::subscribe::CheckpointBoard;
use crate::write::WritePath;

/// Opens a store that is not open in this process yet; a new one gets `new_store_id` as its
/// id, or a random one.
pub(super) fn open_new(
    mut config: StorageConfig,
    path: PathBuf,
    new_store_id: Option<u128>,
) -> Result<Storage> {
    let guard = WriteGuard::default();
    let env = Env::open(
        &path,
        &EnvOptions {
            map_size: config.map_size,
            max_readers: config.max_readers,
            resize_timeout: config.resize_timeout,
            sync: config.durability == Durability::Immediate,
        },
        guard.clone(),
    )?;
    let stale = env.heed.clear_stale_readers()?;
    if stale > 0 {
        tracing::info!(stale, path = %path.display(), "cleared stale LMDB reader slots");
    }
    let Opened {
        dbs,
        store_id,
        encrypted,
        empty,
    } = open_databases(&env, &path, config.encryption_enabled, new_store_id)?;
    // The master key moves into the cipher context; the kept configuration does not hold it.
    let master_key = config.master_key.take().map(zeroize::Zeroizing::new);
    let crypto = match (encrypted, &master_key) {
        (true, Some(key)) => Some(Crypto::open(
            &path,
            store_id,
            key,
            empty,
            config.max_readers,
            config.key_cache_capacity,
            guard,
        )?),
        _ => None,
    };
    drop(master_key);
    // The events after the index watermark, read back from the log.
    let (index, head) = {
        let txn = env.read_txn()?;
        StreamIndex::open(&dbs, txn.raw(), config.index_interval)?
    };
    let log = Arc::new(Log {
        crypto,
        dbs,
        env: env.clone(),
        store_id,
        schemas: Schemas::new(),
        named: crate::log::NamedStreams::default(),
    });
    let index = Arc::new(index);
    let writes = WritePath::new(
        Arc::clone(&log),
        Arc::clone(&index),
        head,
        config.group_commit,
    );
    let checkpoints = CheckpointBoard::new(&writes);
    writes.add_rider(checkpoints.clone());
    let sync_interval = match config.durability {
        Durability::Relaxed { sync_interval } => sync_interval,
        Durability::Immediate => None,
    };
    let store = Arc::new(Store {
        writes,
        log,
        index,
        checkpoints,
        config,
        path,
        stale_readers_cleared: stale as u64,
        unaligned_copies: AtomicU64::new(0),
        sequencer: std::sync::OnceLock::new(),
    });
    // A replica of a cluster's log takes events only from the cluster.
    {
        let txn = store.log.env.read_txn()?;
        if let Some(origin) = store.log.dbs.replica_origin(txn.raw())? {
            store.writes.set_replica_of(&origin.stream);
        }
    }
    // A tail longer than the interval (a process killed before it flushed): index it now.
    if store.index.flush_due() {
        // The tail is complete in memory, so a failed flush (a full disk, say) must not keep
        // the store from opening: the next flush tries again.
        if let Err(e) = store.writes.flush_index() {
            tracing::warn!(error = %e, "index flush at open failed; the store stays usable");
        }
    }
    if let Some(interval) = sync_interval {
        spawn_syncer(Arc::downgrade(&store), interval);
    }
    drop(env);
    let storage = Storage::from_user(Arc::new(UserToken { store }));
    storage.publish_metrics();
    Ok(storage)
}

/// Syncs a store opened with `Durability::Relaxed` every `interval`, until it is closed. A
/// failed sync poisons the store (`Env::force_sync`).
fn spawn_syncer(weak: Weak<Store>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("varvedb-sync".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let Some(store) = weak.upgrade() else {
                return;
            };
            if let Err(e) = store.log.env.force_sync() {
                tracing::error!(path = %store.path.display(), error = %e, "periodic sync failed");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the sync thread; call Storage::sync yourself");
    }
}
