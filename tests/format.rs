//! Stores written by earlier format versions.
//!
//! `tests/fixtures/format-v1` is a store written by the format-1 build (commit `cc174dc`): five
//! events in stream 1, then a batch of three in stream 2 with fixed ids and metadata, the second
//! one 5,000 bytes long (so it lives in `log_large`). This build must open it, read every event
//! and envelope exactly, append to it, and refuse to open it encrypted.

use std::path::Path;

use varvedb::error::Error;
use varvedb::{Direction, Uuid};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig, FORMAT_VERSION};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
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
    assert_eq!(env.event_id, Uuid::from_u128(0xF2F2_0002));
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
    assert_eq!(stored_format(dir.path()), 3);
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
    assert_eq!(stored_format(dir.path()), 3);
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
    assert_eq!(FORMAT_VERSION, 3);
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
    assert_eq!(stored_format(dir.path()), 3);
    let storage = open(dir.path());
    assert_eq!(storage.head(), 9);
    assert_eq!(storage.stream_version(1u64).unwrap(), 6);
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
