//! Multi-stream transactions (`Writer::transaction`): atomic across streams, checked part by
//! part, idempotent on retry, grouped safely with concurrent appends, and all-or-nothing across
//! `kill -9`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion, NewEvent, Uuid};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[rkyv(derive(Debug))]
struct TxEv {
    /// The transaction that wrote the event.
    k: u64,
    part: u32,
    idx: u32,
}

fn open(path: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.into(),
        ..Default::default()
    })
    .unwrap()
}

fn ev(k: u64, part: u32, idx: u32) -> TxEv {
    TxEv { k, part, idx }
}

/// Every event of the log, in order, checking the sequence is gap-free.
fn log(storage: &Storage) -> Vec<(u64, u128, u64, TxEv)> {
    let reader = Reader::<TxEv>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let mut out = Vec::new();
    for view in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        let view = view.unwrap();
        let env = view.envelope();
        assert_eq!(env.seq, out.len() as u64 + 1, "gap in the log");
        let e = &*view;
        out.push((
            env.seq,
            env.stream.as_u128(),
            env.version,
            ev(e.k.to_native(), e.part.to_native(), e.idx.to_native()),
        ));
    }
    out
}

#[test]
fn parts_commit_together_at_consecutive_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<TxEv>::new(storage.clone());
    writer.append(9, 1, ev(0, 0, 0)).unwrap();

    let mut tx = writer.transaction();
    tx.append_batch(1, ExpectedVersion::NoStream, [ev(1, 0, 0), ev(1, 0, 1)])
        .unwrap()
        .append(9, 2, ev(1, 1, 0))
        .unwrap()
        .append_batch(2, ExpectedVersion::Any, [ev(1, 2, 0)])
        .unwrap();
    assert_eq!((tx.len(), tx.events()), (3, 4));
    let appended = tx.commit().unwrap();

    let positions: Vec<Vec<(u64, u64)>> = appended
        .iter()
        .map(|a| a.positions.iter().map(|p| (p.seq, p.version)).collect())
        .collect();
    assert_eq!(
        positions,
        vec![vec![(2, 1), (3, 2)], vec![(4, 2)], vec![(5, 1)]]
    );
    assert!(appended.iter().all(|a| !a.deduplicated));
    assert_eq!(appended[1].stream.as_u128(), 9);
    assert_eq!(storage.head(), 5);
    assert_eq!(storage.stream_version(1).unwrap(), 2);
    assert_eq!(storage.stream_version(9).unwrap(), 2);
    let log = log(&storage);
    assert_eq!(log.len(), 5);
    assert_eq!(log[3], (4, 9, 2, ev(1, 1, 0)));

    // Reads by stream see the transaction's events.
    let reader = Reader::<TxEv>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let stream9: Vec<u32> = reader
        .read_stream(&txn, 9, 1, Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().k.to_native() as u32)
        .collect();
    assert_eq!(stream9, vec![0, 1]);
}

#[test]
fn one_failing_part_writes_nothing_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<TxEv>::new(storage.clone());
    writer.append(5, 1, ev(0, 0, 0)).unwrap();
    let mut head = storage.subscribe();
    head.borrow_and_update();

    let mut tx = writer.transaction();
    tx.append_batch(1, ExpectedVersion::NoStream, [ev(1, 0, 0)])
        .unwrap();
    tx.append_batch(2, ExpectedVersion::Any, [ev(1, 1, 0)])
        .unwrap();
    tx.append_batch(5, ExpectedVersion::Exact(3), [ev(1, 2, 0)])
        .unwrap();
    match tx.commit() {
        Err(Error::ConcurrencyConflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream.as_u128(), 5);
            assert_eq!(expected, ExpectedVersion::Exact(3));
            assert_eq!(actual, 1);
        }
        other => panic!("expected a conflict on stream 5, got {other:?}"),
    }
    assert_eq!(storage.head(), 1);
    assert_eq!(storage.stream_version(1).unwrap(), 0);
    assert_eq!(storage.stream_version(2).unwrap(), 0);
    assert_eq!(log(&storage).len(), 1);
    assert!(
        !head.has_changed().unwrap(),
        "a failed transaction moved the bus"
    );

    // The next append takes sequence 2: the failed transaction used no sequence.
    assert_eq!(writer.append(1, 1, ev(2, 0, 0)).unwrap(), 2);
}

#[test]
fn later_parts_see_earlier_parts_of_the_same_stream() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<TxEv>::new(storage.clone());
    let mut tx = writer.transaction();
    tx.append(3, 1, ev(1, 0, 0)).unwrap();
    tx.append(3, 2, ev(1, 1, 0)).unwrap();
    tx.append_batch(3, ExpectedVersion::StreamExists, [ev(1, 2, 0)])
        .unwrap();
    let appended = tx.commit().unwrap();
    assert_eq!(appended[2].first().version, 3);

    // Two parts both claiming version 1 conflict: the second sees the first.
    let mut tx = writer.transaction();
    tx.append(4, 1, ev(2, 0, 0)).unwrap();
    tx.append(4, 1, ev(2, 1, 0)).unwrap();
    assert!(matches!(
        tx.commit(),
        Err(Error::ConcurrencyConflict { actual: 1, .. })
    ));
    assert_eq!(storage.stream_version(4).unwrap(), 0);
}

#[test]
fn bad_parts_are_refused_when_added_and_the_rest_stays() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        max_event_size: 64,
        ..Default::default()
    })
    .unwrap();
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    struct Blob(Vec<u8>);
    let mut writer = Writer::<Blob>::new(storage.clone());
    let id = Uuid::from_u128(77);
    let mut tx = writer.transaction();
    tx.append_batch(
        1,
        ExpectedVersion::Any,
        [NewEvent::new(Blob(vec![1])).with_id(id)],
    )
    .unwrap();
    // The same id in another part of the transaction.
    let dup = tx.append_batch(
        2,
        ExpectedVersion::Any,
        [
            NewEvent::new(Blob(vec![2])).with_id(Uuid::from_u128(78)),
            NewEvent::new(Blob(vec![3])).with_id(id),
        ],
    );
    assert!(matches!(dup, Err(Error::DuplicateEventIdInBatch { event_id }) if event_id == id));
    // An oversized event.
    let big = tx.append_batch(3, ExpectedVersion::Any, [Blob(vec![0; 1000])]);
    assert!(matches!(big, Err(Error::EventTooLarge { .. })));
    assert!(matches!(
        tx.append_batch(4, ExpectedVersion::Any, Vec::<Blob>::new()),
        Err(Error::EmptyBatch { .. })
    ));
    assert!(matches!(
        tx.append(4, 0, Blob(vec![])),
        Err(Error::InvalidVersion { version: 0, .. })
    ));
    // Id 78 was released with its refused part: it can be used again.
    tx.append_batch(
        2,
        ExpectedVersion::Any,
        [NewEvent::new(Blob(vec![2])).with_id(Uuid::from_u128(78))],
    )
    .unwrap();
    assert_eq!((tx.len(), tx.events()), (2, 2));
    let appended = tx.commit().unwrap();
    assert_eq!(appended.len(), 2);
    assert_eq!(storage.head(), 2);
    assert_eq!(storage.stream_version(3).unwrap(), 0);

    // An empty transaction writes nothing.
    assert!(writer.transaction().commit().unwrap().is_empty());
    assert_eq!(storage.head(), 2);
}

fn ided(k: u64, part: u32, idx: u32) -> NewEvent<TxEv> {
    NewEvent::new(ev(k, part, idx)).with_id(Uuid::from_u128(
        (u128::from(k) << 64) | (u128::from(part) << 32) | u128::from(idx),
    ))
}

#[test]
fn a_retried_transaction_writes_nothing_and_returns_the_original_positions() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<TxEv>::new(storage.clone());
    let build = |writer: &mut Writer<TxEv>| -> Vec<varvedb::Appended> {
        let mut tx = writer.transaction();
        tx.append_batch(1, ExpectedVersion::NoStream, [ided(1, 0, 0), ided(1, 0, 1)])
            .unwrap();
        tx.append_batch(2, ExpectedVersion::NoStream, [ided(1, 1, 0)])
            .unwrap();
        tx.commit().unwrap()
    };
    let first = build(&mut writer);
    writer.append(1, 3, ev(2, 0, 0)).unwrap();
    let again = build(&mut writer);
    assert!(again.iter().all(|a| a.deduplicated));
    let strip = |v: &[varvedb::Appended]| -> Vec<_> {
        v.iter().map(|a| (a.stream, a.positions.clone())).collect()
    };
    assert_eq!(strip(&first), strip(&again));
    assert_eq!(storage.head(), 4);

    // A stored id reused for a different event fails the whole transaction.
    let mut tx = writer.transaction();
    tx.append_batch(7, ExpectedVersion::Any, [ided(3, 0, 0)])
        .unwrap();
    tx.append_batch(
        2,
        ExpectedVersion::Any,
        [NewEvent::new(ev(9, 9, 9)).with_id(Uuid::from_u128(1 << 64 | 1 << 32))],
    )
    .unwrap();
    assert!(matches!(
        tx.commit(),
        Err(Error::EventIdConflict {
            existing_seq: 3,
            ..
        })
    ));
    assert_eq!(storage.head(), 4);
    assert_eq!(storage.stream_version(7).unwrap(), 0);
}

/// Streams, parts and events of transaction `k` in the concurrent and kill tests: 2 to 4 parts
/// of 1 to 3 events, on streams 1..=50 (two parts may share a stream).
fn plan(k: u64) -> Vec<(u64, u32)> {
    let parts = 2 + k % 3;
    (0..parts)
        .map(|p| ((k * 7 + p * 13) % 50 + 1, 1 + ((k + p) % 3) as u32))
        .collect()
}

fn run_plan(writer: &mut Writer<TxEv>, k: u64) -> Vec<varvedb::Appended> {
    let mut tx = writer.transaction();
    for (p, (stream, n)) in plan(k).into_iter().enumerate() {
        let events: Vec<_> = (0..n).map(|i| ided(k, p as u32, i)).collect();
        tx.append_batch(stream, ExpectedVersion::Any, events)
            .unwrap();
    }
    tx.commit().unwrap()
}

/// Checks that every transaction in the log is whole, in its own run of consecutive sequences,
/// in part order; returns the transactions found.
fn check_whole(log: &[(u64, u128, u64, TxEv)]) -> BTreeMap<u64, u64> {
    let mut found: BTreeMap<u64, u64> = BTreeMap::new();
    let mut i = 0;
    while i < log.len() {
        let k = log[i].3.k;
        let expected: Vec<(u128, u32, u32)> = plan(k)
            .into_iter()
            .enumerate()
            .flat_map(|(p, (stream, n))| (0..n).map(move |idx| (stream as u128, p as u32, idx)))
            .collect();
        assert!(
            i + expected.len() <= log.len(),
            "transaction {k} is cut short at the end of the log"
        );
        for (j, (stream, part, idx)) in expected.iter().enumerate() {
            let (seq, s, _, e) = &log[i + j];
            assert_eq!(
                (e.k, *s, e.part, e.idx),
                (k, *stream, *part, *idx),
                "transaction {k} is not whole and in order at sequence {seq}"
            );
        }
        assert!(found.insert(k, log[i].0).is_none(), "transaction {k} twice");
        i += expected.len();
    }
    found
}

#[test]
fn transactions_and_grouped_appends_interleave_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut threads = Vec::new();
    for t in 0..3u64 {
        let mut writer = Writer::<TxEv>::new(storage.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..40 {
                run_plan(&mut writer, t * 1000 + i);
            }
        }));
    }
    // Single appends through group commit, on streams of their own, meanwhile.
    let singles = {
        let mut writer = Writer::<TxEv>::new(storage.clone());
        std::thread::spawn(move || {
            for v in 1..=100u64 {
                writer.append(1000, v, ev(u64::MAX, 0, 0)).unwrap();
            }
        })
    };
    // And async transactions.
    let asyncs = {
        let mut writer = Writer::<TxEv>::new(storage.clone());
        rt.spawn(async move {
            for i in 0..40 {
                let k = 5000 + i;
                let mut tx = writer.transaction();
                for (p, (stream, n)) in plan(k).into_iter().enumerate() {
                    let events: Vec<_> = (0..n).map(|i| ided(k, p as u32, i)).collect();
                    tx.append_batch(stream, ExpectedVersion::Any, events)
                        .unwrap();
                }
                tx.commit_async().await.unwrap();
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    singles.join().unwrap();
    rt.block_on(asyncs).unwrap();

    let log = log(&storage);
    let (singles, txs): (Vec<_>, Vec<_>) = log.into_iter().partition(|e| e.3.k == u64::MAX);
    assert_eq!(singles.len(), 100);
    // Transactions' runs were not split by the single appends: check each run is contiguous.
    let mut by_seq = txs.clone();
    by_seq.sort_by_key(|e| e.0);
    for w in by_seq.windows(2) {
        if w[0].3.k == w[1].3.k {
            assert_eq!(w[0].0 + 1, w[1].0, "transaction {} split", w[0].3.k);
        }
    }
    let found = check_whole(&txs);
    assert_eq!(found.len(), 160);
    // Stream versions are gap-free and match the heads.
    let mut versions: BTreeMap<u128, u64> = BTreeMap::new();
    for (_, stream, version, _) in &txs {
        let v = versions.entry(*stream).or_default();
        *v += 1;
        assert_eq!(*version, *v, "stream {stream} versions");
    }
    for (stream, v) in versions {
        assert_eq!(storage.stream_version(stream as u64).unwrap(), v);
    }
}

#[test]
fn a_shredded_stream_fails_the_whole_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        encryption_enabled: true,
        master_key: Some([7; 32]),
        ..Default::default()
    })
    .unwrap();
    let mut writer = Writer::<TxEv>::new(storage.clone());
    let mut tx = writer.transaction();
    tx.append(1, 1, ev(1, 0, 0)).unwrap();
    tx.append(2, 1, ev(1, 1, 0)).unwrap();
    tx.commit().unwrap();
    storage.shred_stream(2).unwrap();

    let mut tx = writer.transaction();
    tx.append(1, 2, ev(2, 0, 0)).unwrap();
    tx.append(2, 2, ev(2, 1, 0)).unwrap();
    assert!(matches!(tx.commit(), Err(Error::StreamShredded { stream }) if stream.as_u128() == 2));
    assert_eq!(storage.head(), 2);

    // Encrypted transactions read back decrypted.
    let reader = Reader::<TxEv>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(reader.get(&txn, 1).unwrap().unwrap().k.to_native(), 1);
    assert!(matches!(reader.get(&txn, 2), Err(Error::Shredded { .. })));
}

// ---------------------------------------------------------------------------------------------
// Killed mid-transaction
// ---------------------------------------------------------------------------------------------

const ENV_DIR: &str = "VARVE_TX_KILL_DIR";
const ENV_START: &str = "VARVE_TX_KILL_START";

/// The child: commits transactions `start, start + 1, ...` from two threads (even and odd),
/// printing `ACK k` after each commit returned.
#[test]
fn transaction_kill_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let start: u64 = std::env::var(ENV_START).unwrap().parse().unwrap();
    let storage = Storage::open(StorageConfig {
        path: Path::new(&dir).into(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    println!("READY");
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let mut writer = Writer::<TxEv>::new(storage.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut k = start + t;
                while started.elapsed() < Duration::from_secs(60) {
                    run_plan(&mut writer, k);
                    println!("ACK {k}");
                    k += 2;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_killed_process_leaves_every_transaction_whole_or_absent() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut acked: Vec<u64> = Vec::new();
    let mut start = 0u64;
    let mut cut_at_least_once = false;
    for round in 0..6u64 {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "transaction_kill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, &path)
            .env(ENV_START, start.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ACK ") {
                    if let Ok(k) = k.trim().parse::<u64>() {
                        acks.push(k);
                    }
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(150 + round * 70));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "child ended by itself"
        );
        acked.extend(reader.join().unwrap());

        let storage = open(&path);
        let log = log(&storage);
        let found = check_whole(&log);
        for k in &acked {
            assert!(found.contains_key(k), "acknowledged transaction {k} lost");
        }
        // Transactions begun but not acknowledged are absent or whole (checked above); some
        // committed ones may not have been acknowledged before the kill.
        cut_at_least_once |= found.len() > acked.len();
        start = found.keys().next_back().map_or(start, |k| k + 1).max(start) + 2;
        start += start % 2;
    }
    assert!(!acked.is_empty(), "no transaction was ever acknowledged");
    println!(
        "{} transactions acknowledged; a commit outran its acknowledgement: {cut_at_least_once}",
        acked.len()
    );
}
