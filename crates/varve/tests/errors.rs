//! Errors about store paths and import targets: what they say, what they advise, and what a
//! failed command leaves behind.

mod common;

use common::*;

#[test]
fn importing_into_a_store_that_holds_events_says_to_use_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 2, 2);
    let export = dir.path().join("export.ndjson");
    let out = varve(&[&"export", &path, &"-o", &export]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = varve(&[&"import", &path, &"-i", &export]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is not empty (4 events)"), "{err}");
    assert!(
        err.contains(
            "what to do: give `varve import` a new directory (it is created) or an empty store"
        ),
        "{err}"
    );
    assert!(!err.contains("fix the input"), "{err}");
    // The store is left as it was.
    assert_eq!(open(&path).head(), 4);
}

#[test]
fn a_file_given_as_a_store_is_named_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 1, 2);
    let data = path.join("data.mdb");
    let before = std::fs::read(&data).unwrap();
    for args in [
        vec!["info"],
        vec!["verify"],
        vec!["export"],
        vec!["import"],
        vec!["processors"],
    ] {
        let mut argv: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as _).collect();
        argv.push(&data);
        let out = varve(&argv);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("is a file, not a store directory"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("no such directory"), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "give the directory holding data.mdb: {}",
                path.display()
            )),
            "{args:?}: {err}"
        );
    }
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "not a store").unwrap();
    let out = varve(&[&"backup", &path, &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a file, not a store directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&data).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "not a store");

    // A missing store is not created by shred either.
    let missing = dir.path().join("missing");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varve"))
        .arg("shred")
        .arg(&missing)
        .arg("42")
        .env("VARVE_MASTER_KEY", "3c".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such directory"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
}

#[test]
fn a_failed_import_removes_what_it_created_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    fill(&open(&path), 2, 3);
    let export = stdout(&varve(&[&"export", &path]));
    // Line 4 is refused (a timestamp before the previous event's), after three good ones; the
    // trailer matches, so it is the import that fails, not the input check.
    let mut lines = event_lines(&export);
    let bad = {
        let mut v: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        v["timestamp_ns"] = 1.into();
        v.to_string()
    };
    lines[3] = &bad;
    let input = dir.path().join("bad.ndjson");
    std::fs::write(&input, with_trailer(&lines)).unwrap();

    // A target the import creates, with the directories on the way to it: all removed.
    let created = dir.path().join("new/a/b");
    let out = varve(&[&"import", &created, &"-i", &input]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("line 4: "), "{err}");
    assert!(err.contains("timestamp"), "{err}");
    assert!(err.contains("nothing was left behind"), "{err}");
    assert!(!dir.path().join("new").exists(), "{err}");

    // An empty directory that existed: it stays, empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = varve(&[&"import", &empty, &"-i", &input]);
    assert_eq!(out.status.code(), Some(1));
    assert!(empty.is_dir());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // An empty store that existed: it stays, a store, still empty.
    let existing = dir.path().join("existing");
    drop(open(&existing));
    let out = varve(&[&"import", &existing, &"-i", &input]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !stderr(&out).contains("nothing was left behind"),
        "{}",
        stderr(&out)
    );
    assert!(existing.join("data.mdb").is_file());
    assert_eq!(open(&existing).head(), 0);
}
