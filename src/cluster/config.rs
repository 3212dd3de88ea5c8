//! What a node needs to reach the cluster: servers, the JetStream stream, credentials and TLS.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// How to reach a NATS JetStream cluster and which JetStream stream holds the log.
///
/// The defaults name no server and no credentials: a cluster is always configured explicitly.
/// `Debug` never prints a password.
///
/// ```
/// use std::time::Duration;
/// use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
///
/// let config = ClusterConfig {
///     servers: vec!["tls://nats-1.internal:4222".into(), "tls://nats-2.internal:4222".into()],
///     auth: ClusterAuth::user_and_password("orders", "s3cret"),
///     tls: ClusterTls {
///         ca_file: Some("/etc/varvedb/ca.pem".into()),
///         client_cert: Some(("/etc/varvedb/node.pem".into(), "/etc/varvedb/node.key".into())),
///     },
///     ..ClusterConfig::default()
/// };
/// assert_eq!(config.replicas, 3);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Server URLs (`tls://host:port` or `nats://host:port`); the client tries them in turn and
    /// learns the rest of the cluster from the first that answers.
    pub servers: Vec<String>,
    /// The JetStream stream that holds the log (default `VARVEDB`).
    pub stream: String,
    /// The subject prefix of the log's messages: each event stream is a subject under it
    /// (default `varvedb`).
    pub subject_prefix: String,
    /// How many servers hold each message (default 3). A stream that exists with another count
    /// is refused, never changed.
    pub replicas: usize,
    /// How long JetStream remembers a message id, to drop a retried publish (default 2 minutes;
    /// at least 100 ms).
    pub duplicate_window: Duration,
    /// The largest message body, without headers (default 1 MiB less 4 KiB). The stream takes
    /// messages of this size plus 4 KiB of headers, and the servers' `max_payload` must too:
    /// the default fits JetStream's default `max_payload` of 1 MiB.
    pub max_message_size: usize,
    /// How long a connection attempt to one server may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long a JetStream request (an append's acknowledgement, a stream lookup or creation)
    /// and the replica's apply of an append may each take (default 10 s).
    pub request_timeout: Duration,
    /// How often the node checks that its server answers (default 5 s): a server that misses
    /// two checks (it hangs, or the network to it does) is left for another of `servers`.
    pub ping_interval: Duration,
    /// Who the node is to the servers.
    pub auth: ClusterAuth,
    /// TLS settings.
    pub tls: ClusterTls,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            servers: Vec::new(),
            stream: "VARVEDB".to_owned(),
            subject_prefix: "varvedb".to_owned(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            max_message_size: (1 << 20) - (4 << 10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(5),
            auth: ClusterAuth::None,
            tls: ClusterTls::default(),
        }
    }
}

/// How a node authenticates to the servers.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ClusterAuth {
    /// No credentials (only for servers that ask for none).
    #[default]
    None,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password, never printed; this copy is wiped from memory when dropped (the NATS
        /// client keeps its own while connected).
        password: Zeroizing<String>,
    },
    /// A NATS credentials file (a user JWT and its nkey seed, as `nsc` writes it).
    CredentialsFile(PathBuf),
    /// A file holding an nkey seed (`SU...`).
    NkeyFile(PathBuf),
}

impl ClusterAuth {
    /// [`ClusterAuth::UserPassword`] from plain strings.
    pub fn user_and_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        ClusterAuth::UserPassword {
            user: user.into(),
            password: Zeroizing::new(password.into()),
        }
    }
}

impl fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterAuth::None => f.write_str("None"),
            ClusterAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            ClusterAuth::CredentialsFile(path) => {
                f.debug_tuple("CredentialsFile").field(path).finish()
            }
            ClusterAuth::NkeyFile(path) => f.debug_tuple("NkeyFile").field(path).finish(),
        }
    }
}

/// TLS settings. With any of them set, or with any credentials, the connection must be TLS:
/// a server that offers none is refused, and credentials never cross the network in the clear.
/// Without a `ca_file`, the servers' certificates are checked against the system's roots.
#[derive(Clone, Debug, Default)]
pub struct ClusterTls {
    /// The certificate authority (PEM) that signed the servers' certificates; without it, the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The node's client certificate and private key (PEM), for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl ClusterTls {
    /// Whether any TLS setting is given.
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some()
    }
}
