//! `varve` on named streams: `streams` lists names and categories, `read` takes a name, `read`
//! and `tail` take `--category` and `--type`, and names survive `export`/`import` and `backup`.

mod common;

use common::{json_lines, noted, open, stdout, varve, Noted, NotedV2};
use varvedb::{Direction, Filter, Reader, StreamName, Writer};

/// order-1: 3 events (two `Noted`, one `Noted.v2`), order-2: 1, invoice-1: 2, stream 7 (by id):
/// 1, in this order of sequences: o1 o1 i1 o2 7 i1 o1(v2).
fn named_store(path: &std::path::Path) {
    let storage = open(path);
    let mut w = Writer::<Noted>::new(storage.clone());
    let mut w2 = Writer::<NotedV2>::new(storage.clone());
    w.append("order-1", 1, noted(1)).unwrap();
    w.append("order-1", 2, noted(2)).unwrap();
    w.append("invoice-1", 1, noted(3)).unwrap();
    w.append("order-2", 1, noted(4)).unwrap();
    w.append(7u64, 1, noted(5)).unwrap();
    w.append("invoice-1", 2, noted(6)).unwrap();
    w2.append("order-1", 3, noted(7).into()).unwrap();
    // Half of the events in the label index, half after it.
    drop((w, w2));
    drop(storage);
    let storage = open(path);
    Writer::<Noted>::new(storage)
        .append("invoice-1", 3, noted(8))
        .unwrap();
}

fn seqs(lines: &[serde_json::Value]) -> Vec<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

#[test]
fn streams_list_names_and_categories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    named_store(&path);
    let listed = json_lines(&[&"streams", &path, &"--json"]);
    let mut names: Vec<(Option<String>, Option<String>)> = listed
        .iter()
        .map(|l| {
            (
                l["name"].as_str().map(str::to_owned),
                l["category"].as_str().map(str::to_owned),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (None, None),
            (Some("invoice-1".into()), Some("invoice".into())),
            (Some("order-1".into()), Some("order".into())),
            (Some("order-2".into()), Some("order".into())),
        ]
    );
    let orders = json_lines(&[&"streams", &path, &"--category", &"order", &"--json"]);
    assert_eq!(orders.len(), 2);
    let text = stdout(&varve(&[&"streams", &path]));
    assert!(text.contains("invoice-1"), "{text}");
    // Not a category: it holds a dash.
    let out = varve(&[&"streams", &path, &"--category", &"order-1"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn read_and_tail_by_name_category_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    named_store(&path);
    // A stream by name; its id is the name's.
    let order_1 = json_lines(&[&"read", &path, &"order-1", &"--json"]);
    assert_eq!(seqs(&order_1), [1, 2, 7]);
    let id = StreamName::new("order-1").unwrap().stream_id().to_string();
    assert!(order_1.iter().all(|l| l["stream"] == id.as_str()));
    let by_id = json_lines(&[&"read", &path, &id, &"--json"]);
    assert_eq!(seqs(&by_id), [1, 2, 7]);
    // With a type.
    let v2 = json_lines(&[
        &"read",
        &path,
        &"order-1",
        &"--type",
        &"Noted.v2",
        &"--json",
    ]);
    assert_eq!(seqs(&v2), [7]);
    // Categories and types in log order, both ways, from a position.
    let orders = json_lines(&[&"read", &path, &"--category", &"order", &"--json"]);
    assert_eq!(seqs(&orders), [1, 2, 4, 7]);
    let both = json_lines(&[
        &"read",
        &path,
        &"--category",
        &"order",
        &"--category",
        &"invoice",
        &"--type",
        &"Noted",
        &"--json",
    ]);
    assert_eq!(seqs(&both), [1, 2, 3, 4, 6, 8]);
    let back = json_lines(&[
        &"read",
        &path,
        &"--category",
        &"invoice",
        &"--backward",
        &"--from",
        &"7",
        &"--json",
    ]);
    assert_eq!(seqs(&back), [6, 3]);
    let typed = json_lines(&[&"read", &path, &"--type", &"Noted.v2", &"--json"]);
    assert_eq!(seqs(&typed), [7]);
    // tail: the last events of a category.
    let tail = json_lines(&[
        &"tail",
        &path,
        &"-n",
        &"2",
        &"--category",
        &"invoice",
        &"--json",
    ]);
    assert_eq!(seqs(&tail), [6, 8]);
    let tail = json_lines(&[&"tail", &path, &"-n", &"3", &"--type", &"Noted", &"--json"]);
    assert_eq!(seqs(&tail), [5, 6, 8]);
}

/// The `Noted` events of `category` read by the library, as (seq, n).
fn category(path: &std::path::Path, category: &str) -> Vec<(u64, u64)> {
    let storage = open(path);
    let reader = Reader::<Noted>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_filtered(
            &txn,
            &Filter::default().category(category),
            1,
            Direction::Forward,
        )
        .unwrap()
        .map(|v| {
            let v = v.unwrap();
            (v.seq(), v.n.to_native())
        })
        .collect()
}

#[test]
fn names_survive_export_import_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    named_store(&path);
    let want = category(&path, "order");
    assert_eq!(want, [(1, 1), (2, 2), (4, 4)]);

    let export = dir.path().join("export.ndjson");
    assert!(varve(&[&"export", &path, &"-o", &export]).status.success());
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.contains("\"stream_name\":\"order-1\""), "{text}");
    let imported = dir.path().join("imported");
    let out = varve(&[&"import", &imported, &"-i", &export]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(category(&imported, "order"), want);
    assert_eq!(category(&imported, "invoice"), category(&path, "invoice"));
    assert!(varve(&[&"verify", &imported]).status.success());

    let backup = dir.path().join("backup");
    assert!(varve(&[&"backup", &path, &backup]).status.success());
    assert_eq!(category(&backup, "order"), want);
    let storage = open(&backup);
    let reader = Reader::<Noted>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        reader
            .stream_name(&txn, "invoice-1")
            .unwrap()
            .map(|n| n.category().to_owned()),
        Some("invoice".to_owned())
    );
}

#[test]
fn an_import_line_whose_name_is_not_its_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    named_store(&path);
    let text = stdout(&varve(&[&"export", &path]));
    let wrong = text.replacen(
        "\"stream_name\":\"order-1\"",
        "\"stream_name\":\"order-9\"",
        1,
    );
    let input = dir.path().join("wrong.ndjson");
    // The trailer's checksum no longer matches the body: recompute it as an editor would not.
    std::fs::write(&input, common::with_trailer(&common::event_lines(&wrong))).unwrap();
    let out = varve(&[&"import", &dir.path().join("target"), &"-i", &input]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("is the name of stream"),
        "{}",
        common::stderr(&out)
    );
}
