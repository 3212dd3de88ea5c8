//! Stores written by earlier format versions.
//!
//! `tests/fixtures/format-v1` is a store written by the format-1 build (commit `cc174dc`): five
//! events in stream 1, then a batch of three in stream 2 with fixed ids and metadata, the second
//! one 5,000 bytes long (so it lives in `log_large`). This build must open it, read every event
//! and envelope exactly, append to it, and refuse to open it encrypted.
//!
//! `format-v2` and `format-v2-encrypted` come from the last format-2 build; `format-v3` and
//! `format-v3-encrypted` from the last format-3 build (commit `9c74708`), before stores recorded
//! the layouts of their event types: the same two streams, then two events of another type
//! (`Other`) in stream 3, one `FixtureEvent` at schema version 2 in stream 4, the checkpoint 3
//! of processor `fixture-processor`, and in the encrypted one a shredded stream 5.
//!
//! `format-v5` comes from the last format-5 build (commit `2e43786`), before stores kept stream
//! names and the label index: five `FixtureEvent`s in stream 1, an `Other` in stream 2, then a
//! batch of two `FixtureEvent`s in stream 2 with ids 6 and 7, and an `Other` in stream 3.
//!
//! `format-v6` comes from the last format-6 build (commit `23955fa`), whose label index had an
//! entry per event: `FixtureEvent`s 1 to 3 in `order-1` (ids `0xF6F6_0001` to `3`), two `Other`s
//! in `invoice-7`, a `FixtureEvent` 6 in stream 5 (by id) and a `FixtureEvent` 7 in `order-2`,
//! all listed in the label index (the store was closed).
//!
//! `format-v7` comes from the last format-7 build (commit `4ff45a0`), before the `replica`
//! database: see `a_format_7_store_opens_as_the_current_format`.
//!
//! `format-v8-encrypted` comes from the last format-8 build (commit `7bfb9f5`), before records
//! sealed in transit: see `an_encrypted_format_8_store_opens_as_the_current_format`.

use std::path::Path;

use varvedb::error::Error;
use varvedb::{Direction, Uuid};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig, FORMAT_VERSION};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct FixtureEvent {
    pub n: u64,
    pub text: String,
}

/// A copy of the format-1 fixture in a temporary directory: opening writes to a store.
fn fixture_copy() -> tempfile::TempDir {
    copy_fixture("format-v1")
}

/// A copy of `tests/fixtures/<name>` (its `data.mdb`, and `keys/data.mdb` when it has one).
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::copy(src.join("data.mdb"), dir.path().join("data.mdb")).unwrap();
    if src.join("keys").exists() {
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::copy(src.join("keys/data.mdb"), dir.path().join("keys/data.mdb")).unwrap();
    }
    dir
}

/// The format version stored in a closed store's `meta` database.
fn stored_format(dir: &Path) -> u32 {
    // SAFETY: the store is closed in this process and no other process has it open.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(16).open(dir) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let meta = env
        .open_databases_and_commit(rtxn, |opener, rtxn| -> heed::Result<_> {
            let db =
                opener.open_database::<heed::types::Str, heed::types::Bytes>(rtxn, Some("meta"))?;
            Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let rtxn = env.read_txn().unwrap();
    let bytes = meta.get(&rtxn, "format_version").unwrap().unwrap();
    u32::from_le_bytes(bytes.try_into().unwrap())
}

/// The events of a format-2 fixture (written by the build before format 3): stream 1 with five
/// events, stream 2 with three (ids, metadata, one large record).
fn check_v2_events(storage: &Storage) {
    check_two_streams(storage, Uuid::from_u128(0xF2F2_0002));
}

/// The two streams of the format-2 and format-3 fixtures; `id7` is the id of sequence 7.
fn check_two_streams(storage: &Storage, id7: Uuid) {
    let reader = Reader::<FixtureEvent>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let stream1: Vec<u64> = reader
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().n.to_native())
        .collect();
    assert_eq!(stream1, vec![1, 2, 3, 4, 5]);
    let stream2: Vec<(u64, usize)> = reader
        .read_stream(&txn, 2u64, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.n.to_native(), e.text.len())
        })
        .collect();
    assert_eq!(stream2, vec![(103, 10), (102, 5000), (101, 10)]);
    let env = reader.envelope(&txn, 7).unwrap().unwrap();
    assert_eq!(env.event_id, id7);
    let streams: Vec<(u128, u64)> = reader
        .streams(&txn)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            (s.stream.as_u128(), s.version)
        })
        .collect();
    assert_eq!(&streams[..2], &[(1, 5), (2, 3)]);
}

#[test]
fn a_format_2_store_is_upgraded_and_keeps_everything() {
    let dir = copy_fixture("format-v2");
    assert_eq!(stored_format(dir.path()), 2);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 8);
    // Format 2 indexed every event in its own transaction: the index is complete.
    assert_eq!(storage.stats().indexed_through, 8);
    check_v2_events(&storage);
    let mut writer = Writer::<FixtureEvent>::new(storage.clone());
    let seq = writer
        .append(
            2u64,
            4,
            FixtureEvent {
                n: 104,
                text: "after upgrade".into(),
            },
        )
        .unwrap();
    assert_eq!(seq, 9);
    drop((storage, writer));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    let storage = open(dir.path());
    assert_eq!(storage.stream_version(2u64).unwrap(), 4);
    check_v2_events_after(&storage);
}

fn check_v2_events_after(storage: &Storage) {
    let report = varvedb::admin::verify(storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, 9);
}

#[test]
fn an_encrypted_format_2_store_is_upgraded_and_keeps_its_keys() {
    let dir = copy_fixture("format-v2-encrypted");
    let config = || StorageConfig {
        path: dir.path().to_path_buf(),
        encryption_enabled: true,
        master_key: Some([0x42; 32]),
        ..Default::default()
    };
    let storage = Storage::open(config()).unwrap();
    assert_eq!(storage.head(), 9);
    check_v2_events(&storage);
    // Stream 3 was shredded under format 2: still unreadable, still burned.
    let reader = Reader::<FixtureEvent>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(reader.get(&txn, 9), Err(Error::Shredded { .. })));
    drop(txn);
    let mut writer = Writer::<FixtureEvent>::new(storage.clone());
    let refused = writer.append(
        3u64,
        2,
        FixtureEvent {
            n: 302,
            text: String::new(),
        },
    );
    assert!(matches!(refused, Err(Error::StreamShredded { .. })));
    append_after_upgrade(&mut writer);
    drop((storage, reader, writer));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    let storage = Storage::open(config()).unwrap();
    assert_eq!(storage.stream_version(1u64).unwrap(), 6);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Appends version 6 of stream 1, which both fixtures hold at version 5.
fn append_after_upgrade(writer: &mut Writer<FixtureEvent>) -> u64 {
    writer
        .append(
            1u64,
            6,
            FixtureEvent {
                n: 6,
                text: "after upgrade".into(),
            },
        )
        .unwrap()
}

fn open(dir: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_format_1_store_opens_reads_and_takes_appends() {
    assert_eq!(FORMAT_VERSION, 9);
    let dir = fixture_copy();
    let storage = open(dir.path());
    assert_eq!(storage.head(), 8);
    assert!(!storage.is_encrypted());
    let reader = Reader::<FixtureEvent>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let events: Vec<(u64, u64, String)> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.stream().as_u128() as u64,
                e.n.to_native(),
                e.text.to_string(),
            )
        })
        .collect();
    let mut expected: Vec<(u64, u64, String)> = (1..=5)
        .map(|n| (1, n, format!("stream one, event {n}")))
        .collect();
    for n in 1..=3u64 {
        let text = "x".repeat(if n == 2 { 5000 } else { 10 });
        expected.push((2, 100 + n, text));
    }
    assert_eq!(events, expected);
    for (i, seq) in (6..=8u64).enumerate() {
        let env = reader.envelope(&txn, seq).unwrap().unwrap();
        assert_eq!(env.event_id, Uuid::from_u128(0xF1F1_0000 + i as u128 + 1));
        assert_eq!(env.metadata, Some(format!("meta-{}", i + 1).as_bytes()));
        assert_eq!(env.version, i as u64 + 1);
        assert!(!env.encrypted);
    }
    drop(txn);
    let mut writer = Writer::<FixtureEvent>::new(storage.clone());
    let seq = append_after_upgrade(&mut writer);
    assert_eq!(seq, 9);
    drop((storage, reader, writer));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 9);
    assert_eq!(storage.stream_version(1u64).unwrap(), 6);
}

/// `FixtureEvent` at schema version 2, as the format-3 fixtures hold one.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "FixtureEvent", version = 2)]
pub struct FixtureEventV2 {
    pub n: u64,
    pub text: String,
}

/// The other event type of the format-3 fixtures.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct Other {
    pub flag: bool,
    pub code: u32,
}

/// A type that claims `Other`'s name with another layout.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "Other")]
pub struct NotOther {
    pub code: u64,
}

/// Checks a format-3 fixture after its upgrade: every event of both types and both schema
/// versions reads as written, the processor's checkpoint is kept, and the event types found in
/// the log are recorded with a layout that is not known, so that the types that wrote them
/// read them, and new writes go on.
fn check_v3(storage: &Storage) {
    check_two_streams(storage, Uuid::from_u128(0xF3F3_0000 + 102));
    let txn = storage.env.read_txn().unwrap();
    let other = Reader::<Other>::new(storage.clone());
    let others: Vec<(bool, u32)> = other
        .read_stream(&txn, 3u64, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.flag, e.code.to_native())
        })
        .collect();
    assert_eq!(others, [(true, 7), (false, 8)]);
    // The version-2 event: the version-1 type names it, never reads it as its own.
    let v1 = Reader::<FixtureEvent>::new(storage.clone());
    match v1.get(&txn, 11) {
        Err(Error::UnknownSchemaVersion {
            seq: 11,
            event_type,
            stored: 2,
            current: 1,
        }) => assert_eq!(event_type, "FixtureEvent"),
        other => panic!("{:?}", other.map(|e| e.map(|e| e.n.to_native()))),
    }
    let v2 = Reader::<FixtureEventV2>::new(storage.clone());
    let e = v2.get(&txn, 11).unwrap().unwrap();
    assert_eq!((e.n.to_native(), e.text.as_str()), (401, "schema 2"));
    // A scan of the version-1 type stops at it with the error: never a silent skip.
    let items: Vec<_> = v1.read_log(&txn, 1, Direction::Forward).unwrap().collect();
    let read: Vec<u64> = items.iter().flatten().map(|e| e.seq()).collect();
    assert_eq!(read, (1..=8).collect::<Vec<u64>>());
    assert!(matches!(
        items[8],
        Err(Error::UnknownSchemaVersion { seq: 11, .. })
    ));
    // The encrypted fixture's shredded event follows.
    assert!(items[9..]
        .iter()
        .all(|e| matches!(e, Err(Error::Shredded { seq: 12, .. }))));
    assert_eq!(
        storage.processors().unwrap(),
        [("fixture-processor".to_string(), 3)]
    );
    drop(txn);
    // Writes of the types go on, and one that claims a recorded name is not refused when the
    // layout was not recorded: the store cannot tell.
    let mut writer = Writer::<Other>::new(storage.clone());
    writer
        .append(
            3u64,
            3,
            Other {
                flag: true,
                code: 9,
            },
        )
        .unwrap();
    append_after_upgrade(&mut Writer::<FixtureEvent>::new(storage.clone()));
    // A name first written now records its layout; another layout under it is refused.
    let mut v3 = Writer::<NotOther>::new(storage.clone()).with_event_type("Fresh");
    v3.append(6u64, 1, NotOther { code: 1 }).unwrap();
    let mut clash = Writer::<Other>::new(storage.clone()).with_event_type("Fresh");
    assert!(matches!(
        clash.append(
            6u64,
            2,
            Other {
                flag: false,
                code: 2
            }
        ),
        Err(Error::LayoutChanged {
            version: 1,
            seq: None,
            ..
        })
    ));
    let report = varvedb::admin::verify(storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_format_3_store_is_upgraded_and_keeps_everything() {
    let dir = copy_fixture("format-v3");
    assert_eq!(stored_format(dir.path()), 3);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 11);
    check_v3(&storage);
    drop(storage);
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    // Opened again, at format 4: the same.
    let storage = open(dir.path());
    assert_eq!(storage.stream_version(1u64).unwrap(), 6);
    let reader = Reader::<FixtureEventV2>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(reader.get(&txn, 11).unwrap().unwrap().n.to_native(), 401);
}

#[test]
fn an_encrypted_format_3_store_is_upgraded_and_keeps_its_keys() {
    let dir = copy_fixture("format-v3-encrypted");
    let config = || StorageConfig {
        path: dir.path().to_path_buf(),
        encryption_enabled: true,
        master_key: Some([0x43; 32]),
        ..Default::default()
    };
    let storage = Storage::open(config()).unwrap();
    assert_eq!(storage.head(), 12);
    check_v3(&storage);
    let reader = Reader::<FixtureEvent>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(reader.get(&txn, 12), Err(Error::Shredded { .. })));
    drop((txn, reader, storage));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    let storage = Storage::open(config()).unwrap();
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_format_1_store_cannot_be_opened_encrypted() {
    let dir = fixture_copy();
    let opened = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        encryption_enabled: true,
        master_key: Some([9; 32]),
        ..Default::default()
    });
    assert!(matches!(
        opened,
        Err(Error::EncryptionMismatch {
            store_encrypted: false,
            ..
        })
    ));
    // Refusing it changed nothing: it still opens plain.
    assert_eq!(open(dir.path()).head(), 8);
}

#[test]
fn a_data_file_cut_short_is_refused_not_mapped() {
    let dir = fixture_copy();
    let file = dir.path().join("data.mdb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    match Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    }) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        other => panic!("a truncated data file: {other:?}"),
    }
}

/// A format-4 store (the golden stores of `tests/golden.rs`, which read their events) opens,
/// becomes format 6 and verifies clean, plain and encrypted, every event in the label index.
#[test]
fn format_4_stores_are_upgraded_to_6() {
    for (fixture, master_key) in [
        ("orders-v2", None),
        ("orders-v2-encrypted", Some([0x3C; 32])),
    ] {
        let dir = copy_fixture(fixture);
        assert_eq!(stored_format(dir.path()), 4, "{fixture}");
        let storage = Storage::open(StorageConfig {
            path: dir.path().to_path_buf(),
            encryption_enabled: master_key.is_some(),
            master_key,
            ..Default::default()
        })
        .unwrap();
        let head = storage.head();
        assert!(head > 0, "{fixture}");
        let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
        assert!(report.is_ok(), "{fixture}: {:?}", report.problems);
        assert_eq!(report.records, head);
        assert_eq!(
            report.label_entries, head,
            "{fixture}: one type entry per event"
        );
        drop(storage);
        assert_eq!(stored_format(dir.path()), FORMAT_VERSION, "{fixture}");
    }
}

/// The `Other` of the format-5 fixture.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "Other")]
pub struct OtherV5 {
    pub values: Vec<u64>,
}

/// A format-5 store opens, becomes the current format with every event listed under its type in the label
/// index (reads of a type answer from it), verifies clean, and takes appends by name.
#[test]
fn a_format_5_store_gets_its_label_index() {
    use varvedb::Filter;
    let dir = copy_fixture("format-v5");
    assert_eq!(stored_format(dir.path()), 5);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 9);
    let fixture = Reader::<FixtureEvent>::new(storage.clone());
    let other = Reader::<OtherV5>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        let ns: Vec<(u64, u64)> = fixture
            .read_filtered(
                &txn,
                &Filter::default().event_type("FixtureEvent"),
                1,
                Direction::Forward,
            )
            .unwrap()
            .map(|v| {
                let v = v.unwrap();
                (v.seq(), v.n.to_native())
            })
            .collect();
        assert_eq!(ns, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (7, 6), (8, 7)]);
        let others: Vec<(u64, usize)> = other
            .read_filtered(
                &txn,
                &Filter::default().event_type("Other"),
                u64::MAX,
                Direction::Backward,
            )
            .unwrap()
            .map(|v| {
                let v = v.unwrap();
                (v.seq(), v.values.len())
            })
            .collect();
        assert_eq!(others, [(9, 1), (6, 3)]);
    }
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.label_entries), (9, 9));
    // Named streams after the upgrade.
    Writer::<FixtureEvent>::new(storage.clone())
        .append(
            "order-1",
            1,
            FixtureEvent {
                n: 10,
                text: "named".into(),
            },
        )
        .unwrap();
    // Read from the log while the label index does not list it yet, then from the index.
    for flushed in [false, true] {
        if flushed {
            storage.flush_index().unwrap();
        }
        let txn = storage.read_txn().unwrap();
        let named: Vec<u64> = fixture
            .read_category(&txn, "order", 1, Direction::Forward)
            .unwrap()
            .map(|v| v.unwrap().seq())
            .collect();
        assert_eq!(named, [10]);
        drop(txn);
        let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let listed = if flushed { 11 } else { 9 };
        assert_eq!((report.named_streams, report.label_entries), (1, listed));
    }
    drop((fixture, other, storage));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
}

/// A format-6 store opens, becomes the current format with its label index rewritten in runs (every event
/// still listed under its type and its stream's category), verifies clean, and goes on listing
/// new events.
#[test]
fn a_format_6_store_gets_its_label_index_in_runs() {
    use varvedb::Filter;
    let dir = copy_fixture("format-v6");
    assert_eq!(stored_format(dir.path()), 6);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 7);
    let fixture = Reader::<FixtureEvent>::new(storage.clone());
    let other = Reader::<OtherV5>::new(storage.clone());
    let read = |storage: &Storage| {
        let txn = storage.read_txn().unwrap();
        let orders: Vec<(u64, u64)> = fixture
            .read_category(&txn, "order", 1, Direction::Forward)
            .unwrap()
            .map(|v| {
                let v = v.unwrap();
                (v.seq(), v.n.to_native())
            })
            .collect();
        let fixtures: Vec<u64> = fixture
            .read_filtered(
                &txn,
                &Filter::default().event_type("FixtureEvent"),
                u64::MAX,
                Direction::Backward,
            )
            .unwrap()
            .map(|v| v.unwrap().seq())
            .collect();
        let invoices: Vec<u64> = other
            .read_category(&txn, "invoice", 5, Direction::Forward)
            .unwrap()
            .map(|v| v.unwrap().seq())
            .collect();
        (orders, fixtures, invoices)
    };
    let (orders, fixtures, invoices) = read(&storage);
    assert_eq!(orders, [(1, 1), (2, 2), (3, 3), (7, 7)]);
    assert_eq!(fixtures, [7, 6, 3, 2, 1]);
    assert_eq!(invoices, [5]);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    // Seven events under their types, six of named streams under their categories.
    assert_eq!((report.named_streams, report.label_entries), (3, 13));
    Writer::<FixtureEvent>::new(storage.clone())
        .append(
            "order-1",
            4,
            FixtureEvent {
                n: 8,
                text: "after the upgrade".into(),
            },
        )
        .unwrap();
    storage.flush_index().unwrap();
    let (orders, _, _) = read(&storage);
    assert_eq!(orders, [(1, 1), (2, 2), (3, 3), (7, 7), (8, 8)]);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.label_entries, 15);
    drop((fixture, other, storage));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
}

/// A format-7 store (written by the last format-7 build, `4ff45a0`: `FixtureEvent`s 1 to 3 in
/// `order-1` with ids `0xF7F7_0001` to `3`, `Other`s 4 and 5 in `invoice-7`, a `FixtureEvent` 6
/// in stream 5 by id and 7 in `order-2`, the index flushed) opens as the current format with an
/// empty `replica` database, reads every event by stream, category and type, verifies clean and
/// takes appends.
#[test]
fn a_format_7_store_opens_as_the_current_format() {
    use varvedb::Filter;
    let dir = copy_fixture("format-v7");
    assert_eq!(stored_format(dir.path()), 7);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 7);
    let fixture = Reader::<FixtureEvent>::new(storage.clone());
    let other = Reader::<OtherV5>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        let orders: Vec<(u64, u64, String, Uuid)> = fixture
            .read_category(&txn, "order", 1, Direction::Forward)
            .unwrap()
            .map(|v| {
                let v = v.unwrap();
                (
                    v.seq(),
                    v.n.to_native(),
                    v.text.to_string(),
                    v.envelope().event_id,
                )
            })
            .collect();
        let expected: Vec<(u64, u64, String, Uuid)> = [1u64, 2, 3, 7]
            .iter()
            .map(|&n| {
                (
                    n,
                    n,
                    format!("event {n}"),
                    Uuid::from_u128(0xF7F7_0000 + n as u128),
                )
            })
            .collect();
        assert_eq!(orders, expected);
        let invoices: Vec<Vec<u64>> = other
            .read_stream(&txn, "invoice-7", 1, Direction::Forward)
            .unwrap()
            .map(|v| v.unwrap().values.iter().map(|x| x.to_native()).collect())
            .collect();
        assert_eq!(invoices, [vec![4], vec![5, 5]]);
        let by_id: Vec<u64> = fixture
            .read_stream(&txn, 5u64, 1, Direction::Forward)
            .unwrap()
            .map(|v| v.unwrap().n.to_native())
            .collect();
        assert_eq!(by_id, [6]);
        let types: Vec<u64> = other
            .read_filtered(
                &txn,
                &Filter::default().event_type("Other"),
                1,
                Direction::Forward,
            )
            .unwrap()
            .map(|v| v.unwrap().seq())
            .collect();
        assert_eq!(types, [4, 5]);
    }
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    Writer::<FixtureEvent>::new(storage.clone())
        .append(
            "order-2",
            2,
            FixtureEvent {
                n: 8,
                text: "after the upgrade".into(),
            },
        )
        .unwrap();
    drop((fixture, other, storage));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 8);
}

/// An encrypted format-8 store (written by the last format-8 build, `7bfb9f5`, master key
/// `[0x38; 32]`: `FixtureEvent`s 1 to 3 in `order-1` with ids `0xF8F8_0001` to `3`, 4 in
/// `secret-1`, then shredded, and 5 in `order-2`, the index flushed) opens as the current
/// format, reads every event (the shredded one as shredded), verifies clean and takes appends.
#[test]
fn an_encrypted_format_8_store_opens_as_the_current_format() {
    let dir = copy_fixture("format-v8-encrypted");
    assert_eq!(stored_format(dir.path()), 8);
    let config = StorageConfig {
        path: dir.path().to_path_buf(),
        encryption_enabled: true,
        master_key: Some([0x38; 32]),
        ..Default::default()
    };
    let storage = Storage::open(config.clone()).unwrap();
    assert_eq!(storage.head(), 5);
    let reader = Reader::<FixtureEvent>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        let mut rows = Vec::new();
        for seq in 1..=5 {
            rows.push(match reader.get(&txn, seq) {
                Ok(Some(v)) => Ok((
                    v.n.to_native(),
                    v.text.to_string(),
                    v.envelope().event_id,
                    v.envelope().version,
                )),
                Ok(None) => Err("missing".to_owned()),
                Err(Error::Shredded { .. }) => Err("shredded".to_owned()),
                Err(e) => Err(e.to_string()),
            });
        }
        let row = |n: u64, version: u64| {
            Ok((
                n,
                format!("event {n}"),
                Uuid::from_u128(0xF8F8_0000 + n as u128),
                version,
            ))
        };
        assert_eq!(
            rows,
            [
                row(1, 1),
                row(2, 2),
                row(3, 3),
                Err("shredded".to_owned()),
                row(5, 1)
            ]
        );
        let order1: Vec<u64> = reader
            .read_stream(&txn, "order-1", 1, Direction::Forward)
            .unwrap()
            .map(|v| v.unwrap().n.to_native())
            .collect();
        assert_eq!(order1, [1, 2, 3]);
    }
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let mut writer = Writer::<FixtureEvent>::new(storage.clone());
    writer
        .append(
            "order-2",
            2,
            FixtureEvent {
                n: 6,
                text: "after the upgrade".into(),
            },
        )
        .unwrap();
    assert!(matches!(
        writer.append(
            "secret-1",
            2,
            FixtureEvent {
                n: 7,
                text: "no".into()
            }
        ),
        Err(Error::StreamShredded { .. })
    ));
    drop((reader, writer, storage));
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    // The wrong master key is still refused.
    assert!(matches!(
        Storage::open(StorageConfig {
            master_key: Some([0x39; 32]),
            ..config.clone()
        }),
        Err(Error::WrongMasterKey { .. })
    ));
    let storage = Storage::open(config).unwrap();
    assert_eq!(storage.head(), 6);
}
