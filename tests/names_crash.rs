//! Crash test of stream names: child processes create named streams and append to them, and are
//! killed with SIGKILL once they have acknowledged a random number of batches. After each kill
//! the store is reopened and checked: every acknowledged batch is there, every stream with
//! events has its name (a name is written in the transaction of its stream's first event, so no
//! crash can leave an event without it), no name is recorded for a stream without events, the
//! category reads equal the log filtered by the names, and `verify` is clean.
//!
//! The test re-executes its own binary as the child (`names_crash_child`, which does nothing
//! unless `VARVE_NAMES_CRASH_DIR` is set). `VARVE_NAMES_CRASH_KILLS` (default 12) changes the
//! number of kills.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use varvedb::{
    Direction, ExpectedVersion, Filter, Reader, Storage, StorageConfig, StreamName, Writer,
};

const ENV_DIR: &str = "VARVE_NAMES_CRASH_DIR";
const ENV_FIRST: &str = "VARVE_NAMES_CRASH_FIRST";
const MARK: &str = "@@ ";
const CATEGORIES: [&str; 3] = ["order", "invoice", "account:command"];

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Made {
    pub k: u64,
    pub i: u32,
}

fn config(path: &Path) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        // Flushes of the stream and label indexes land before, during and after kills.
        index_interval: 16,
        ..Default::default()
    }
}

/// The name of the `k`-th stream a child creates.
fn name(k: u64) -> String {
    format!("{}-{k}", CATEGORIES[(k % 3) as usize])
}

/// The child: from stream `first` on, creates stream `k` with a batch of 1 to 3 events, and
/// appends one more event to stream `k - 1`, printing each acknowledged batch, until killed.
#[test]
fn names_crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let first: u64 = std::env::var(ENV_FIRST).unwrap().parse().unwrap();
    let storage = Storage::open(config(Path::new(&dir))).unwrap();
    let mut writer = Writer::<Made>::new(storage);
    for k in first.. {
        let n = (k % 3 + 1) as u32;
        let events = (0..n).map(|i| Made { k, i });
        writer
            .append_batch(name(k), ExpectedVersion::NoStream, events)
            .unwrap();
        println!("{MARK}create {k} {n}");
        if k > first {
            let appended = writer
                .append_batch(
                    name(k - 1),
                    ExpectedVersion::Any,
                    [Made { k: k - 1, i: 99 }],
                )
                .unwrap();
            println!("{MARK}append {} {}", k - 1, appended.first().version);
        }
    }
}

/// Runs one child from stream `first` and kills it after `acks` acknowledged batches; returns
/// the acknowledged lines.
fn run_child(dir: &Path, first: u64, acks: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "names_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_FIRST, first.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (rx, reader) = common::marked_lines(stdout, MARK);
    let mut acked = Vec::new();
    while acked.len() < acks {
        // Generous: a slow machine acknowledges slowly, but it does acknowledge.
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => acked.push(line),
            Err(e) => panic!(
                "the child stopped acknowledging after {} batches: {e}",
                acked.len()
            ),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What it acknowledged before the kill landed counts too.
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    acked
}

#[test]
fn a_killed_writer_never_leaves_an_event_without_its_name() {
    let kills: u64 = common::env_u64("VARVE_NAMES_CRASH_KILLS", 12);
    let dir = tempfile::tempdir().unwrap();
    // Acknowledged events per stream name: the store must hold at least these.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut first = 0u64;
    for kill in 0..kills {
        let acks = 1 + (kill * 7 % 23) as usize;
        for line in run_child(dir.path(), first, acks) {
            let parts: Vec<&str> = line.split(' ').collect();
            let k: u64 = parts[1].parse().unwrap();
            let count: u64 = parts[2].parse().unwrap();
            let entry = acked.entry(name(k)).or_default();
            *entry = (*entry).max(count);
        }
        let storage = Storage::open(config(dir.path())).unwrap();
        first = check(&storage, &acked);
        eprintln!(
            "kill {kill}: next stream {first}, {} streams acknowledged",
            acked.len()
        );
        drop(storage);
    }
}

/// Checks the store against what was acknowledged; returns the next stream number to create.
fn check(storage: &Storage, acked: &BTreeMap<String, u64>) -> u64 {
    let reader = Reader::<Made>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    // Every stream has events and a name; the names are the children's.
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_category: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for info in reader.streams(&txn).unwrap() {
        let info = info.unwrap();
        let name = reader
            .stream_name(&txn, info.stream)
            .unwrap()
            .unwrap_or_else(|| panic!("stream {} has events and no name", info.stream));
        assert_eq!(name.stream_id(), info.stream);
        found.insert(name.as_str().to_owned(), info.version);
    }
    for (name, &count) in acked {
        let stored = found.get(name).copied().unwrap_or(0);
        assert!(
            stored >= count,
            "{name}: {count} acknowledged, {stored} stored"
        );
    }
    // The category reads are the log filtered by the streams' names.
    for view in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        let view = view.unwrap();
        let name = reader.stream_name(&txn, view.stream()).unwrap().unwrap();
        by_category
            .entry(name.category().to_owned())
            .or_default()
            .push(view.seq());
    }
    for category in CATEGORIES {
        let got: Vec<u64> = reader
            .read_filtered(
                &txn,
                &Filter::default().category(category),
                1,
                Direction::Forward,
            )
            .unwrap()
            .map(|v| v.unwrap().seq())
            .collect();
        assert_eq!(
            got,
            by_category.get(category).cloned().unwrap_or_default(),
            "{category}"
        );
    }
    drop(txn);
    let report = varvedb::admin::verify(storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.named_streams, found.len() as u64);
    // The next child creates streams no child created yet.
    found
        .keys()
        .map(|n| {
            let name = StreamName::new(n).unwrap();
            name.id().unwrap().parse::<u64>().unwrap() + 1
        })
        .max()
        .unwrap_or(0)
}
