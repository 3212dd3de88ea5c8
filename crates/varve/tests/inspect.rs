//! `info`, `streams`, `read`, `tail`, `processors` and their errors, end to end.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use varvedb::Writer;

#[test]
fn info_streams_read_and_tail_report_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let storage = open(&path);
    fill(&storage, 3, 4);
    storage.reset_processor("billing", 5).unwrap();
    storage.reset_processor("audit", 12).unwrap();

    let info = &json_lines(&[&"info", &path, &"--json"])[0];
    assert_eq!(info["events"], 12);
    assert_eq!(info["streams"], 3);
    assert_eq!(info["head"], 12);
    assert_eq!(info["format_version"], varvedb::FORMAT_VERSION);
    assert!(info["file_size"].as_u64().unwrap() > 0);
    assert!(info["map_size"].as_u64().unwrap() >= 4 << 20);
    let procs = info["processors"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[0]["name"], "audit");
    assert_eq!(procs[0]["lag"], 0);
    assert_eq!(procs[1]["name"], "billing");
    assert_eq!(procs[1]["checkpoint"], 5);
    assert_eq!(procs[1]["lag"], 7);
    let text = stdout(&varve(&[&"info", &path]));
    assert!(text.contains("head sequence   12"), "{text}");

    let streams = json_lines(&[&"streams", &path, &"--json"]);
    let listed: Vec<(String, u64, u64, u64)> = streams
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["version"].as_u64().unwrap(),
                s["first_seq"].as_u64().unwrap(),
                s["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("1".to_string(), 4, 1, 10),
            ("2".to_string(), 4, 2, 11),
            ("3".to_string(), 4, 3, 12)
        ]
    );

    // Stream 2 holds sequences 2, 5, 8, 11 as versions 1..=4.
    let events = json_lines(&[&"read", &path, &"2", &"--json"]);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 5, 8, 11]);
    assert_eq!(events[1]["event_type"], "Noted.v2");
    assert_eq!(events[1]["schema_version"], 2);
    assert_eq!(events[1]["prev_seq"], 2);
    assert_eq!(
        events[2]["correlation_id"],
        varvedb::Uuid::from_u128(7_008).to_string()
    );
    assert!(events[0].get("payload_hex").is_none());
    let back = json_lines(&[
        &"read",
        &path,
        &"2",
        &"--backward",
        &"--limit",
        &"2",
        &"--from",
        &"3",
        &"--json",
    ]);
    let versions: Vec<u64> = back
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2]);

    // Hex payloads are the exact archived bytes.
    let hexed = json_lines(&[
        &"read",
        &path,
        &"1",
        &"--limit",
        &"1",
        &"--payload",
        &"hex",
        &"--json",
    ]);
    let expected = rkyv::to_bytes::<rkyv::rancor::Error>(&noted(1)).unwrap();
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hexed[0]["payload_hex"], hex);
    assert_eq!(hexed[0]["payload_len"], expected.len());
    // The large event (sequence 5) reads like any other.
    assert!(events[1]["payload_len"].as_u64().unwrap() > 5000);

    let tail = json_lines(&[&"tail", &path, &"-n", &"3", &"--json"]);
    let seqs: Vec<u64> = tail.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [10, 11, 12]);
    let text = stdout(&varve(&[&"tail", &path, &"-n", &"1"]));
    assert!(text.starts_with("#12 stream 3 v4 Noted"), "{text}");
}

#[test]
fn processors_are_listed_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let storage = open(&path);
    fill(&storage, 2, 3);
    storage.reset_processor("projector", 6).unwrap();

    let listed = json_lines(&[&"processors", &path, &"--json"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["checkpoint"], 6);
    assert_eq!(listed[0]["lag"], 0);

    let reset = json_lines(&[
        &"processors",
        &"reset",
        &path,
        &"projector",
        &"--to",
        &"2",
        &"--json",
    ]);
    assert_eq!(reset[0]["from"], 6);
    assert_eq!(reset[0]["to"], 2);
    assert_eq!(
        storage.processors().unwrap(),
        [("projector".to_string(), 2)]
    );
    let listed = json_lines(&[&"processors", &path, &"--json"]);
    assert_eq!(listed[0]["lag"], 4);

    let unknown = varve(&[&"processors", &"reset", &path, &"nobody", &"--to", &"0"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no processor named \"nobody\""));
    assert!(stderr(&unknown).contains("projector"));
    let past = varve(&[&"processors", &"reset", &path, &"projector", &"--to", &"99"]);
    assert_eq!(past.status.code(), Some(1));
    assert!(stderr(&past).contains("past the end of the log"));
    assert_eq!(
        storage.processors().unwrap(),
        [("projector".to_string(), 2)]
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = varve(&[&"info", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such directory"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());

    let empty = tempfile::tempdir().unwrap();
    let out = varve(&[&"verify", &empty.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no data.mdb"));

    let path = dir.path().join("store");
    fill(&open(&path), 1, 2);
    let out = varve(&[&"read", &path, &"order-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a stream"), "{}", stderr(&out));
    let out = varve(&[&"read", &path, &"order-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stream order-1 has no events"),
        "{}",
        stderr(&out)
    );
    let out = varve(&[&"read", &path, &"42", &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["error"], "stream 42 has no events");
    assert!(err["store"].as_str().unwrap().ends_with("store"));
    let out = varve(&[&"read", &path]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tail_follow_sees_appends_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let storage = open(&path);
    fill(&storage, 1, 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args([
            "tail",
            "--follow",
            "--json",
            "-n",
            "1",
            "--interval-ms",
            "10",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_seq = |rx: &mpsc::Receiver<String>| -> u64 {
        // A generous bound, only so that a broken follow fails instead of hanging.
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("tail printed nothing");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["seq"].as_u64().unwrap()
    };
    assert_eq!(next_seq(&rx), 2);
    // This test process is the other process: tail only sees these through the file.
    let mut writer = Writer::<Noted>::new(storage.clone());
    writer.append(9, 1, noted(100)).unwrap();
    assert_eq!(next_seq(&rx), 3);
    writer.append(9, 2, noted(101)).unwrap();
    writer.append(9, 3, noted(102)).unwrap();
    assert_eq!(next_seq(&rx), 4);
    assert_eq!(next_seq(&rx), 5);
    child.kill().unwrap();
    child.wait().unwrap();
}
