//! Opening a replicated store: the local store, the connection, the log's stream, and the
//! replica caught up with the log before the store is handed out.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::client::Client;
use super::config::ClusterConfig;
use super::error::ClusterError;
use super::keys::Keys;
use super::node::Node;
use super::replica::{follow, Follow, Shared};
use super::stream;
use crate::error::{Error, Result};
use crate::format::replica::{Origin, APPLIED_KEY};
use crate::store::{Storage, StorageConfig};

/// Opens of replicated stores, one at a time in a process: a store gets one node.
static OPENING: Mutex<()> = Mutex::new(());

/// See [`Storage::open_replicated`].
pub(crate) fn open_replicated(config: StorageConfig, cluster: ClusterConfig) -> Result<Storage> {
    let _opening = OPENING.lock().unwrap_or_else(PoisonError::into_inner);
    let client = Client::connect(&cluster)?;
    let (info, _) = stream::ensure(&client, &cluster)?;
    let origin = Origin {
        stream: info.config.name.clone(),
        created_ns: info.created.unix_timestamp_nanos().max(0) as u64,
        subject_prefix: cluster.subject_prefix.clone(),
    };
    let encrypted = config.encryption_enabled;
    let keys = {
        let js = client.jetstream.clone();
        let cfg = cluster.clone();
        let found = client.run(async move {
            if encrypted {
                Keys::open(&js, &cfg).await.map(Some)
            } else {
                Keys::find(&js, &cfg).await
            }
        })??;
        found.map(Arc::new)
    };
    let master = match &keys {
        Some(keys) => {
            let keys = Arc::clone(keys);
            client.run(async move { keys.master().await })??
        }
        None => None,
    };
    if !encrypted && master.is_some() {
        return Err(ClusterError::EncryptionMismatch {
            reason: format!(
                "the log {} is encrypted: open its replicas with encryption and its master key",
                origin.stream
            ),
        }
        .into());
    }
    if encrypted && master.is_none() && info.state.messages > 0 {
        return Err(ClusterError::EncryptionMismatch {
            reason: format!(
                "the log {} holds the events of plain stores: an encrypted store cannot replicate it",
                origin.stream
            ),
        }
        .into());
    }
    let log_id = log_id(&origin);
    let storage = Storage::open_as(config, log_id)?;
    if storage.store.sequencer.get().is_some() {
        return Ok(storage);
    }
    let keys = if encrypted { keys } else { None };
    if let Some(keys) = &keys {
        check_master(&client, &storage, keys, master, log_id)?;
    }
    let writes = Arc::clone(&storage.store.writes);
    let applied = {
        let txn = storage.read_txn()?;
        let dbs = &writes.log.dbs;
        match dbs.replica_origin(txn.raw())? {
            Some(found) if found != origin => {
                return Err(ClusterError::OtherLog {
                    path: storage.path().to_path_buf(),
                    replicates: format!("{found:?}"),
                    asked: format!("{origin:?}"),
                }
                .into())
            }
            None if storage.head() > 0 => {
                return Err(ClusterError::OtherLog {
                    path: storage.path().to_path_buf(),
                    replicates: "its own events, not a cluster's log".into(),
                    asked: format!("{origin:?}"),
                }
                .into())
            }
            _ => {}
        }
        dbs.replica_seq(txn.raw(), APPLIED_KEY)?
    };
    if applied > info.state.last_sequence {
        return Err(ClusterError::OtherLog {
            path: storage.path().to_path_buf(),
            replicates: format!(
                "a log applied up to message {applied}, past the last message of the cluster's ({})",
                info.state.last_sequence
            ),
            asked: format!("{origin:?}"),
        }
        .into());
    }
    writes.set_replica_of(&origin.stream);
    let shared = Shared::new(applied);
    let id = uuid::Uuid::new_v4().simple().to_string();
    client.spawn(follow(Follow {
        jetstream: client.jetstream.clone(),
        origin: origin.clone(),
        node: id.clone(),
        writes: Arc::clone(&writes),
        shared: Arc::clone(&shared),
        stall_after: cluster.ping_interval.min(Duration::from_secs(1)),
        keys: keys.clone(),
    }));
    let node = Node {
        client,
        config: cluster,
        id,
        writes,
        shared,
        origin,
        keys,
    };
    catch_up_at_open(&node, info.state.last_sequence)?;
    if storage.store.sequencer.set(Arc::new(node)).is_err() {
        return Err(Error::AlreadyOpen {
            path: storage.path().to_path_buf(),
        });
    }
    Ok(storage)
}

/// Waits until the replica applied the log up to `last`, for as long as it makes progress:
/// a log of any length is caught up with, a replica that stalls for the request timeout is an
/// error.
fn catch_up_at_open(node: &Node, last: u64) -> Result<()> {
    let timeout = node.config.request_timeout.max(Duration::from_secs(1));
    loop {
        let before = *node.shared.applied.borrow();
        match node.wait_applied(last, timeout) {
            Ok(()) => return Ok(()),
            Err(Error::Cluster(ClusterError::Timeout { .. }))
                if *node.shared.applied.borrow() > before => {}
            Err(e) => return Err(e),
        }
    }
}

/// The id of the log `origin` names: the store id of every replica of an encrypted log, bound
/// into its records' sealing and its keys' wrapping. The first 128 bits of a SHA-256 of the
/// stream's name, creation time and subject prefix: a stream made again under the same name is
/// another log.
fn log_id(origin: &Origin) -> u128 {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(b"varvedb/log\0");
    bytes.extend_from_slice(origin.stream.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&origin.created_ns.to_le_bytes());
    bytes.extend_from_slice(origin.subject_prefix.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    u128::from_le_bytes(digest.as_ref()[..16].try_into().expect("16 bytes"))
}

/// Checks an encrypted replica against its log: its store id is the log's, and its master key
/// is the one the log's key bucket records (recorded there by the first replica).
fn check_master(
    client: &Client,
    storage: &Storage,
    keys: &Arc<Keys>,
    mut master: Option<(u32, [u8; crate::cipher::aead::WRAPPED_LEN], u64)>,
    log_id: u128,
) -> Result<()> {
    if storage.store_id() != log_id {
        return Err(ClusterError::OtherLog {
            path: storage.path().to_path_buf(),
            replicates: format!("the events of store {:032x}", storage.store_id()),
            asked: format!("the encrypted log {log_id:032x}"),
        }
        .into());
    }
    let crypto = storage
        .store
        .log
        .crypto
        .as_ref()
        .ok_or_else(|| Error::NotEncrypted {
            path: storage.path().to_path_buf(),
        })?;
    let (local_version, local_check) = crypto.check_value()?;
    loop {
        match master {
            Some((version, check, _)) => {
                if crypto.opens_check(version, &check) {
                    if version == local_version {
                        return Ok(());
                    }
                    // A new replica of a log whose master key was rotated before it joined.
                    if crypto.holds_nothing()? {
                        return crypto.adopt_version(version);
                    }
                    return Err(ClusterError::EncryptionMismatch {
                        reason: format!(
                            "the log's master key is at version {version}, this store's at {local_version}"
                        ),
                    }
                    .into());
                }
                if version == local_version + 1 && !crypto.holds_nothing()? {
                    // The log's master key was rotated and this node's was not yet: it opens
                    // with the key it holds and must rotate to the new one.
                    tracing::warn!(
                        log_version = version,
                        local_version,
                        "the log's master key was rotated: rotate this node to the new key (Storage::rotate_master_key)"
                    );
                    return Ok(());
                }
                return Err(Error::WrongMasterKey {
                    path: storage.path().to_path_buf(),
                    master_version: version,
                });
            }
            None => {
                let put = Arc::clone(keys);
                if client
                    .run(async move { put.put_master(local_version, &local_check, 0).await })??
                {
                    return Ok(());
                }
                // Another replica recorded its master key first: check against it.
                let get = Arc::clone(keys);
                master = client.run(async move { get.master().await })??;
            }
        }
    }
}
