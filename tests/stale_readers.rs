//! A process killed while it holds a read transaction leaves its LMDB reader slot behind, and
//! while another process keeps the store open LMDB does not reset its reader table. The next
//! open clears such slots, so they cannot pin old pages and grow the file forever. (When no
//! other process has the store open, LMDB resets the table by itself at open.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use varvedb::Writer;
use varvedb::{Storage, StorageConfig};

const CHILD_DIR: &str = "VARVE_STALE_READER_DIR";

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Ping {
    pub n: u64,
}

fn open(path: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn stale_reader_slots_are_cleared_at_open() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // This process keeps the store open throughout, as a live application would.
    let storage = open(dir.path());
    Writer::<Ping>::new(storage.clone())
        .append(1, 1, Ping { n: 1 })
        .unwrap();
    assert_eq!(storage.stats().stale_readers_cleared, 0);
    // Each reader child clears what the one before it left, then is killed holding its own
    // read transaction; the last process clears the last slot.
    for (round, expected) in [0, 1].into_iter().enumerate() {
        let (mut child, mut lines) = spawn(dir.path(), "reader_child");
        let said = lines
            .find_map(|l| {
                let l = l.ok()?;
                l.split_once("CLEARED ").map(|(_, n)| n.to_string())
            })
            .expect("the reader child reports what it cleared");
        assert_eq!(said, format!("{expected} READING"), "reader {round}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let (mut child, lines) = spawn(dir.path(), "opener_child");
    let report: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{report:?}");
    assert!(
        report.iter().any(|l| l.ends_with("CLEARED 1")),
        "expected the last dead reader's slot to be cleared: {report:?}"
    );
    assert_eq!(storage.head(), 1);
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

fn spawn(dir: &std::path::Path, test: &str) -> (std::process::Child, Lines) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Child: opens the store and prints how many stale reader slots it cleared.
#[test]
fn opener_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let storage = open(std::path::Path::new(&dir));
    println!("CLEARED {}", storage.stats().stale_readers_cleared);
}

/// Child: opens a read transaction, says so, and waits to be killed.
#[test]
fn reader_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let storage = open(std::path::Path::new(&dir));
    let cleared = storage.stats().stale_readers_cleared;
    let _txn = storage.env.read_txn().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "CLEARED {cleared} READING").unwrap();
    out.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}
