//! A processor killed with SIGKILL while it handles events resumes after its checkpoint: no
//! event is lost, and events are delivered again only within one checkpoint batch.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use varvedb::engine::{EventHandler, Processor, Reader, Writer};
use varvedb::error::Result;
use varvedb::storage::{Storage, StorageConfig};
use varvedb::{Envelope, ExpectedVersion};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct Job {
    pub n: u64,
}

const CHILD_DIR: &str = "VARVE_PROCESSOR_CHILD_DIR";
const EVENTS: u64 = 60_000;
const CHECKPOINT_EVERY: u64 = 50;

fn open(path: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

/// One child's report: the checkpoint it started from and the sequences it handled.
struct Run {
    start: u64,
    handled: Vec<u64>,
}

fn run_child(dir: &std::path::Path, kill_after: Option<Duration>) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "processor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut run = Run {
            start: u64::MAX,
            handled: Vec::new(),
        };
        for line in lines.map_while(std::result::Result::ok) {
            // libtest may print its own text before ours on the same line.
            if let Some(rest) = line.split("START ").nth(1) {
                run.start = rest.trim().parse().unwrap();
                let _ = started_tx.send(());
            } else if let Some(rest) = line.strip_prefix("H ") {
                if let Ok(seq) = rest.trim().parse() {
                    run.handled.push(seq);
                }
            }
        }
        run
    });
    if let Some(after) = kill_after {
        // The clock starts once the child has opened the store and read its checkpoint.
        let _ = started_rx.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(after);
        child.kill().unwrap();
    }
    child.wait().unwrap();
    let run = reader.join().unwrap();
    assert_ne!(run.start, u64::MAX, "the child never started");
    run
}

#[test]
fn a_killed_processor_loses_nothing_and_repeats_at_most_one_batch() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let mut writer = Writer::<Job>::new(storage.clone());
        for chunk in 0..EVENTS / 100 {
            let jobs: Vec<Job> = (0..100)
                .map(|i| Job {
                    n: chunk * 100 + i + 1,
                })
                .collect();
            writer
                .append_batch(chunk % 13, ExpectedVersion::Any, jobs)
                .unwrap();
        }
    }
    let mut deliveries: BTreeMap<u64, u32> = BTreeMap::new();
    let mut previous: Option<Run> = None;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut interrupted = 0;
    for round in 0..25 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run = run_child(dir.path(), Some(Duration::from_millis(5 + seed % 60)));
        check_resume(&previous, &run, round);
        if run.handled.last().is_some_and(|last| *last < EVENTS) {
            interrupted += 1;
        }
        for seq in &run.handled {
            *deliveries.entry(*seq).or_default() += 1;
        }
        previous = Some(run);
    }
    assert!(
        interrupted >= 20,
        "only {interrupted} of 25 children were killed while they still had events to handle"
    );
    // A last child runs to the end and stops by itself.
    let last = run_child(dir.path(), None);
    check_resume(&previous, &last, 25);
    for seq in &last.handled {
        *deliveries.entry(*seq).or_default() += 1;
    }
    assert_eq!(
        deliveries.keys().copied().collect::<Vec<_>>(),
        (1..=EVENTS).collect::<Vec<_>>(),
        "every event was delivered"
    );
    let storage = open(dir.path());
    assert_eq!(
        storage.processors().unwrap(),
        [("jobs".to_string(), EVENTS)]
    );
}

/// A run starts right after the checkpoint it read, in order, and re-handles only what the
/// previous run handled after its last committed checkpoint: at most one batch.
fn check_resume(previous: &Option<Run>, run: &Run, round: usize) {
    let expected: Vec<u64> = (run.start + 1..run.start + 1 + run.handled.len() as u64).collect();
    assert_eq!(
        run.handled, expected,
        "round {round}: in order from the checkpoint"
    );
    if let Some(prev) = previous {
        assert!(
            run.start >= prev.start,
            "round {round}: the checkpoint went back"
        );
        let last_handled = prev.handled.last().copied().unwrap_or(prev.start);
        assert!(
            run.start <= last_handled,
            "round {round}: a handled event was skipped"
        );
        assert!(
            last_handled - run.start <= CHECKPOINT_EVERY,
            "round {round}: {} events delivered again, more than one batch of {CHECKPOINT_EVERY}",
            last_handled - run.start
        );
    }
}

struct Print;
impl EventHandler<Job> for Print {
    fn handle(&mut self, _event: &ArchivedJob) -> Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(&mut self, envelope: &Envelope<'_>, _event: &ArchivedJob) -> Result<()> {
        // Printed before the checkpoint can cover it: a line means "handled".
        println!("H {}", envelope.seq);
        Ok(())
    }
}

/// Child: runs the processor from its checkpoint; stops by itself once it has handled all.
#[test]
fn processor_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let storage = open(std::path::Path::new(&dir));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut processor = Processor::new(
            Reader::<Job>::new(storage.clone()),
            Print,
            "jobs",
            storage.subscribe(),
        )
        .with_checkpoint_every(CHECKPOINT_EVERY);
        println!("START {}", processor.checkpoint().unwrap());
        let stop = processor.stop_handle();
        let task = tokio::spawn(async move { processor.run().await });
        while storage
            .processors()
            .unwrap()
            .first()
            .is_none_or(|(_, seq)| *seq < EVENTS)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.stop();
        task.await.unwrap().unwrap();
    });
}
