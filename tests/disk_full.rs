//! A real disk that runs out of space: appends fill a small tmpfs until LMDB's write fails
//! with `ENOSPC`. The store must report that failure, then refuse every write with
//! `Error::Poisoned`, show exactly the acknowledged events, and after space is freed and the
//! store reopened, hold all of them and take writes again.
//!
//! The tmpfs is mounted by a child process of this test in a mount namespace of its own
//! (`unshare --user --map-root-user --mount`, from util-linux), so nothing outside the child
//! sees it and it disappears with the child. The test fails, never skips, where that is not
//! possible.

use std::path::Path;
use std::process::Command;

use varvedb::{Direction, Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Blob {
    pub n: u64,
    pub bytes: Vec<u8>,
}

const CHILD_DIR: &str = "VARVE_DISK_FULL_CHILD_DIR";
/// Size of the tmpfs: a few hundred events fill it.
const FS_SIZE: &str = "6m";
/// Bytes kept free for the reopen, in a file deleted once the disk is full.
const RESERVE: usize = 2 << 20;

#[test]
fn a_full_disk_poisons_the_store_and_a_reopen_recovers_every_acknowledged_event() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "disk_full_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .output()
        .expect("run unshare (util-linux) to give the child a mount namespace of its own");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("DISK FULL CHECKED"),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

fn open(path: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap()
}

/// The events of the log, by sequence.
fn events(storage: &Storage) -> Vec<u64> {
    let reader = Reader::<Blob>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().n.to_native())
        .collect()
}

/// Child: mounts the tmpfs, fills it with appends, and checks the store at each step.
#[test]
fn disk_full_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mnt = Path::new(&dir).join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={FS_SIZE}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mount -t tmpfs failed in the child's namespace"
    );
    let reserve = mnt.join("reserve");
    std::fs::write(&reserve, vec![1u8; RESERVE]).unwrap();
    let path = mnt.join("store");

    let storage = open(&path);
    let mut writer = Writer::<Blob>::new(storage.clone());
    let mut acked = Vec::new();
    let failure = loop {
        let n = acked.len() as u64 + 1;
        let event = Blob {
            n,
            bytes: vec![n as u8; 6000],
        };
        match writer.append_batch(n % 5, ExpectedVersion::Any, [event]) {
            Ok(_) => acked.push(n),
            Err(e) => break e,
        }
        assert!(acked.len() < 100_000, "the tmpfs never filled");
    };
    println!("first failure after {} events: {failure}", acked.len());
    // LMDB reports the failed write of its pages as ENOSPC, or as EIO when the write was
    // short; heed hands either over as an OS error.
    assert!(
        matches!(
            &failure,
            Error::Lmdb(varvedb::heed::Error::Io(io)) if matches!(io.raw_os_error(), Some(5 | 28))
        ),
        "a full disk must be reported as LMDB's ENOSPC or EIO, got {failure:?}"
    );
    assert!(
        acked.len() > 10,
        "the disk filled after only {} events",
        acked.len()
    );
    // Poisoned: every later write is refused, even one that would fit.
    assert!(matches!(
        writer.append_batch(
            1,
            ExpectedVersion::Any,
            [Blob {
                n: 0,
                bytes: vec![]
            }]
        ),
        Err(Error::Poisoned)
    ));
    assert!(matches!(storage.flush_index(), Err(Error::Poisoned)));
    assert_eq!(
        events(&storage),
        acked,
        "reads show exactly what was acknowledged"
    );
    drop(writer);
    drop(storage);

    // Space again, and a reopen: everything acknowledged, nothing else, and writes work.
    std::fs::remove_file(&reserve).unwrap();
    let storage = open(&path);
    assert_eq!(events(&storage), acked);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "verify after reopen: {:?}", report.problems);
    let mut writer = Writer::<Blob>::new(storage.clone());
    let n = acked.len() as u64 + 1;
    writer
        .append_batch(n % 5, ExpectedVersion::Any, [Blob { n, bytes: vec![] }])
        .unwrap();
    acked.push(n);
    assert_eq!(events(&storage), acked);
    println!("DISK FULL CHECKED: {} events acknowledged", acked.len() - 1);
}
