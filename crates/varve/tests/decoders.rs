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
