//! Crash test: child processes append from several threads and are killed with SIGKILL at random
//! moments; after each kill the store is reopened and checked.
//!
//! The test re-executes its own binary as the child (`crash_child`, which does nothing unless
//! `VARVE_CRASH_DIR` is set). The child prints one line per acknowledged append; the parent checks
//! that every acknowledged append survived at the acknowledged positions, that sequences and
//! versions have no gaps, that no batch is partially stored (acknowledged or not), and that every
//! record reads back intact. Each child continues on the store the previous one left, first
//! retrying (idempotently, with the same event ids) the batches that were in flight when its
//! predecessor died. Children open the store with a 256 KiB map, so the map grows under them.
//!
//! Environment: `VARVE_CRASH_ITERATIONS` (default 32) and `VARVE_CRASH_SEED` change the run.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion, NewEvent, Position, StreamId, StreamInfo, Uuid};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

use powercut::{CutReport, Keep, PowerCut};

const ENV_DIR: &str = "VARVE_CRASH_DIR";
const ENV_ITER: &str = "VARVE_CRASH_ITER";
const ENV_RETRY: &str = "VARVE_CRASH_RETRY";
const ENV_SEED: &str = "VARVE_CRASH_SEED";

/// Marks the child's protocol lines (the test harness prints its own lines on the same stdout).
const MARK: &str = "@@ ";

const THREADS: u64 = 4;
/// Streams every thread appends to.
const CONTENDED: [u64; 2] = [1, 2];
/// Streams per thread that only that thread appends to.
const OWN_STREAMS: u64 = 3;
/// A small initial map (LMDB raises it to the data size at open), so that children grow it.
const MAP_SIZE: usize = 256 << 10;

/// The event: where it belongs (batch, index, batch size, stream) and filler derived from it.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
pub struct CrashEv {
    pub batch: u64,
    pub idx: u32,
    pub of: u32,
    pub stream: u64,
    pub pad: Vec<u8>,
}

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn pad(batch: u64, idx: u32) -> Vec<u8> {
    let mut rng = Rng(batch.rotate_left(17) ^ u64::from(idx).wrapping_mul(0x1234_5678_9ABC_DEF1));
    // Mostly small events, some large ones that take LMDB overflow pages.
    let len = if rng.below(10) == 0 {
        4000 + rng.below(8000)
    } else {
        rng.below(1500)
    } as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_event(batch: u64, idx: u32, of: u32, stream: u64) -> CrashEv {
    CrashEv {
        batch,
        idx,
        of,
        stream,
        pad: pad(batch, idx),
    }
}

/// The id of event `idx` of a batch appended with known ids.
fn event_id(batch: u64, idx: u32) -> Uuid {
    Uuid::from_u128((0xC4A5_u128 << 112) | (u128::from(batch) << 32) | u128::from(idx))
}

fn batch_events(batch: u64, n: u32, stream: u64) -> Vec<NewEvent<CrashEv>> {
    (0..n)
        .map(|i| NewEvent::new(make_event(batch, i, n, stream)).with_id(event_id(batch, i)))
        .collect()
}

fn config(path: &Path) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        map_size: MAP_SIZE,
        // The stream index is written behind the log every 64 events: kills land before, during
        // and after index flushes, and every reopen reads an unindexed tail back.
        index_interval: 64,
        ..Default::default()
    }
}

fn positions_text(positions: &[Position]) -> String {
    positions
        .iter()
        .map(|p| format!("{}:{}", p.seq, p.version))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_positions(text: &str) -> Vec<Position> {
    text.split(',')
        .map(|p| {
            let (seq, version) = p.split_once(':').expect("seq:version");
            Position {
                seq: seq.parse().expect("seq"),
                version: version.parse().expect("version"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// Writes one whole protocol line and flushes it.
fn say(line: std::fmt::Arguments<'_>) {
    let text = format!("{MARK}{line}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).expect("write to stdout");
    out.flush().expect("flush stdout");
}

/// The child process: appends until it is killed. Does nothing in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let iter: u64 = std::env::var(ENV_ITER).unwrap().parse().unwrap();
    common::start_child();
    let storage = Storage::open(config(Path::new(&dir))).expect("child: open store");
    say(format_args!("READY"));
    let data = Path::new(&dir).join("data.mdb").canonicalize().unwrap();
    let mut mapped = mapped_len(&data);

    // Retry the batches that were in flight when the previous child died. Each is either stored
    // whole (then this is a deduplicated retry) or not at all (then it is written now).
    let mut writer = Writer::<CrashEv>::new(storage.clone());
    for item in std::env::var(ENV_RETRY).unwrap_or_default().split(';') {
        if item.is_empty() {
            continue;
        }
        let f: Vec<u64> = item.split(',').map(|x| x.parse().unwrap()).collect();
        let (batch, stream, n) = (f[0], f[1], f[2] as u32);
        let appended = writer
            .append_batch(stream, ExpectedVersion::Any, batch_events(batch, n, stream))
            .expect("child: retry of an in-flight batch");
        say(format_args!(
            "RETRY {batch} {} {}",
            u8::from(appended.deduplicated),
            positions_text(&appended.positions)
        ));
    }

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let storage = storage.clone();
            std::thread::spawn(move || child_thread(storage, iter, t))
        })
        .collect();
    // Report map growth, seen as a longer mapping of the data file (independent of
    // `Storage::stats()`, which `stats_during_map_growth_never_crashes` covers).
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
        let now = mapped_len(&data);
        if now > mapped {
            say(format_args!("GROW {mapped} {now}"));
            mapped = now;
        }
    }
    for t in threads {
        t.join().expect("child thread panicked");
    }
}

/// Length of this process's memory mapping of `file` (0 when it is not mapped).
fn mapped_len(file: &Path) -> u64 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let name = file.to_str().unwrap();
    maps.lines()
        .filter(|l| l.ends_with(name))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
        })
        .sum()
}

fn child_thread(storage: Storage, iter: u64, thread: u64) {
    let mut rng = Rng(iter.wrapping_mul(0x51_7CC1_B727_220A) ^ thread);
    let mut writer = Writer::<CrashEv>::new(storage.clone());
    let started = Instant::now();
    let mut counter: u64 = 0;
    // The parent kills the child long before this; the limit only stops orphans.
    while started.elapsed() < Duration::from_secs(60) {
        counter += 1;
        let batch = (iter << 40) | (thread << 32) | counter;
        let contended = rng.chance(30);
        let stream = if contended {
            CONTENDED[rng.below(CONTENDED.len() as u64) as usize]
        } else {
            1000 + thread * 10 + rng.below(OWN_STREAMS)
        };
        if rng.chance(35) {
            // A single append with a generated id, at the version read just before.
            say(format_args!("BEGIN {batch} {stream} 1 S"));
            loop {
                let version = storage.stream_version(stream).unwrap() + 1;
                match writer.append(stream, version, make_event(batch, 0, 1, stream)) {
                    Ok(seq) => {
                        say(format_args!("ACK {batch} {stream} {seq}:{version}"));
                        break;
                    }
                    Err(Error::ConcurrencyConflict { .. }) if contended => continue,
                    Err(e) => panic!("child: append to stream {stream} failed: {e:?}"),
                }
            }
        } else {
            let n = 1 + rng.below(6) as u32;
            let any = rng.chance(50);
            say(format_args!("BEGIN {batch} {stream} {n} B"));
            let appended = loop {
                let expected = if any {
                    ExpectedVersion::Any
                } else {
                    ExpectedVersion::Exact(storage.stream_version(stream).unwrap())
                };
                match writer.append_batch(stream, expected, batch_events(batch, n, stream)) {
                    Ok(a) => {
                        if rng.chance(15) {
                            // An immediate retry is recognised and writes nothing.
                            let again = writer
                                .append_batch(stream, expected, batch_events(batch, n, stream))
                                .expect("child: immediate retry");
                            assert!(again.deduplicated, "immediate retry not deduplicated");
                            assert_eq!(again.positions, a.positions, "immediate retry positions");
                        }
                        break a;
                    }
                    Err(Error::ConcurrencyConflict { .. }) if contended && !any => continue,
                    Err(e) => panic!("child: batch to stream {stream} failed: {e:?}"),
                }
            };
            assert!(!appended.deduplicated);
            say(format_args!(
                "ACK {batch} {stream} {}",
                positions_text(&appended.positions)
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `append`, with a generated id.
    Single,
    /// `append_batch` with ids from [`event_id`].
    Batch,
}

#[derive(Clone, Debug)]
struct Begun {
    stream: u64,
    n: u32,
    kind: Kind,
}

/// One record read back from the store.
#[derive(Debug)]
struct Stored {
    stream: StreamId,
    version: u64,
    event_id: Uuid,
    prev_seq: Option<u64>,
    timestamp_ns: u64,
    ev: CrashEv,
}

/// Everything the parent has learned from the children so far.
#[derive(Default)]
struct Ledger {
    /// Every batch any child started, by batch id.
    begun: HashMap<u64, Begun>,
    /// Every acknowledged batch (or single append): its stream and positions.
    acked: HashMap<u64, (u64, Vec<Position>)>,
    /// Batches with known ids that were started and not acknowledged: retried by the next child.
    pending: BTreeMap<u64, Begun>,
    /// Where each batch is stored, from the last check of the store.
    stored: HashMap<u64, Vec<Position>>,
    grows: u64,
    retries_deduplicated: u64,
    retries_written: u64,
    /// Reopens that found events after the index watermark and read them back from the log.
    tails_recovered: u64,
    /// Reopens that found the index watermark moved by a child (an index flush committed).
    flushes_seen: u64,
    last_watermark: u64,
}

impl Ledger {
    /// Applies the protocol lines of one child.
    fn absorb(&mut self, lines: &[String]) {
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "READY" => {}
                "BEGIN" => {
                    let batch: u64 = f[1].parse().unwrap();
                    let begun = Begun {
                        stream: f[2].parse().unwrap(),
                        n: f[3].parse().unwrap(),
                        kind: if f[4] == "S" {
                            Kind::Single
                        } else {
                            Kind::Batch
                        },
                    };
                    assert!(
                        self.begun.insert(batch, begun.clone()).is_none(),
                        "batch {batch} begun twice"
                    );
                    if begun.kind == Kind::Batch {
                        self.pending.insert(batch, begun);
                    }
                }
                "ACK" => {
                    let batch: u64 = f[1].parse().unwrap();
                    let stream: u64 = f[2].parse().unwrap();
                    let positions = parse_positions(f[3]);
                    let begun = &self.begun[&batch];
                    assert_eq!(begun.stream, stream);
                    assert_eq!(positions.len(), begun.n as usize, "ack of batch {batch}");
                    assert!(
                        self.acked.insert(batch, (stream, positions)).is_none(),
                        "batch {batch} acknowledged twice"
                    );
                    self.pending.remove(&batch);
                }
                "RETRY" => {
                    let batch: u64 = f[1].parse().unwrap();
                    let deduplicated = f[2] == "1";
                    let positions = parse_positions(f[3]);
                    let begun = self.begun[&batch].clone();
                    // The parent checked the store before this child started: the retry must
                    // be deduplicated exactly when the batch was stored, at the same positions.
                    match self.stored.get(&batch) {
                        Some(stored) => {
                            assert!(
                                deduplicated,
                                "retry of stored batch {batch} was written again: {line}"
                            );
                            assert_eq!(&positions, stored, "retry of batch {batch}");
                            self.retries_deduplicated += 1;
                        }
                        None => {
                            assert!(
                                !deduplicated,
                                "retry of batch {batch}, which is not stored, claims deduplication"
                            );
                            self.retries_written += 1;
                        }
                    }
                    assert!(
                        self.acked
                            .insert(batch, (begun.stream, positions))
                            .is_none(),
                        "batch {batch} acknowledged twice"
                    );
                    self.pending.remove(&batch);
                }
                "GROW" => self.grows += 1,
                other => panic!("unknown line from the child: {other} ({line})"),
            }
        }
    }
}

/// Reopens the store and checks it against the ledger. Returns the number of records.
fn verify(path: &Path, ledger: &mut Ledger) -> u64 {
    let storage = Storage::open(config(path)).expect("parent: reopen store");
    let reader = Reader::<CrashEv>::new(storage.clone());
    let head = storage.head();
    let indexed = storage.stats().indexed_through;
    assert!(
        indexed <= head,
        "index watermark {indexed} past the head {head}"
    );
    ledger.tails_recovered += u64::from(indexed < head);
    // A child's flush moved the watermark, and events after it were read back.
    ledger.flushes_seen += u64::from(indexed > ledger.last_watermark && indexed < head);
    let txn = storage.env.read_txn().unwrap();

    // The whole log reads back, every record intact, sequences 1..=head without gaps.
    let mut log: Vec<Stored> = Vec::with_capacity(head as usize);
    for (i, item) in reader
        .read_log(&txn, 0, Direction::Forward)
        .unwrap()
        .enumerate()
    {
        let view = item.unwrap_or_else(|e| panic!("record {} does not read: {e:?}", i + 1));
        let env = view.envelope();
        assert_eq!(env.seq, i as u64 + 1, "gap in the global sequence");
        log.push(Stored {
            stream: env.stream,
            version: env.version,
            event_id: env.event_id,
            prev_seq: env.prev_seq,
            timestamp_ns: env.timestamp_ns,
            ev: view.deserialize().unwrap(),
        });
    }
    assert_eq!(log.len() as u64, head, "head and log length differ");
    assert!(reader.get(&txn, head + 1).unwrap().is_none());
    let backward = reader
        .read_log(&txn, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|r| r.map(|v| v.seq()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(backward, (1..=head).rev().collect::<Vec<_>>());

    // Streams: versions 1..=n in log order, back-pointers, heads, index.
    let mut streams: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (i, r) in log.iter().enumerate() {
        let seq = i as u64 + 1;
        let seqs = streams.entry(r.stream).or_default();
        assert_eq!(r.version, seqs.len() as u64 + 1, "version gap at seq {seq}");
        assert_eq!(r.prev_seq, seqs.last().copied(), "prev_seq at seq {seq}");
        seqs.push(seq);
        assert_eq!(
            StreamId::from(r.ev.stream),
            r.stream,
            "payload of seq {seq}"
        );
        assert_eq!(r.ev.pad, pad(r.ev.batch, r.ev.idx), "payload of seq {seq}");
        assert!(ids.insert(r.event_id), "event id stored twice");
        if i > 0 {
            assert!(r.timestamp_ns >= log[i - 1].timestamp_ns, "timestamps");
        }
    }
    let listed: Vec<StreamInfo> = reader
        .streams(&txn)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<StreamInfo> = streams
        .iter()
        .map(|(s, seqs)| StreamInfo {
            stream: *s,
            version: seqs.len() as u64,
            first_seq: seqs[0],
            last_seq: *seqs.last().unwrap(),
        })
        .collect();
    assert_eq!(listed, want, "stream listing");
    for (s, seqs) in &streams {
        let got = reader
            .read_stream(&txn, *s, 1, Direction::Forward)
            .unwrap()
            .map(|r| r.map(|v| v.seq()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(&got, seqs, "read_stream({s})");
        assert_eq!(reader.stream_version(&txn, *s).unwrap(), seqs.len() as u64);
        let last = reader.last_in_stream(&txn, *s).unwrap().unwrap();
        assert_eq!(last.seq(), *seqs.last().unwrap());
    }

    // Batches: every batch in the log is whole (all its events, in order, consecutive
    // sequences and versions, one stream), whether it was acknowledged or not.
    let mut batches: BTreeMap<u64, Vec<(u64, &Stored)>> = BTreeMap::new();
    for (i, r) in log.iter().enumerate() {
        batches
            .entry(r.ev.batch)
            .or_default()
            .push((i as u64 + 1, r));
    }
    ledger.stored.clear();
    for (batch, events) in &batches {
        let begun = ledger
            .begun
            .get(batch)
            .unwrap_or_else(|| panic!("batch {batch} is stored but no child began it"));
        let first = events[0].1;
        assert_eq!(
            events.len(),
            begun.n as usize,
            "batch {batch} is partially stored: {} of {} events",
            events.len(),
            begun.n
        );
        for (k, (seq, r)) in events.iter().enumerate() {
            assert_eq!(r.ev.idx, k as u32, "batch {batch} out of order");
            assert_eq!(r.ev.of, begun.n);
            assert_eq!(r.stream, StreamId::from(begun.stream));
            assert_eq!(*seq, events[0].0 + k as u64, "batch {batch} not contiguous");
            assert_eq!(r.version, first.version + k as u64);
            match begun.kind {
                Kind::Batch => assert_eq!(r.event_id, event_id(*batch, k as u32)),
                Kind::Single => assert_eq!(r.event_id.get_version_num(), 7),
            }
        }
        let positions = events
            .iter()
            .map(|(seq, r)| Position {
                seq: *seq,
                version: r.version,
            })
            .collect();
        ledger.stored.insert(*batch, positions);
    }

    // Every acknowledged append is stored where it was acknowledged.
    for (batch, (stream, positions)) in &ledger.acked {
        let stored = ledger
            .stored
            .get(batch)
            .unwrap_or_else(|| panic!("acknowledged batch {batch} (stream {stream}) is lost"));
        assert_eq!(stored, positions, "acknowledged batch {batch} moved");
    }

    // The deferred stream index and heads agree with the log up to their watermark.
    drop(txn);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "verify after a kill: {:?}", report.problems);
    // Closing indexes the tail.
    drop((storage, reader));
    ledger.last_watermark = head;
    head
}

/// How a child is stopped.
enum Stop<'a> {
    /// SIGKILL after `delay` (from its READY line when `wait_ready`).
    Kill { wait_ready: bool, delay: Duration },
    /// The power is cut under it at the `ops`-th write or sync of the filesystem after it has
    /// printed `acks` acknowledgements (counted from the mount with `acks: 0`), then it is
    /// killed.
    Cut {
        fs: &'a PowerCut,
        acks: u64,
        ops: u64,
        keep: Keep,
    },
}

/// Runs one child until it is stopped; returns its protocol lines, and what the cut did when it
/// was a power cut.
fn run_child(
    path: &Path,
    iter: u64,
    retry: &str,
    stop: Stop<'_>,
) -> (Vec<String>, Option<CutReport>) {
    let child = common::Watched::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, path)
            .env(ENV_ITER, iter.to_string())
            .env(ENV_RETRY, retry)
            .env_remove("RUST_BACKTRACE"),
        MARK,
    );
    let (cut, failure) = match stop {
        Stop::Kill { wait_ready, delay } => {
            let ready = || loop {
                match child.rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(line) if line == "READY" => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            };
            if wait_ready && !ready() {
                (None, Some("never became ready".to_string()))
            } else {
                std::thread::sleep(delay);
                (None, None)
            }
        }
        Stop::Cut {
            fs,
            acks,
            ops,
            keep,
        } => {
            let is_ack = |l: &str| l.starts_with("ACK") || l.starts_with("RETRY");
            let (report, failure) = child.cut_on_progress(fs, is_ack, acks, ops, keep);
            (Some(report), failure)
        }
    };
    let (status, lines, stderr) = child.finish();
    if let Some(what) = failure {
        panic!("child {iter} {what} ({status}); stderr:\n{stderr}");
    }
    // Once the power is off every request fails, and a child may die of the errors before the
    // kill reaches it (a failed sync, or SIGBUS on a page of its map that can no longer be
    // read); before that, a child only ends by being killed.
    assert!(
        status.signal() == Some(libc::SIGKILL) || cut.is_some(),
        "child {iter} ended on its own ({status}) before it was stopped; stderr:\n{stderr}"
    );
    (lines, cut)
}

#[test]
fn crash_recovery() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let iterations: u64 = common::env_u64("VARVE_CRASH_ITERATIONS", 32);
    let seed: u64 = common::env_u64(ENV_SEED, 0x7A5E_DB0B);
    println!("crash test: {iterations} iterations, {ENV_SEED}={seed}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let started = Instant::now();
    let mut head = 0;
    for iter in 1..=iterations {
        // Most children are killed while appending; every fifth while it may still be starting
        // up, opening the store or retrying.
        let early = iter % 5 == 0;
        let delay = if early {
            Duration::from_millis(rng.below(40))
        } else {
            Duration::from_millis(20 + rng.below(281))
        };
        let retry: Vec<String> = ledger
            .pending
            .iter()
            .map(|(batch, b)| format!("{batch},{},{}", b.stream, b.n))
            .collect();
        let stop = Stop::Kill {
            wait_ready: !early,
            delay,
        };
        let (lines, _) = run_child(&path, iter, &retry.join(";"), stop);
        ledger.absorb(&lines);
        let new_head = verify(&path, &mut ledger);
        assert!(new_head >= head, "the log shrank from {head} to {new_head}");
        head = new_head;
        println!(
            "iteration {iter}: killed after {delay:?}{}, {} lines, head {head}, {} acknowledged, {} pending, data file {} KiB",
            if early { " (early)" } else { "" },
            lines.len(),
            ledger.acked.len(),
            ledger.pending.len(),
            std::fs::metadata(path.join("data.mdb")).map_or(0, |m| m.len() >> 10),
        );
    }
    println!(
        "crash test: {iterations} kills in {:?}, {head} events, {} map growths, retries: {} deduplicated, {} written",
        started.elapsed(),
        ledger.grows,
        ledger.retries_deduplicated,
        ledger.retries_written,
    );
    assert!(head > 0, "no child appended anything");
    assert!(ledger.grows > 0, "no child grew the map");
    println!(
        "index: {} reopens read an unindexed tail back, {} found a newer watermark",
        ledger.tails_recovered, ledger.flushes_seen
    );
    assert!(
        ledger.tails_recovered > 0,
        "no reopen had a tail to recover"
    );
    assert!(ledger.flushes_seen > 0, "no child flushed the index");
}

/// The same children and checks as [`crash_recovery`], with the store on the power-cut
/// filesystem: each child loses the power (every write not yet synced is lost, or reaches the
/// disk page by page, or sector by sector, at random) at a random write or sync shortly after it
/// has acknowledged a random number of appends, or, every fifth child, at a random write or sync
/// from the start, while it opens the store and retries. The store is then checked on what the disk kept.
///
/// Environment: `VARVE_POWER_CUTS` (default 60) and `VARVE_CRASH_SEED`.
#[test]
fn power_cut_recovery() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let cuts: u64 = common::env_u64("VARVE_POWER_CUTS", 60);
    let seed: u64 = common::env_u64(ENV_SEED, 0x0FF_C0DE);
    println!("power-cut test: {cuts} cuts, {ENV_SEED}={seed}");
    let disk = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let on_disk = disk.path().join("store");
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let started = Instant::now();
    let (mut head, mut pages_lost, mut pages_kept, mut pages_torn) = (0, 0, 0, 0);
    for iter in 1..=cuts {
        let fs = common::mount_power_cut(disk.path(), mountpoint.path());
        let early = iter % 5 == 0;
        let keep = common::keep_for(iter, rng.next());
        let stop = Stop::Cut {
            fs: &fs,
            acks: if early { 0 } else { 1 + rng.below(60) },
            // Mid-commit: between the writes of a transaction's pages, its data sync, its meta
            // page's O_DSYNC write, and the next.
            ops: 1 + rng.below(if early { 300 } else { 40 }),
            keep,
        };
        let retry: Vec<String> = ledger
            .pending
            .iter()
            .map(|(batch, b)| format!("{batch},{},{}", b.stream, b.n))
            .collect();
        let (lines, cut) = run_child(&fs.mountpoint().join("store"), iter, &retry.join(";"), stop);
        let counters = fs.counters();
        let cut = cut.expect("the power was cut");
        let report = fs.cut(Keep::Nothing).unwrap();
        assert_eq!(report, CutReport::default(), "a second cut lost more");
        fs.unmount().expect("unmount after the child is gone");
        ledger.absorb(&lines);
        if !on_disk.exists() {
            // Cut before the store's directory was made: nothing was acknowledged.
            assert!(ledger.acked.is_empty());
            continue;
        }
        let new_head = verify(&on_disk, &mut ledger);
        assert!(new_head >= head, "the log shrank from {head} to {new_head}");
        head = new_head;
        pages_lost += cut.pages_lost;
        pages_kept += cut.pages_kept;
        pages_torn += cut.pages_torn;
        println!(
            "cut {iter}{}: {} lines, head {head}, {} acknowledged, {} pending; {} writes, {} syncs, {} O_DSYNC writes, unsynced pages {} lost, {} kept, {} torn",
            if early { " (early)" } else { "" },
            lines.len(),
            ledger.acked.len(),
            ledger.pending.len(),
            counters.writes,
            counters.syncs,
            counters.durable_writes,
            cut.pages_lost,
            cut.pages_kept,
            cut.pages_torn,
        );
    }
    println!(
        "power-cut test: {cuts} cuts in {:?}, {head} events, {} acknowledged batches, retries: {} deduplicated, {} written",
        started.elapsed(),
        ledger.acked.len(),
        ledger.retries_deduplicated,
        ledger.retries_written,
    );
    println!("unsynced pages: {pages_lost} lost, {pages_kept} kept, {pages_torn} torn");
    assert!(pages_lost > 0, "no cut lost an unsynced page");
    assert!(pages_torn > 0, "no cut tore a page");
    assert!(head > 0, "no child appended anything");
    assert!(
        ledger.retries_written + ledger.retries_deduplicated > 0,
        "no retries"
    );
}

// ---------------------------------------------------------------------------------------------
// Regression: `Storage::stats()` during map growth
// ---------------------------------------------------------------------------------------------

const ENV_STATS_DIR: &str = "VARVE_STATS_DIR";

/// `Storage::stats()` calls LMDB's `mdb_env_info` and `mdb_env_stat`, which read the meta page
/// through the memory map. Growing the map unmaps and remaps it, so a `stats()` racing a growth
/// on another thread, outside the gate that keeps transactions out of a resize, read unmapped
/// memory and the process died with SIGSEGV (found by this file's crash test). The child below
/// grows fresh stores while another thread calls `stats()`; the test fails if it ever crashes.
#[test]
fn stats_during_map_growth_never_crashes() {
    if std::env::var_os(ENV_DIR).is_some() || std::env::var_os(ENV_STATS_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([
            "--exact",
            "stats_growth_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_STATS_DIR, dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run child");
    assert!(
        output.status.success(),
        "child calling Storage::stats() while the map grows died: {} (signal {:?}); stderr:\n{}",
        output.status,
        output.status.signal(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Child of [`stats_during_map_growth_never_crashes`]. Does nothing in a normal test run.
#[test]
fn stats_growth_child() {
    let Some(dir) = std::env::var_os(ENV_STATS_DIR) else {
        return;
    };
    let started = Instant::now();
    let mut growths = 0;
    for round in 0..400 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let path = Path::new(&dir).join(round.to_string());
        let storage = Storage::open(StorageConfig {
            path: path.clone(),
            map_size: 64 << 10,
            ..Default::default()
        })
        .unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(storage.stats());
                }
            });
            // One event larger than the map: the append grows it.
            let mut writer = Writer::<CrashEv>::new(storage.clone());
            let mut ev = make_event(round, 0, 1, 1);
            ev.pad = vec![7; 200_000];
            writer.append_batch(1, ExpectedVersion::Any, [ev]).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        growths += storage.stats().map_resizes;
        drop(storage);
        let _ = std::fs::remove_dir_all(&path);
    }
    assert!(growths > 0);
    println!("{growths} map growths with a concurrent stats() caller survived");
}
