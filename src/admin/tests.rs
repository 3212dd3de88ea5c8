//! Damage to the indexes, made through the store's own databases, found by `verify`.

use super::*;
use crate::env::{Commit, WriteKind};
use crate::error::Error;
use crate::format::index::{stream_version_key, Head};
use crate::store::{Storage, StorageConfig};
use crate::types::StreamId;
use crate::Writer;

fn store(dir: &std::path::Path) -> Storage {
    let storage = Storage::open(StorageConfig {
        path: dir.to_owned(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut writer = Writer::<u32>::new(storage.clone());
    for n in 1..=9u32 {
        // Streams 1, 2, 3 with versions 1..=3 each; sequence n is stream (n-1)%3+1.
        writer
            .append(u64::from((n - 1) % 3 + 1), u64::from((n - 1) / 3 + 1), n)
            .unwrap();
    }
    storage
}

fn kinds(report: &VerifyReport) -> Vec<(ProblemKind, Option<u64>)> {
    report.problems.iter().map(|p| (p.kind, p.seq)).collect()
}

#[test]
fn verify_finds_index_entries_that_disagree_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    // The events are in the unindexed tail, then in the index: both verify clean.
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok());
    assert_eq!((report.index_entries, report.index_watermark), (0, 0));
    assert_eq!(storage.store.writes.flush_index().unwrap(), Some(9));
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok());
    assert_eq!((report.index_entries, report.index_watermark), (9, 9));
    let dbs = &storage.log().dbs;
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            // Stream 2 loses version 2 (sequence 5) from its index.
            dbs.stream_index
                .delete(wtxn, &stream_version_key(StreamId(2), 2))?;
            // Stream 3's version 1 names sequence 6 (its version 2).
            dbs.stream_index.put(
                wtxn,
                &stream_version_key(StreamId(3), 1),
                &6u64.to_be_bytes(),
            )?;
            // The id of sequence 4 names sequence 7.
            let id = raw::event(&storage, &storage.env.read_txn()?, 4)?
                .unwrap()
                .envelope
                .event_id;
            dbs.event_ids.put(wtxn, &id.as_u128().to_be_bytes(), &7)?;
            // Stream 1's head says version 2.
            let head = Head {
                version: 2,
                first_seq: 1,
                last_seq: 4,
            };
            dbs.heads
                .put(wtxn, &StreamId(1).to_key(), &head.encode(StreamId(1)))?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let report = verify(&storage, &mut |_| {}).unwrap();
    let found = kinds(&report);
    assert!(
        found.contains(&(ProblemKind::EventIds, Some(4))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ProblemKind::EventIds, Some(7))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ProblemKind::StreamHead, Some(4))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ProblemKind::StreamIndex, Some(8))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ProblemKind::StreamIndex, Some(6))),
        "{found:?}"
    );
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("versions 2..=2 are missing from the index")),
        "{text:?}"
    );
    assert!(!report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Record));
}

/// An index value that is not a sequence names its entry: reads of the stream fail with
/// [`Error::Damaged`] (not a codec error), and `verify` reports it.
#[test]
fn an_index_value_that_is_not_a_sequence_is_damage_not_a_codec_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    storage.store.writes.flush_index().unwrap();
    let dbs = &storage.log().dbs;
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            dbs.stream_index
                .put(wtxn, &stream_version_key(StreamId(2), 2), &[7, 7, 7])?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let txn = storage.env.read_txn().unwrap();
    let items: Vec<_> = stream(&storage, &txn, 2u64, 1, crate::Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[2].is_ok());
    match &items[1] {
        Err(Error::Damaged {
            entry: crate::DamagedEntry::StreamIndexEntry { stream, version },
            ..
        }) => assert_eq!((*stream, *version), (StreamId(2), 2)),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a damaged entry was read as a sequence"),
    }
    let reader = crate::Reader::<u32>::new(storage.clone());
    let typed: Vec<_> = reader
        .read_stream(&txn, 2u64, 1, crate::Direction::Forward)
        .unwrap()
        .map(|r| r.map(|e| e.seq()))
        .collect();
    assert!(
        matches!(
            typed[1],
            Err(Error::Damaged {
                entry: crate::DamagedEntry::StreamIndexEntry { .. },
                ..
            })
        ),
        "{typed:?}"
    );
    assert_eq!(
        (typed[0].as_ref().ok(), typed[2].as_ref().ok()),
        (Some(&2), Some(&8))
    );
    let report = verify(&storage, &mut |_| {}).unwrap();
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::StreamIndex && p.stream == Some(StreamId(2))),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("not 8")), "{text:?}");
}

/// A record stored under the key of a renamed entry is a problem: the store says that version
/// of the type lives under another name. The renamed entry alone is counted, not a problem.
#[test]
fn verify_finds_a_record_under_a_renamed_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    let dbs = &storage.log().dbs;
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            let renamed = crate::format::schema::encode_renamed("Counter");
            dbs.schemas
                .put(wtxn, &crate::format::schema::key(b"Old", 2), &renamed)?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.schemas, report.schemas_renamed), (1, 1));
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            let renamed = crate::format::schema::encode_renamed("Counter");
            dbs.schemas
                .put(wtxn, &crate::format::schema::key(b"u32", 1), &renamed)?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let report = verify(&storage, &mut |_| {}).unwrap();
    let found: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("u32 v1, which the store keeps under a new name"),
        "{found:?}"
    );
}

/// `verify` checks the schema registry: an event type of the log without an entry, and an entry
/// that does not decode, are problems; a store as written has neither.
#[test]
fn verify_finds_a_missing_or_damaged_schema_entry() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.schemas, report.schemas_unknown), (1, 0));
    let dbs = &storage.log().dbs;
    storage
        .env
        .write(WriteKind::Append, |wtxn| {
            dbs.schemas
                .delete(wtxn, &crate::format::schema::key(b"u32", 1))?;
            dbs.schemas
                .put(wtxn, &crate::format::schema::key(b"Other", 1), &[9; 17])?;
            Ok(Commit::Commit(()))
        })
        .unwrap();
    let report = verify(&storage, &mut |_| {}).unwrap();
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.seq, p.what.clone()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|(k, seq, r)| *k == ProblemKind::Schema
        && *seq == Some(1)
        && r.contains("a record of u32 v1, with no recorded layout")));
    assert!(found
        .iter()
        .any(|(k, seq, r)| *k == ProblemKind::Schema && seq.is_none() && r.contains("Other v1")));
}

#[test]
fn import_keeps_positions_and_refuses_what_does_not_follow() {
    let dir = tempfile::tempdir().unwrap();
    let source = store(&dir.path().join("a"));
    let target = Storage::open(StorageConfig {
        path: dir.path().join("b"),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut importer = Importer::new(&target).unwrap();
    let txn = source.env.read_txn().unwrap();
    for event in log(&source, &txn, 1, crate::Direction::Forward).unwrap() {
        let event = event.unwrap();
        let e = event.envelope;
        let mut i = ImportEvent::new(e.seq, e.stream, e.version, e.event_type);
        i.prev_seq = e.prev_seq;
        i.timestamp_ns = e.timestamp_ns;
        i.event_id = e.event_id;
        i.payload = event.payload.unwrap().to_vec();
        importer.push(i).unwrap();
    }
    assert_eq!(importer.finish().unwrap(), 9);
    assert_eq!(target.head(), 9);
    assert!(verify(&target, &mut |_| {}).unwrap().is_ok());
    let a = source.env.read_txn().unwrap();
    let b = target.env.read_txn().unwrap();
    for seq in 1..=9 {
        let x = event(&source, &a, seq).unwrap().unwrap();
        let y = event(&target, &b, seq).unwrap().unwrap();
        assert_eq!(x.envelope, y.envelope);
        assert_eq!(x.payload, y.payload);
    }
    // Not empty any more.
    assert!(matches!(
        Importer::new(&target),
        Err(ImportError::NotEmpty { events: 9, .. })
    ));
    // Out of order, a wrong version, a wrong prev_seq.
    let fresh = Storage::open(StorageConfig {
        path: dir.path().join("c"),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut importer = Importer::new(&fresh).unwrap();
    assert!(matches!(
        importer.push(ImportEvent::new(2, StreamId(1), 1, "u32")),
        Err(ImportError::Invalid { seq: 2, .. })
    ));
    assert!(matches!(
        importer.push(ImportEvent::new(1, StreamId(1), 2, "u32")),
        Err(ImportError::Invalid { seq: 1, .. })
    ));
    let mut e = ImportEvent::new(1, StreamId(1), 1, "u32");
    e.prev_seq = Some(3);
    assert!(matches!(
        importer.push(e),
        Err(ImportError::Invalid { seq: 1, .. })
    ));
    assert_eq!(importer.finish().unwrap(), 0);
    assert_eq!(fresh.head(), 0);
}

/// Damage the engine itself must notice, not only `verify`: an event missing from the log after
/// the index watermark, and a watermark past the end of the log. Each is refused at open with
/// `Corrupted` naming the missing sequence, instead of hiding events from reads by stream.
#[test]
fn a_log_gap_or_a_watermark_past_the_log_is_refused_at_open() {
    // The store of `store` (sequences 1..=9, flushed at close) after `damage`, reopened.
    let reopen_after = |watermark: u64, delete: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let storage = store(dir.path());
        let dbs = &storage.log().dbs;
        storage
            .env
            .write(WriteKind::Append, |wtxn| {
                dbs.set_watermark(wtxn, watermark)?;
                if let Some(seq) = delete {
                    dbs.log.delete(wtxn, &seq)?;
                }
                Ok(Commit::Commit(()))
            })
            .unwrap();
        // Closing must not flush the in-memory tail over the damage.
        storage.env.guard().poison.set(
            dir.path(),
            "a test",
            &crate::Error::Io(std::io::Error::other("test")),
        );
        drop(storage);
        Storage::open(StorageConfig {
            path: dir.path().to_owned(),
            map_size: 1 << 20,
            ..Default::default()
        })
    };
    // A gap: sequence 5 deleted while the index reaches only 3.
    match reopen_after(3, Some(5)) {
        Err(Error::Corrupted { seq: 5, reason }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("a gap in the tail: {other:?}"),
    }
    // A watermark past the log's last sequence (9).
    match reopen_after(50, None) {
        Err(Error::Corrupted { seq: 10, reason }) => {
            assert!(reason.contains("past the end"), "{reason}")
        }
        other => panic!("a watermark past the log: {other:?}"),
    }
    // Without damage (nothing indexed: the whole log is the tail) the same store opens.
    let storage = reopen_after(0, None).unwrap();
    assert_eq!(storage.head(), 9);
    assert_eq!(storage.stream_version(2u64).unwrap(), 3);
}

/// A payload whose checksums hold but that is no archive of its type: `verify` cannot know,
/// `verify_with` the application's decoder reports it, and the application's read fails.
#[test]
fn verify_with_decoders_reports_payloads_the_application_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().to_owned(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut importer = Importer::new(&storage).unwrap();
    for seq in 1..=3u64 {
        let mut e = ImportEvent::new(seq, StreamId(1), seq, "u32");
        e.prev_seq = (seq > 1).then(|| seq - 1);
        e.event_id = uuid::Uuid::from_u128(u128::from(seq));
        e.payload = if seq == 2 {
            vec![0; 3]
        } else {
            (seq as u32).to_le_bytes().to_vec()
        };
        importer.push(e).unwrap();
    }
    let mut other = ImportEvent::new(4, StreamId(2), 1, "Other");
    other.event_id = uuid::Uuid::from_u128(4);
    other.payload = vec![1, 2];
    importer.push(other).unwrap();
    importer.finish().unwrap();

    let report = verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.payloads_validated, 0);
    let counts: Vec<(&str, u64)> = report
        .not_validated
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(counts, [("Other", 1), ("u32", 3)]);

    let mut decoders = Decoders::new();
    decoders.register_archived::<u32, _>("u32", |n| Ok(n.to_native().to_string()));
    let report = verify_with(&storage, &decoders, &mut |_| {}).unwrap();
    assert_eq!(kinds(&report), [(ProblemKind::Payload, Some(2))]);
    assert!(
        report.problems[0].what.contains("not a valid archive"),
        "{}",
        report.problems[0]
    );
    assert_eq!(report.problems[0].stream, Some(StreamId(1)));
    assert_eq!(report.payloads_validated, 3);
    assert_eq!(report.not_validated.len(), 1);
    assert_eq!(report.not_validated["Other"], 1);

    let reader = crate::Reader::<u32>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(*reader.get(&txn, 1).unwrap().unwrap(), 1);
    assert!(matches!(
        reader.get(&txn, 2),
        Err(Error::InvalidPayload { seq: 2, .. })
    ));
}
