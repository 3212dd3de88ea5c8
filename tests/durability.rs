//! Durability modes: `Relaxed` commits without fsync, yet a killed process loses nothing that
//! was acknowledged, and the store syncs on demand, on its interval and at close.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use varvedb::error::Error;
use varvedb::Direction;
use varvedb::{Durability, Storage, StorageConfig};
use varvedb::{Reader, Writer};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Note {
    pub n: u64,
}

const CHILD_DIR: &str = "VARVE_DURABILITY_CHILD_DIR";

fn relaxed(path: &std::path::Path, sync_interval: Option<Duration>) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        durability: Durability::Relaxed { sync_interval },
        ..Default::default()
    }
}

#[test]
fn relaxed_appends_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(relaxed(dir.path(), Some(Duration::from_millis(10)))).unwrap();
        let mut writer = Writer::<Note>::new(storage.clone());
        for n in 1..=100 {
            writer.append(1, n, Note { n }).unwrap();
        }
        storage.sync().unwrap();
        let reader = Reader::<Note>::new(storage.clone());
        let txn = storage.env.read_txn().unwrap();
        assert_eq!(reader.stream_version(&txn, 1).unwrap(), 100);
        // Let the interval sync run at least once.
        std::thread::sleep(Duration::from_millis(30));
    }
    let storage = Storage::open(relaxed(dir.path(), None)).unwrap();
    assert_eq!(storage.head(), 100);
}

#[test]
fn the_same_path_cannot_be_opened_with_another_durability() {
    let dir = tempfile::tempdir().unwrap();
    let _immediate = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        Storage::open(relaxed(dir.path(), None)),
        Err(Error::AlreadyOpen { .. })
    ));
}

#[test]
fn a_zero_sync_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Storage::open(relaxed(dir.path(), Some(Duration::ZERO))),
        Err(Error::InvalidConfig { .. })
    ));
}

/// Kills a child that appends in relaxed mode (no fsync at all) with SIGKILL, several times,
/// and checks every acknowledged append is there after each.
#[test]
fn a_killed_process_loses_nothing_acknowledged_in_relaxed_mode() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 0u64;
    for round in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "relaxed_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let kill_after = Duration::from_millis(50 + 40 * round);
        while started.elapsed() < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(n) = line.strip_prefix("ACK ") {
                        acked = acked.max(n.parse().unwrap());
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap();
        // Acknowledgements already printed before the kill count too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = acked.max(n.parse().unwrap());
            }
        }
        child.wait().unwrap();
        assert!(acked > 0, "round {round}: the child acknowledged nothing");
        let storage = Storage::open(relaxed(dir.path(), None)).unwrap();
        assert!(
            storage.head() >= acked,
            "round {round}: head {} but {acked} acknowledged",
            storage.head()
        );
        let reader = Reader::<Note>::new(storage.clone());
        let txn = storage.env.read_txn().unwrap();
        let ns: Vec<u64> = reader
            .read_stream(&txn, 1, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().n.to_native())
            .collect();
        assert_eq!(ns, (1..=storage.head()).collect::<Vec<_>>());
    }
}

/// The child of the test above: appends to stream 1 without syncing, printing each
/// acknowledged version. Does nothing in a normal run.
#[test]
fn relaxed_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let storage = Storage::open(relaxed(std::path::Path::new(&dir), None)).unwrap();
    let mut writer = Writer::<Note>::new(storage.clone());
    let mut version = storage.stream_version(1).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        version += 1;
        writer.append(1, version, Note { n: version }).unwrap();
        writeln!(out, "ACK {version}").unwrap();
        out.flush().unwrap();
    }
}

/// Dropping every handle and reopening at once works even while the store's own threads (the
/// syncer, the commit thread) are still finishing with it.
#[test]
fn reopening_right_after_dropping_never_fails() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=200u64 {
        let interval = Duration::from_micros(100 + round % 3);
        let storage = Storage::open(relaxed(dir.path(), Some(interval))).unwrap();
        let mut writer = Writer::<Note>::new(storage.clone());
        writer.append(1, round, Note { n: round }).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(writer.append_batch_async(2, varvedb::ExpectedVersion::Any, [Note { n: 0 }]))
            .unwrap();
    }
    let storage = Storage::open(relaxed(dir.path(), None)).unwrap();
    assert_eq!(storage.stream_version(1).unwrap(), 200);
}
