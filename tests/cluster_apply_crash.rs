//! A replica process killed with SIGKILL while it applies the cluster's log resumes where its
//! last committed transaction left it: after several kills at points of progress it holds the
//! same log as a replica that applied it in one go, with nothing applied twice or missing.
#![cfg(feature = "cluster")]

mod common;
mod common_cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use natscluster::Cluster;
use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
use varvedb::{Direction, ExpectedVersion, Reader, Storage, StorageConfig, Uuid, Writer};

const START: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(180);
const STREAM: &str = "APPLY";
/// Events in the log, one message each, in commits of [`PER_COMMIT`] messages: many of the
/// replica's transactions (at most 4,096 messages each).
const EVENTS: u64 = 20_000;
const PER_COMMIT: u64 = 1_000;

const ENV_PATH: &str = "VARVEDB_APPLY_PATH";
const ENV_SERVERS: &str = "VARVEDB_APPLY_SERVERS";
const ENV_USER: &str = "VARVEDB_APPLY_USER";
const ENV_PASSWORD: &str = "VARVEDB_APPLY_PASSWORD";
const ENV_CA: &str = "VARVEDB_APPLY_CA";
const ENV_CERT: &str = "VARVEDB_APPLY_CERT";
const ENV_KEY: &str = "VARVEDB_APPLY_KEY";

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct Counted {
    pub n: u64,
}

/// A replica process: opens the store as a replica (which applies the log), says so, and
/// exits.
#[test]
fn apply_child() {
    let Some(path) = std::env::var_os(ENV_PATH) else {
        return;
    };
    common::start_child();
    let var = |name| std::env::var(name).unwrap();
    let config = ClusterConfig {
        servers: var(ENV_SERVERS).split(',').map(str::to_owned).collect(),
        stream: STREAM.to_owned(),
        subject_prefix: format!("varvedb.{}", STREAM.to_ascii_lowercase()),
        auth: ClusterAuth::user_and_password(var(ENV_USER), var(ENV_PASSWORD)),
        tls: ClusterTls {
            ca_file: Some(var(ENV_CA).into()),
            client_cert: Some((var(ENV_CERT).into(), var(ENV_KEY).into())),
        },
        ..ClusterConfig::default()
    };
    let storage = Storage::open_replicated(
        StorageConfig {
            path: PathBuf::from(path),
            ..Default::default()
        },
        config,
    )
    .unwrap();
    println!("APPLY CAUGHT {}", storage.head());
}

/// The replica's head as another process sees it: the last sequence of its log.
fn head_of(reader: &Storage) -> u64 {
    let txn = reader.read_txn().unwrap();
    let last = Reader::<Counted>::new(reader.clone())
        .read_log(&txn, u64::MAX, Direction::Backward)
        .unwrap()
        .next()
        .map_or(0, |v| v.unwrap().seq());
    last
}

fn log_of(storage: &Storage) -> Vec<(u64, u128, u64, Uuid, u64)> {
    let txn = storage.read_txn().unwrap();
    Reader::<Counted>::new(storage.clone())
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
                v.n.to_native(),
            )
        })
        .collect()
}

fn spawn_child(cluster: &Cluster, path: &Path) -> common::Watched {
    let pki = cluster.pki();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "apply_child", "--nocapture", "--test-threads=1"])
        .env(ENV_PATH, path)
        .env(ENV_SERVERS, cluster.urls().join(","))
        .env(ENV_USER, cluster.user())
        .env(ENV_PASSWORD, cluster.password())
        .env(ENV_CA, &pki.ca)
        .env(ENV_CERT, &pki.client_cert)
        .env(ENV_KEY, &pki.client_key);
    common::Watched::spawn(&mut command, "APPLY ")
}

#[test]
fn a_replica_killed_while_it_applies_resumes_with_nothing_twice_or_missing() {
    if std::env::var_os(ENV_PATH).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, STREAM);

    // The log: commits of many messages, over a hundred streams.
    {
        let writer_node = Storage::open_replicated(
            StorageConfig {
                path: dir.path().join("writer"),
                ..Default::default()
            },
            config.clone(),
        )
        .unwrap();
        let mut writer = Writer::<Counted>::new(writer_node.clone());
        for commit in 0..EVENTS / PER_COMMIT {
            let mut tx = writer.transaction();
            for i in 0..PER_COMMIT {
                let n = commit * PER_COMMIT + i;
                tx.append_batch(
                    format!("counter-{}", n % 101).as_str(),
                    ExpectedVersion::Any,
                    [Counted { n }],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(writer_node.head(), EVENTS);
    }

    // The replica under test, killed as soon as it applied more than at its last kill.
    let path = dir.path().join("replica");
    let mut kills = Vec::new();
    let mut last = 0;
    for _ in 0..3 {
        let child = spawn_child(&cluster, &path);
        let watcher = loop {
            // The child creates the store; another process reads it once it exists.
            if path.join("data.mdb").exists() {
                if let Ok(s) = Storage::open(StorageConfig {
                    path: path.clone(),
                    ..Default::default()
                }) {
                    break s;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let started = Instant::now();
        let at = loop {
            let head = head_of(&watcher);
            if head > last {
                break head;
            }
            assert!(
                started.elapsed() < WAIT,
                "the replica made no progress past {last}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let (status, lines, stderr) = child.finish();
        assert!(status.code().is_none() || lines.is_empty(), "{stderr}");
        drop(watcher);
        kills.push(at);
        last = at;
        if at == EVENTS {
            break;
        }
    }
    assert!(
        kills[0] < EVENTS,
        "the first kill came after the replica applied the whole log: {kills:?}"
    );

    // Run to the end.
    let child = spawn_child(&cluster, &path);
    let started = Instant::now();
    let caught = loop {
        match child.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => break line,
            Err(_) => assert!(started.elapsed() < WAIT, "the replica never caught up"),
        }
    };
    assert_eq!(caught, format!("CAUGHT {EVENTS}"));
    let (status, _, stderr) = child.finish();
    assert!(status.success() || status.code().is_none(), "{stderr}");

    let resumed = Storage::open_replicated(
        StorageConfig {
            path: path.clone(),
            ..Default::default()
        },
        config.clone(),
    )
    .unwrap();
    let fresh = Storage::open_replicated(
        StorageConfig {
            path: dir.path().join("fresh"),
            ..Default::default()
        },
        config,
    )
    .unwrap();
    let log = log_of(&resumed);
    assert_eq!(log.len() as u64, EVENTS, "killed at {kills:?}");
    let ns: Vec<u64> = log.iter().map(|e| e.4).collect();
    assert_eq!(ns, (0..EVENTS).collect::<Vec<_>>(), "killed at {kills:?}");
    assert_eq!(log, log_of(&fresh), "killed at {kills:?}");
    let report = varvedb::admin::verify(&resumed, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    eprintln!("killed at {kills:?}");
}
