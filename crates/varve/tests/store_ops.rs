//! `verify`, `backup`, `export` and `import` end to end.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use varvedb::admin;
use varvedb::Writer;
use varvedb::{Direction, NewEvent, OwnedEnvelope, Uuid};

/// Every event of a store: its envelope and payload.
fn contents(path: &Path) -> Vec<(OwnedEnvelope, Vec<u8>)> {
    let storage = open(path);
    let txn = storage.env.read_txn().unwrap();
    admin::log(&storage, &txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.envelope.to_owned(), e.payload.unwrap().to_vec())
        })
        .collect()
}

#[test]
fn verify_passes_an_intact_store_and_names_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let storage = open(&path);
        fill(&storage, 3, 4);
        let mut writer = Writer::<Noted>::new(storage.clone());
        // Sequence 13: a payload to damage. Sequence 14: metadata (header) to damage.
        let payload = Noted {
            n: 13,
            label: "PAYLOAD-MARKER-0013".into(),
            blob: vec![],
        };
        writer.append(50, 1, payload).unwrap();
        let header = NewEvent::new(noted(14)).with_metadata(b"HEADER-MARKER-0014".to_vec());
        writer
            .append_batch(51, varvedb::ExpectedVersion::NoStream, [header])
            .unwrap();
        writer.append(52, 1, noted(15)).unwrap();
    }
    let ok = varve(&[&"verify", &path]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains(": OK: 15 records up to sequence 15"));
    let report = &json_lines(&[&"verify", &path, &"--json"])[0];
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 15);
    assert_eq!(report["index_entries"], 15);
    assert_eq!(report["event_ids"], 15);

    // A damaged copy of the data file (the lock file is not copied).
    let bad = dir.path().join("damaged");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(path.join("data.mdb"), bad.join("data.mdb")).unwrap();
    assert!(flip_all(&bad.join("data.mdb"), b"PAYLOAD-MARKER-0013") >= 1);
    assert!(flip_all(&bad.join("data.mdb"), b"HEADER-MARKER-0014") >= 1);

    let out = varve(&[&"verify", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("record at sequence 13 (stream 50): payload checksum mismatch"),
        "{text}"
    );
    assert!(
        text.contains("record at sequence 14: header checksum mismatch"),
        "{text}"
    );
    assert!(
        text.contains(&format!("store {}:", bad.display())),
        "{text}"
    );
    assert!(text.contains("what to do: restore the store from a backup"));
    assert!(text.contains("2 PROBLEMS"), "{text}");

    let out = varve(&[&"verify", &bad, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    let seqs: Vec<u64> = problems
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    // Each damaged record once: the index entries leading to it are not reported again.
    assert_eq!(seqs, [13, 14]);
    assert_eq!(problems[0]["kind"], "record");

    // Reading the damaged record names it too.
    let out = varve(&[&"read", &bad, &"50"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("record 13:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("varve verify"));
}

#[test]
fn backup_while_a_writer_appends_is_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let storage = open(&path);
    fill(&storage, 4, 25);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let storage = storage.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut writer = Writer::<Noted>::new(storage);
            let mut version = 0;
            // At least a few appends, then until the backup is done.
            while version < 20 || !stop.load(Ordering::Relaxed) {
                version += 1;
                writer.append(77, version, noted(version)).unwrap();
            }
            version
        })
    };
    let dest = dir.path().join("backup");
    let out = varve(&[&"backup", &path, &dest, &"--json"]);
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let head = info["head"].as_u64().unwrap();
    assert_eq!(info["events"], head);
    assert!(head >= 100 && head <= 100 + appended);
    assert!(dest.join("data.mdb").is_file());
    assert!(!dest.join("data.mdb.partial").exists());

    // The copy is a prefix of the live log, exactly, and verifies.
    let copied = contents(&dest);
    let live = contents(&path);
    assert_eq!(copied.len() as u64, head);
    assert_eq!(copied[..], live[..copied.len()]);
    let out = varve(&[&"verify", &dest]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // A destination that is not empty is refused.
    let out = varve(&[&"backup", &path, &dest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
}

#[test]
fn export_then_import_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 3, 5);
    let file = dir.path().join("events.ndjson");
    let out = varve(&[&"export", &path, &"-o", &file, &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["events"], 15);
    let exported = std::fs::read_to_string(&file).unwrap();
    // 15 event lines and the trailer.
    assert_eq!(exported.lines().count(), 16);
    let trailer: serde_json::Value =
        serde_json::from_str(exported.lines().last().unwrap()).unwrap();
    assert_eq!(trailer["trailer"]["events"], 15);

    let target = dir.path().join("copy");
    let out = varve(&[&"import", &target, &"-i", &file, &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let original = contents(&path);
    let imported = contents(&target);
    assert_eq!(original.len(), 15);
    // Sequences, streams, versions, prev_seq, timestamps, ids, types, schema versions,
    // metadata, correlation and causation ids, payload lengths and payload bytes.
    assert_eq!(imported, original);
    assert!(original.iter().any(|(e, _)| e.metadata.is_some()));
    assert!(original.iter().any(|(e, _)| e.correlation_id.is_some()));
    assert!(original.iter().any(|(e, _)| e.schema_version == 2));
    assert!(original.iter().any(|(_, p)| p.len() > 5000));
    // The indexes were built: streams and reads by version work, and the copy verifies.
    assert_eq!(
        json_lines(&[&"streams", &target, &"--json"]),
        json_lines(&[&"streams", &path, &"--json"])
    );
    let out = varve(&[&"verify", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Exporting the copy gives the same bytes (stdin/stdout this time).
    let again = varve(&[&"export", &target]);
    assert_eq!(stdout(&again), exported);
    // And the typed API reads it.
    let storage = open(&target);
    let reader = varvedb::Reader::<Noted>::new(storage.clone()).accept_event_types(["Noted.v2"]);
    let txn = storage.env.read_txn().unwrap();
    assert_eq!(reader.get(&txn, 7).unwrap().unwrap().n, 7);
    drop(txn);

    // A store that holds events is refused.
    let out = varve(&[&"import", &target, &"-i", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));

    // A malformed line is named by its number; so is a line out of order (edited by hand, so
    // without a trailer that matches: --allow-truncated).
    let mut lines: Vec<&str> = exported.lines().take(15).collect();
    lines[2] = "{\"seq\": 3, \"oops\": true}";
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let out = varve(&[
        &"import",
        &dir.path().join("t2"),
        &"-i",
        &broken,
        &"--allow-truncated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 3: not an exported event"),
        "{}",
        stderr(&out)
    );
    let mut lines: Vec<&str> = exported.lines().take(15).collect();
    lines.swap(3, 4);
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let out = varve(&[
        &"import",
        &dir.path().join("t3"),
        &"-i",
        &broken,
        &"--allow-truncated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("record 5: line 4: expected sequence 4"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn import_refuses_a_reused_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 1, 2);
    let exported = stdout(&varve(&[&"export", &path]));
    let first: serde_json::Value = serde_json::from_str(exported.lines().next().unwrap()).unwrap();
    let mut second: serde_json::Value =
        serde_json::from_str(exported.lines().nth(1).unwrap()).unwrap();
    second["event_id"] = first["event_id"].clone();
    let file = dir.path().join("dup.ndjson");
    std::fs::write(&file, format!("{first}\n{second}\n")).unwrap();
    let out = varve(&[
        &"import",
        &dir.path().join("t"),
        &"-i",
        &file,
        &"--allow-truncated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "event id {} is already stored at sequence 1",
            Uuid::from_u128(1001)
        )),
        "{}",
        stderr(&out)
    );
}
