//! Backup, verify, export and import of encrypted stores through the binary, with the master
//! key from `VARVE_MASTER_KEY` or `--key-file`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use varvedb::error::Error;
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

const KEY: [u8; 32] = [0x3C; 32];

fn encrypted(path: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        map_size: 4 << 20,
        encryption_enabled: true,
        master_key: Some(KEY),
        ..Default::default()
    })
    .expect("open encrypted store")
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs varve with the master key in `VARVE_MASTER_KEY`.
fn keyed(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varve"));
    for a in args {
        cmd.arg(a);
    }
    cmd.env("VARVE_MASTER_KEY", hex(&KEY))
        .output()
        .expect("run varve")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "varve failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim()).expect("one JSON document")
}

/// The event lines of an export (its trailer left out).
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("trailer").is_none())
        .collect()
}

/// Whether `needle` occurs in any file under `dir`.
fn found_in(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            return found_in(&p, needle);
        }
        let bytes = std::fs::read(&p).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[test]
fn backup_of_an_encrypted_store_copies_its_keystore_and_keeps_later_shredded_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let storage = encrypted(&path);
        fill(&storage, 3, 4);
        storage.shred_stream(2u64).unwrap();
    }
    // Without the key, a clear refusal that says how to give it.
    let out = varve(&[&"backup", &path, &dir.path().join("nokey")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("VARVE_MASTER_KEY"),
        "{}",
        stderr(&out)
    );

    let dest = dir.path().join("copy");
    let v = json(&ok(keyed(&[&"backup", &"--json", &path, &dest])));
    assert_eq!(v["encrypted"], true);
    assert_eq!(
        (v["events"].as_u64(), v["head"].as_u64()),
        (Some(12), Some(12))
    );
    assert_eq!(
        (v["keys"].as_u64(), v["shredded"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(dest.join("keys/data.mdb").is_file());

    // The copy verifies with the key from a file: every record decrypts, shredded ones counted.
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, hex(&KEY)).unwrap();
    let out = varve(&[&"verify", &"--json", &"--key-file", &key_file, &dest]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["decrypted"].as_u64(), Some(8));
    assert_eq!(v["shredded_events"].as_u64(), Some(4));
    assert_eq!(v["shredded_streams"].as_u64(), Some(1));

    // Shredded in the store after the backup: the backup still holds its key.
    ok(keyed(&[&"shred", &path, &"1"]));
    let source = encrypted(&path);
    let copy = encrypted(&dest);
    let (a, b) = (
        Reader::<Noted>::new(source.clone()),
        Reader::<Noted>::new(copy.clone()),
    );
    let (ta, tb) = (source.env.read_txn().unwrap(), copy.env.read_txn().unwrap());
    assert!(matches!(a.get(&ta, 1), Err(Error::Shredded { .. })));
    assert_eq!(b.get(&tb, 1).unwrap().unwrap().n, 1);
    assert!(matches!(b.get(&tb, 2), Err(Error::Shredded { .. })));

    // The help says what a backup means for erasure.
    let help = stdout(&varve(&[&"backup", &"--help"]));
    assert!(help.contains("shredded after the backup"), "{help}");
}

#[test]
fn plain_to_encrypted_to_plain_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fill(&open(&a), 3, 5);
    let a_out = dir.path().join("a.ndjson");
    ok(varve(&[&"export", &a, &"-o", &a_out]));

    // Into an encrypted store: every record sealed, nothing of the payloads in the clear.
    let b = dir.path().join("b");
    let v = json(&ok(keyed(&[&"import", &"--json", &b, &"-i", &a_out])));
    assert_eq!(
        (v["events"].as_u64(), v["encrypted"].as_bool()),
        (Some(15), Some(true))
    );
    assert!(b.join("keys/data.mdb").is_file());
    assert!(found_in(&a, b"label-0007"));
    assert!(
        !found_in(&b, b"label-0007"),
        "plaintext payload in the encrypted store"
    );
    assert!(
        !found_in(&b, b"{\"user\":3}"),
        "plaintext metadata in the encrypted store"
    );
    let v = json(&ok(keyed(&[&"verify", &"--json", &b])));
    assert_eq!(
        (v["ok"].as_bool(), v["decrypted"].as_u64()),
        (Some(true), Some(15))
    );

    // Its export is plaintext, byte for byte the plain store's.
    let b_out = dir.path().join("b.ndjson");
    ok(keyed(&[&"export", &b, &"-o", &b_out]));
    assert_eq!(
        std::fs::read_to_string(&a_out).unwrap(),
        std::fs::read_to_string(&b_out).unwrap()
    );

    // Back into a store without encryption: the same again.
    let c = dir.path().join("c");
    ok(varve(&[&"import", &c, &"-i", &b_out]));
    assert!(!c.join("keys").exists());
    let c_out = dir.path().join("c.ndjson");
    ok(varve(&[&"export", &c, &"-o", &c_out]));
    assert_eq!(
        std::fs::read_to_string(&a_out).unwrap(),
        std::fs::read_to_string(&c_out).unwrap()
    );
    let out = varve(&[&"verify", &c]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // An encrypted target without its key, or a plain store with one: refused, with advice.
    let out = varve(&[&"export", &b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--key-file"), "{}", stderr(&out));
    let out = keyed(&[&"export", &c]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not encrypted"), "{}", stderr(&out));
}

#[test]
fn shredded_events_export_as_markers_and_import_keeps_or_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir.path().join("e");
    {
        let storage = encrypted(&e);
        fill(&storage, 3, 4);
        storage.shred_stream(3u64).unwrap();
    }
    let e_out = dir.path().join("e.ndjson");
    let out = ok(keyed(&[&"export", &e, &"-o", &e_out]));
    assert!(
        stderr(&out).contains("4 events of shredded streams"),
        "{}",
        stderr(&out)
    );
    let exported = lines(&e_out);
    assert_eq!(exported.len(), 12);
    for line in &exported {
        let shredded = line["stream"] == "3";
        assert_eq!(
            line["shredded"].as_bool().unwrap_or(false),
            shredded,
            "{line}"
        );
        assert_eq!(line.get("payload").is_none(), shredded, "{line}");
        if shredded {
            assert!(line["metadata"].is_null());
            assert!(line["payload_len"].as_u64().unwrap() > 0);
        }
    }
    // Sequence 9 is stream 3's third event, with metadata `{"user":9}`: its marker keeps the
    // length of what was lost.
    let marker = exported.iter().find(|l| l["seq"] == 9).unwrap();
    assert_eq!(marker["stream"], "3");
    assert_eq!(marker["metadata_len"].as_u64(), Some(10));
    assert!(exported
        .iter()
        .find(|l| l["seq"] == 1)
        .unwrap()
        .get("metadata_len")
        .is_none());

    // A store without encryption refuses them, with both ways out.
    let p = dir.path().join("p");
    let out = varve(&[&"import", &p, &"-i", &e_out]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("record 3") && err.contains("shredded"),
        "{err}"
    );
    assert!(
        err.contains("--skip-shredded") && err.contains("encrypted store"),
        "{err}"
    );

    // An encrypted store keeps them in place, shredded: its export is the source's exactly.
    let e2 = dir.path().join("e2");
    let v = json(&ok(keyed(&[&"import", &"--json", &e2, &"-i", &e_out])));
    assert_eq!(
        (v["events"].as_u64(), v["shredded_streams"].as_u64()),
        (Some(12), Some(1))
    );
    let e2_out = dir.path().join("e2.ndjson");
    ok(keyed(&[&"export", &e2, &"-o", &e2_out]));
    assert_eq!(
        std::fs::read_to_string(&e_out).unwrap(),
        std::fs::read_to_string(&e2_out).unwrap()
    );
    let v = json(&ok(keyed(&[&"verify", &"--json", &e2])));
    assert_eq!(v["ok"], true);
    assert_eq!(
        (v["shredded_events"].as_u64(), v["decrypted"].as_u64()),
        (Some(4), Some(8))
    );
    {
        let storage = encrypted(&e2);
        assert!(matches!(
            Writer::<Noted>::new(storage.clone()).append(3u64, 5, noted(1)),
            Err(Error::StreamShredded { .. })
        ));
    }

    // --skip-shredded into a plain store: left out, later events renumbered without gaps.
    let p2 = dir.path().join("p2");
    let v = json(&ok(varve(&[
        &"import",
        &"--json",
        &"--skip-shredded",
        &p2,
        &"-i",
        &e_out,
    ])));
    assert_eq!(
        (v["events"].as_u64(), v["skipped_events"].as_u64()),
        (Some(8), Some(4))
    );
    let out = varve(&[&"verify", &p2]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let p2_out = dir.path().join("p2.ndjson");
    ok(varve(&[&"export", &p2, &"-o", &p2_out]));
    let kept: Vec<&serde_json::Value> = exported.iter().filter(|l| l["stream"] != "3").collect();
    let renumbered = lines(&p2_out);
    assert_eq!(renumbered.len(), kept.len());
    let mut new_seq_of: HashMap<u64, u64> = HashMap::new();
    for (i, (old, new)) in kept.iter().zip(&renumbered).enumerate() {
        assert_eq!(new["seq"].as_u64(), Some(i as u64 + 1));
        new_seq_of.insert(old["seq"].as_u64().unwrap(), i as u64 + 1);
        for field in [
            "stream",
            "version",
            "event_id",
            "timestamp_ns",
            "event_type",
            "schema_version",
            "metadata",
            "payload",
            "correlation_id",
            "causation_id",
        ] {
            assert_eq!(old[field], new[field], "{field} of {old}");
        }
        let prev = old["prev_seq"].as_u64().map(|p| new_seq_of[&p]);
        assert_eq!(new["prev_seq"].as_u64(), prev, "{new}");
    }

    // --skip-shredded into an encrypted store: the left-out stream stays burned there.
    let e3 = dir.path().join("e3");
    ok(keyed(&[&"import", &"--skip-shredded", &e3, &"-i", &e_out]));
    let storage = encrypted(&e3);
    assert_eq!(storage.head(), 8);
    assert!(matches!(
        Writer::<Noted>::new(storage.clone()).append(3u64, 1, noted(1)),
        Err(Error::StreamShredded { .. })
    ));
}

#[test]
fn tampered_shredded_markers_and_bad_keys_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fill(&open(&a), 2, 2);
    let a_out = dir.path().join("a.ndjson");
    ok(varve(&[&"export", &a, &"-o", &a_out]));
    let text = std::fs::read_to_string(&a_out).unwrap();
    let first = text.lines().next().unwrap();
    // Edited by hand: no trailer matches, so the imports below pass --allow-truncated.
    let rest: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.contains("trailer"))
        .collect();
    // A marker that carries a payload, and a plain line with payload_len.
    let mut v: serde_json::Value = serde_json::from_str(first).unwrap();
    v["shredded"] = true.into();
    v["payload_len"] = 4.into();
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, format!("{v}\n{}\n", rest.join("\n"))).unwrap();
    let out = keyed(&[
        &"import",
        &dir.path().join("t1"),
        &"-i",
        &bad,
        &"--allow-truncated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    // An absurd length is refused before anything is allocated.
    v.as_object_mut().unwrap().remove("payload");
    v["payload_len"] = u32::MAX.into();
    std::fs::write(&bad, format!("{v}\n")).unwrap();
    let out = keyed(&[
        &"import",
        &dir.path().join("t2"),
        &"-i",
        &bad,
        &"--allow-truncated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exceeds"), "{}", stderr(&out));
    // A key that is not 64 hex characters.
    let out = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args(["import"])
        .arg(dir.path().join("t3"))
        .arg("-i")
        .arg(&a_out)
        .env("VARVE_MASTER_KEY", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("64 hex"), "{}", stderr(&out));
    assert!(!dir.path().join("t3").exists());
}

#[test]
fn read_and_tail_decrypt_with_the_key_and_name_shredded_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let storage = encrypted(&path);
        fill(&storage, 3, 2);
        storage.shred_stream(2u64).unwrap();
    }
    // Stream 3's first event (sequence 3) has metadata `{"user":3}`.
    let out = ok(keyed(&[
        &"read",
        &"--json",
        &"--payload",
        &"hex",
        &path,
        &"3",
    ]));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["encrypted"], true);
    assert_eq!(first["metadata_hex"], hex(b"{\"user\":3}"));
    assert!(
        !first["payload_hex"].as_str().unwrap().is_empty(),
        "{first}"
    );
    assert!(first.get("payload_note").is_none(), "{first}");
    let out = ok(keyed(&[&"tail", &"-n", &"6", &"--payload", &"hex", &path]));
    let text = stdout(&out);
    assert!(text.contains("the stream is shredded"), "{text}");
    assert!(text.contains("metadata: \"{\\\"user\\\":3}\""), "{text}");
}
