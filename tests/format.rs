//! Stores written by earlier format versions.
//!
//! `tests/fixtures/format-v1` is a store written by the format-1 build (commit `cc174dc`): five
//! events in stream 1, then a batch of three in stream 2 with fixed ids and metadata, the second
//! one 5,000 bytes long (so it lives in `log_large`). This build must open it, read every event
//! and envelope exactly, append to it, and refuse to open it encrypted.

use std::path::Path;

use varvedb::engine::{Reader, Writer};
use varvedb::error::Error;
use varvedb::storage::{Storage, StorageConfig, FORMAT_VERSION};
use varvedb::{Direction, Uuid};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct FixtureEvent {
    pub n: u64,
    pub text: String,
}

/// A copy of the fixture in a temporary directory: opening writes to a store.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1/data.mdb");
    std::fs::copy(src, dir.path().join("data.mdb")).unwrap();
    dir
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
    assert_eq!(FORMAT_VERSION, 2);
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
    let seq = writer
        .append(
            1u64,
            6,
            FixtureEvent {
                n: 6,
                text: "after upgrade".into(),
            },
        )
        .unwrap();
    assert_eq!(seq, 9);
    drop((storage, reader, writer));
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
