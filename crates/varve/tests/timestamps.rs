//! Timestamps as RFC 3339 in human output, and progress counted in events.

mod common;

use common::*;

/// 2026-12-05T10:16:23.123456789Z, in nanoseconds since the Unix epoch.
const AT: u64 = 1_796_465_783_123_456_789;

#[test]
fn timestamps_show_as_rfc3339_and_json_keeps_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 1, 2);
    let export = stdout(&varve(&[&"export", &path]));
    // The events re-timed to known instants: AT, then one nanosecond short of the next second.
    let retimed: Vec<String> = event_lines(&export)
        .iter()
        .zip([AT, AT + 876_543_210])
        .map(|(line, ts)| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["timestamp_ns"] = ts.into();
            v.to_string()
        })
        .collect();
    let lines: Vec<&str> = retimed.iter().map(String::as_str).collect();
    let input = dir.path().join("retimed.ndjson");
    std::fs::write(&input, with_trailer(&lines)).unwrap();
    let copy = dir.path().join("copy");
    let out = varve(&[&"import", &copy, &"-i", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let text = stdout(&varve(&[&"read", &copy, &"1"]));
    assert!(
        text.contains(" at 2026-12-05T10:16:23.123456789Z,"),
        "{text}"
    );
    assert!(
        text.contains(" at 2026-12-05T10:16:23.999999999Z,"),
        "{text}"
    );
    assert!(!text.contains(&AT.to_string()), "{text}");
    let text = stdout(&varve(&[&"tail", &copy, &"-n", &"1"]));
    assert!(
        text.contains(" at 2026-12-05T10:16:23.999999999Z,"),
        "{text}"
    );
    let events = json_lines(&[&"read", &copy, &"1", &"--json"]);
    assert_eq!(events[0]["timestamp_ns"], AT);
    assert_eq!(events[0]["timestamp"], "2026-12-05T10:16:23.123456789Z");
}

#[test]
fn progress_counts_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 3, 4);
    // Standard error is not a terminal here: progress is a few plain lines.
    let file = dir.path().join("export.ndjson");
    let out = varve(&[&"export", &path, &"-o", &file]);
    assert!(
        stderr(&out).contains("export: 12/12 (100%)"),
        "{}",
        stderr(&out)
    );
    let out = varve(&[&"import", &dir.path().join("copy"), &"-i", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("import: 12/12 (100%)"),
        "{}",
        stderr(&out)
    );
    let out = varve(&[&"verify", &path]);
    assert!(
        stderr(&out).contains("log: 12/12 (100%)"),
        "{}",
        stderr(&out)
    );
}
