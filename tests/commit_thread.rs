//! The store's commit thread sleeps while it has nothing it can do. A processor's checkpoint
//! that cannot be committed (here, because committing it failed and poisoned the store) must
//! not keep the thread busy retrying.
//!
//! The test measures the CPU time of the `varvedb-commit` thread (from `/proc`) over a window in
//! which it has nothing to do: a busy thread uses the whole window, an idle one next to none.
//! It is a test binary of its own, so that no other test's store has a commit thread.
#![cfg(all(feature = "failpoints", target_os = "linux"))]

use std::time::{Duration, Instant};

use varvedb::failpoints::{fail_next_commit, WriteKind};
use varvedb::{Error, EventHandler, Processor, Reader, Storage, StorageConfig, Writer};

struct Count(tokio::sync::mpsc::UnboundedSender<u64>);
impl EventHandler<u64> for Count {
    fn handle(&mut self, event: &rkyv::Archived<u64>) -> varvedb::Result<()> {
        let _ = self.0.send(event.to_native());
        Ok(())
    }
}

/// The CPU time the thread named `name` of this process has used, in clock ticks.
fn thread_ticks(name: &str) -> u64 {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the command name in parentheses: utime and stime are the 12th and
            // 13th of them (14th and 15th of the line).
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after.split(' ').collect();
            let ticks: u64 =
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            assert!(found.is_none(), "more than one thread named {name}");
            found = Some(ticks);
        }
    }
    found.unwrap_or_else(|| panic!("no thread named {name}"))
}

#[test]
fn a_checkpoint_that_cannot_be_committed_does_not_keep_the_commit_thread_busy() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let mut writer = Writer::<u64>::new(storage.clone());
    for n in 1..=10u64 {
        writer.append(1, n, n).unwrap();
    }
    // The processor's checkpoint, posted once it caught up, is committed by the commit thread
    // (no append comes to carry it): that commit fails, and poisons the store.
    fail_next_commit(&storage, WriteKind::Checkpoint);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let mut processor = Processor::new(
        Reader::<u64>::new(storage.clone()),
        Count(tx),
        "counter",
        storage.subscribe(),
    );
    let stop = processor.stop_handle();
    let task = rt.spawn(async move { processor.run().await });
    rt.block_on(async {
        for n in 1..=10 {
            assert_eq!(handled.recv().await, Some(n));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(storage.flush_index(), Err(Error::Poisoned)) {
        assert!(
            Instant::now() < deadline,
            "the checkpoint's commit never failed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing more can be committed. Over half a second, the thread must stay asleep.
    let before = thread_ticks("varvedb-commit");
    let window = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let used = thread_ticks("varvedb-commit") - before;
    let ticks_per_second = 100; // USER_HZ on Linux
    let window_ticks = window.elapsed().as_millis() as u64 * ticks_per_second / 1000;
    assert!(
        used * 10 < window_ticks,
        "the commit thread used {used} of {window_ticks} clock ticks while it had nothing it could do"
    );
    stop.stop();
    // The processor stops; committing its checkpoint is refused, as every write now.
    assert!(matches!(rt.block_on(task).unwrap(), Err(Error::Poisoned)));
}
