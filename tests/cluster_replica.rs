//! A replicated store: nodes that share one log on a three-node JetStream cluster (real servers
//! on loopback, TLS and passwords), each with its own local replica.
#![cfg(feature = "cluster")]

mod common_cluster;

use common_cluster::{wait_head, WAIT};

use std::path::Path;
use std::time::{Duration, Instant};

use natscluster::Cluster;
use varvedb::cluster::{ClusterConfig, ClusterError};
use varvedb::{
    Direction, Error, ExpectedVersion, NewEvent, Reader, Storage, StorageConfig, Uuid, Writer,
};

const START: Duration = Duration::from_secs(60);

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct Noted {
    pub n: u64,
    pub text: String,
}

fn noted(n: u64) -> Noted {
    Noted {
        n,
        text: format!("event {n}"),
    }
}

fn node(dir: &Path, cluster: &ClusterConfig) -> Storage {
    Storage::open_replicated(
        StorageConfig {
            path: dir.to_path_buf(),
            ..Default::default()
        },
        cluster.clone(),
    )
    .unwrap()
}

/// Every event of the log as (seq, stream, version, event id, n).
fn log_of(storage: &Storage) -> Vec<(u64, u128, u64, Uuid, u64)> {
    let reader = Reader::<Noted>::new(storage.clone());
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
                v.n.to_native(),
            )
        })
        .collect()
}

#[test]
fn nodes_share_one_log_with_the_same_positions_and_read_their_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "SHARED");
    let a = node(&dir.path().join("a"), &config);
    let b = node(&dir.path().join("b"), &config);
    let mut wa = Writer::<Noted>::new(a.clone());
    let mut wb = Writer::<Noted>::new(b.clone());

    // Read-your-writes: the append returns once the local replica holds the event.
    let seq = wa.append("order-1", 1, noted(1)).unwrap();
    assert_eq!(seq, 1);
    assert_eq!(a.head(), 1);
    let appended = wb
        .append_batch(
            "order-2",
            ExpectedVersion::NoStream,
            (2..=4).map(noted).collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(
        appended
            .positions
            .iter()
            .map(|p| (p.seq, p.version))
            .collect::<Vec<_>>(),
        [(2, 1), (3, 2), (4, 3)]
    );
    // B appends after A's event, at the version A's append made.
    assert_eq!(wb.append("order-1", 2, noted(5)).unwrap(), 5);

    // A stale expectation is a conflict with the stream's true version, on either node.
    match wa.append("order-1", 2, noted(6)) {
        Err(Error::ConcurrencyConflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match wa.append_batch("order-2", ExpectedVersion::NoStream, [noted(7)]) {
        Err(Error::ConcurrencyConflict { actual, .. }) => assert_eq!(actual, 3),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // A transaction over two streams, atomic on every node.
    let mut tx = wa.transaction();
    tx.append("order-1", 3, noted(8)).unwrap();
    tx.append_batch("order-3", ExpectedVersion::NoStream, [noted(9), noted(10)])
        .unwrap();
    let appended = tx.commit().unwrap();
    assert_eq!(appended[0].first().seq, 6);
    assert_eq!(appended[1].last().seq, 8);

    wait_head(&a, 8);
    wait_head(&b, 8);
    let log = log_of(&a);
    assert_eq!(log, log_of(&b));
    let ns: Vec<u64> = log.iter().map(|e| e.4).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 8, 9, 10]);

    // Reads by stream and category on the other node.
    let reader = Reader::<Noted>::new(b.clone());
    let txn = b.read_txn().unwrap();
    let order1: Vec<u64> = reader
        .read_stream(&txn, "order-1", 1, Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().n.to_native())
        .collect();
    assert_eq!(order1, [1, 5, 8]);
    let orders = reader
        .read_category(&txn, "order", 1, Direction::Forward)
        .unwrap()
        .count();
    assert_eq!(orders, 8);
}

#[test]
fn a_retried_append_is_reported_stored_within_and_beyond_the_deduplication_window() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let mut config = common_cluster::cluster_member(&cluster, "RETRY");
    config.duplicate_window = Duration::from_secs(1);
    let a = node(&dir.path().join("a"), &config);
    let mut w = Writer::<Noted>::new(a.clone());
    let id = |n: u128| Uuid::from_u128(0xAB00 + n);
    let batch = || {
        (1..=3u64)
            .map(|n| NewEvent::new(noted(n)).with_id(id(n as u128)))
            .collect::<Vec<_>>()
    };
    let first = w
        .append_batch("retry-1", ExpectedVersion::NoStream, batch())
        .unwrap();
    assert!(!first.deduplicated);
    // Within the window: JetStream refuses the repeat; the node finds it stored.
    let again = w
        .append_batch("retry-1", ExpectedVersion::NoStream, batch())
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.positions, first.positions);
    // A single event, retried within the window.
    let one = || [NewEvent::new(noted(4)).with_id(id(4))];
    let single = w
        .append_batch("retry-2", ExpectedVersion::Any, one())
        .unwrap();
    let single_again = w
        .append_batch("retry-2", ExpectedVersion::Any, one())
        .unwrap();
    assert!(single_again.deduplicated);
    assert_eq!(single_again.positions, single.positions);

    // Beyond the window JetStream stores the repeat; every replica finds the ids stored and
    // writes nothing.
    std::thread::sleep(Duration::from_millis(1500));
    let late = w
        .append_batch("retry-2", ExpectedVersion::Any, one())
        .unwrap();
    assert!(late.deduplicated);
    assert_eq!(late.positions, single.positions);
    let late = w
        .append_batch("retry-1", ExpectedVersion::NoStream, batch())
        .unwrap();
    assert!(late.deduplicated);
    assert_eq!(late.positions, first.positions);
    // Reused ids with another payload: an error, on the node and in the log.
    match w.append_batch(
        "retry-2",
        ExpectedVersion::Any,
        [NewEvent::new(noted(99)).with_id(id(4))],
    ) {
        Err(Error::EventIdConflict { event_id, .. }) => assert_eq!(event_id, id(4)),
        other => panic!("expected an event id conflict, got {other:?}"),
    }
    assert_eq!(a.head(), 4);

    // A second node starting empty applies the whole log, repeats included, to the same
    // four events.
    let b = node(&dir.path().join("b"), &config);
    assert_eq!(b.head(), 4);
    assert_eq!(log_of(&a), log_of(&b));
}

#[test]
fn a_replica_refuses_local_writes_and_another_log() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "ONE");
    let path = dir.path().join("a");
    {
        let a = node(&path, &config);
        Writer::<Noted>::new(a.clone())
            .append("s-1", 1, noted(1))
            .unwrap();
    }
    // Opened as a plain store, the replica reads but does not append.
    {
        let plain = Storage::open(StorageConfig {
            path: path.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(log_of(&plain).len(), 1);
        match Writer::<Noted>::new(plain.clone()).append("s-1", 2, noted(2)) {
            Err(Error::ReplicaNotWritable { stream }) => assert_eq!(stream, "ONE"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Another log is refused.
    let other = common_cluster::cluster_member(&cluster, "TWO");
    match Storage::open_replicated(
        StorageConfig {
            path: path.clone(),
            ..Default::default()
        },
        other,
    ) {
        Err(Error::Cluster(ClusterError::OtherLog { .. })) => {}
        other => panic!("expected another log to be refused, got {other:?}"),
    }
    // A store with events of its own is refused.
    let own = dir.path().join("own");
    {
        let s = Storage::open(StorageConfig {
            path: own.clone(),
            ..Default::default()
        })
        .unwrap();
        Writer::<Noted>::new(s).append("s-1", 1, noted(1)).unwrap();
    }
    match Storage::open_replicated(
        StorageConfig {
            path: own,
            ..Default::default()
        },
        config.clone(),
    ) {
        Err(Error::Cluster(ClusterError::OtherLog { .. })) => {}
        other => panic!("expected a store of its own to be refused, got {other:?}"),
    }
    // The replica opens again as a replica, where it was.
    let a = node(&path, &config);
    assert_eq!(a.head(), 1);
    Writer::<Noted>::new(a.clone())
        .append("s-1", 2, noted(2))
        .unwrap();
    assert_eq!(a.head(), 2);
}

/// The replica's metrics: the last JetStream sequence applied and the lag, set as it applies.
#[cfg(feature = "prometheus")]
#[test]
fn a_replica_exports_how_far_it_applied_the_log() {
    let handle = varvedb::metrics::serve_prometheus("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "METRICS");
    let a = node(&dir.path().join("a"), &config);
    let mut w = Writer::<Noted>::new(a.clone());
    for v in 1..=3 {
        w.append("m-1", v, noted(v)).unwrap();
    }
    let path = a.path().display().to_string();
    let sample = |text: &str, name: &str| -> Option<f64> {
        let key = format!("{name}{{path=\"{path}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    };
    let started = Instant::now();
    loop {
        let text = handle.render();
        let applied = sample(&text, varvedb::metrics::REPLICA_APPLIED);
        let lag = sample(&text, varvedb::metrics::REPLICA_LAG_MESSAGES);
        let seconds = sample(&text, varvedb::metrics::REPLICA_LAG_SECONDS);
        if applied == Some(3.0) {
            assert_eq!(lag, Some(0.0), "{text}");
            assert_eq!(seconds, Some(0.0), "{text}");
            break;
        }
        assert!(started.elapsed() < WAIT, "no replica metrics in\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node started from a backup of another node's replica (which holds the last JetStream
/// sequence it applied) applies only what came after, and serves the same log.
#[test]
fn a_node_starts_from_a_backup_of_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "BACKUP");
    let a = node(&dir.path().join("a"), &config);
    let mut w = Writer::<Noted>::new(a.clone());
    for v in 1..=5 {
        w.append("b-1", v, noted(v)).unwrap();
    }
    let copy = dir.path().join("copy");
    let info = varvedb::admin::backup(&a, &copy, None).unwrap();
    assert_eq!(info.head, 5);
    for v in 6..=8 {
        w.append("b-1", v, noted(v)).unwrap();
    }
    let b = node(&copy, &config);
    assert_eq!(b.head(), 8);
    assert_eq!(log_of(&a), log_of(&b));
    // It appends as any node.
    Writer::<Noted>::new(b.clone())
        .append("b-1", 9, noted(9))
        .unwrap();
    wait_head(&a, 9);
    assert_eq!(log_of(&a), log_of(&b));
    let lag = varvedb::cluster::lag(&b, &config).unwrap();
    assert_eq!((lag.applied, lag.last, lag.messages), (9, 9, 0));
}

/// Another definition of `Noted`: the same name and schema version, another layout.
mod other {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "Noted")]
    pub struct Noted {
        pub text: String,
        pub n: u64,
    }
}

/// A commit the replicas refuse (here: an event type whose layout changed without a version
/// bump, written from another node) is refused by every replica alike, its writer gets the
/// error, and the stream's later appends go on at the versions every node agrees on.
#[test]
fn a_refused_commit_is_refused_on_every_node_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "REFUSE");
    let a = node(&dir.path().join("a"), &config);
    let b = node(&dir.path().join("b"), &config);
    Writer::<Noted>::new(a.clone())
        .append("r-1", 1, noted(1))
        .unwrap();
    wait_head(&b, 1);
    let changed = Writer::<other::Noted>::new(b.clone()).append(
        "r-1",
        2,
        other::Noted {
            text: "another layout".into(),
            n: 2,
        },
    );
    match changed {
        Err(Error::LayoutChanged { event_type, .. }) => assert_eq!(event_type, "Noted"),
        other => panic!("expected the changed layout refused, got {other:?}"),
    }
    assert_eq!(b.head(), 1);
    // The stream is still at version 1 on both nodes, and takes version 2 from either.
    assert_eq!(
        Writer::<Noted>::new(b.clone())
            .append("r-1", 2, noted(2))
            .unwrap(),
        2
    );
    assert_eq!(
        Writer::<Noted>::new(a.clone())
            .append("r-1", 3, noted(3))
            .unwrap(),
        3
    );
    wait_head(&b, 3);
    assert_eq!(log_of(&a), log_of(&b));
    // A node started empty applies the refused message the same way.
    let c = node(&dir.path().join("c"), &config);
    assert_eq!(log_of(&c), log_of(&a));
}
