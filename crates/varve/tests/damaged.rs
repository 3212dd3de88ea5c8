//! `backup` and `export` of a store with damaged records: the damage is reported by sequence,
//! and nothing passes for a sound copy unless asked.

mod common;

use common::*;

#[test]
fn backup_of_a_damaged_store_reports_it_and_keeps_no_copy_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bad) = damaged_store(dir.path());

    let dest = dir.path().join("backups/first");
    let out = varve(&[&"backup", &bad, &dest]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("record at sequence 4 (stream 9): payload checksum mismatch"),
        "{err}"
    );
    assert!(
        err.contains("record at sequence 6 (stream 9): payload checksum mismatch"),
        "{err}"
    );
    assert!(err.contains("the copy has 2 problems"), "{err}");
    assert!(err.contains("--allow-damaged"), "{err}");
    // Nothing that passes for a backup is left, not even the directories made for it.
    assert!(!dir.path().join("backups").exists(), "{err}");

    // An empty directory given as the destination stays, empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = varve(&[&"backup", &bad, &empty, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["kept"], false);
    assert_eq!(summary["ok"], false);
    let seqs: Vec<u64> = summary["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 6]);
    assert!(empty.is_dir());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // Asked to copy anyway: the copy is kept, and the damage is still reported.
    let kept = dir.path().join("kept");
    let out = varve(&[&"backup", &bad, &kept, &"--allow-damaged"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("record at sequence 4 (stream 9): payload checksum mismatch"),
        "{err}"
    );
    assert!(stdout(&out).contains("2 problems"), "{}", stdout(&out));
    assert!(kept.join("data.mdb").is_file());
    let out = varve(&[&"verify", &kept, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let copy = varve(&[
        &"backup",
        &bad,
        &dir.path().join("kept2"),
        &"--allow-damaged",
        &"--json",
    ]);
    assert_eq!(copy.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_str(stdout(&copy).trim()).unwrap();
    assert_eq!(
        (summary["kept"].as_bool(), summary["ok"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(summary["problems"].as_array().unwrap().len(), 2);
}

#[test]
fn backup_of_a_sound_store_says_the_copy_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = damaged_store(dir.path());
    let out = varve(&[&"backup", &path, &dir.path().join("copy"), &"--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["kept"], true);
    assert_eq!(summary["events"], 7);
    assert_eq!(summary["problems"], serde_json::json!([]));
}

/// The sequences of the event lines of an export.
fn event_seqs(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

#[test]
fn export_stops_at_a_damaged_record_with_the_true_count_or_skips_and_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bad) = damaged_store(dir.path());

    let out = varve(&[&"export", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(event_seqs(&stdout(&out)), [1, 2, 3]);
    let err = stderr(&out);
    assert!(err.contains("record 4: "), "{err}");
    assert!(err.contains("payload checksum mismatch"), "{err}");
    assert!(
        err.contains("the export stops at this record: the 3 events before it were written"),
        "{err}"
    );
    assert!(err.contains("--skip-damaged"), "{err}");

    // Around the damage: every other event, each left-out record named on standard error and in
    // the summary, exit status 0.
    let file = dir.path().join("salvage.ndjson");
    let out = varve(&[&"export", &bad, &"--skip-damaged", &"-o", &file, &"--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        event_seqs(&std::fs::read_to_string(&file).unwrap()),
        [1, 2, 3, 5, 7]
    );
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["events"], 5);
    assert_eq!(
        summary["skipped"],
        serde_json::json!([
            {"seq": 4, "reason": "payload checksum mismatch"},
            {"seq": 6, "reason": "payload checksum mismatch"},
        ])
    );
    let err = stderr(&out);
    assert!(
        err.contains("record 4 left out of the export: payload checksum mismatch"),
        "{err}"
    );
    assert!(
        err.contains("record 6 left out of the export: payload checksum mismatch"),
        "{err}"
    );
    assert!(
        err.contains("left out 2 damaged records (sequences 4, 6)"),
        "{err}"
    );
}
