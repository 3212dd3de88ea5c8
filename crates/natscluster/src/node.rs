//! One `nats-server` process of a cluster: its configuration, its process, and signals to it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pki::Pki;

/// A node's loopback ports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ports {
    /// Clients (TLS).
    pub client: u16,
    /// Routes to the other nodes (TLS).
    pub route: u16,
    /// Monitoring (plain HTTP on loopback; answers health checks).
    pub http: u16,
}

/// One node of a [`Cluster`](crate::Cluster).
#[derive(Debug)]
pub struct Node {
    name: String,
    ports: Ports,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A string for a NATS configuration file: quoted, with `\` and `"` escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn path(p: &Path) -> String {
    quoted(&p.to_string_lossy())
}

impl Node {
    /// Writes the configuration of node `name` in its directory `home`: its ports, the route
    /// ports of the others, TLS with `pki` on clients and routes, the client user and password,
    /// and the routes' password.
    pub(crate) fn configure(
        home: &Path,
        name: String,
        ports: Ports,
        routes: &[u16],
        pki: &Pki,
        (user, password): (&str, &str),
        route_password: &str,
    ) -> io::Result<Node> {
        fs::create_dir_all(home.join("jetstream"))?;
        let tls = format!(
            "{{\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n    verify: true\n    timeout: 5\n  }}",
            path(&pki.node_cert),
            path(&pki.node_key),
            path(&pki.ca)
        );
        let routes: Vec<String> = routes
            .iter()
            .map(|p| {
                quoted(&format!(
                    "nats-route://route:{route_password}@127.0.0.1:{p}"
                ))
            })
            .collect();
        // A cluster of one has no routes: JetStream runs without clustering.
        let cluster = if routes.is_empty() {
            String::new()
        } else {
            format!(
                "cluster {{\n  name: varvedb-test\n  listen: 127.0.0.1:{route}\n  routes: [ {routes} ]\n  tls {tls}\n  authorization {{ user: route, password: {route_password} }}\n}}\n",
                route = ports.route,
                routes = routes.join(", "),
                route_password = quoted(route_password),
            )
        };
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{http}\n\
             max_payload: 8MB\n\
             jetstream {{\n  store_dir: {store}\n  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}}\n\
             tls {tls}\n\
             authorization {{\n  users: [ {{ user: {user}, password: {password} }} ]\n}}\n\
             {cluster}",
            client = ports.client,
            http = ports.http,
            store = path(&home.join("jetstream")),
            user = quoted(user),
            password = quoted(password),
        );
        let config_path = home.join("nats.conf");
        crate::pki::write_private(&config_path, &config)?;
        Ok(Node {
            name,
            ports,
            config: config_path,
            log: home.join("nats.log"),
            child: None,
            paused: false,
        })
    }

    /// The node's server name: `n1`, `n2`, ... and a tag of its cluster, so that no two
    /// clusters on the machine share one.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its client URL, `tls://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.ports.client)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How its process ended, when it ended on its own (a configuration it refused, say).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        // Reaped: its pid may be another process's from now on, and is never signalled again.
        self.child = None;
        Some(status)
    }

    /// Whether it is stopped by [`Node::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the process (output appended to the node's log).
    pub(crate) fn start(&mut self, binary: &Path) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other(format!(
                "{} is running already",
                self.name
            )));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2),
        // which is async-signal-safe; it allocates nothing and touches no lock. It has the
        // server killed when the thread that started it ends, so that a test process killed
        // outright leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped while `child` is held,
            // so it names that process and no other.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Kills the process with `SIGKILL` (no shutdown: what is not on disk is lost) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Stops the process with `SIGSTOP`: it holds its connections but answers nothing.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// Continues a paused process with `SIGCONT`.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Asks the monitoring port's `/healthz` (healthy: JetStream enabled and current): `true`
    /// for 200 OK.
    ///
    /// # Errors
    ///
    /// When the port does not answer within a few seconds.
    pub fn health(&self) -> io::Result<bool> {
        // The port must be this node's: another cluster's server may hold it when this one
        // lost it between the pick and its bind.
        let varz = self.get("/varz")?;
        let own = [
            format!("\"server_name\": \"{}\"", self.name),
            format!("\"server_name\":\"{}\"", self.name),
        ];
        if !own.iter().any(|o| varz.contains(o.as_str())) {
            return Ok(false);
        }
        let answer = self.get("/healthz")?;
        Ok(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
    }

    /// The monitoring port's whole answer to `GET path`.
    fn get(&self, path: &str) -> io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.ports.http))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
    }
}
