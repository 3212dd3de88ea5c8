//! A processor killed with SIGKILL while it handles events resumes after its checkpoint: no
//! event is lost, and events are delivered again only within one checkpoint batch.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use varvedb::error::Result;
use varvedb::{Envelope, ExpectedVersion};
use varvedb::{EventHandler, Processor, Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Job {
    pub n: u64,
}

const CHILD_DIR: &str = "VARVE_PROCESSOR_CHILD_DIR";
const EVENTS: u64 = 60_000;
const CHECKPOINT_EVERY: u64 = 50;
/// Children killed mid-stream, one after another.
const ROUNDS: usize = 25;
/// Most events a child handles (as the parent reads them) before it is killed.
const MAX_KILL_AFTER: u64 = 1_000;
// Every killed child leaves events to handle, whatever the timing.
const _: () = assert!(ROUNDS as u64 * (MAX_KILL_AFTER + MAX_OVERRUN) < EVENTS);

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

/// Bytes the pipe of a child's stdout holds: the child prints a line per handled event and
/// blocks once the pipe is full, so it can run at most this many lines ahead of the parent.
const PIPE_BYTES: usize = 4096;
/// The shortest line a child prints for an event ("H 1\n").
const MIN_LINE: usize = 4;
/// How far past the parent's reading a child can have handled events when it is killed.
const MAX_OVERRUN: u64 = (PIPE_BYTES / MIN_LINE) as u64 + 1;

/// Runs a child processor from its checkpoint. With `kill_after: Some(k)`, the parent kills it
/// with SIGKILL as soon as it has read the child's k-th handled event, before it reads any
/// further line: the child cannot handle more than the pipe holds meanwhile, so a child with
/// more than `k + MAX_OVERRUN` events left is killed mid-stream on any machine, however fast.
fn run_child(dir: &std::path::Path, kill_after: Option<u64>) -> Run {
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
    let stdout = child.stdout.take().unwrap();
    shrink_pipe(&stdout);
    let pid = child.id() as libc::pid_t;
    let lines = BufReader::new(stdout).lines();
    let reader = std::thread::spawn(move || {
        let mut run = Run {
            start: u64::MAX,
            handled: Vec::new(),
        };
        for line in lines.map_while(std::result::Result::ok) {
            // libtest may print its own text before ours on the same line.
            if let Some(rest) = line.split("START ").nth(1) {
                run.start = rest.trim().parse().unwrap();
            } else if let Some(rest) = line.strip_prefix("H ") {
                if let Ok(seq) = rest.trim().parse() {
                    run.handled.push(seq);
                    if kill_after == Some(run.handled.len() as u64) {
                        // SAFETY: `kill` only sends a signal; `pid` is our own child, which
                        // has not been waited for (the main thread waits only after this
                        // thread read the pipe to its end), so the pid cannot have been reused.
                        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
                        assert_eq!(killed, 0, "kill failed");
                    }
                }
            }
        }
        run
    });
    let run = reader.join().unwrap();
    child.wait().unwrap();
    assert_ne!(run.start, u64::MAX, "the child never started");
    run
}

/// Sets the pipe of the child's stdout to [`PIPE_BYTES`] (Linux's default is 64 KiB).
fn shrink_pipe(stdout: &std::process::ChildStdout) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take and return integers; the descriptor is open
    // for the duration of the calls (we hold `stdout`).
    let size = unsafe {
        let fd = stdout.as_raw_fd();
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int);
        libc::fcntl(fd, libc::F_GETPIPE_SZ)
    };
    assert_eq!(
        size, PIPE_BYTES as libc::c_int,
        "the child's stdout pipe could not be set to {PIPE_BYTES} bytes"
    );
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
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Each child is killed after handling a random number of events, at most
        // MAX_KILL_AFTER: with every round's overrun, far fewer than the events there are.
        let run = run_child(dir.path(), Some(1 + seed % MAX_KILL_AFTER));
        check_resume(&previous, &run, round);
        let last = run.handled.last().copied().unwrap_or(run.start);
        assert!(
            last < EVENTS,
            "round {round}: the child was killed only after it handled every event"
        );
        for seq in &run.handled {
            *deliveries.entry(*seq).or_default() += 1;
        }
        previous = Some(run);
    }
    // A last child runs to the end and stops by itself.
    let last = run_child(dir.path(), None);
    check_resume(&previous, &last, ROUNDS);
    assert_eq!(
        last.handled.last(),
        Some(&EVENTS),
        "the last child finished"
    );
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
        assert_eq!(processor.run_until_caught_up().await.unwrap(), EVENTS);
    });
}
