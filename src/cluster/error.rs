//! What can go wrong between a node and the cluster, with what a caller can act on.

use std::time::Duration;

/// A failure to reach, or to agree with, the NATS JetStream cluster. Carried by
/// [`Error::Cluster`](crate::Error::Cluster). No variant holds a password or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration cannot work (no servers, an unreadable credentials file, ...).
    #[error("invalid cluster configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// No server answered.
    #[error("no NATS server of {servers:?} could be reached: {reason}")]
    Unreachable {
        /// The servers tried.
        servers: Vec<String>,
        /// What the last attempt met.
        reason: String,
    },
    /// A server refused the node's credentials (a wrong password, an unknown user, a revoked
    /// key).
    #[error("the NATS servers {servers:?} refused the node's credentials: {reason}")]
    Unauthorized {
        /// The servers tried.
        servers: Vec<String>,
        /// What the server said.
        reason: String,
    },
    /// The TLS handshake failed: the server's certificate is not trusted, or the server does
    /// not trust the node's certificate (or the node presented none), or one side wants TLS
    /// and the other does not.
    #[error("TLS with the NATS servers {servers:?} failed: {reason}")]
    Tls {
        /// The servers tried.
        servers: Vec<String>,
        /// What the handshake met.
        reason: String,
    },
    /// The server is older than what the node asks of it.
    #[error("NATS server {server} runs {found}; {needs} needs {needed} or newer")]
    ServerTooOld {
        /// The server's name.
        server: String,
        /// Its version.
        found: String,
        /// The oldest version that will do.
        needed: String,
        /// What needs it.
        needs: String,
    },
    /// The server takes smaller messages than the node would publish: its `max_payload` is
    /// below [`ClusterConfig::max_message_size`](super::ClusterConfig::max_message_size) plus
    /// 4 KiB of headers.
    #[error("NATS server {server} takes messages of at most {max_payload} bytes (its max_payload), less than max_message_size {max_message_size} plus 4 KiB of headers: raise max_payload on every server, or lower max_message_size")]
    PayloadLimit {
        /// The server's name.
        server: String,
        /// Its `max_payload`.
        max_payload: usize,
        /// What the node is configured to publish.
        max_message_size: usize,
    },
    /// The server has JetStream disabled, or not for this account.
    #[error("JetStream is not available on {server}: {reason}")]
    NoJetStream {
        /// The server's name.
        server: String,
        /// What it answered.
        reason: String,
    },
    /// The JetStream stream exists with a setting that the log cannot run on. VarveDB never
    /// changes an existing stream: fix it with the `nats` tool, or name another stream.
    #[error("JetStream stream {stream:?} has {setting} = {found}, the log needs {wanted}")]
    StreamMismatch {
        /// The stream.
        stream: String,
        /// The setting.
        setting: &'static str,
        /// What the stream has.
        found: String,
        /// What the log needs.
        wanted: String,
    },
    /// A JetStream request failed.
    #[error("JetStream {operation} failed: {reason}")]
    Request {
        /// What was asked.
        operation: &'static str,
        /// What came back.
        reason: String,
    },
    /// The store holds another log than the one asked for: it replicates another JetStream
    /// stream (or one deleted and made again under the same name), holds events of its own, or
    /// is ahead of the cluster's log. A replica starts empty, or from a backup of a replica of
    /// the same log.
    #[error("the store at {path:?} holds {replicates}; asked to replicate {asked}")]
    OtherLog {
        /// The store's directory.
        path: std::path::PathBuf,
        /// What it holds.
        replicates: String,
        /// The log it was asked to replicate.
        asked: String,
    },
    /// A commit needs more messages than JetStream takes in one atomic batch.
    #[error("the commit needs {messages} messages, more than the {max} JetStream takes in one atomic batch: append fewer or smaller events at once")]
    BatchLimit {
        /// The messages the commit needs.
        messages: usize,
        /// The most an atomic batch takes.
        max: usize,
    },
    /// A message of the log cannot be read: the replica stops at it rather than pass over it.
    #[error("message {seq} of the log (subject {subject:?}) cannot be read: {reason}")]
    BadMessage {
        /// Its JetStream sequence.
        seq: u64,
        /// Its subject.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry of an encrypted log's key bucket is not what VarveDB puts there.
    #[error("the key bucket's entry {key:?} cannot be read: {reason}")]
    BadKey {
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log is encrypted and the store is not, or the other way round: every replica of a
    /// log is encrypted, with the same master key, or none is.
    #[error("{reason}")]
    EncryptionMismatch {
        /// What differs.
        reason: String,
    },
    /// The replica found a gap in the log: a message it has not applied is gone from the
    /// JetStream stream (deleted, or purged), and it stops rather than pass over it.
    #[error("the log has a gap: the replica applied it up to {applied}, and the next message JetStream delivers is {next}")]
    Gap {
        /// The last sequence the replica applied.
        applied: u64,
        /// The sequence JetStream delivered next.
        next: u64,
    },
    /// The replica stopped on an error; the node serves reads of what it applied, and refuses
    /// appends until it is opened again.
    #[error("the replica stopped: {reason}")]
    ReplicaStopped {
        /// The error it stopped on.
        reason: String,
    },
    /// A JetStream request had no answer in time.
    #[error("JetStream {operation} had no answer within {after:?}")]
    Timeout {
        /// What was asked.
        operation: &'static str,
        /// How long the node waited.
        after: Duration,
    },
}
