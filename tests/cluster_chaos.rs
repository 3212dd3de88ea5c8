//! Two VarveDB processes append concurrently to overlapping streams with exact expected
//! versions, on a three-node JetStream cluster (R=3) whose servers are killed with SIGKILL and
//! restarted, and paused with SIGSTOP, while they write. Afterwards every acknowledged append
//! is in every replica at the position it was acknowledged at, no (stream, version) has two
//! winners, and every replica, including one started empty after the fact, holds the same log
//! without a gap. The same again in an encrypted log, whose stream keys the writers put in the
//! cluster's key bucket while its servers fail.
#![cfg(feature = "cluster")]

mod common;
mod common_cluster;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use natscluster::Cluster;
use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
use varvedb::{
    Direction, Error, ExpectedVersion, NewEvent, Reader, Storage, StorageConfig, Uuid, Writer,
};

const START: Duration = Duration::from_secs(60);
/// How long the test waits for the writers' next acknowledgements before it fails: a condition
/// with a generous bound, not a pace.
const PROGRESS: Duration = Duration::from_secs(180);
/// The streams both writers append to.
const STREAMS: u64 = 6;
/// Acknowledgements awaited in each phase.
const PER_PHASE: usize = 30;
const MARK: &str = "CHAOS ";

/// The child's settings, in environment variables.
const ENV_PATH: &str = "VARVEDB_CHAOS_PATH";
const ENV_NODE: &str = "VARVEDB_CHAOS_NODE";
const ENV_SERVERS: &str = "VARVEDB_CHAOS_SERVERS";
const ENV_USER: &str = "VARVEDB_CHAOS_USER";
const ENV_PASSWORD: &str = "VARVEDB_CHAOS_PASSWORD";
const ENV_CA: &str = "VARVEDB_CHAOS_CA";
const ENV_CERT: &str = "VARVEDB_CHAOS_CERT";
const ENV_KEY: &str = "VARVEDB_CHAOS_KEY";
const ENV_STOP: &str = "VARVEDB_CHAOS_STOP";
const ENV_STREAM: &str = "VARVEDB_CHAOS_STREAM";
const ENV_ENCRYPTED: &str = "VARVEDB_CHAOS_ENCRYPTED";
/// The master key of the encrypted log's nodes.
const MASTER_KEY: [u8; 32] = [0xC4; 32];
/// One chaos run at a time: each starts a cluster and two writer processes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct Deposit {
    pub node: u64,
    pub n: u64,
}

fn config_from_env() -> ClusterConfig {
    let var = |name| std::env::var(name).unwrap();
    let stream = var(ENV_STREAM);
    ClusterConfig {
        servers: var(ENV_SERVERS).split(',').map(str::to_owned).collect(),
        subject_prefix: format!("varvedb.{}", stream.to_ascii_lowercase()),
        stream,
        auth: ClusterAuth::user_and_password(var(ENV_USER), var(ENV_PASSWORD)),
        tls: ClusterTls {
            ca_file: Some(var(ENV_CA).into()),
            client_cert: Some((var(ENV_CERT).into(), var(ENV_KEY).into())),
        },
        request_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(1),
        ..ClusterConfig::default()
    }
}

/// A writer process: appends deposits to random streams at the version its replica shows,
/// printing `ACK seq stream version id` for each acknowledged one, until the stop file exists.
#[test]
fn chaos_child() {
    let Some(path) = std::env::var_os(ENV_PATH) else {
        return;
    };
    common::start_child();
    let node: u64 = std::env::var(ENV_NODE).unwrap().parse().unwrap();
    let stop = PathBuf::from(std::env::var_os(ENV_STOP).unwrap());
    // The cluster may be failing over while the writer opens: an open that fails is tried
    // again, for as long as the parent waits for progress.
    let started = Instant::now();
    let storage = loop {
        match Storage::open_replicated(
            store_config(
                &PathBuf::from(&path),
                std::env::var_os(ENV_ENCRYPTED).is_some(),
            ),
            config_from_env(),
        ) {
            Ok(storage) => break storage,
            Err(e) if started.elapsed() < PROGRESS => eprintln!("open failed: {e}"),
            Err(e) => panic!("no open in {PROGRESS:?}: {e}"),
        }
    };
    let mut writer = Writer::<Deposit>::new(storage.clone());
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (node + 1);
    let mut n = 0;
    while !stop.exists() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let stream = format!("account-{}", state % STREAMS);
        let version = storage.stream_version(stream.as_str()).unwrap();
        let id = Uuid::new_v4();
        n += 1;
        let event = NewEvent::new(Deposit { node, n }).with_id(id);
        match writer.append_batch(stream.as_str(), ExpectedVersion::Exact(version), [event]) {
            Ok(a) => {
                let p = a.first();
                println!("{MARK}ACK {} {} {} {id}", p.seq, a.stream.0, p.version);
            }
            Err(Error::ConcurrencyConflict { .. }) => {}
            // A failover may leave an append without an answer: not acknowledged, and not
            // retried (a retry with the same id would settle it).
            Err(e) => eprintln!("append failed: {e}"),
        }
    }
    println!("{MARK}DONE");
}

/// An acknowledged append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    seq: u64,
    stream: u128,
    version: u64,
    id: Uuid,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        seq: words.next()?.parse().ok()?,
        stream: words.next()?.parse().ok()?,
        version: words.next()?.parse().ok()?,
        id: words.next()?.parse().ok()?,
    })
}

struct Writers {
    children: Vec<common::Watched>,
    acks: Vec<Ack>,
    /// Acknowledgements per writer.
    each: Vec<usize>,
}

impl Writers {
    /// Waits until the writers together acknowledged `more` appends more, and each at least
    /// `each` in all.
    fn progress(&mut self, more: usize, each: usize, phase: &str) {
        let want = self.acks.len() + more;
        let started = Instant::now();
        while self.acks.len() < want || self.each.iter().any(|&n| n < each) {
            let mut got = false;
            for (i, child) in self.children.iter().enumerate() {
                match child.rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(line) => {
                        if let Some(ack) = parse_ack(&line) {
                            self.acks.push(ack);
                            self.each[i] += 1;
                        }
                        got = true;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.fail(format!("a writer ended during {phase}"))
                    }
                }
            }
            if !got && started.elapsed() > PROGRESS {
                self.fail(format!(
                    "{phase}: the writers acknowledged {} of {more} appends in {PROGRESS:?}",
                    self.acks.len() + more - want
                ));
            }
        }
    }

    /// Fails the test with what the writers said on stderr.
    fn fail(&mut self, why: String) -> ! {
        let mut said = String::new();
        for (i, child) in std::mem::take(&mut self.children).into_iter().enumerate() {
            let (_, _, stderr) = child.finish();
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            said += &format!("\n--- writer {i}, last lines of stderr:\n");
            for line in tail.into_iter().rev() {
                said += line;
                said.push('\n');
            }
        }
        panic!("{why}{said}");
    }
}

/// Every event of a replica as (seq, stream, version, id, node, n).
fn log_of(storage: &Storage) -> Vec<(u64, u128, u64, Uuid, u64, u64)> {
    let reader = Reader::<Deposit>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|v| {
            let v = v.unwrap();
            let env = v.envelope();
            (
                env.seq,
                env.stream.0,
                env.version,
                env.event_id,
                v.node.to_native(),
                v.n.to_native(),
            )
        })
        .collect()
}

/// The configuration of a node's store.
fn store_config(path: &Path, encrypted: bool) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        encryption_enabled: encrypted,
        master_key: encrypted.then_some(MASTER_KEY),
        ..Default::default()
    }
}

/// A replica opened after the ordeal: the cluster may still be electing leaders (of the log's
/// stream, or of the key bucket's), so an open that fails is tried again, as the writers do.
fn replica(path: &Path, config: &ClusterConfig, encrypted: bool) -> Storage {
    let started = Instant::now();
    loop {
        match Storage::open_replicated(store_config(path, encrypted), config.clone()) {
            Ok(storage) => return storage,
            Err(e) if started.elapsed() < PROGRESS => eprintln!("open failed: {e}"),
            Err(e) => panic!("no open of {} in {PROGRESS:?}: {e}", path.display()),
        }
    }
}

#[test]
fn acknowledged_appends_survive_killed_and_paused_servers_on_every_replica() {
    if std::env::var_os(ENV_PATH).is_some() {
        return;
    }
    chaos("CHAOS", false);
}

#[test]
fn acknowledged_appends_of_an_encrypted_log_survive_killed_and_paused_servers() {
    if std::env::var_os(ENV_PATH).is_some() {
        return;
    }
    chaos("SEALEDCHAOS", true);
}

/// Two writers on the log `stream` through a killed and a paused server, then the checks of
/// the module documentation.
fn chaos(stream: &str, encrypted: bool) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), 3, START).unwrap();
    let stop = dir.path().join("stop");
    let spawn = |node: u64| {
        let pki = cluster.pki();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "chaos_child", "--nocapture", "--test-threads=1"])
            .env(ENV_PATH, dir.path().join(format!("node-{node}")))
            .env(ENV_NODE, node.to_string())
            .env(ENV_SERVERS, cluster.urls().join(","))
            .env(ENV_USER, cluster.user())
            .env(ENV_PASSWORD, cluster.password())
            .env(ENV_CA, &pki.ca)
            .env(ENV_CERT, &pki.client_cert)
            .env(ENV_KEY, &pki.client_key)
            .env(ENV_STOP, &stop)
            .env(ENV_STREAM, stream);
        if encrypted {
            command.env(ENV_ENCRYPTED, "1");
        }
        common::Watched::spawn(&mut command, MARK)
    };
    let mut writers = Writers {
        children: vec![spawn(0), spawn(1)],
        acks: Vec::new(),
        each: vec![0, 0],
    };
    // Both writers are appending before the first server goes.
    writers.progress(PER_PHASE, 5, "the start");

    cluster.node(0).kill();
    writers.progress(PER_PHASE, 0, "server 0 killed");
    cluster.restart(0).unwrap();
    cluster.wait_healthy(START).unwrap();
    writers.progress(PER_PHASE, 0, "server 0 restarted");

    cluster.node(1).pause();
    writers.progress(PER_PHASE, 0, "server 1 paused");
    cluster.node(1).resume();
    cluster.wait_healthy(START).unwrap();
    // Each writer goes on after the whole ordeal.
    let before = writers.each.clone();
    writers.progress(PER_PHASE, 0, "server 1 resumed");
    writers.progress(0, before.iter().max().unwrap() + 5, "the end");

    std::fs::write(&stop, b"").unwrap();
    let started = Instant::now();
    let mut done = vec![false; writers.children.len()];
    while done.contains(&false) {
        let mut lines = Vec::new();
        for (i, child) in writers.children.iter().enumerate() {
            if done[i] {
                continue;
            }
            match child.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => lines.push((i, line)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    writers.fail("a writer ended before it stopped".into())
                }
            }
        }
        for (i, line) in lines {
            if line == "DONE" {
                done[i] = true;
            } else {
                writers.acks.extend(parse_ack(&line));
            }
        }
        if started.elapsed() > PROGRESS {
            writers.fail("a writer did not stop".into());
        }
    }
    for child in std::mem::take(&mut writers.children) {
        child.finish();
    }

    // No (stream, version) acknowledged to two appends.
    let mut winners: HashMap<(u128, u64), Uuid> = HashMap::new();
    for ack in &writers.acks {
        let winner = winners.entry((ack.stream, ack.version)).or_insert(ack.id);
        assert_eq!(*winner, ack.id, "two winners for {ack:?}");
    }

    // The replicas, opened again (they catch up with the log), and one started empty.
    let config = common_cluster::cluster_member(&cluster, stream);
    let logs: Vec<_> = ["node-0", "node-1", "fresh"]
        .iter()
        .map(|name| log_of(&replica(&dir.path().join(name), &config, encrypted)))
        .collect();
    let log = &logs[0];
    assert!(log.len() >= writers.acks.len());
    for (i, event) in log.iter().enumerate() {
        assert_eq!(event.0, i as u64 + 1, "a gap before {event:?}");
    }
    assert_eq!(&logs[1], log, "node-1 differs from node-0");
    assert_eq!(&logs[2], log, "a fresh replica differs from node-0");
    for ack in &writers.acks {
        let event = log[ack.seq as usize - 1];
        assert_eq!(
            (event.1, event.2, event.3),
            (ack.stream, ack.version, ack.id),
            "acknowledged {ack:?}, the log holds {event:?}"
        );
    }
    // Versions are dense per stream.
    let mut versions: HashMap<u128, u64> = HashMap::new();
    for event in log {
        let v = versions.entry(event.1).or_insert(0);
        *v += 1;
        assert_eq!(event.2, *v, "stream versions have a gap at {event:?}");
    }
    eprintln!(
        "{} acknowledged appends, {} events in the log",
        writers.acks.len(),
        log.len()
    );
}
