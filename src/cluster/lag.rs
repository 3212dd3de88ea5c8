//! How far a replica is behind the cluster's log, asked of the cluster.

use std::time::{SystemTime, UNIX_EPOCH};

use super::client::Client;
use super::config::ClusterConfig;
use super::error::ClusterError;
use crate::error::Result;
use crate::format::replica::APPLIED_KEY;
use crate::store::Storage;

/// How far a replica is behind the cluster's log (see [`lag`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplicaLag {
    /// The JetStream stream the store replicates.
    pub stream: String,
    /// The last JetStream sequence the store applied.
    pub applied: u64,
    /// The JetStream sequence of the log's last message.
    pub last: u64,
    /// Messages of the log the store has not applied.
    pub messages: u64,
    /// Seconds since the cluster stored the first message the store has not applied; 0 when
    /// it applied the whole log.
    pub seconds: f64,
}

/// How far the replica in `storage` is behind the cluster's log: asks the cluster for the log's
/// last message, and for when it stored the first one the store has not applied. The store
/// may be open in another process (the node that runs the replica): this reads it.
///
/// # Errors
///
/// [`ClusterError::OtherLog`] for a store that replicates no log or another one than the
/// cluster holds under that name; the connection's errors (see [`check`](super::check));
/// [`ClusterError::Request`] for a failed request.
///
/// ```no_run
/// use varvedb::cluster::{lag, ClusterConfig};
/// use varvedb::{Storage, StorageConfig};
///
/// # let config = ClusterConfig::default();
/// let storage = Storage::open(StorageConfig { path: "node-a".into(), ..Default::default() })?;
/// let lag = lag(&storage, &config)?;
/// println!("{} messages, {:.1} s behind", lag.messages, lag.seconds);
/// # Ok::<(), varvedb::Error>(())
/// ```
pub fn lag(storage: &Storage, config: &ClusterConfig) -> Result<ReplicaLag> {
    let (origin, applied) = {
        let txn = storage.read_txn()?;
        let dbs = &storage.log().dbs;
        let origin = dbs.replica_origin(txn.raw())?;
        (origin, dbs.replica_seq(txn.raw(), APPLIED_KEY)?)
    };
    let Some(origin) = origin else {
        return Err(ClusterError::OtherLog {
            path: storage.path().to_path_buf(),
            replicates: "no cluster's log".into(),
            asked: config.stream.clone(),
        }
        .into());
    };
    let client = Client::connect(config)?;
    let js = client.jetstream.clone();
    let name = origin.stream.clone();
    let found = client.run(async move {
        let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?.clone();
        let next = if info.state.last_sequence > applied {
            let message = stream
                .get_raw_message(applied + 1)
                .await
                .map_err(|e| e.to_string())?;
            Some(message.time.unix_timestamp_nanos())
        } else {
            None
        };
        Ok::<_, String>((info, next))
    })?;
    let (info, next) = found.map_err(|reason| ClusterError::Request {
        operation: "reading the log's last message",
        reason,
    })?;
    let created_ns = info.created.unix_timestamp_nanos().max(0) as u64;
    if created_ns != origin.created_ns {
        return Err(ClusterError::OtherLog {
            path: storage.path().to_path_buf(),
            replicates: format!("{origin:?}"),
            asked: format!(
                "stream {:?} created at {created_ns} ns, another log under the same name",
                origin.stream
            ),
        }
        .into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let last = info.state.last_sequence;
    Ok(ReplicaLag {
        stream: origin.stream,
        applied,
        last,
        messages: last.saturating_sub(applied),
        seconds: next.map_or(0.0, |t| (now - t).max(0) as f64 / 1e9),
    })
}
