//! Opening a replicated store: the local store, the connection, the log's stream, and the
//! replica caught up with the log before the store is handed out.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::client::Client;
use super::config::ClusterConfig;
use super::error::ClusterError;
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
    if config.encryption_enabled {
        return Err(ClusterError::Config {
            reason:
                "an encrypted store cannot run on a cluster yet: its stream keys are not replicated"
                    .into(),
        }
        .into());
    }
    let _opening = OPENING.lock().unwrap_or_else(PoisonError::into_inner);
    let storage = Storage::open(config)?;
    if storage.store.sequencer.get().is_some() {
        return Ok(storage);
    }
    let client = Client::connect(&cluster)?;
    let (info, _) = stream::ensure(&client, &cluster)?;
    let origin = Origin {
        stream: info.config.name.clone(),
        created_ns: info.created.unix_timestamp_nanos().max(0) as u64,
        subject_prefix: cluster.subject_prefix.clone(),
    };
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
    }));
    let node = Node {
        client,
        config: cluster,
        id,
        writes,
        shared,
        origin,
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
