//! Consumer groups: four members, each a processor in a child process of its own with its own
//! checkpoint, while eight writer threads append to 1,000 named streams. Members are killed with
//! SIGKILL once they have handled some events, and restarted. At the end, together they have
//! handled every event at least once, each stream on one member only, and each member saw each
//! stream's events in version order within each of its runs.
//!
//! The test re-executes its own binary as the member (`group_member_child`, which does nothing
//! unless `VARVE_GROUP_DIR` is set). Processors are woken by the appends of their own process,
//! so a member in another process looks for new events on its own, every few milliseconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use varvedb::{
    Envelope, EventHandler, ExpectedVersion, Filter, Processor, Reader, Storage, StorageConfig,
    StreamName, Writer,
};

const ENV_DIR: &str = "VARVE_GROUP_DIR";
const ENV_MEMBER: &str = "VARVE_GROUP_MEMBER";
const ENV_TOTAL: &str = "VARVE_GROUP_TOTAL";
const MARK: &str = "@@ ";
const MEMBERS: u32 = 4;
const WRITERS: u64 = 8;
const STREAMS: u64 = 1_000;
/// Events each writer appends (in batches of 1 to 3).
const PER_WRITER: u64 = 600;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Deposited {
    pub cents: u64,
}

fn open(path: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        index_interval: 500,
        ..Default::default()
    })
    .unwrap()
}

/// Prints each event it handles: sequence, stream, version.
struct Print(std::io::Stdout);

impl EventHandler<Deposited> for Print {
    fn handle(&mut self, _: &ArchivedDeposited) -> varvedb::Result<()> {
        Ok(())
    }

    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        _: &ArchivedDeposited,
    ) -> varvedb::Result<()> {
        let mut out = self.0.lock();
        writeln!(
            out,
            "{MARK}{} {} {}",
            envelope.seq, envelope.stream, envelope.version
        )
        .and_then(|()| out.flush())
        .map_err(varvedb::Error::Io)
    }
}

/// The member: handles its share of the `account` category until its checkpoint reaches the
/// total the test will write, looking for new events every few milliseconds.
#[test]
fn group_member_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let member: u32 = std::env::var(ENV_MEMBER).unwrap().parse().unwrap();
    let total: u64 = std::env::var(ENV_TOTAL).unwrap().parse().unwrap();
    let storage = open(Path::new(&dir));
    let filter = Filter::default().category("account").group(member, MEMBERS);
    let mut processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Print(std::io::stdout()),
        format!("accounts-{member}-of-{MEMBERS}"),
        storage.subscribe(),
    )
    .with_filter(filter)
    .with_checkpoint_every(7);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        loop {
            let at = processor.run_until_caught_up().await.unwrap();
            if at >= total {
                break;
            }
            // Another process appends: nothing wakes this one.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    println!("{MARK}done");
}

/// A running member and the lines it printed, read on a thread.
struct Member {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(dir: &Path, member: u32, total: u64) -> Member {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "group_member_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_MEMBER, member.to_string())
        .env(ENV_TOTAL, total.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, reader) = common::marked_lines(stdout, MARK);
    Member {
        child,
        lines,
        reader,
    }
}

/// What the members handled: per member, per run, (seq, stream, version) in order.
type Runs = BTreeMap<u32, Vec<Vec<(u64, String, u64)>>>;

fn parse(line: &str) -> Option<(u64, String, u64)> {
    let mut parts = line.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let stream = parts.next()?.to_owned();
    let version = parts.next()?.parse().ok()?;
    Some((seq, stream, version))
}

/// Collects a member's lines until it has handled `at_least` events of this run (or is done),
/// then kills it when `kill`, else waits for it to finish; returns the run's events.
fn run(mut m: Member, at_least: usize, kill: bool) -> Vec<(u64, String, u64)> {
    let mut got = Vec::new();
    let mut done = false;
    while got.len() < at_least && !done {
        // Generous: a slow machine is slow, but it does go on.
        match m.lines.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line == "done" => done = true,
            Ok(line) => got.push(parse(&line).expect("a handled event")),
            Err(e) => panic!("a member stopped after {} events: {e}", got.len()),
        }
    }
    if kill && !done {
        m.child.kill().unwrap();
        m.child.wait().unwrap();
    } else {
        let status = m.child.wait().unwrap();
        assert!(status.success(), "a member failed: {status}");
    }
    m.reader.join().unwrap();
    for line in m.lines.try_iter() {
        if line != "done" {
            got.push(parse(&line).expect("a handled event"));
        }
    }
    got
}

#[test]
fn four_members_handle_every_event_once_per_stream_and_survive_kills() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    // Events of another category, which no member handles.
    Writer::<Deposited>::new(storage.clone())
        .append("audit-1", 1, Deposited { cents: 0 })
        .unwrap();
    let total_account = WRITERS * PER_WRITER;
    let total = total_account + 1;
    // Members start before the writers, and are killed while they write.
    let members: Vec<Member> = (0..MEMBERS).map(|k| spawn(dir.path(), k, total)).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut writer = Writer::<Deposited>::new(storage.clone());
            std::thread::spawn(move || {
                let mut written = 0;
                let mut i = w;
                while written < PER_WRITER {
                    let n = (1 + i % 3).min(PER_WRITER - written);
                    let stream = format!("account-{}", (i * 7919) % STREAMS);
                    let batch = (0..n).map(|j| Deposited { cents: i * 10 + j });
                    writer
                        .append_batch(stream, ExpectedVersion::Any, batch)
                        .unwrap();
                    written += n;
                    i += WRITERS;
                }
            })
        })
        .collect();
    let mut runs: Runs = BTreeMap::new();
    for (k, m) in members.into_iter().enumerate() {
        runs.entry(k as u32)
            .or_default()
            .push(run(m, 20 + 15 * k, true));
    }
    for w in writers {
        w.join().unwrap();
    }
    // Each member is killed once more on the way, then runs to the end.
    for k in 0..MEMBERS {
        let first = run(spawn(dir.path(), k, total), 10, true);
        runs.entry(k).or_default().push(first);
        let last = run(spawn(dir.path(), k, total), usize::MAX, false);
        runs.entry(k).or_default().push(last);
    }

    // Every account event handled at least once; nothing of another category.
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let accounts: BTreeSet<u64> = reader
        .read_category(&txn, "account", 1, varvedb::Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().seq())
        .collect();
    assert_eq!(accounts.len() as u64, total_account);
    let handled: BTreeSet<u64> = runs
        .values()
        .flatten()
        .flatten()
        .map(|(seq, _, _)| *seq)
        .collect();
    let missing: Vec<u64> = accounts.difference(&handled).copied().collect();
    let extra: Vec<u64> = handled.difference(&accounts).copied().collect();
    let firsts: Vec<(u32, Vec<Option<u64>>)> = runs
        .iter()
        .map(|(k, r)| (*k, r.iter().map(|e| e.first().map(|x| x.0)).collect()))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not handled: {missing:?}; handled though not account events: {extra:?}; first sequence of each run: {firsts:?}"
    );
    // Each stream on one member, the member its cardinal id names.
    let mut owner: BTreeMap<&str, u32> = BTreeMap::new();
    for (member, member_runs) in &runs {
        for (_, stream, _) in member_runs.iter().flatten() {
            if let Some(other) = owner.insert(stream, *member) {
                assert_eq!(other, *member, "stream {stream} on two members");
            }
        }
    }
    for (stream, member) in &owner {
        let id = varvedb::StreamId(
            stream
                .parse::<varvedb::Uuid>()
                .map_or_else(|_| stream.parse::<u128>().unwrap(), |u| u.as_u128()),
        );
        let name = reader.stream_name(&txn, id).unwrap().unwrap();
        assert_eq!(name.group_member(MEMBERS), *member, "{name}");
        assert_eq!(StreamName::new(name.as_str()).unwrap().stream_id(), id);
    }
    let used: BTreeSet<u32> = owner.values().copied().collect();
    assert_eq!(used.len() as u32, MEMBERS, "every member has streams");
    // Within each run, each stream's versions increase.
    for member_runs in runs.values() {
        for events in member_runs {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            for (_, stream, version) in events {
                if let Some(before) = last.insert(stream, *version) {
                    assert!(*version > before, "{stream}: v{version} after v{before}");
                }
            }
        }
    }
}
