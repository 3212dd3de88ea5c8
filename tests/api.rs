//! Behaviour of the public API: sequencing, optimistic concurrency, batches, idempotency, reads,
//! bad input, map growth and concurrency.

use std::ops::ControlFlow;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion, NewEvent, Position, StreamId, Uuid};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[rkyv(derive(Debug))]
pub struct MyEvent {
    pub id: u32,
    pub data: String,
}

/// Another event type, to check reads as the wrong type.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Other {
    pub values: Vec<u64>,
}

fn ev(id: u32) -> MyEvent {
    MyEvent {
        id,
        data: format!("event {id}"),
    }
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

fn setup() -> (tempfile::TempDir, Storage, Writer<MyEvent>, Reader<MyEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::new(storage.clone());
    let reader = Reader::new(storage.clone());
    (dir, storage, writer, reader)
}

#[test]
fn sequences_and_versions_start_at_one_and_have_no_gaps() {
    let (_dir, storage, mut writer, reader) = setup();
    assert_eq!(writer.append(1, 1, ev(1)).unwrap(), 1);
    assert_eq!(writer.append(2, 1, ev(2)).unwrap(), 2);
    assert_eq!(writer.append(1, 2, ev(3)).unwrap(), 3);
    // Failed appends leave no gap.
    assert!(writer.append(1, 2, ev(99)).is_err());
    assert!(writer.append(1, 5, ev(99)).is_err());
    assert_eq!(writer.append(2, 2, ev(4)).unwrap(), 4);
    assert_eq!(storage.head(), 4);
    let txn = storage.env.read_txn().unwrap();
    let seqs: Vec<(u64, u64, u128)> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), e.version(), e.envelope().stream.as_u128())
        })
        .collect();
    assert_eq!(seqs, [(1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 2, 2)]);
    let e = reader.get(&txn, 3).unwrap().unwrap();
    assert_eq!(e.envelope().prev_seq, Some(1));
    assert_eq!(
        reader.get(&txn, 1).unwrap().unwrap().envelope().prev_seq,
        None
    );
}

#[test]
fn append_checks_the_expected_version() {
    let (_dir, storage, mut writer, _reader) = setup();
    // An exact version on an empty stream must be 1: no version gaps.
    match writer.append(7, 2, ev(1)) {
        Err(Error::ConcurrencyConflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, StreamId(7));
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 0);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(storage.head(), 0);
    writer.append(7, 1, ev(1)).unwrap();
    assert!(matches!(
        writer.append(7, 1, ev(2)),
        Err(Error::ConcurrencyConflict { actual: 1, .. })
    ));
    assert!(matches!(
        writer.append(7, 0, ev(2)),
        Err(Error::InvalidVersion { version: 0, .. })
    ));
    assert!(matches!(
        writer.append(-3, 1, ev(2)),
        Err(Error::InvalidStreamId { value: -3 })
    ));
    assert_eq!(storage.stream_version(7).unwrap(), 1);
    assert_eq!(storage.head(), 1);
}

#[test]
fn batches_honour_every_expected_version() {
    let (_dir, storage, mut writer, reader) = setup();
    let s = 10;
    let conflict = |r: Result<varvedb::Appended, Error>, want_actual: u64| match r {
        Err(Error::ConcurrencyConflict { actual, .. }) => assert_eq!(actual, want_actual),
        other => panic!("expected conflict, got {other:?}"),
    };
    conflict(
        writer.append_batch(s, ExpectedVersion::StreamExists, [ev(0)]),
        0,
    );
    conflict(
        writer.append_batch(s, ExpectedVersion::Exact(1), [ev(0)]),
        0,
    );
    let a = writer
        .append_batch(s, ExpectedVersion::NoStream, [ev(1), ev(2)])
        .unwrap();
    assert_eq!(
        a.positions,
        [
            Position { seq: 1, version: 1 },
            Position { seq: 2, version: 2 }
        ]
    );
    assert!(!a.deduplicated);
    conflict(
        writer.append_batch(s, ExpectedVersion::NoStream, [ev(0)]),
        2,
    );
    conflict(
        writer.append_batch(s, ExpectedVersion::Exact(1), [ev(0)]),
        2,
    );
    let b = writer
        .append_batch(s, ExpectedVersion::Exact(2), [ev(3)])
        .unwrap();
    assert_eq!(b.last(), Position { seq: 3, version: 3 });
    let c = writer
        .append_batch(s, ExpectedVersion::StreamExists, [ev(4)])
        .unwrap();
    assert_eq!(c.last().version, 4);
    let d = writer
        .append_batch(s, ExpectedVersion::Any, vec![ev(5), ev(6), ev(7)])
        .unwrap();
    assert_eq!(d.first(), Position { seq: 5, version: 5 });
    assert_eq!(d.last(), Position { seq: 7, version: 7 });
    assert!(matches!(
        writer.append_batch(s, ExpectedVersion::Any, Vec::<MyEvent>::new()),
        Err(Error::EmptyBatch { .. })
    ));
    assert_eq!(storage.head(), 7);
    let txn = storage.env.read_txn().unwrap();
    let ids: Vec<u32> = reader
        .read_stream(&txn, s, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().id.to_native())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn a_failed_batch_writes_nothing() {
    let (_dir, storage, mut writer, reader) = setup();
    writer.append(1, 1, ev(1)).unwrap();
    let small = Storage::open(StorageConfig {
        path: storage.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(small.head(), 1, "same path, same store");
    // One oversized event in the middle fails the whole batch.
    let big = MyEvent {
        id: 2,
        data: "x".repeat(storage.config().max_event_size + 1),
    };
    match writer.append_batch(1, ExpectedVersion::Any, [ev(2), big, ev(3)]) {
        Err(Error::EventTooLarge { size, max }) => {
            assert!(size > max);
            assert_eq!(max, storage.config().max_event_size);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    // A duplicate id in the batch fails it too.
    let id = Uuid::now_v7();
    assert!(matches!(
        writer.append_batch(
            1,
            ExpectedVersion::Any,
            [NewEvent::new(ev(4)).with_id(id), NewEvent::new(ev(5)).with_id(id)]
        ),
        Err(Error::DuplicateEventIdInBatch { event_id }) if event_id == id
    ));
    assert!(matches!(
        writer.append_batch(
            1,
            ExpectedVersion::Any,
            [NewEvent::new(ev(6)).with_event_type("")]
        ),
        Err(Error::InvalidEventType { .. })
    ));
    assert_eq!(storage.head(), 1);
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(reader.stream_version(&txn, 1).unwrap(), 1);
    assert!(reader.get(&txn, 2).unwrap().is_none());
}

#[test]
fn retries_with_the_same_ids_are_idempotent() {
    let (_dir, storage, mut writer, _reader) = setup();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let batch = |ids: &[Uuid], base: u32| -> Vec<NewEvent<MyEvent>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| NewEvent::new(ev(base + i as u32)).with_id(*id))
            .collect()
    };
    writer.append(5, 1, ev(100)).unwrap();
    let first = writer
        .append_batch(5, ExpectedVersion::Exact(1), batch(&ids, 0))
        .unwrap();
    writer.append(5, 5, ev(101)).unwrap();
    let head = storage.head();

    // The exact same batch: the original positions, nothing written.
    let again = writer
        .append_batch(5, ExpectedVersion::Exact(1), batch(&ids, 0))
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.positions, first.positions);
    let any = writer
        .append_batch(5, ExpectedVersion::Any, batch(&ids, 0))
        .unwrap();
    assert_eq!(any.positions, first.positions);
    assert_eq!(storage.head(), head);

    let expect_conflict = |r: Result<varvedb::Appended, Error>, why: &str| match r {
        Err(Error::EventIdConflict {
            existing_stream, ..
        }) => assert!(existing_stream == StreamId(5), "{why}"),
        other => panic!("{why}: expected EventIdConflict, got {other:?}"),
    };
    // Same ids, different payload.
    expect_conflict(
        writer.append_batch(5, ExpectedVersion::Exact(1), batch(&ids, 50)),
        "payload differs",
    );
    // Same ids, other stream.
    expect_conflict(
        writer.append_batch(6, ExpectedVersion::Any, batch(&ids, 0)),
        "other stream",
    );
    // A prefix plus a new event.
    let mut mixed = batch(&ids[..2], 0);
    mixed.push(NewEvent::new(ev(9)));
    expect_conflict(
        writer.append_batch(5, ExpectedVersion::Any, mixed),
        "mixed ids",
    );
    // Out of order.
    let mut swapped = batch(&ids, 0);
    swapped.swap(0, 1);
    expect_conflict(
        writer.append_batch(5, ExpectedVersion::Any, swapped),
        "reordered",
    );
    // Expected version that disagrees with where the events were written.
    expect_conflict(
        writer.append_batch(5, ExpectedVersion::NoStream, batch(&ids, 0)),
        "wrong expected version",
    );
    // A subset at its own positions is a valid retry of those events.
    let tail = writer
        .append_batch(5, ExpectedVersion::Exact(2), batch(&ids[1..], 1))
        .unwrap();
    assert_eq!(tail.positions, first.positions[1..]);
    assert_eq!(storage.head(), head);
}

#[test]
fn envelope_carries_everything_and_reads_without_payload() {
    let (_dir, storage, mut writer, reader) = setup();
    let (id, corr, cause) = (Uuid::now_v7(), Uuid::new_v4(), Uuid::new_v4());
    let before = std::time::SystemTime::now();
    writer
        .append_batch(
            StreamId::from(Uuid::from_u128(u128::MAX - 1)),
            ExpectedVersion::NoStream,
            [NewEvent::new(ev(1))
                .with_id(id)
                .with_correlation_id(corr)
                .with_causation_id(cause)
                .with_metadata(b"{\"user\":1}".to_vec())],
        )
        .unwrap();
    writer.append(3, 1, ev(2)).unwrap();
    let txn = storage.env.read_txn().unwrap();
    let env = reader.envelope(&txn, 1).unwrap().unwrap();
    assert_eq!(env.seq, 1);
    assert_eq!(env.stream, StreamId(u128::MAX - 1));
    assert_eq!(env.version, 1);
    assert_eq!(env.event_id, id);
    assert_eq!(env.correlation_id, Some(corr));
    assert_eq!(env.causation_id, Some(cause));
    assert_eq!(env.metadata, Some(&b"{\"user\":1}"[..]));
    assert_eq!(env.event_type, "MyEvent");
    assert_eq!(env.schema_version, 1);
    assert!(env.timestamp() >= before - Duration::from_secs(1));
    let second = reader.envelope(&txn, 2).unwrap().unwrap();
    assert!(
        second.timestamp_ns >= env.timestamp_ns,
        "commit timestamps never go back"
    );
    assert_eq!(second.correlation_id, None);
    assert_eq!(second.metadata, None);
    assert_ne!(second.event_id, env.event_id);
    let view = reader.get(&txn, 1).unwrap().unwrap();
    assert_eq!(view.envelope(), env);
    assert_eq!(view.deserialize().unwrap(), ev(1));
}

#[test]
fn every_kind_of_read() {
    let (_dir, storage, mut writer, reader) = setup();
    for i in 1..=30u32 {
        let stream = u64::from(i % 3);
        let version = u64::from((i - 1) / 3 + 1);
        writer.append(stream, version, ev(i)).unwrap();
    }
    let txn = storage.env.read_txn().unwrap();
    let ids = |it: varvedb::Events<'_, MyEvent>| -> Vec<u32> {
        it.map(|e| e.unwrap().id.to_native()).collect()
    };
    // Stream 1 holds ids 1, 4, 7, ..., 28 at versions 1..=10.
    assert_eq!(
        ids(reader.read_stream(&txn, 1, 8, Direction::Forward).unwrap()),
        [22, 25, 28]
    );
    assert_eq!(
        ids(reader.read_stream(&txn, 1, 3, Direction::Backward).unwrap()),
        [7, 4, 1]
    );
    assert_eq!(
        ids(reader
            .read_stream(&txn, 1, u64::MAX, Direction::Backward)
            .unwrap())[0],
        28
    );
    assert!(ids(reader.read_stream(&txn, 1, 11, Direction::Forward).unwrap()).is_empty());
    assert!(ids(reader.read_stream(&txn, 9, 1, Direction::Forward).unwrap()).is_empty());
    assert_eq!(
        ids(reader.read_log(&txn, 28, Direction::Forward).unwrap()),
        [28, 29, 30]
    );
    assert_eq!(
        ids(reader.read_log(&txn, 2, Direction::Backward).unwrap()),
        [2, 1]
    );
    assert_eq!(
        ids(reader
            .read_log(&txn, u64::MAX, Direction::Backward)
            .unwrap())[0],
        30
    );
    assert_eq!(reader.last_in_stream(&txn, 2).unwrap().unwrap().id, 29);
    assert!(reader.last_in_stream(&txn, 4).unwrap().is_none());
    assert_eq!(reader.stream_version(&txn, 0).unwrap(), 10);
    assert_eq!(reader.stream_version(&txn, 4).unwrap(), 0);
    assert!(reader.get(&txn, 0).unwrap().is_none());
    assert!(reader.get(&txn, 31).unwrap().is_none());
    let streams: Vec<_> = reader.streams(&txn).unwrap().map(Result::unwrap).collect();
    assert_eq!(streams.len(), 3);
    assert_eq!(streams[1].stream, StreamId(1));
    assert_eq!(streams[1].version, 10);
    assert_eq!(streams[1].first_seq, 1);
    assert_eq!(streams[1].last_seq, 28);
    drop(txn);

    // Scans in renewed transactions see the same events.
    let mut seen = Vec::new();
    let n = reader
        .for_each_in_log(1, Direction::Forward, |e| {
            seen.push(e.id.to_native());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(n, 30);
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    let mut back = Vec::new();
    reader
        .for_each_in_stream(0, u64::MAX, Direction::Backward, |e| {
            back.push(e.version());
            if e.version() == 4 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(back, [10, 9, 8, 7, 6, 5, 4]);
    assert_eq!(
        storage.stats().unaligned_copies,
        0,
        "every read was zero-copy"
    );
}

#[test]
fn scans_renew_their_transaction_and_see_new_commits() {
    let (_dir, storage, mut writer, reader) = setup();
    for i in 1..=200u32 {
        writer
            .append_batch(1, ExpectedVersion::Any, [ev(i)])
            .unwrap();
    }
    // With a zero max age the scan renews its transaction every 64 events; appends made by the
    // callback show up in later transactions, so the scan must keep going past the old head.
    let reader = reader.with_max_txn_age(Duration::ZERO);
    let mut w2 = writer.clone();
    let mut count = 0u32;
    reader
        .for_each_in_log(1, Direction::Forward, |e| {
            count += 1;
            if e.seq() == 100 {
                w2.append_batch(2, ExpectedVersion::Any, [ev(1000)])
                    .unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(count, 201);
    assert_eq!(storage.head(), 201);
}

#[test]
fn each_reader_sees_its_type_and_reads_by_position_name_the_others() {
    let (_dir, storage, mut writer, _reader) = setup();
    writer.append(1, 1, ev(1)).unwrap();
    let mut other = Writer::<Other>::new(storage.clone());
    other
        .append(
            2,
            1,
            Other {
                values: vec![1, 2, 3],
            },
        )
        .unwrap();
    let txn = storage.env.read_txn().unwrap();
    let wrong = Reader::<Other>::new(storage.clone());
    match wrong.get(&txn, 1) {
        Err(Error::WrongEventType {
            seq,
            expected,
            found,
        }) => {
            assert_eq!(seq, 1);
            assert_eq!(expected, "Other");
            assert_eq!(found, "MyEvent");
        }
        other => panic!(
            "expected WrongEventType, got {:?}",
            other.map(|o| o.is_some())
        ),
    }
    // Even when told to accept the name, another layout is an error before a byte of the
    // payload is read as `Other`: the store recorded `MyEvent`'s layout for the name.
    let forced = Reader::<Other>::new(storage.clone()).accept_event_types(["MyEvent"]);
    let res = forced.get(&txn, 1);
    assert!(
        matches!(
            res,
            Err(Error::LayoutChanged {
                seq: Some(1),
                version: 1,
                ..
            })
        ),
        "got {:?}",
        res.map(|o| o.map(|v| v.values.len()))
    );
    // Scans pass over events of other types, without reading their payloads: each reader sees
    // the events of its own type, whatever else the log holds.
    let mine = Reader::<MyEvent>::new(storage.clone());
    let seqs = |r: &Reader<MyEvent>| -> Vec<u64> {
        r.read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().seq())
            .collect()
    };
    assert_eq!(seqs(&mine), [1]);
    let theirs: Vec<u64> = wrong
        .read_log(&txn, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(theirs, [2]);
    // A stream that holds both types reads the same way.
    let mut other_in_1 = Writer::<Other>::new(storage.clone());
    other_in_1.append(1, 2, Other { values: vec![9] }).unwrap();
    writer.append(1, 3, ev(3)).unwrap();
    drop(txn);
    let txn = storage.env.read_txn().unwrap();
    let versions: Vec<u64> = mine
        .read_stream(&txn, 1, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(versions, [1, 3]);
    let mut visited = Vec::new();
    mine.for_each_in_log(1, Direction::Forward, |e| {
        visited.push(e.seq());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(visited, [1, 4]);
    // Reading the other type's event by position says what it is.
    assert!(matches!(
        mine.get(&txn, 2),
        Err(Error::WrongEventType { seq: 2, .. })
    ));
    assert!(matches!(
        mine.last_in_stream(&txn, 2),
        Err(Error::WrongEventType { seq: 2, .. })
    ));
}

#[test]
fn custom_event_type_names() {
    let (_dir, storage, _writer, _reader) = setup();
    let mut writer = Writer::<MyEvent>::new(storage.clone()).with_event_type("account.opened");
    writer.append(1, 1, ev(1)).unwrap();
    writer
        .append_batch(
            1,
            ExpectedVersion::Any,
            [NewEvent::new(ev(2)).with_event_type("account.renamed")],
        )
        .unwrap();
    let txn = storage.env.read_txn().unwrap();
    let reader = Reader::<MyEvent>::new(storage.clone())
        .accept_event_types(["account.opened", "account.renamed"]);
    let a = reader.get(&txn, 1).unwrap().unwrap();
    assert_eq!(a.envelope().event_type, "account.opened");
    assert_eq!(a.envelope().schema_version, 1);
    assert_eq!(
        reader.get(&txn, 2).unwrap().unwrap().envelope().event_type,
        "account.renamed"
    );
}

#[test]
fn reopen_keeps_everything_and_the_bus_starts_at_the_head() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let mut writer = Writer::<MyEvent>::new(storage.clone());
        let rx = writer.subscribe();
        assert_eq!(*rx.borrow(), 0);
        for i in 1..=5 {
            writer.append(1, u64::from(i), ev(i)).unwrap();
        }
        assert_eq!(*rx.borrow(), 5);
    }
    let storage = open(&dir);
    assert_eq!(storage.head(), 5);
    assert_eq!(*storage.subscribe().borrow(), 5);
    let reader = Reader::<MyEvent>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(reader.get(&txn, 5).unwrap().unwrap().id, 5);
}

#[test]
fn the_store_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("a/b/store");
    let storage = Storage::open(StorageConfig {
        path: path.clone(),
        ..Default::default()
    })
    .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(storage);
}

#[test]
fn invalid_configurations_are_refused_before_touching_disk() {
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("store");
    let res = Storage::open(StorageConfig {
        path: path.clone(),
        encryption_enabled: true,
        ..Default::default()
    });
    assert!(matches!(res, Err(Error::InvalidConfig { .. })));
    let res = Storage::open(StorageConfig {
        path: path.clone(),
        max_event_size: 0,
        ..Default::default()
    });
    assert!(matches!(res, Err(Error::InvalidConfig { .. })));
    assert!(!path.exists());
}

#[test]
fn the_map_grows_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        map_size: 64 * 1024,
        ..Default::default()
    })
    .unwrap();
    let initial = storage.stats().map_size;
    let mut writer = Writer::<Other>::new(storage.clone());
    // 160 MiB in batches of 16 events of 64 KiB, from a 64 KiB map.
    let event = Other {
        values: vec![7; 8 * 1024],
    };
    for b in 0..160u64 {
        writer
            .append_batch(1, ExpectedVersion::Exact(b * 16), vec![event.clone(); 16])
            .unwrap();
    }
    let stats = storage.stats();
    assert!(stats.map_resizes > 0);
    assert!(stats.map_size > initial);
    assert!(stats.used_bytes > 160 << 20);
    let reader = Reader::<Other>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let last = reader.get(&txn, 160 * 16).unwrap().unwrap();
    assert_eq!(last.values.len(), 8 * 1024);
    assert!(!last.is_copied(), "overflow-page payloads are page aligned");
}

#[test]
fn growing_waits_for_readers_and_fails_cleanly_when_they_stay() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        map_size: 64 * 1024,
        resize_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let mut writer = Writer::<Other>::new(storage.clone());
    let event = Other {
        values: vec![1; 4096],
    };
    let txn = storage.env.read_txn().unwrap();
    let mut result = Ok(());
    for _ in 0..64 {
        if let Err(e) = writer.append_batch(1, ExpectedVersion::Any, [event.clone()]) {
            result = Err(e);
            break;
        }
    }
    let head = storage.head();
    assert!(
        matches!(result, Err(Error::MapFull { .. })),
        "a reader held across growth must give MapFull, got {result:?}"
    );
    drop(txn);
    // Once the reader is gone the same append goes through.
    writer
        .append_batch(1, ExpectedVersion::Any, [event.clone()])
        .unwrap();
    assert_eq!(storage.head(), head + 1);

    // A reader that ends while the writer waits does not make it fail.
    let txn = storage.env.read_txn().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(txn);
    });
    for _ in 0..64 {
        writer
            .append_batch(1, ExpectedVersion::Any, [event.clone()])
            .unwrap();
    }
    releaser.join().unwrap();
}

#[test]
fn concurrent_appends_to_one_stream_have_one_winner_per_version() {
    let (_dir, storage, writer, reader) = setup();
    let threads = 4;
    let per_thread = 50u32;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let (mut wins, mut conflicts) = (0u32, 0u32);
                let mut version = 1;
                while wins < per_thread {
                    match writer.append(42, version, ev(t as u32 * 1000 + wins)) {
                        Ok(_) => {
                            wins += 1;
                            version += 1;
                        }
                        Err(Error::ConcurrencyConflict { actual, .. }) => {
                            conflicts += 1;
                            version = actual + 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = u64::from(per_thread) * threads as u64;
    assert_eq!(storage.head(), total);
    let txn = reader.storage().env.read_txn().unwrap();
    assert_eq!(reader.stream_version(&txn, 42).unwrap(), total);
    let versions: Vec<u64> = reader
        .read_stream(&txn, 42, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
}

#[test]
fn handles_are_send_and_sync_where_they_should_be() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Storage>();
    sync::<Storage>();
    send::<Reader<MyEvent>>();
    sync::<Reader<MyEvent>>();
    send::<Writer<MyEvent>>();
    send::<varvedb::ReadTxn>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_tokio_tasks() {
    let (_dir, storage, writer, reader) = setup();
    let tasks: Vec<_> = (0..4u64)
        .map(|s| {
            let mut writer = writer.clone();
            tokio::task::spawn_blocking(move || {
                for v in 1..=10 {
                    writer.append(s, v, ev(v as u32)).unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut rx = storage.subscribe();
    assert_eq!(*rx.borrow_and_update(), 40);
    let txn = storage.env.read_txn().unwrap();
    // A read transaction can move to another task.
    let n = tokio::spawn(async move {
        reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .filter(|e| e.is_ok())
            .count()
    })
    .await
    .unwrap();
    assert_eq!(n, 40);
}

#[test]
fn a_transaction_of_another_store_is_an_error() {
    let (_d1, s1, mut w1, _r1) = setup();
    let (_d2, _s2, _w2, r2) = setup();
    w1.append(1, 1, ev(1)).unwrap();
    let txn = s1.env.read_txn().unwrap();
    assert!(matches!(r2.get(&txn, 1), Err(Error::ForeignTransaction)));
    assert!(matches!(
        r2.read_log(&txn, 1, Direction::Forward).map(|_| ()),
        Err(Error::ForeignTransaction)
    ));
}

#[test]
fn large_and_small_records_mixed_are_all_read_zero_copy() {
    let (_dir, storage, _w, _r) = setup();
    let mut writer = Writer::<Other>::new(storage.clone());
    // Sizes around LMDB's inline limit (2,016-byte records on 4 KiB pages) and far past it.
    let sizes = [
        1usize, 200, 240, 245, 250, 252, 256, 600, 5_000, 3, 100_000, 7,
    ];
    for (i, n) in sizes.iter().cycle().take(120).enumerate() {
        writer
            .append(
                1,
                i as u64 + 1,
                Other {
                    values: vec![i as u64; *n],
                },
            )
            .unwrap();
    }
    let reader = Reader::<Other>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let mut count = 0;
    for (i, e) in reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .enumerate()
    {
        let e = e.unwrap();
        assert!(
            !e.is_copied(),
            "event {} of {} values was copied",
            e.seq(),
            e.values.len()
        );
        assert_eq!(e.values.len(), sizes[i % sizes.len()]);
        assert!(e.values.iter().all(|v| *v == i as u64));
        count += 1;
    }
    assert_eq!(count, 120);
    let back: Vec<u64> = reader
        .read_stream(&txn, 1, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(back, (1..=120).rev().collect::<Vec<_>>());
    assert_eq!(reader.get(&txn, 11).unwrap().unwrap().values.len(), 100_000);
    assert_eq!(reader.envelope(&txn, 9).unwrap().unwrap().seq, 9);
    assert_eq!(reader.last_in_stream(&txn, 1).unwrap().unwrap().seq(), 120);
    assert_eq!(storage.stats().unaligned_copies, 0);
}
