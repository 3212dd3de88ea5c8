//! The node's connection to the cluster: its own tokio runtime (so that blocking callers and
//! callers inside another runtime both work), the NATS client, and JetStream.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions};

use super::config::{ClusterAuth, ClusterConfig};
use super::error::ClusterError;

/// The oldest server the log runs on: batches and transactions are JetStream atomic batch
/// publishes, which came in 2.12.0.
pub(crate) const MIN_SERVER: (u32, u32, u32) = (2, 12, 0);

/// Room for the headers of a message (`Nats-Msg-Id`, expectations, batch headers), which the
/// servers count against `max_payload` and the stream against its largest message, on top of
/// [`ClusterConfig::max_message_size`].
pub(crate) const HEADER_ROOM: usize = 4 << 10;

/// Why a connection attempt failed, before it is told apart for the caller.
enum Failure {
    /// A file the configuration names could not be read.
    Config(ClusterError),
    /// The connection itself failed.
    Connect(ConnectErrorKind, String),
}

/// A connected node.
pub(crate) struct Client {
    runtime: OwnedRuntime,
    pub(crate) nats: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
}

impl Client {
    /// Connects to `config.servers` with its credentials and TLS settings, and checks that the
    /// server is new enough.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`], [`ClusterError::Unreachable`],
    /// [`ClusterError::Unauthorized`], [`ClusterError::Tls`], [`ClusterError::ServerTooOld`],
    /// [`ClusterError::PayloadLimit`].
    pub(crate) fn connect(config: &ClusterConfig) -> Result<Client, ClusterError> {
        validate(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("varvedb-cluster")
            .enable_all()
            .build()
            .map(|runtime| OwnedRuntime(Some(runtime)))
            .map_err(|e| ClusterError::Config {
                reason: format!("cannot start the cluster client's runtime: {e}"),
            })?;
        let servers = config.servers.clone();
        let request_timeout = config.request_timeout;
        let options = options(config);
        let nats = runtime.run(async move {
            let options = options.await.map_err(Failure::Config)?;
            let nats = options
                .connect(servers)
                .await
                .map_err(|e| Failure::Connect(e.kind(), e.to_string()))?;
            // Built on the runtime: the context starts tasks of its own.
            let jetstream = jetstream::ContextBuilder::new()
                .timeout(request_timeout)
                .build(nats.clone());
            Ok((nats, jetstream))
        })?;
        let (nats, jetstream) = match nats {
            Ok(connected) => connected,
            Err(Failure::Connect(kind, reason)) => return Err(connect_error(config, kind, reason)),
            Err(Failure::Config(e)) => return Err(e),
        };
        let info = nats.server_info();
        match parse_version(&info.version) {
            Some(version) if version >= MIN_SERVER => {}
            _ => {
                return Err(ClusterError::ServerTooOld {
                    server: info.server_name.clone(),
                    found: info.version.clone(),
                    needed: format!("{}.{}.{}", MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2),
                    needs: "VarveDB's atomic batches (JetStream atomic batch publish)".to_owned(),
                })
            }
        }
        if info.max_payload < config.max_message_size + HEADER_ROOM {
            return Err(ClusterError::PayloadLimit {
                server: info.server_name.clone(),
                max_payload: info.max_payload,
                max_message_size: config.max_message_size,
            });
        }
        Ok(Client {
            runtime,
            nats,
            jetstream,
        })
    }

    /// Runs `future` on the client's runtime and waits for it, from any thread (inside another
    /// runtime too: the caller's thread blocks, as on any blocking call of the store).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Request`] when the future panicked or the runtime is shutting down.
    pub(crate) fn run<F>(&self, future: F) -> Result<F::Output, ClusterError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.run(future)
    }

    /// Starts `future` on the client's runtime; it ends when the client is dropped, if not
    /// before.
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives until drop");
        drop(runtime.spawn(future));
    }
}

/// The client's runtime, shut down without blocking when dropped: the client may be dropped
/// inside the caller's own runtime, where a blocking shutdown panics.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    /// Runs `future` on the runtime and waits for its output on this thread.
    fn run<F>(&self, future: F) -> Result<F::Output, ClusterError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let runtime = self.0.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| ClusterError::Request {
            operation: "a task of the cluster client",
            reason:
                "the task ended without an answer (it panicked, or the client is shutting down)"
                    .to_owned(),
        })
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Refuses configurations that cannot work before anything is tried.
fn validate(config: &ClusterConfig) -> Result<(), ClusterError> {
    let fail = |reason: String| Err(ClusterError::Config { reason });
    if config.servers.is_empty() {
        return fail("no servers: name at least one server URL".to_owned());
    }
    if !(1..=5).contains(&config.replicas) {
        return fail(format!(
            "replicas is {}; JetStream keeps 1 to 5 replicas of a stream (3 survives the loss of one server)",
            config.replicas
        ));
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !token(&config.stream) {
        return fail(format!(
            "stream name {:?}: JetStream stream names are letters, digits, '-' and '_'",
            config.stream
        ));
    }
    if !config.subject_prefix.split('.').all(token) {
        return fail(format!(
            "subject prefix {:?}: dot-separated tokens of letters, digits, '-' and '_'",
            config.subject_prefix
        ));
    }
    if config.max_message_size == 0 || config.max_message_size + HEADER_ROOM > i32::MAX as usize {
        return fail(format!(
            "max_message_size is {}; JetStream takes messages of 1 to {} bytes, headers included",
            config.max_message_size,
            i32::MAX as usize - HEADER_ROOM
        ));
    }
    if config.duplicate_window < Duration::from_millis(100) {
        return fail(format!(
            "duplicate_window is {:?}; JetStream keeps message ids for 100 ms at least (and turns 0 into 2 minutes)",
            config.duplicate_window
        ));
    }
    for (name, value) in [
        ("connect_timeout", config.connect_timeout),
        ("request_timeout", config.request_timeout),
        ("ping_interval", config.ping_interval),
    ] {
        if value.is_zero() {
            return fail(format!("{name} is 0; it must be longer"));
        }
    }
    Ok(())
}

/// The connect options: credentials (read from files on the client's runtime), TLS and
/// timeouts. Credentials never cross the network in the clear: with any, the connection must
/// be TLS.
fn options(
    config: &ClusterConfig,
) -> impl Future<Output = Result<ConnectOptions, ClusterError>> + Send + 'static {
    let auth = config.auth.clone();
    let tls = config.tls.clone();
    let (connect_timeout, request_timeout, ping_interval) = (
        config.connect_timeout,
        config.request_timeout,
        config.ping_interval,
    );
    async move {
        let unreadable =
            |what: &str, path: &std::path::Path, e: std::io::Error| ClusterError::Config {
                reason: format!("cannot read the {what} {}: {e}", path.display()),
            };
        let mut options = match &auth {
            ClusterAuth::None => ConnectOptions::new(),
            ClusterAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.to_string())
            }
            ClusterAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| unreadable("credentials file", path, e))?,
            ClusterAuth::NkeyFile(path) => {
                let seed = zeroize::Zeroizing::new(
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|e| unreadable("nkey seed file", path, e))?,
                );
                ConnectOptions::with_nkey(seed.trim().to_owned())
            }
        };
        if tls.is_set() || !matches!(auth, ClusterAuth::None) {
            options = options.require_tls(true);
        }
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options
            .name("varvedb")
            .connection_timeout(connect_timeout)
            .request_timeout(Some(request_timeout))
            .ping_interval(ping_interval))
    }
}

/// What a failed connect means for the caller.
fn connect_error(config: &ClusterConfig, kind: ConnectErrorKind, reason: String) -> ClusterError {
    let servers = config.servers.clone();
    match kind {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            ClusterError::Unauthorized { servers, reason }
        }
        ConnectErrorKind::Tls => ClusterError::Tls { servers, reason },
        ConnectErrorKind::ServerParse => ClusterError::Config {
            reason: format!("server URLs {servers:?}: {reason}"),
        },
        _ if looks_like_tls(&reason) => ClusterError::Tls { servers, reason },
        _ => ClusterError::Unreachable { servers, reason },
    }
}

/// Whether an I/O failure during connect came from the TLS layer: a certificate the server
/// refused shows up as an alert on the first read after the handshake, and a server that
/// speaks no TLS answers the handshake with bytes that are no TLS record.
fn looks_like_tls(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "alert",
        "corrupt message",
    ]
    .iter()
    .any(|word| reason.contains(word))
}

/// `2.14.6` (or `2.12.0-beta.1`) as numbers.
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .trim()
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>());
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.14.6"), Some((2, 14, 6)));
        assert_eq!(parse_version("v2.12.0-beta.1"), Some((2, 12, 0)));
        assert!(parse_version("2.9.10").unwrap() < MIN_SERVER);
        assert!(parse_version("2.12.0").unwrap() >= MIN_SERVER);
        assert_eq!(parse_version("dev"), None);
    }

    #[test]
    fn configurations_that_cannot_work_are_refused_before_connecting() {
        let base = ClusterConfig {
            servers: vec!["tls://127.0.0.1:1".into()],
            ..ClusterConfig::default()
        };
        let cases = [
            ClusterConfig {
                servers: vec![],
                ..base.clone()
            },
            ClusterConfig {
                replicas: 0,
                ..base.clone()
            },
            ClusterConfig {
                replicas: 7,
                ..base.clone()
            },
            ClusterConfig {
                stream: "has space".into(),
                ..base.clone()
            },
            ClusterConfig {
                stream: "a.b".into(),
                ..base.clone()
            },
            ClusterConfig {
                subject_prefix: "a.*".into(),
                ..base.clone()
            },
            ClusterConfig {
                subject_prefix: "a..b".into(),
                ..base.clone()
            },
            ClusterConfig {
                max_message_size: 0,
                ..base.clone()
            },
            ClusterConfig {
                ping_interval: Duration::ZERO,
                ..base.clone()
            },
            ClusterConfig {
                request_timeout: Duration::ZERO,
                ..base.clone()
            },
            ClusterConfig {
                duplicate_window: Duration::ZERO,
                ..base.clone()
            },
        ];
        for config in cases {
            assert!(
                matches!(validate(&config), Err(ClusterError::Config { .. })),
                "{config:?} was let through"
            );
        }
        validate(&base).unwrap();
    }
}
