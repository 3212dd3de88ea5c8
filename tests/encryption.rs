//! Encryption at rest and crypto-shredding, through the public API and the raw files.
//!
//! - An encrypted store reads exactly like a plain one, and none of its payloads or metadata,
//!   small or large, is anywhere in its files.
//! - A wrong master key, a missing, truncated or foreign keystore, and a store opened with the
//!   other encryption setting each give their own error.
//! - A shredded stream's events read as `Error::Shredded` while iterations, subscriptions and
//!   processors go on; appends to it are refused; other streams are untouched.
//! - After shred and rotation, the plaintext and the stream key are nowhere in the files, and no
//!   60-byte window of any file unwraps under the new master key (the key is unwrapped here
//!   independently of the library, from `docs/format.md`, to know what to look for).
//! - A ciphertext changed or swapped with its checksum fixed fails authentication.
//! - Rotation killed at a random moment leaves a store that opens with exactly one of the two keys.

mod common;

use common::crc32c;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion, NewEvent, StreamId, Uuid};
use varvedb::{EventHandler, Processor, Reader, Writer};
use varvedb::{Filter, StartFrom, SubscriptionItem};
use varvedb::{Storage, StorageConfig};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Secret {
    pub n: u64,
    pub text: String,
    pub blob: Vec<u8>,
}

const KEY_1: [u8; 32] = [0x11; 32];
const KEY_2: [u8; 32] = [0x22; 32];

fn config(path: &Path, key: Option<[u8; 32]>) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    }
}

fn open(path: &Path, key: Option<[u8; 32]>) -> Storage {
    Storage::open(config(path, key)).unwrap()
}

/// A marker no other byte string of the test contains: it must never reach the disk in the clear.
fn marker(stream: u64, n: u64) -> String {
    format!("PLAINTEXT-MARKER-{stream:04}-{n:06}")
}

/// An event whose payload holds its marker, and whose size is around `size` bytes.
fn secret(stream: u64, n: u64, size: usize) -> Secret {
    Secret {
        n,
        text: marker(stream, n),
        blob: (0..size).map(|i| (i * 31 + n as usize) as u8).collect(),
    }
}

/// Appends `per_stream` events to each stream, interleaved, of sizes from 10 bytes to 100 KiB,
/// with metadata holding the marker too. Returns (seq, stream, n) of each.
fn write(storage: &Storage, streams: &[u64], per_stream: u64) -> Vec<(u64, u64, u64)> {
    let mut writer = Writer::<Secret>::new(storage.clone());
    let sizes = [10usize, 100, 4096, 100_000];
    let mut out = Vec::new();
    for n in 1..=per_stream {
        for &s in streams {
            let size = sizes[(n as usize + s as usize) % sizes.len()];
            let event = NewEvent::new(secret(s, n, size))
                .with_id(Uuid::from_u128((u128::from(s) << 64) | u128::from(n)))
                .with_metadata(format!("META-{}", marker(s, n)).into_bytes());
            let appended = writer
                .append_batch(s, ExpectedVersion::Exact(n - 1), [event])
                .unwrap();
            out.push((appended.first().seq, s, n));
        }
    }
    out
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Paths of the files under `dir` that contain `needle`.
fn found_in(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| contains(&std::fs::read(f).unwrap(), needle))
        .collect()
}

#[test]
fn an_encrypted_store_reads_like_a_plain_one_and_keeps_nothing_in_the_clear() {
    let plain_dir = tempfile::tempdir().unwrap();
    let enc_dir = tempfile::tempdir().unwrap();
    let plain = open(plain_dir.path(), None);
    let enc = open(enc_dir.path(), Some(KEY_1));
    assert!(enc.is_encrypted() && !plain.is_encrypted());
    let streams = [1u64, 2, 3];
    let written = write(&plain, &streams, 6);
    assert_eq!(write(&enc, &streams, 6), written);

    let owned = |s: &Storage| {
        let reader = Reader::<Secret>::new(s.clone());
        let txn = s.env.read_txn().unwrap();
        let mut all = Vec::new();
        for dir in [Direction::Forward, Direction::Backward] {
            for e in reader.read_log(&txn, 1, dir).unwrap() {
                let e = e.unwrap();
                let env = e.envelope().to_owned();
                all.push((
                    env.seq,
                    env.version,
                    env.metadata,
                    env.payload_len,
                    e.deserialize().unwrap(),
                ));
            }
            for &stream in &streams {
                for e in reader.read_stream(&txn, stream, 1, dir).unwrap() {
                    all.push((e.unwrap().seq(), 0, None, 0, secret(0, 0, 0)));
                }
            }
        }
        for (seq, _, _) in &written {
            let e = reader.get(&txn, *seq).unwrap().unwrap();
            assert!(!e.is_copied());
            all.push((e.seq(), e.version(), None, 0, e.deserialize().unwrap()));
        }
        all
    };
    assert_eq!(owned(&plain), owned(&enc));
    assert_eq!(enc.stats().unaligned_copies, 0);

    // A bare envelope of an encrypted event has no metadata (it is sealed), and says so.
    let txn = enc.env.read_txn().unwrap();
    let reader = Reader::<Secret>::new(enc.clone());
    let bare = reader.envelope(&txn, 1).unwrap().unwrap();
    assert!(bare.encrypted && bare.metadata.is_none());
    assert_eq!(
        bare.payload_len,
        reader.get(&txn, 1).unwrap().unwrap().envelope().payload_len
    );
    drop(txn);

    // An exact retry is recognised through the encryption; a changed payload is a conflict.
    let mut writer = Writer::<Secret>::new(enc.clone());
    let (s, n) = (2u64, 3u64);
    let retry = NewEvent::new(secret(
        s,
        n,
        [10usize, 100, 4096, 100_000][(n + s) as usize % 4],
    ))
    .with_id(Uuid::from_u128((u128::from(s) << 64) | u128::from(n)))
    .with_metadata(format!("META-{}", marker(s, n)).into_bytes());
    let again = writer
        .append_batch(s, ExpectedVersion::Exact(n - 1), [retry])
        .unwrap();
    assert!(again.deduplicated);
    let changed = NewEvent::new(secret(s, n, 3))
        .with_id(Uuid::from_u128((u128::from(s) << 64) | u128::from(n)));
    assert!(matches!(
        writer.append_batch(s, ExpectedVersion::Exact(n - 1), [changed]),
        Err(Error::EventIdConflict { .. })
    ));

    drop((plain, enc, writer, reader));
    // The plain store's files hold every marker (so the scan can find them); the encrypted
    // store's hold none, in payloads or metadata, small events or large.
    for (_, s, n) in &written {
        let m = marker(*s, *n);
        assert!(
            !found_in(plain_dir.path(), m.as_bytes()).is_empty(),
            "scan misses {m}"
        );
        let leaks = found_in(enc_dir.path(), m.as_bytes());
        assert!(leaks.is_empty(), "{m} in the clear in {leaks:?}");
    }
    // Reopened, it reads the same.
    let enc = open(enc_dir.path(), Some(KEY_1));
    let txn = enc.env.read_txn().unwrap();
    let e = Reader::<Secret>::new(enc.clone())
        .get(&txn, 5)
        .unwrap()
        .unwrap();
    assert_eq!(e.text, marker(written[4].1, written[4].2));
}

#[test]
fn wrong_keys_mismatches_and_damaged_keystores_each_get_their_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    write(&storage, &[7], 2);
    drop(storage);

    match Storage::open(config(dir.path(), Some(KEY_2))) {
        Err(Error::WrongMasterKey {
            master_version: 1,
            path,
        }) => {
            assert_eq!(path, dir.path().canonicalize().unwrap())
        }
        other => panic!("wrong key: {other:?}"),
    }
    assert!(matches!(
        Storage::open(config(dir.path(), None)),
        Err(Error::EncryptionMismatch {
            store_encrypted: true,
            ..
        })
    ));
    let no_key = StorageConfig {
        master_key: None,
        ..config(dir.path(), Some(KEY_1))
    };
    assert!(matches!(
        Storage::open(no_key),
        Err(Error::InvalidConfig { .. })
    ));

    let plain = tempfile::tempdir().unwrap();
    drop(open(plain.path(), None));
    assert!(matches!(
        Storage::open(config(plain.path(), Some(KEY_1))),
        Err(Error::EncryptionMismatch {
            store_encrypted: false,
            ..
        })
    ));

    // Keystore damage: missing, truncated, or another store's.
    let copy = |from: &Path| {
        let to = tempfile::tempdir().unwrap();
        for f in files(from) {
            let rel = f.strip_prefix(from).unwrap();
            std::fs::create_dir_all(to.path().join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&f, to.path().join(rel)).unwrap();
        }
        to
    };
    let missing = copy(dir.path());
    std::fs::remove_dir_all(missing.path().join("keys")).unwrap();
    assert!(matches!(
        Storage::open(config(missing.path(), Some(KEY_1))),
        Err(Error::Keystore { .. })
    ));
    let truncated = copy(dir.path());
    let ks = truncated.path().join("keys/data.mdb");
    let len = std::fs::metadata(&ks).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ks)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    match Storage::open(config(truncated.path(), Some(KEY_1))) {
        Err(Error::Keystore { reason, .. }) => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("truncated keystore: {other:?}"),
    }
    let foreign = copy(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_store = open(other.path(), Some(KEY_1));
    write(&other_store, &[7], 1);
    drop(other_store);
    std::fs::remove_dir_all(foreign.path().join("keys")).unwrap();
    std::fs::create_dir(foreign.path().join("keys")).unwrap();
    std::fs::copy(
        other.path().join("keys/data.mdb"),
        foreign.path().join("keys/data.mdb"),
    )
    .unwrap();
    match Storage::open(config(foreign.path(), Some(KEY_1))) {
        Err(Error::Keystore { reason, .. }) => {
            assert!(reason.contains("another store"), "{reason}")
        }
        other => panic!("foreign keystore: {other:?}"),
    }

    // None of this harmed the original.
    let storage = open(dir.path(), Some(KEY_1));
    let txn = storage.env.read_txn().unwrap();
    let e = Reader::<Secret>::new(storage.clone())
        .get(&txn, 2)
        .unwrap()
        .unwrap();
    assert_eq!(e.text, marker(7, 2));
}

struct Seen(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl EventHandler<Secret> for Seen {
    fn handle(&mut self, event: &ArchivedSecret) -> varvedb::error::Result<()> {
        self.0.lock().unwrap().push(event.n.to_native());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_erases_one_stream_and_everything_goes_on_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    let written = write(&storage, &[1, 2], 5);
    let head = storage.head();
    assert!(storage.shred_stream(1u64).unwrap());
    assert!(!storage.shred_stream(1u64).unwrap(), "already shredded");

    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let mut seen = Vec::new();
    for item in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        match item {
            Ok(e) => seen.push((e.seq(), e.stream())),
            Err(Error::Shredded { stream, seq }) => {
                assert_eq!(stream, StreamId(1));
                seen.push((seq, StreamId(0)));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let expected: Vec<(u64, StreamId)> = written
        .iter()
        .map(|&(seq, s, _)| (seq, StreamId(if s == 1 { 0 } else { 2 })))
        .collect();
    assert_eq!(
        seen, expected,
        "every event once, in order, shredded ones as errors"
    );
    for &(seq, s, _) in &written {
        let got = reader.get(&txn, seq);
        if s == 1 {
            assert!(matches!(got, Err(Error::Shredded { seq: q, .. }) if q == seq));
            // The envelope (in the clear) is still readable.
            assert_eq!(
                reader.envelope(&txn, seq).unwrap().unwrap().stream,
                StreamId(1)
            );
        } else {
            assert!(got.unwrap().is_some());
        }
    }
    assert!(reader
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .all(|e| matches!(e, Err(Error::Shredded { .. }))));
    drop(txn);

    let mut writer = Writer::<Secret>::new(storage.clone());
    assert!(matches!(
        writer.append(1u64, 6, secret(1, 6, 1)),
        Err(Error::StreamShredded {
            stream: StreamId(1)
        })
    ));
    assert_eq!(storage.head(), head, "nothing written");
    writer.append(2u64, 6, secret(2, 6, 1)).unwrap();
    // A stream that never had events can be burned too.
    assert!(storage.shred_stream(99u64).unwrap());
    assert!(matches!(
        writer.append(99u64, 1, secret(99, 1, 1)),
        Err(Error::StreamShredded { .. })
    ));

    // A processor handles every event of stream 2 and passes the shredded ones.
    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut processor = Processor::new(
        reader.clone(),
        Seen(handled.clone()),
        "after-shred",
        storage.subscribe(),
    );
    let stop = processor.stop_handle();
    let task = tokio::spawn(async move { processor.run().await });
    let target = storage.head();
    for _ in 0..2_000 {
        if storage
            .processors()
            .unwrap()
            .iter()
            .any(|(_, s)| *s >= target)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    task.await.unwrap().unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![1, 2, 3, 4, 5, 6]);

    // A subscription yields the shredded events as errors and goes on.
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap();
    let (mut ok, mut shredded) = (0, 0);
    loop {
        match sub.next().await.unwrap() {
            Ok(SubscriptionItem::Event(_)) => ok += 1,
            Ok(SubscriptionItem::CaughtUp) => break,
            Err(Error::Shredded { .. }) => shredded += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, shredded), (6, 5));

    // Reopened, the stream is still shredded.
    drop((storage, writer, reader, sub));
    let storage = open(dir.path(), Some(KEY_1));
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(
        Reader::<Secret>::new(storage.clone()).get(&txn, 1),
        Err(Error::Shredded { .. })
    ));
}

/// The stream's wrapped-key entry, found in the raw keystore file after its key (an LMDB leaf
/// node holds the 16-byte big-endian stream id followed by the 68-byte value), and the key
/// unwrapped with aws-lc-rs following `docs/format.md`: independent of the library's code.
fn key_material(
    dir: &Path,
    store_id: u128,
    stream: u128,
    master: &[u8; 32],
) -> ([u8; 68], [u8; 32]) {
    let file = std::fs::read(dir.join("keys/data.mdb")).unwrap();
    let id = stream.to_be_bytes();
    for (at, _) in file.windows(16).enumerate().filter(|(_, w)| *w == id) {
        let Some(entry) = file.get(at + 16..at + 16 + 68) else {
            continue;
        };
        let key_version = u32::from_le_bytes(entry[..4].try_into().unwrap());
        let master_version = u32::from_le_bytes(entry[4..8].try_into().unwrap());
        let mut aad = b"varvedb/stream-key".to_vec();
        aad.extend_from_slice(&store_id.to_le_bytes());
        aad.extend_from_slice(&stream.to_le_bytes());
        aad.extend_from_slice(&master_version.to_le_bytes());
        aad.extend_from_slice(&key_version.to_le_bytes());
        if let Some(key) = try_unwrap(master, &aad, &entry[8..]) {
            return (entry.try_into().unwrap(), key);
        }
    }
    panic!("no entry of stream {stream} unwraps as docs/format.md describes");
}

/// Tries to unwrap a 60-byte window (nonce, wrapped key, tag) with `master`.
fn try_unwrap(master: &[u8; 32], aad: &[u8], window: &[u8]) -> Option<[u8; 32]> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, master).unwrap());
    let nonce = Nonce::try_assume_unique_for_key(&window[..12]).unwrap();
    let mut in_out = window[12..60].to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut in_out).ok()?;
    plain.try_into().ok()
}

fn wrap_aads(
    store_id: u128,
    stream: u128,
    versions: std::ops::RangeInclusive<u32>,
) -> Vec<Vec<u8>> {
    versions
        .map(|mv| {
            let mut aad = b"varvedb/stream-key".to_vec();
            aad.extend_from_slice(&store_id.to_le_bytes());
            aad.extend_from_slice(&stream.to_le_bytes());
            aad.extend_from_slice(&mv.to_le_bytes());
            aad.extend_from_slice(&1u32.to_le_bytes());
            aad
        })
        .collect()
}

/// How many 60-byte windows of the files under `dir` unwrap under `master` with any of `aads`.
fn unwrappable_windows(dir: &Path, master: &[u8; 32], aads: &[Vec<u8>]) -> usize {
    let mut found = 0;
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for w in bytes.windows(60) {
            if aads.iter().any(|aad| try_unwrap(master, aad, w).is_some()) {
                found += 1;
            }
        }
    }
    found
}

#[test]
fn after_shred_and_rotation_the_files_and_the_new_key_reveal_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    let store_id = storage.store_id();
    write(&storage, &[5, 6], 3);
    drop(storage);
    let (entry, key) = key_material(dir.path(), store_id, 5, &KEY_1);
    let aads = wrap_aads(store_id, 5, 1..=3);
    // The scan works: before anything, the live wrapped key is found and unwraps.
    assert!(unwrappable_windows(&dir.path().join("keys"), &KEY_1, &aads) >= 1);
    assert!(
        found_in(dir.path(), &key).is_empty(),
        "an unwrapped key on disk"
    );

    let storage = open(dir.path(), Some(KEY_1));
    storage.shred_stream(5u64).unwrap();
    assert_eq!(
        storage.rotate_master_key(KEY_2).unwrap(),
        1,
        "one live key re-wrapped"
    );
    assert_eq!(storage.master_key_version(), Some(2));
    drop(storage);

    for (what, needle) in [
        ("unwrapped key", &key[..]),
        ("wrapped key entry", &entry[..]),
        ("first marker", marker(5, 1).as_bytes()),
        ("last marker", marker(5, 3).as_bytes()),
    ] {
        let found = found_in(dir.path(), needle);
        // The old wrapped entry may survive in a freed page; it is useless without the old
        // master key, which the next check proves.
        if what != "wrapped key entry" {
            assert!(found.is_empty(), "{what} found in {found:?}");
        }
    }
    assert_eq!(
        unwrappable_windows(dir.path(), &KEY_2, &aads),
        0,
        "a window of the files unwraps stream 5's key under the new master key"
    );
    // Stream 6 is intact under the new key; stream 5 stays shredded.
    let storage = open(dir.path(), Some(KEY_2));
    let txn = storage.env.read_txn().unwrap();
    let reader = Reader::<Secret>::new(storage.clone());
    let mut readable = 0;
    for e in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        match e {
            Ok(e) => {
                assert_eq!(e.stream(), StreamId(6));
                readable += 1;
            }
            Err(Error::Shredded { stream, .. }) => assert_eq!(stream, StreamId(5)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(readable, 3);
}

/// Where the copies of the record with `event_id` are in `file`: (start, payload_offset, len)
/// of each, from the layout in `docs/format.md` (encrypted, no correlation or causation ids).
/// LMDB copies pages on write, so a freed page can hold an older copy of the same record.
fn locate(file: &[u8], event_id: u128) -> Vec<(usize, usize, usize)> {
    let id = event_id.to_le_bytes();
    let mut out = Vec::new();
    for (at, _) in file.windows(16).enumerate().filter(|(_, w)| *w == id) {
        let Some(start) = at.checked_sub(64) else {
            continue;
        };
        let rec = &file[start..];
        let type_len = u16::from_le_bytes([rec[12], rec[13]]) as usize;
        let payload_len = u32::from_le_bytes(rec[80..84].try_into().unwrap()) as usize;
        let payload_offset = (88 + 16 + type_len).div_ceil(16) * 16;
        let len = (payload_offset + payload_len).div_ceil(16) * 16;
        // Intact copies only: a freed page may have been partly reused.
        if rec.len() >= len
            && crc32c(&rec[8..payload_offset]) == u32::from_le_bytes(rec[..4].try_into().unwrap())
            && crc32c(&rec[payload_offset..len])
                == u32::from_le_bytes(rec[4..8].try_into().unwrap())
        {
            out.push((start, payload_offset, len));
        }
    }
    assert!(!out.is_empty(), "record {event_id:#x} not found");
    out
}

#[test]
fn tampered_or_swapped_ciphertexts_fail_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    // Two streams, same-sized small events (so they are inline in data.mdb).
    let mut writer = Writer::<Secret>::new(storage.clone());
    for (s, id) in [(1u64, 0xA1u128), (2, 0xB2)] {
        writer
            .append_batch(
                s,
                ExpectedVersion::NoStream,
                [NewEvent::new(secret(s, 1, 50)).with_id(Uuid::from_u128(id))],
            )
            .unwrap();
    }
    drop((storage, writer));
    let data = dir.path().join("data.mdb");
    let original = std::fs::read(&data).unwrap();

    let read = |bytes: &[u8]| {
        std::fs::write(&data, bytes).unwrap();
        let storage = open(dir.path(), Some(KEY_1));
        let txn = storage.env.read_txn().unwrap();
        let reader = Reader::<Secret>::new(storage.clone());
        (1..=2u64)
            .map(|seq| reader.get(&txn, seq).map(|e| e.map(|e| e.n)))
            .collect::<Vec<_>>()
    };

    // One ciphertext byte changed, payload checksum fixed.
    let mut bytes = original.clone();
    for (start, po, len) in locate(&original, 0xA1) {
        bytes[start + po + 3] ^= 0x40;
        let crc = crc32c(&bytes[start + po..start + len]);
        bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    let results = read(&bytes);
    assert!(
        matches!(
            results[0],
            Err(Error::Decryption {
                seq: 1,
                stream: StreamId(1)
            })
        ),
        "{:?}",
        results[0]
    );
    assert!(matches!(results[1], Ok(Some(n)) if n == 1));

    // The same change without fixing the checksum is plain corruption.
    let mut bytes = original.clone();
    for (start, po, _) in locate(&original, 0xA1) {
        bytes[start + po + 3] ^= 0x40;
    }
    assert!(matches!(
        read(&bytes)[0],
        Err(Error::Corrupted { seq: 1, .. })
    ));

    // The two sealed regions (with their nonces and checksums) swapped: each fails.
    let mut bytes = original.clone();
    let a = locate(&original, 0xA1);
    let b = locate(&original, 0xB2);
    let (from_a, from_b) = (a[a.len() - 1], b[b.len() - 1]);
    for (from, copies) in [(from_a, &b), (from_b, &a)] {
        let (src, po, len) = from;
        for &(to, to_po, to_len) in copies.iter() {
            assert_eq!((po, len), (to_po, to_len));
            bytes[to + 4..to + 8].copy_from_slice(&original[src + 4..src + 8]);
            bytes[to + 88..to + 100].copy_from_slice(&original[src + 88..src + 100]);
            bytes[to + po..to + len].copy_from_slice(&original[src + po..src + len]);
            let crc = crc32c(&bytes[to + 8..to + po]);
            bytes[to..to + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let results = read(&bytes);
    assert!(
        matches!(results[0], Err(Error::Decryption { seq: 1, .. })),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Err(Error::Decryption { seq: 2, .. })),
        "{:?}",
        results[1]
    );

    // Restored, both read.
    let results = read(&original);
    assert!(matches!(results[..], [Ok(Some(a)), Ok(Some(b))] if a == 1 && b == 1));
}

#[test]
fn rotation_rewraps_every_key_and_new_streams_use_the_new_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    write(&storage, &[1, 2, 3], 2);
    assert_eq!(storage.rotate_master_key(KEY_2).unwrap(), 3);
    write(&storage, &[4], 1);
    assert_eq!(storage.rotate_master_key(KEY_1).unwrap(), 4);
    assert_eq!(storage.master_key_version(), Some(3));
    drop(storage);
    assert!(matches!(
        Storage::open(config(dir.path(), Some(KEY_2))),
        Err(Error::WrongMasterKey {
            master_version: 3,
            ..
        })
    ));
    let storage = open(dir.path(), Some(KEY_1));
    let txn = storage.env.read_txn().unwrap();
    let reader = Reader::<Secret>::new(storage.clone());
    let n = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.map(|e| e.n.to_native()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .len();
    assert_eq!(n, 7);
}

const ROTATE_CHILD: &str = "VARVE_ROTATE_CHILD";
const ROTATE_STREAMS: u64 = 20_000;

/// Child: opens the store with the key in `VARVE_ROTATE_FROM`, prints READY, rotates to the key
/// in `VARVE_ROTATE_TO`, prints DONE, then waits to be killed.
#[test]
fn rotation_child() {
    let Some(dir) = std::env::var_os(ROTATE_CHILD) else {
        return;
    };
    let byte = |var: &str| std::env::var(var).unwrap().parse::<u8>().unwrap();
    let storage = open(Path::new(&dir), Some([byte("VARVE_ROTATE_FROM"); 32]));
    println!("READY");
    storage
        .rotate_master_key([byte("VARVE_ROTATE_TO"); 32])
        .unwrap();
    println!("DONE");
}

#[test]
fn a_rotation_killed_at_any_moment_leaves_the_store_under_exactly_one_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Many streams, created concurrently so that their keys share keystore transactions.
        let storage = Storage::open(StorageConfig {
            durability: varvedb::Durability::Relaxed {
                sync_interval: None,
            },
            ..config(dir.path(), Some([1; 32]))
        })
        .unwrap();
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let storage = storage.clone();
                std::thread::spawn(move || {
                    let mut w = Writer::<Secret>::new(storage);
                    for s in (t..ROTATE_STREAMS).step_by(8) {
                        w.append(s + 1, 1, secret(s + 1, 1, 8)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    // Rounds of three kinds: killed once the child reports the rotation done (it must have
    // committed), killed as soon as it starts (it cannot have), and killed at a random moment
    // within twice the time a rotation took (either, and the store must open under one key).
    let mut current = 1u8;
    let (mut rolled_back, mut finished) = (0, 0);
    let mut rotation_time = Duration::from_millis(50);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..9u8 {
        let next = 10 + round;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rotation_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROTATE_CHILD, dir.path())
            .env("VARVE_ROTATE_FROM", current.to_string())
            .env("VARVE_ROTATE_TO", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().contains("READY")),
            "child never opened the store"
        );
        let ready = std::time::Instant::now();
        let expect = match round % 3 {
            0 => {
                assert!(lines.any(|l| l.unwrap().contains("DONE")), "no DONE");
                rotation_time = ready.elapsed();
                Some(true)
            }
            1 => Some(false),
            _ => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let window = rotation_time.as_micros() as u64 * 2;
                std::thread::sleep(Duration::from_micros(rng % window.max(1)));
                None
            }
        };
        let _ = child.kill();
        child.wait().unwrap();
        let old = Storage::open(config(dir.path(), Some([current; 32])));
        let new = match &old {
            Ok(_) => None,
            Err(_) => Some(Storage::open(config(dir.path(), Some([next; 32])))),
        };
        let (storage, done) = match (old, new) {
            (Ok(s), None) => {
                rolled_back += 1;
                (s, false)
            }
            (Err(Error::WrongMasterKey { .. }), Some(Ok(s))) => {
                finished += 1;
                current = next;
                (s, true)
            }
            (old, new) => panic!("round {round}: old key {old:?}, new key {new:?}"),
        };
        if let Some(expected) = expect {
            assert_eq!(done, expected, "round {round}");
        }
        // Every stream key unwraps: every event reads.
        let txn = storage.env.read_txn().unwrap();
        let reader = Reader::<Secret>::new(storage.clone());
        let count = reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.map(|e| e.n.to_native()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .len() as u64;
        assert_eq!(count, ROTATE_STREAMS, "round {round}");
    }
    println!("rotation kill test: {rolled_back} rolled back, {finished} finished");
}

/// A scan reuses the key of the previous record of the same stream; a shred in the middle of the
/// scan must still make the stream's remaining events `Shredded`, for that scan and a stream read
/// alike, while the other stream's events still read.
#[test]
fn a_shred_during_a_scan_stops_the_scan_from_reading_that_stream() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Some(KEY_1));
    let mut writer = Writer::<Secret>::new(storage.clone());
    for stream in [1u64, 2] {
        let events: Vec<Secret> = (1..=10).map(|n| secret(stream, n, 50)).collect();
        writer
            .append_batch(stream, ExpectedVersion::NoStream, events)
            .unwrap();
    }
    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    let mut log = reader.read_log(&txn, 1, Direction::Forward).unwrap();
    let mut by_stream = reader.read_stream(&txn, 1, 1, Direction::Forward).unwrap();
    for n in 1..=3 {
        assert_eq!(log.next().unwrap().unwrap().n.to_native(), n);
        assert_eq!(by_stream.next().unwrap().unwrap().n.to_native(), n);
    }
    assert!(storage.shred_stream(1u64).unwrap());
    for _ in 4..=10 {
        assert!(matches!(
            log.next().unwrap(),
            Err(Error::Shredded { stream, .. }) if stream == StreamId::from(1u64)
        ));
        assert!(matches!(
            by_stream.next().unwrap(),
            Err(Error::Shredded { .. })
        ));
    }
    assert!(by_stream.next().is_none());
    let rest: Vec<u64> = log.map(|v| v.unwrap().n.to_native()).collect();
    assert_eq!(rest, (1..=10).collect::<Vec<_>>());
}

/// A commit group that fills the map is run again after the map grew. Encrypted records must be
/// sealed afresh from their plaintext then, not sealed a second time over their first
/// ciphertext: every event reads back as written, through single appends, batches and
/// multi-stream transactions, and retries of the batches are recognised as duplicates.
#[test]
fn encrypted_appends_survive_map_growth() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        map_size: 64 << 10,
        ..config(dir.path(), Some(KEY_1))
    })
    .unwrap();
    let mut writer = Writer::<Secret>::new(storage.clone());
    let mut written = Vec::new();
    for n in 1..=40u64 {
        let batch: Vec<NewEvent<Secret>> = (0..4)
            .map(|i| {
                NewEvent::new(secret(n, i, 3000))
                    .with_id(Uuid::from_u128((u128::from(n) << 8) | u128::from(i)))
            })
            .collect();
        let retry = batch.clone();
        let appended = writer
            .append_batch(n, ExpectedVersion::NoStream, batch)
            .unwrap();
        let again = writer
            .append_batch(n, ExpectedVersion::NoStream, retry)
            .unwrap();
        assert!(again.deduplicated, "stream {n}: a retry must be recognised");
        written.extend((0..4).map(|i| (appended.first().seq + i, n, i)));
        writer
            .append(1000 + n, 1, secret(1000 + n, 0, 5000))
            .unwrap();
        written.push((storage.head(), 1000 + n, 0));
        let mut txn = writer.transaction();
        for s in [2000 + n, 3000 + n] {
            txn.append_batch(s, ExpectedVersion::NoStream, [secret(s, 0, 2000)])
                .unwrap();
        }
        txn.commit().unwrap();
        written.push((storage.head() - 1, 2000 + n, 0));
        written.push((storage.head(), 3000 + n, 0));
    }
    assert!(
        storage.stats().map_resizes >= 1,
        "the map must have grown: {:?}",
        storage.stats().map_resizes
    );
    let reader = Reader::<Secret>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    for &(seq, stream, n) in &written {
        let view = reader.get(&txn, seq).unwrap().unwrap();
        assert_eq!(view.text.as_str(), marker(stream, n), "seq {seq}");
        assert_eq!(view.n.to_native(), n, "seq {seq}");
    }
}

/// Readers whose stream keys are not cached read the keystore while master keys rotate: a
/// reader that read a key entry just before a rotation committed, and unwraps it just after,
/// must read it again rather than fail. A projector, which reads events inside its write
/// transaction, runs meanwhile: a rotation waiting for the write lock must not block it.
#[test]
fn reads_and_projections_during_rotations_neither_fail_nor_block() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Count(heed::Database<'static, heed::types::Bytes, heed::types::Bytes>);
    impl varvedb::Projection<Secret> for Count {
        fn apply(
            &mut self,
            txn: &mut heed::RwTxn<'_>,
            _envelope: &varvedb::Envelope<'_>,
            event: &ArchivedSecret,
        ) -> varvedb::error::Result<()> {
            let n = self.0.get(txn, b"n")?.map_or(0, |v| v.len());
            self.0.put(txn, b"n", &vec![0; n + 1])?;
            std::hint::black_box(event.n.to_native());
            Ok(())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let key = |v: u8| [v; 32];
    let storage = Storage::open(StorageConfig {
        // One cached key: reading the streams in turn misses every time.
        key_cache_capacity: 1,
        ..config(dir.path(), Some(key(1)))
    })
    .unwrap();
    let streams: Vec<u64> = (1..=40).collect();
    let written = write(&storage, &streams, 1);
    let db = storage.projection_database("count").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let (storage, stop) = (storage.clone(), stop.clone());
        std::thread::spawn(move || {
            let reader = Reader::<Secret>::new(storage.clone());
            let mut passes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let txn = storage.read_txn().unwrap();
                for (seq, _, n) in &written {
                    let view = reader
                        .get(&txn, *seq)
                        .unwrap_or_else(|e| panic!("read of seq {seq} during rotations: {e:?}"))
                        .unwrap();
                    assert_eq!(view.archived().n.to_native(), *n);
                }
                passes += 1;
            }
            passes
        })
    };
    let projector_thread = {
        let (storage, stop) = (storage.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                storage.reset_processor("count", 0).unwrap();
                let mut projector = varvedb::Projector::new(
                    Reader::<Secret>::new(storage.clone()),
                    Count(db),
                    "count",
                    storage.subscribe(),
                )
                .with_batch(3);
                let head = runtime.block_on(projector.run_until_caught_up()).unwrap();
                assert_eq!(head, 40);
                rounds += 1;
            }
            rounds
        })
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let rotator = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            for v in 2..=60u8 {
                storage.rotate_master_key(key(v)).unwrap();
            }
            let _ = done_tx.send(());
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("rotations did not finish: blocked by the readers");
    rotator.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let passes = reader_thread.join().unwrap();
    let rounds = projector_thread.join().unwrap();
    assert!(passes > 0 && rounds > 0, "{passes} passes, {rounds} rounds");
    assert_eq!(storage.master_key_version(), Some(60));
    let stats = storage.stats();
    assert!(stats.key_cache_misses > 40, "the readers missed the cache");
}
