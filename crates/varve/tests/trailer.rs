//! The export's trailer: an export cut short, damaged or edited is refused by `import`, and
//! nothing is left behind.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs varve with `input` on its standard input.
fn varve_stdin(args: &[&dyn AsRef<std::ffi::OsStr>], input: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varve"));
    for a in args {
        cmd.arg(a);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run varve");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread, so that the child's output never waits on it; a child that exits
    // before reading everything (a broken pipe here) is judged by its exit status.
    let writer = std::thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// An export of a store of 12 events, as text.
fn exported(dir: &Path) -> String {
    let path = dir.join("store");
    fill(&open(&path), 3, 4);
    let out = varve(&[&"export", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn every_export_ends_with_a_trailer_of_its_count_and_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let text = exported(dir.path());
    let (body, last) = text[..text.len() - 1].rsplit_once('\n').unwrap();
    let body = format!("{body}\n");
    assert_eq!(body.lines().count(), 12);
    let trailer: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        trailer,
        serde_json::json!({"trailer": {
            "format": 2,
            "events": 12,
            "head": 12,
            "skipped": [],
            "crc32c": format!("{:08x}", crc32c::crc32c(body.as_bytes())),
        }})
    );
    // An empty store's export is its trailer alone, and imports.
    let empty = dir.path().join("empty");
    drop(open(&empty));
    let out = varve(&[&"export", &empty]);
    assert_eq!(
        stdout(&out),
        "{\"trailer\":{\"format\":2,\"events\":0,\"head\":0,\"skipped\":[],\"crc32c\":\"00000000\"}}\n"
    );
    let out = varve_stdin(&[&"import", &dir.path().join("empty2")], &out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_export_cut_short_is_refused_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let text = exported(dir.path());
    let lines: Vec<&str> = text.lines().collect();
    let target = dir.path().join("target");

    // Cut at a line's end: the trailer, or the trailer and events before it, are missing.
    for keep in [12, 7, 0] {
        let cut = lines[..keep]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let file = dir.path().join(format!("cut-{keep}.ndjson"));
        std::fs::write(&file, &cut).unwrap();
        for out in [
            varve(&[&"import", &target, &"-i", &file]),
            varve_stdin(&[&"import", &target], cut.as_bytes()),
        ] {
            assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
            let err = stderr(&out);
            let expected = if keep == 0 {
                "the input is empty".to_string()
            } else {
                format!("the input has no trailer line after its {keep} event lines")
            };
            assert!(err.contains(&expected), "{err}");
            assert!(err.contains("--allow-truncated"), "{err}");
            assert!(!target.exists());
        }
    }

    // Cut in the middle of a line.
    let cut = &text[..text.len() / 2];
    let file = dir.path().join("half.ndjson");
    std::fs::write(&file, cut).unwrap();
    let out = varve(&[&"import", &target, &"-i", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the input ends in the middle of a line"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
    // Asked to, the complete lines are imported and the incomplete one is left out.
    let complete = cut.matches('\n').count() as u64;
    let out = varve(&[
        &"import",
        &target,
        &"-i",
        &file,
        &"--allow-truncated",
        &"--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["events"].as_u64(), Some(complete));
    assert_eq!(summary["trailer_checked"], false);
}

#[test]
fn an_export_changed_after_it_was_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = exported(dir.path());
    let target = dir.path().join("target");
    let empty_dir = dir.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();

    // One event line edited (its timestamp), the trailer kept.
    let edited = text.replacen("\"timestamp_ns\":", "\"timestamp_ns\":1", 1);
    // One event line dropped from the middle.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    let dropped = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    for (input, expected) in [
        (&edited, "CRC-32C"),
        (&dropped, "11 event lines, where the trailer says 12"),
    ] {
        for dest in [&target, &empty_dir] {
            let out = varve_stdin(&[&"import", dest], input.as_bytes());
            assert_eq!(out.status.code(), Some(1));
            let err = stderr(&out);
            assert!(err.contains("does not match its trailer"), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(&empty_dir).unwrap().count(), 0);
    }
}

#[test]
fn an_export_around_damaged_records_names_them_in_its_trailer_and_is_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bad) = damaged_store(dir.path());
    let out = varve(&[&"export", &bad, &"--skip-damaged"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let trailer: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(trailer["trailer"]["events"], 5);
    assert_eq!(trailer["trailer"]["head"], 7);
    assert_eq!(
        trailer["trailer"]["skipped"],
        serde_json::json!([
            {"seq": 4, "reason": "payload checksum mismatch"},
            {"seq": 6, "reason": "payload checksum mismatch"},
        ])
    );
    let target = dir.path().join("target");
    let out = varve_stdin(&[&"import", &target], text.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the export left out damaged records at sequences 4, 6"),
        "{err}"
    );
    assert!(!target.exists());
}
