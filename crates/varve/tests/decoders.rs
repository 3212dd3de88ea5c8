//! The JSON hook: an application's own `varve` with a decoder for its event type, run in
//! process through `varve::run_from`.

mod common;

use common::*;
use varve::Decoders;

fn run(decoders: &Decoders, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (u8, String) {
    let mut argv: Vec<std::ffi::OsString> = vec!["my-varve".into()];
    argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
    let mut out = Vec::new();
    let code = varve::run_from(argv, decoders, &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn registered_decoders_show_payloads_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 1, 5);
    let mut decoders = Decoders::new();
    decoders.register_archived::<Noted, _>("Noted", |e| {
        Ok(format!(
            "{{\"n\":{},\"label\":{:?},\"blob_len\":{}}}",
            e.n,
            e.label.as_str(),
            e.blob.len()
        ))
    });
    let (code, text) = run(&decoders, &[&"read", &path, &"1", &"--json"]);
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 5);
    assert_eq!(
        events[0]["payload"],
        serde_json::json!({"n": 1, "label": "label-0001", "blob_len": 1})
    );
    // Sequence 5 is stored as "Noted.v2", which has no decoder: auto mode shows no payload,
    // json mode shows hex and says why.
    assert!(events[4].get("payload").is_none());
    let (_, text) = run(
        &decoders,
        &[
            &"read",
            &path,
            &"1",
            &"--from",
            &"5",
            &"--payload",
            &"json",
            &"--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["payload_note"], "no decoder registered for \"Noted.v2\"");
    assert!(v["payload_hex"].as_str().unwrap().len() > 10);
    // Text output shows the JSON too.
    let (_, text) = run(&decoders, &[&"tail", &path, &"-n", &"1"]);
    assert!(text.starts_with("#5 stream 1 v5 Noted.v2"), "{text}");
    let (_, text) = run(&decoders, &[&"read", &path, &"1", &"--limit", &"1"]);
    assert!(
        text.contains("payload: {\"blob_len\":1,\"label\":\"label-0001\",\"n\":1}"),
        "{text}"
    );
    // A decoder that produces something that is not JSON is reported, not trusted.
    let mut broken = Decoders::new();
    broken.register_archived::<Noted, _>("Noted", |_| Ok("not json".into()));
    let (code, text) = run(
        &broken,
        &[&"read", &path, &"1", &"--limit", &"1", &"--json"],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(v["payload_note"].as_str().unwrap().contains("invalid JSON"));
}

/// Runs the tool in process; returns the exit status, the output and the error report.
fn run_err(decoders: &Decoders, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (u8, String, String) {
    let mut argv: Vec<std::ffi::OsString> = vec!["my-varve".into()];
    argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = varve::run_with(argv, decoders, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn noted_decoders() -> Decoders {
    let mut decoders = Decoders::new();
    decoders.register_archived::<Noted, _>("Noted", |e| Ok(format!("{{\"n\":{}}}", e.n)));
    decoders
}

#[test]
fn import_and_verify_validate_payloads_with_the_registered_decoders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Sequences 1..=6: "Noted", except sequence 5, "Noted.v2".
    fill(&open(&path), 2, 3);
    let export = stdout(&varve(&[&"export", &path]));
    let good = dir.path().join("good.ndjson");
    std::fs::write(&good, &export).unwrap();
    // Sequence 2's payload replaced by three zero bytes (`AAAA`), the trailer made to match.
    let mut lines = event_lines(&export);
    let garbage = {
        let mut v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        v["payload"] = "AAAA".into();
        v.to_string()
    };
    lines[1] = &garbage;
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, with_trailer(&lines)).unwrap();
    let decoders = noted_decoders();

    // The application's own varve refuses it, and leaves nothing behind.
    let target = dir.path().join("refused");
    let (code, _, err) = run_err(&decoders, &[&"import", &target, &"-i", &bad]);
    assert_eq!(code, 1);
    assert!(
        err.contains("record 2: line 2: the payload is not a valid Noted: not a valid archive"),
        "{err}"
    );
    assert!(
        err.contains("the application could not read this event"),
        "{err}"
    );
    assert!(!target.exists());
    // It imports the intact export, validating every payload it has a decoder for.
    let (code, out, err) = run_err(
        &decoders,
        &[&"import", &dir.path().join("good"), &"-i", &good, &"--json"],
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["payloads_validated"], 5);
    assert_eq!(
        summary["payloads_not_validated"],
        serde_json::json!({"Noted.v2": 1})
    );

    // The plain varve cannot tell, and says which payloads it did not validate.
    let plain = dir.path().join("plain");
    let out = varve(&[&"import", &plain, &"-i", &bad]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let not_validated = "payloads of 2 event types were not validated: no decoder registered for Noted (5 events), Noted.v2 (1 event)";
    assert!(stdout(&out).contains(not_validated), "{}", stdout(&out));
    let out = varve(&[&"verify", &plain]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(not_validated), "{}", stdout(&out));
    let report = &json_lines(&[&"verify", &plain, &"--json"])[0];
    assert_eq!(report["payloads_validated"], 0);
    assert_eq!(
        report["payloads_not_validated"],
        serde_json::json!({"Noted": 5, "Noted.v2": 1})
    );

    // The application's varve finds it in the store, where the application's reads fail.
    let (code, out, _) = run_err(&decoders, &[&"verify", &plain, &"--json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "payload");
    assert_eq!(problems[0]["seq"], 2);
    assert_eq!(report["payloads_validated"], 5);
    assert_eq!(
        report["payloads_not_validated"],
        serde_json::json!({"Noted.v2": 1})
    );
    let (_, text, _) = run_err(&decoders, &[&"verify", &plain]);
    assert!(
        text.contains("payload at sequence 2 (stream 2): the decoder registered for \"Noted\" refuses the payload"),
        "{text}"
    );
    assert!(
        text.contains("payloads of 1 event type were not validated: no decoder registered for Noted.v2 (1 event)"),
        "{text}"
    );
    let storage = open(&plain);
    let reader = varvedb::Reader::<Noted>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 2),
        Err(varvedb::error::Error::InvalidPayload { seq: 2, .. })
    ));
}
