//! An append whose answer the connection lost although the cluster stored it: the node finds
//! the commit stored and reports its positions; a retry returns the same; the log holds it
//! once on every node. (Failure injection: its own test binary, since the failpoint is for the
//! whole process.)
#![cfg(all(feature = "cluster", feature = "failpoints"))]

mod common_cluster;

use std::time::Duration;

use natscluster::Cluster;
use varvedb::{ExpectedVersion, NewEvent, Storage, StorageConfig, Uuid, Writer};

#[test]
fn a_stored_commit_whose_answer_is_lost_is_reported_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, Duration::from_secs(60)).unwrap();
    let config = common_cluster::cluster_member(&cluster, "LOST");
    let open = |name: &str| {
        Storage::open_replicated(
            StorageConfig {
                path: dir.path().join(name),
                ..Default::default()
            },
            config.clone(),
        )
        .unwrap()
    };
    let a = open("a");
    let mut writer = Writer::<u64>::new(a.clone());
    writer.append("lost-1", 1, 1).unwrap();
    let batch = || {
        (2..=4u64)
            .map(|n| NewEvent::new(n).with_id(Uuid::from_u128(0x1057 + n as u128)))
            .collect::<Vec<_>>()
    };
    varvedb::failpoints::drop_next_cluster_answer();
    let first = writer
        .append_batch("lost-1", ExpectedVersion::Exact(1), batch())
        .unwrap();
    let positions: Vec<(u64, u64)> = first.positions.iter().map(|p| (p.seq, p.version)).collect();
    assert_eq!(positions, [(2, 2), (3, 3), (4, 4)]);
    // Found in the log rather than answered: reported as a stored commit is.
    assert!(first.deduplicated);
    // The caller, not knowing, retries: the same positions, nothing written again.
    let again = writer
        .append_batch("lost-1", ExpectedVersion::Exact(1), batch())
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.positions, first.positions);
    assert_eq!(a.head(), 4);
    assert_eq!(a.stream_version("lost-1").unwrap(), 4);
    let b = open("b");
    assert_eq!(b.head(), 4);
    assert_eq!(b.stream_version("lost-1").unwrap(), 4);
    // The stream goes on after it.
    writer.append("lost-1", 5, 5).unwrap();
}
