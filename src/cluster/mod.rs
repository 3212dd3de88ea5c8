//! VarveDB on a NATS JetStream cluster (feature `cluster`): the connection, its credentials and
//! TLS, and the JetStream stream that holds the log.
//!
//! JetStream is the log of record: one stream (by default `VARVEDB`, kept on `replicas`
//! servers by RAFT) whose subjects are `{subject_prefix}.{stream}`. [`check`] connects with a
//! [`ClusterConfig`], checks that the server is new enough (2.12, for atomic batch publish),
//! creates the stream when it is missing and refuses one whose settings could lose events
//! (limits, memory storage, deletes or purges allowed) or could not take atomic batches.
//!
//! Every server VarveDB runs on must have `sync_interval: always` in its `jetstream` block: by
//! default a JetStream server acknowledges a message before it is on disk and flushes every two
//! minutes, so a power cut on a majority of the servers loses acknowledged messages. Clients
//! cannot read a server's configuration, so this is for the operator to set; see
//! `docs/cluster.md`.

mod client;
mod config;
pub(crate) mod error;
mod keys;
mod lag;
mod message;
mod node;
mod open;
mod publish;
mod replica;
mod stream;

pub use config::{ClusterAuth, ClusterConfig, ClusterTls};
pub use error::ClusterError;
pub use lag::{lag, ReplicaLag};

use crate::error::Result;
use crate::store::{Storage, StorageConfig};

/// See `failpoints::drop_next_cluster_answer`.
#[cfg(feature = "failpoints")]
pub(crate) fn drop_next_answer() {
    publish::DROP_NEXT_ANSWER.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl Storage {
    /// Opens the store at `config.path` as a replica of the log a NATS JetStream cluster holds
    /// (feature `cluster`). See `docs/cluster.md`.
    ///
    /// The log's JetStream stream is created when missing (as [`check`] does); the store then
    /// applies every message of the log it has not applied yet, and is returned once it caught
    /// up. From then on it follows the log, and its handle works as any store's: [`Writer`],
    /// [`Transaction`], readers, subscriptions, processors and projectors are unchanged. An
    /// append goes through the cluster (its expected version checked against the log) and
    /// returns once the local replica has applied it: a node reads its own writes. Every node
    /// gives every event the same global sequence and stream version.
    ///
    /// A store that replicates a log refuses appends when opened with [`Storage::open`]
    /// ([`Error::ReplicaNotWritable`](crate::Error::ReplicaNotWritable)); it reads as any
    /// store.
    ///
    /// [`Writer`]: crate::Writer
    /// [`Transaction`]: crate::Transaction
    ///
    /// # Errors
    ///
    /// The errors of [`Storage::open`] and [`check`], and
    /// [`ClusterError::OtherLog`] for a store that holds another log, or events of its own;
    /// [`ClusterError::EncryptionMismatch`] for a plain store of an encrypted log or the
    /// other way round; [`Error::WrongMasterKey`](crate::Error::WrongMasterKey) for a master
    /// key that is not the log's.
    ///
    /// An encrypted log keeps its stream keys, wrapped under the master key, in a JetStream
    /// key-value bucket beside it (`{stream}-keys`); every replica of it is encrypted with the
    /// same master key, and has the log's id as its store id. JetStream holds only ciphertext.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
    /// use varvedb::{Storage, StorageConfig, Writer};
    ///
    /// let storage = Storage::open_replicated(
    ///     StorageConfig { path: "node-a".into(), ..Default::default() },
    ///     ClusterConfig {
    ///         servers: vec!["tls://127.0.0.1:4222".into()],
    ///         auth: ClusterAuth::user_and_password("varvedb", "s3cret"),
    ///         tls: ClusterTls { ca_file: Some("ca.pem".into()), ..Default::default() },
    ///         ..ClusterConfig::default()
    ///     },
    /// )?;
    /// let mut writer = Writer::<u64>::new(storage.clone());
    /// let seq = writer.append("order-7", 1, 42)?;
    /// # Ok::<(), varvedb::Error>(())
    /// ```
    pub fn open_replicated(config: StorageConfig, cluster: ClusterConfig) -> Result<Storage> {
        open::open_replicated(config, cluster)
    }
}

/// What [`check`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterReport {
    /// The server the node connected to.
    pub server: String,
    /// Its version.
    pub server_version: String,
    /// The JetStream stream of the log.
    pub stream: String,
    /// Whether this check created it.
    pub created: bool,
    /// How many servers hold each of its messages.
    pub replicas: usize,
    /// The server that leads it, when it has a leader.
    pub leader: Option<String>,
    /// The servers that hold it besides the leader, with whether each is current.
    pub followers: Vec<(String, bool)>,
    /// How many messages it holds.
    pub messages: u64,
    /// The JetStream sequence of its last message.
    pub last_sequence: u64,
}

/// Connects to the cluster, checks the server, and creates or checks the log's JetStream stream
/// (see the module documentation).
///
/// # Errors
///
/// [`Error::Cluster`](crate::Error::Cluster) with the [`ClusterError`] met: the configuration,
/// an unreachable cluster, refused credentials, a failed TLS handshake, a server too old,
/// JetStream missing, or a stream that exists with settings the log cannot run on.
///
/// # Example
///
/// ```no_run
/// use varvedb::cluster::{check, ClusterAuth, ClusterConfig, ClusterTls};
///
/// let report = check(&ClusterConfig {
///     servers: vec!["tls://127.0.0.1:4222".into()],
///     auth: ClusterAuth::user_and_password("varvedb", "s3cret"),
///     tls: ClusterTls { ca_file: Some("ca.pem".into()), ..Default::default() },
///     ..ClusterConfig::default()
/// })?;
/// println!("{} holds {} messages on {} servers", report.stream, report.messages, report.replicas);
/// # Ok::<(), varvedb::Error>(())
/// ```
pub fn check(config: &ClusterConfig) -> Result<ClusterReport> {
    let client = client::Client::connect(config)?;
    let (info, created) = stream::ensure(&client, config)?;
    let server = client.nats.server_info();
    let cluster = info.cluster.as_ref();
    Ok(ClusterReport {
        server: server.server_name.clone(),
        server_version: server.version.clone(),
        stream: info.config.name.clone(),
        created,
        replicas: info.config.num_replicas,
        leader: cluster.and_then(|c| c.leader.clone()),
        followers: cluster
            .map(|c| {
                c.replicas
                    .iter()
                    .map(|p| (p.name.clone(), p.current))
                    .collect()
            })
            .unwrap_or_default(),
        messages: info.state.messages,
        last_sequence: info.state.last_sequence,
    })
}
