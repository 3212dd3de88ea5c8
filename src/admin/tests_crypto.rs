//! The admin tools on encrypted stores: keystore checks, backups with the keystore, import
//! that seals records and keeps shredded events in place.

use super::*;
use crate::crypto::keystore::WrappedEntry;
use crate::engine::{Reader, Writer};
use crate::env::{Commit, WriteKind};
use crate::error::Error;
use crate::format::{checksum, record};
use crate::store::{Storage, StorageConfig};
use crate::types::StreamId;

const KEY: [u8; 32] = [0x5A; 32];

fn encrypted(path: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        map_size: 1 << 20,
        encryption_enabled: true,
        master_key: Some(KEY),
        ..Default::default()
    })
    .unwrap()
}

/// Streams 1..=4 with versions 1..=3 each; sequence n is stream (n-1)%4+1.
fn filled(path: &std::path::Path) -> Storage {
    let storage = encrypted(path);
    let mut writer = Writer::<u32>::new(storage.clone());
    for n in 1..=12u32 {
        writer
            .append(u64::from((n - 1) % 4 + 1), u64::from((n - 1) / 4 + 1), n)
            .unwrap();
    }
    storage
}

fn kinds(report: &VerifyReport) -> Vec<(ProblemKind, Option<u64>, Option<StreamId>)> {
    report
        .problems
        .iter()
        .map(|p| (p.kind, p.seq, p.stream))
        .collect()
}

#[test]
fn verify_decrypts_every_record_and_counts_shredded_events() {
    let dir = tempfile::tempdir().unwrap();
    let storage = filled(dir.path());
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.encrypted);
    assert_eq!((report.decrypted, report.keys), (12, 4));
    storage.shred_stream(2u64).unwrap();
    // A key for a stream without events: harmless, counted.
    let crypto = storage.log().crypto.as_ref().unwrap();
    crypto.keys_for_append(&[StreamId(99)]).unwrap();
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.decrypted, 9);
    assert_eq!(report.shredded_events, 3);
    assert_eq!(report.shredded_streams, 1);
    assert_eq!(report.keys, 4);
    assert_eq!(report.keys_without_events, 1);
    // Decrypted payloads go to the application's decoder; shredded ones cannot.
    let mut decoders = Decoders::new();
    decoders.register_archived::<u32, _>("u32", |n| Ok(n.to_native().to_string()));
    let report = verify_with(&storage, &decoders, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.payloads_validated, 9);
    assert!(report.not_validated.is_empty());
}

#[test]
fn verify_reports_tampered_records_and_keystore_damage() {
    let dir = tempfile::tempdir().unwrap();
    let storage = filled(dir.path());
    let dbs = &storage.log().dbs;
    let ks = storage.log().crypto.as_ref().unwrap().keystore();
    // Sequence 5 (stream 1): one ciphertext bit flipped, the payload checksum fixed.
    let mut tampered = {
        let txn = storage.env.read_txn().unwrap();
        dbs.get_record(txn.raw(), 5).unwrap().unwrap().to_vec()
    };
    let rec = record::decode(5, &tampered).unwrap();
    let region = rec.payload_region().unwrap();
    let offset = region.as_ptr() as usize - tampered.as_ptr() as usize;
    tampered[offset] ^= 1;
    let crc = checksum::crc32c(&tampered[offset..]);
    tampered[4..8].copy_from_slice(&crc.to_le_bytes());
    // Sequence 7 (stream 3): replaced by a plaintext record in the same place.
    let plain = {
        let txn = storage.env.read_txn().unwrap();
        let old = record::decode(7, dbs.get_record(txn.raw(), 7).unwrap().unwrap()).unwrap();
        let env = old.envelope();
        let mut buf = Vec::new();
        let begun = record::begin(
            &mut buf,
            &record::RecordParts {
                stream: StreamId(3),
                event_id: env.event_id,
                correlation_id: None,
                causation_id: None,
                event_type: "u32",
                schema_version: 1,
                metadata: None,
                encrypted: false,
            },
        );
        buf.extend_from_slice(&7u32.to_le_bytes());
        let len = record::finish(&mut buf, begun.start, begun.payload_offset);
        record::set_position(
            &mut buf[..len],
            begun.payload_offset,
            record::Place {
                seq: 7,
                version: env.version,
                prev_seq: env.prev_seq.unwrap_or(0),
                timestamp_ns: env.timestamp_ns,
            },
            None,
        )
        .unwrap();
        buf.truncate(len);
        buf
    };
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            dbs.log.put(wtxn, &5, &tampered)?;
            dbs.log.put(wtxn, &7, &plain)?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let mut wtxn = ks.env.write_txn().unwrap();
    // Stream 2 loses its key (no tombstone); stream 4's entry is cut short; a key entry for
    // stream 50 (no events) is wrapped under another store's id.
    ks.keys.delete(&mut wtxn, &StreamId(2).to_key()).unwrap();
    ks.keys
        .put(&mut wtxn, &StreamId(4).to_key(), &[1, 2, 3])
        .unwrap();
    let stolen = ks.keys.get(&wtxn, &StreamId(1).to_key()).unwrap().unwrap();
    let stolen = WrappedEntry::decode(stolen).unwrap().encode();
    ks.keys
        .put(&mut wtxn, &StreamId(50).to_key(), &stolen)
        .unwrap();
    wtxn.commit().unwrap();

    let report = verify(&storage, &mut |_| {}).unwrap();
    let found = kinds(&report);
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        found.contains(&(ProblemKind::Record, Some(5), Some(StreamId(1)))),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("fails authentication")),
        "{text:#?}"
    );
    assert!(
        found.contains(&(ProblemKind::Record, Some(7), Some(StreamId(3)))),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("plaintext record")),
        "{text:#?}"
    );
    // Stream 2: reported once, at its first event.
    assert!(
        found.contains(&(ProblemKind::Keystore, Some(2), Some(StreamId(2)))),
        "{text:#?}"
    );
    assert_eq!(
        found.iter().filter(|p| p.2 == Some(StreamId(2))).count(),
        1,
        "{text:#?}"
    );
    assert!(
        found.contains(&(ProblemKind::Keystore, Some(4), Some(StreamId(4)))),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("malformed")), "{text:#?}");
    assert!(
        found.contains(&(ProblemKind::Keystore, None, Some(StreamId(50)))),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("fails authentication") && t.contains("stream 50")),
        "{text:#?}"
    );
    assert_eq!(report.keys_without_events, 1);
    assert_eq!(report.problems.len(), 5, "{text:#?}");
    // Every problem says what to do.
    assert!(report.problems.iter().all(|p| !p.fix.is_empty()));
}

#[test]
fn backup_copies_the_keystore_and_keeps_keys_shredded_later() {
    let dir = tempfile::tempdir().unwrap();
    let storage = filled(&dir.path().join("a"));
    storage.shred_stream(2u64).unwrap();
    // Without the key, or with another, nothing is copied.
    assert!(matches!(
        backup(&storage, &dir.path().join("x"), None),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        backup(&storage, &dir.path().join("x"), Some(&[1; 32])),
        Err(Error::WrongMasterKey { .. })
    ));
    assert!(!dir.path().join("x").exists());
    let dest = dir.path().join("b");
    let info = backup(&storage, &dest, Some(&KEY)).unwrap();
    assert!(info.encrypted);
    assert_eq!(
        (info.head, info.events, info.keys, info.shredded),
        (12, 12, 3, 1)
    );
    assert!(dest.join("keys/data.mdb").is_file());
    assert!(!dest.join("keys/data.mdb.partial").exists());
    // Shredded after the backup: gone from the store, still in the backup.
    storage.shred_stream(1u64).unwrap();
    let copy = encrypted(&dest);
    let report = verify(&copy, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.decrypted, report.shredded_events), (9, 3));
    let reader = Reader::<u32>::new(copy.clone());
    let txn = copy.env.read_txn().unwrap();
    assert_eq!(*reader.get(&txn, 1).unwrap().unwrap(), 1);
    assert!(matches!(reader.get(&txn, 2), Err(Error::Shredded { .. })));
    let reader = Reader::<u32>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(reader.get(&txn, 1), Err(Error::Shredded { .. })));
}

fn import_event(source: &Storage, event: &RawEvent<'_>) -> ImportEvent {
    let e = event.envelope;
    let mut i = ImportEvent::new(e.seq, e.stream, e.version, e.event_type);
    i.prev_seq = e.prev_seq;
    i.timestamp_ns = e.timestamp_ns;
    i.event_id = e.event_id;
    match contents(source, event) {
        Ok(c) => {
            i.payload = c.payload().to_vec();
            i.metadata = c.metadata().map(<[u8]>::to_vec);
        }
        Err(Error::Shredded { .. }) => {
            i.shredded = true;
            i.payload = vec![0; e.payload_len as usize];
        }
        Err(e) => panic!("{e}"),
    }
    i
}

#[test]
fn import_seals_records_and_keeps_shredded_events_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled(&dir.path().join("a"));
    source.shred_stream(3u64).unwrap();
    let target = encrypted(&dir.path().join("b"));
    let mut importer = Importer::new(&target).unwrap();
    {
        let txn = source.env.read_txn().unwrap();
        for event in log(&source, &txn, 1, crate::Direction::Forward).unwrap() {
            importer
                .push(import_event(&source, &event.unwrap()))
                .unwrap();
        }
    }
    assert_eq!(importer.shredded_streams(), 1);
    assert_eq!(importer.finish().unwrap(), 12);
    let report = verify(&target, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.decrypted, report.shredded_events), (9, 3));
    let (a, b) = (
        source.env.read_txn().unwrap(),
        target.env.read_txn().unwrap(),
    );
    for seq in 1..=12 {
        let x = event(&source, &a, seq).unwrap().unwrap();
        let y = event(&target, &b, seq).unwrap().unwrap();
        assert_eq!(x.envelope, y.envelope, "sequence {seq}");
        assert!(y.is_encrypted());
        match (contents(&source, &x), contents(&target, &y)) {
            (Ok(p), Ok(q)) => assert_eq!(p.payload(), q.payload()),
            (Err(Error::Shredded { .. }), Err(Error::Shredded { seq: s, .. })) => {
                assert_eq!(s, seq)
            }
            (p, q) => panic!("sequence {seq}: {p:?} / {q:?}"),
        }
    }
    assert!(matches!(
        Writer::<u32>::new(target.clone()).append(3u64, 3, 1),
        Err(Error::StreamShredded { .. })
    ));

    // A target without encryption refuses a shredded event, and nothing of it is written.
    let plain = Storage::open(StorageConfig {
        path: dir.path().join("c"),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut importer = Importer::new(&plain).unwrap();
    let txn = source.env.read_txn().unwrap();
    let events: Vec<ImportEvent> = log(&source, &txn, 1, crate::Direction::Forward)
        .unwrap()
        .map(|e| import_event(&source, &e.unwrap()))
        .collect();
    importer.push(events[0].clone()).unwrap();
    importer.push(events[1].clone()).unwrap();
    match importer.push(events[2].clone()) {
        Err(ImportError::Invalid { seq: 3, reason }) => {
            assert!(reason.contains("shredded"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(importer.finish().unwrap(), 2);
}
