//! The stream index and heads are written behind the log (format 3): reads by stream and version
//! checks must still see every committed event at once, in every snapshot, across index flushes,
//! reopens and appends by other processes.

use std::path::Path;
use std::process::Command;

use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

fn config(path: &Path, index_interval: u64) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        index_interval,
        ..Default::default()
    }
}

/// Stream `stream`'s events as `txn` sees them, forward and backward, checked against each other.
fn stream_of(reader: &Reader<u64>, txn: &varvedb::ReadTxn, stream: u64) -> Vec<u64> {
    let forward: Vec<u64> = reader
        .read_stream(txn, stream, 1, Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().to_native())
        .collect();
    let mut backward: Vec<u64> = reader
        .read_stream(txn, stream, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|v| v.unwrap().to_native())
        .collect();
    backward.reverse();
    assert_eq!(forward, backward, "stream {stream} forward and backward");
    forward
}

/// Every stream `txn` lists, as (stream, version).
fn listed(reader: &Reader<u64>, txn: &varvedb::ReadTxn) -> Vec<(u128, u64)> {
    reader
        .streams(txn)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            (s.stream.as_u128(), s.version)
        })
        .collect()
}

#[test]
fn a_snapshot_keeps_its_view_across_index_flushes() {
    let dir = tempfile::tempdir().unwrap();
    // A large interval: flushes happen only when asked for.
    let storage = Storage::open(config(dir.path(), 1_000_000)).unwrap();
    let mut writer = Writer::<u64>::new(storage.clone());
    let reader = Reader::<u64>::new(storage.clone());
    for v in 1..=3 {
        writer.append(1, v, v).unwrap();
    }
    let old = storage.env.read_txn().unwrap();
    // The old snapshot must not see what follows: appends, then two flushes (the second drops
    // the tail's copy of the interval the snapshot needs), then more appends.
    for v in 4..=6 {
        writer.append(1, v, v).unwrap();
    }
    writer.append(2, 1, 100).unwrap();
    assert_eq!(storage.flush_index().unwrap(), 7);
    let middle = storage.env.read_txn().unwrap();
    writer.append(1, 7, 7).unwrap();
    assert_eq!(storage.flush_index().unwrap(), 8);
    writer.append(1, 8, 8).unwrap();
    assert_eq!(storage.stats().indexed_through, 8);

    assert_eq!(stream_of(&reader, &old, 1), vec![1, 2, 3]);
    assert!(stream_of(&reader, &old, 2).is_empty());
    assert_eq!(reader.stream_version(&old, 1).unwrap(), 3);
    assert_eq!(
        reader.last_in_stream(&old, 1).unwrap().unwrap().to_native(),
        3
    );
    assert_eq!(listed(&reader, &old), vec![(1, 3)]);

    assert_eq!(stream_of(&reader, &middle, 1), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(stream_of(&reader, &middle, 2), vec![100]);

    let now = storage.env.read_txn().unwrap();
    assert_eq!(stream_of(&reader, &now, 1), (1..=8).collect::<Vec<_>>());
    // Reading from a version in the middle crosses from the index into the tail.
    let from5: Vec<u64> = reader
        .read_stream(&now, 1, 5, Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().to_native())
        .collect();
    assert_eq!(from5, vec![5, 6, 7, 8]);
    let down_from7: Vec<u64> = reader
        .read_stream(&now, 1, 7, Direction::Backward)
        .unwrap()
        .map(|v| v.unwrap().to_native())
        .collect();
    assert_eq!(down_from7, vec![7, 6, 5, 4, 3, 2, 1]);
    let info: Vec<_> = reader.streams(&now).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        (info[0].version, info[0].first_seq, info[0].last_seq),
        (8, 1, 9)
    );
}

#[test]
fn version_checks_see_the_unindexed_tail_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), 5)).unwrap();
    let mut writer = Writer::<u64>::new(storage.clone());
    for v in 1..=12u64 {
        writer.append(v % 3, v.div_ceil(3), v).unwrap();
    }
    drop((storage, writer));
    let storage = Storage::open(config(dir.path(), 5)).unwrap();
    // Closing indexed everything.
    assert_eq!(storage.stats().indexed_through, 12);
    let mut writer = Writer::<u64>::new(storage.clone());
    assert!(matches!(
        writer.append(0, 4, 0),
        Err(Error::ConcurrencyConflict { actual: 4, .. })
    ));
    writer
        .append_batch(0, ExpectedVersion::Exact(4), [13u64, 14])
        .unwrap();
    let reader = Reader::<u64>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(stream_of(&reader, &txn, 0), vec![3, 6, 9, 12, 13, 14]);
}

// ---------------------------------------------------------------------------------------------
// Another process appends
// ---------------------------------------------------------------------------------------------

const ENV_DIR: &str = "VARVE_DEFERRED_CHILD_DIR";

/// The child: appends stream 7 versions 1..=50 (its index interval of 8 makes it flush several
/// times), then closes, which indexes the rest.
#[test]
fn deferred_index_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let storage = Storage::open(config(Path::new(&dir), 8)).unwrap();
    let mut writer = Writer::<u64>::new(storage.clone());
    let start = storage.stream_version(7).unwrap();
    for v in start + 1..=start + 50 {
        writer.append(7, v, 7000 + v).unwrap();
    }
    assert_eq!(storage.flush_index().unwrap(), storage.head());
    // And a few more that stay unindexed in this process's tail when it is killed.
    for v in start + 51..=start + 53 {
        writer.append(7, v, 7000 + v).unwrap();
    }
    // Leave without closing: the last events are in no index on disk.
    std::process::exit(0);
}

fn run_child(dir: &Path) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "deferred_index_child", "--nocapture"])
        .env(ENV_DIR, dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn appends_by_another_process_are_seen_by_reads_and_version_checks() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), 1_000_000)).unwrap();
    let mut writer = Writer::<u64>::new(storage.clone());
    let reader = Reader::<u64>::new(storage.clone());
    writer.append(1, 1, 1).unwrap();
    writer.append(7, 1, 7001).unwrap();
    // This process's tail holds its two events; the child flushes past them.
    run_child(dir.path());

    let txn = storage.env.read_txn().unwrap();
    let want: Vec<u64> = (1..=54).map(|v| 7000 + v).collect();
    assert_eq!(stream_of(&reader, &txn, 7), want);
    assert_eq!(reader.stream_version(&txn, 7).unwrap(), 54);
    assert_eq!(stream_of(&reader, &txn, 1), vec![1]);
    drop(txn);
    // Version checks see the child's events too.
    assert!(matches!(
        writer.append(7, 2, 0),
        Err(Error::ConcurrencyConflict { actual: 54, .. })
    ));
    writer.append(7, 55, 7055).unwrap();

    // Once more, with this process's tail behind the child's flush.
    run_child(dir.path());
    let txn = storage.env.read_txn().unwrap();
    let want: Vec<u64> = (1..=108).map(|v| 7000 + v).collect();
    assert_eq!(stream_of(&reader, &txn, 7), want);
    assert_eq!(listed(&reader, &txn), vec![(1, 1), (7, 108)]);
    drop(txn);
    assert_eq!(storage.flush_index().unwrap(), 109);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.index_entries), (109, 109));
}
