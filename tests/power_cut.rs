//! Power-cut test of an encrypted store doing everything at once: multi-stream transactions,
//! batches to streams that are then shredded, master-key rotations, a processor and an
//! exactly-once projection, with the stream index flushed every few events.
//!
//! The store lives on the power-cut filesystem (`crates/powercut`). Each child process runs the
//! whole workload until the power goes off at a random write or sync of the filesystem, shortly
//! after a random number of acknowledgements (or, every fifth child, from the start while it
//! opens the store); unsynced pages are lost, or reach the disk page by page or sector by sector
//! at random. The child is then killed, and the store is checked on what the disk kept:
//!
//! - it opens with exactly one of the old and the new master key of a rotation in flight (the new
//!   one once the rotation was acknowledged), and `verify` is clean;
//! - every acknowledged transaction and batch is stored at its acknowledged positions, and every
//!   stored transaction is whole: all its parts, each with all its events;
//! - every stream whose shredding was acknowledged stays shredded, in this and every later check;
//! - the processor's checkpoint names no event it was not given, and it was given no event the
//!   store lost;
//! - the projection's read model equals the events up to its checkpoint, each applied once.
//!
//! The test re-executes its own binary as the child (`power_cut_child`, which does nothing unless
//! `VARVE_POWER_DIR` is set). `VARVE_POWER_CUTS` (default 40) and `VARVE_POWER_SEED` change the
//! run.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use heed::types::Bytes;
use powercut::{CutReport, Keep, PowerCut};
use varvedb::error::{Error, Result};
use varvedb::{
    Direction, Envelope, EventHandler, ExpectedVersion, IntoStreamId, Position, Processor,
    Projection, Projector, Reader, Storage, StorageConfig, StreamId, Writer,
};

const ENV_DIR: &str = "VARVE_POWER_DIR";
const ENV_ITER: &str = "VARVE_POWER_ITER";
const ENV_KEY: &str = "VARVE_POWER_KEY";
const MARK: &str = "@@ ";

/// An event of a transaction (`kind` 0) or of a batch to a stream that is shredded later (1).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Ev {
    pub kind: u8,
    /// Transaction or batch number.
    pub key: u64,
    pub part: u32,
    pub idx: u32,
    pub amount: u64,
    pub pad: Vec<u8>,
}

/// The master key of version `v`.
fn master_key(v: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = (v as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0xA5;
    }
    key
}

fn config(path: &Path, key_version: u32) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        encryption_enabled: true,
        master_key: Some(master_key(key_version)),
        // Index flushes land before, during and after cuts.
        index_interval: 16,
        ..Default::default()
    }
}

/// The parts of transaction `key`: stream and number of events of each.
fn txn_parts(key: u64) -> Vec<(String, u32)> {
    let n = 2 + key % 3;
    (0..n)
        .map(|p| {
            (
                format!("acct-{}", (key * 7 + p * 3) % 11),
                1 + ((key + p) % 3) as u32,
            )
        })
        .collect()
}

fn amount(key: u64, part: u32, idx: u32) -> u64 {
    key * 100 + u64::from(part) * 10 + u64::from(idx) + 1
}

fn txn_event(key: u64, part: u32, idx: u32) -> Ev {
    Ev {
        kind: 0,
        key,
        part,
        idx,
        amount: amount(key, part, idx),
        // Some events take LMDB overflow pages.
        pad: vec![
            key as u8;
            if (key + u64::from(idx)).is_multiple_of(9) {
                5000
            } else {
                40
            }
        ],
    }
}

fn tmp_stream(key: u64) -> String {
    format!("tmp-{key}")
}

/// The id of a named stream.
fn id(name: &str) -> StreamId {
    name.into_stream_id().unwrap()
}

fn positions_text(positions: &[Position]) -> String {
    positions
        .iter()
        .map(|p| format!("{}:{}", p.seq, p.version))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

fn say(line: std::fmt::Arguments<'_>) {
    let text = format!("{MARK}{line}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).expect("write to stdout");
    out.flush().expect("flush stdout");
}

/// Prints each event it is given: `H seq event-id`.
struct Seen;

impl EventHandler<Ev> for Seen {
    fn handle(&mut self, _event: &ArchivedEv) -> Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(&mut self, envelope: &Envelope<'_>, _event: &ArchivedEv) -> Result<()> {
        say(format_args!(
            "H {} {}",
            envelope.seq,
            envelope.event_id.as_u128()
        ));
        Ok(())
    }
}

/// Per stream of a transaction: (events, sum of amounts). Read-modify-write, so an event
/// applied twice shows.
struct Totals {
    db: heed::Database<'static, Bytes, Bytes>,
}

impl Projection<Ev> for Totals {
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: &ArchivedEv,
    ) -> Result<()> {
        if event.kind != 0 {
            return Ok(());
        }
        let key = envelope.stream.as_u128().to_be_bytes();
        let (n, sum) = self.db.get(txn, &key)?.map_or((0, 0), decode_total);
        let value = encode_total(n + 1, sum + event.amount.to_native());
        self.db.put(txn, &key, &value)?;
        Ok(())
    }
}

fn encode_total(n: u64, sum: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out[8..].copy_from_slice(&sum.to_le_bytes());
    out
}

fn decode_total(bytes: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
    )
}

/// The child process: runs the workload until the power goes and it is killed.
#[test]
fn power_cut_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let iter: u64 = std::env::var(ENV_ITER).unwrap().parse().unwrap();
    let key_version: u32 = std::env::var(ENV_KEY).unwrap().parse().unwrap();
    // Once the power is off every write fails: the first failure ends the process.
    common::start_child();
    let storage = Storage::open(config(Path::new(&dir), key_version)).expect("child: open");
    say(format_args!("READY"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let processor_storage = storage.clone();
    runtime.spawn(async move {
        let s = processor_storage;
        let mut processor =
            Processor::new(Reader::<Ev>::new(s.clone()), Seen, "seen", s.subscribe())
                .with_checkpoint_every(7);
        let e = processor.run().await;
        panic!("child: processor stopped: {e:?}");
    });
    let projection_storage = storage.clone();
    runtime.spawn(async move {
        let s = projection_storage;
        let db = s
            .projection_database("totals")
            .expect("child: projection db");
        let mut projector = Projector::new(
            Reader::<Ev>::new(s.clone()),
            Totals { db },
            "totals",
            s.subscribe(),
        )
        .with_batch(5);
        let e = projector.run().await;
        panic!("child: projector stopped: {e:?}");
    });

    let txns = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            let mut writer = Writer::<Ev>::new(storage);
            for n in 0.. {
                let key = (iter << 32) | n;
                let parts = txn_parts(key);
                let sizes: Vec<String> = parts.iter().map(|(_, k)| k.to_string()).collect();
                say(format_args!("T {key} {}", sizes.join(",")));
                let mut txn = writer.transaction();
                for (p, (stream, k)) in parts.iter().enumerate() {
                    let events = (0..*k).map(|i| txn_event(key, p as u32, i));
                    txn.append_batch(stream.as_str(), ExpectedVersion::Any, events)
                        .expect("child: add a part");
                }
                let appended = txn.commit().expect("child: commit a transaction");
                let positions: Vec<Position> = appended
                    .iter()
                    .flat_map(|a| a.positions.iter().copied())
                    .collect();
                say(format_args!("TACK {key} {}", positions_text(&positions)));
            }
        })
    };
    let others = std::thread::spawn(move || {
        let mut writer = Writer::<Ev>::new(storage.clone());
        let mut version = key_version;
        for n in 0.. {
            let key = (iter << 32) | n;
            let events = (0..3).map(|i| Ev {
                kind: 1,
                key,
                part: 0,
                idx: i,
                amount: 0,
                pad: vec![7; 100],
            });
            say(format_args!("B {key}"));
            let appended = writer
                .append_batch(tmp_stream(key).as_str(), ExpectedVersion::NoStream, events)
                .expect("child: batch");
            say(format_args!(
                "BACK {key} {}",
                positions_text(&appended.positions)
            ));
            if n % 2 == 1 {
                let victim = key - 1;
                say(format_args!("S {victim}"));
                assert!(storage
                    .shred_stream(tmp_stream(victim).as_str())
                    .expect("child: shred"));
                say(format_args!("SACK {victim}"));
            }
            if n % 5 == 4 {
                say(format_args!("R {}", version + 1));
                storage
                    .rotate_master_key(master_key(version + 1))
                    .expect("child: rotate");
                version += 1;
                say(format_args!("RACK {version}"));
            }
        }
    });
    txns.join().expect("child: transactions");
    others.join().expect("child: batches");
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// Everything the parent learned from the children.
#[derive(Default)]
struct Ledger {
    /// Declared part sizes of every transaction begun.
    txns: HashMap<u64, Vec<u32>>,
    /// Acknowledged transactions and batches: their positions.
    txn_acked: HashMap<u64, Vec<Position>>,
    batch_acked: HashMap<u64, Vec<Position>>,
    /// Streams whose shredding was acknowledged.
    shredded: BTreeSet<u64>,
    /// Key version in force, and a rotation to the next one begun and not acknowledged.
    key_version: u32,
    rotating: Option<u32>,
    /// Every event the processor was given: seq → event id.
    handled: BTreeMap<u64, u128>,
    rotations: u64,
    /// Cuts during a rotation: the old key still in force, or the new one.
    in_flight: (u64, u64),
    shreds_seen: u64,
}

impl Ledger {
    fn absorb(&mut self, lines: &[String]) {
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> u64 { f[i].parse().unwrap() };
            match f[0] {
                "READY" | "B" | "S" => {}
                "T" => {
                    let sizes = f[2].split(',').map(|x| x.parse().unwrap()).collect();
                    self.txns.insert(num(1), sizes);
                }
                "TACK" => {
                    self.txn_acked.insert(num(1), parse_positions(f[2]));
                }
                "BACK" => {
                    self.batch_acked.insert(num(1), parse_positions(f[2]));
                }
                "SACK" => {
                    self.shredded.insert(num(1));
                }
                "R" => self.rotating = Some(f[1].parse().unwrap()),
                "RACK" => {
                    let v: u32 = f[1].parse().unwrap();
                    assert_eq!(self.rotating, Some(v), "rotation acknowledged unannounced");
                    self.key_version = v;
                    self.rotating = None;
                    self.rotations += 1;
                }
                "H" => {
                    let seq = num(1);
                    let id: u128 = f[2].parse().unwrap();
                    if let Some(old) = self.handled.insert(seq, id) {
                        assert_eq!(old, id, "the processor was given two events at seq {seq}");
                    }
                }
                other => panic!("unknown line from the child: {other} ({line})"),
            }
        }
    }
}

fn parse_positions(text: &str) -> Vec<Position> {
    text.split(',')
        .map(|p| {
            let (seq, version) = p.split_once(':').unwrap();
            Position {
                seq: seq.parse().unwrap(),
                version: version.parse().unwrap(),
            }
        })
        .collect()
}

/// Opens the store with the key in force: exactly one of the old and new keys of a rotation
/// in flight opens it, the other is refused as the wrong key.
fn open_with_the_key_in_force(path: &Path, ledger: &mut Ledger) -> Storage {
    let old = Storage::open(config(path, ledger.key_version));
    let Some(new_version) = ledger.rotating.take() else {
        return old.unwrap_or_else(|e| {
            panic!(
                "the store does not open with key {}: {e:?}",
                ledger.key_version
            )
        });
    };
    match old {
        Ok(storage) => {
            drop(storage);
            let new = Storage::open(config(path, new_version));
            assert!(
                matches!(new, Err(Error::WrongMasterKey { .. })),
                "the store opens with both the old and the new key: {new:?}"
            );
            ledger.in_flight.0 += 1;
            Storage::open(config(path, ledger.key_version)).unwrap()
        }
        Err(Error::WrongMasterKey { .. }) => {
            let storage = Storage::open(config(path, new_version)).unwrap_or_else(|e| {
                panic!("the store opens with neither the old nor the new key: {e:?}")
            });
            ledger.key_version = new_version;
            ledger.rotations += 1;
            ledger.in_flight.1 += 1;
            storage
        }
        Err(e) => panic!("the store does not open: {e:?}"),
    }
}

/// One event read back.
enum Stored {
    Event {
        stream: StreamId,
        version: u64,
        event_id: u128,
        ev: Ev,
    },
    Shredded {
        stream: StreamId,
    },
}

/// Checks the store on the disk against the ledger. Returns the head.
fn verify(path: &Path, ledger: &mut Ledger) -> u64 {
    let storage = open_with_the_key_in_force(path, ledger);
    assert_eq!(storage.master_key_version(), Some(ledger.key_version));
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "verify after a cut: {:?}", report.problems);

    // Opened before the read transaction, which sees only databases opened before it began.
    let db = storage.projection_database("totals").unwrap();
    let reader = Reader::<Ev>::new(storage.clone());
    let head = storage.head();
    let txn = storage.read_txn().unwrap();
    let mut log: Vec<Stored> = Vec::new();
    for (i, item) in reader
        .read_log(&txn, 0, Direction::Forward)
        .unwrap()
        .enumerate()
    {
        let seq = i as u64 + 1;
        match item {
            Ok(view) => {
                let env = view.envelope();
                assert_eq!(env.seq, seq);
                log.push(Stored::Event {
                    stream: env.stream,
                    version: env.version,
                    event_id: env.event_id.as_u128(),
                    ev: view.deserialize().unwrap(),
                });
            }
            Err(Error::Shredded { stream, seq: at }) => {
                assert_eq!(at, seq);
                log.push(Stored::Shredded { stream });
            }
            Err(e) => panic!("seq {seq} does not read: {e:?}"),
        }
    }
    assert_eq!(log.len() as u64, head);

    // Transactions: whole or absent; acknowledged ones where they were acknowledged.
    let mut stored: BTreeMap<u64, Vec<(u32, u32, Position)>> = BTreeMap::new();
    for (i, r) in log.iter().enumerate() {
        if let Stored::Event {
            version,
            ev,
            stream,
            ..
        } = r
        {
            if ev.kind == 0 {
                let (name, _) = &txn_parts(ev.key)[ev.part as usize];
                assert_eq!(*stream, id(name), "stream of seq {}", i + 1);
                let position = Position {
                    seq: i as u64 + 1,
                    version: *version,
                };
                stored
                    .entry(ev.key)
                    .or_default()
                    .push((ev.part, ev.idx, position));
            }
        }
    }
    for (key, events) in &stored {
        let sizes = ledger
            .txns
            .get(key)
            .unwrap_or_else(|| panic!("transaction {key} is stored but was never begun"));
        let want: Vec<(u32, u32)> = sizes
            .iter()
            .enumerate()
            .flat_map(|(p, &k)| (0..k).map(move |i| (p as u32, i)))
            .collect();
        let got: Vec<(u32, u32)> = events.iter().map(|&(p, i, _)| (p, i)).collect();
        assert_eq!(
            got, want,
            "transaction {key} is stored partly or out of order"
        );
    }
    for (key, positions) in &ledger.txn_acked {
        let events = stored
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged transaction {key} is lost"));
        let got: Vec<Position> = events.iter().map(|&(_, _, p)| p).collect();
        assert_eq!(&got, positions, "acknowledged transaction {key} moved");
    }

    // Batches to the streams shredded later: acknowledged ones stored (readable or shredded),
    // acknowledged shreds in force.
    for (key, positions) in &ledger.batch_acked {
        let stream = id(&tmp_stream(*key));
        for p in positions {
            let at = log
                .get(p.seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged batch {key} is lost"));
            match at {
                Stored::Event {
                    stream: s,
                    version,
                    ev,
                    ..
                } => {
                    assert_eq!((*s, *version), (stream, p.version), "batch {key} moved");
                    assert_eq!((ev.kind, ev.key), (1, *key), "batch {key} moved");
                    assert!(
                        !ledger.shredded.contains(key),
                        "stream {} was shredded and reads again",
                        tmp_stream(*key)
                    );
                }
                Stored::Shredded { stream: s } => assert_eq!(*s, stream, "batch {key} moved"),
            }
        }
    }
    for key in &ledger.shredded {
        let stream = id(&tmp_stream(*key));
        let read = reader
            .read_stream(&txn, stream, 1, Direction::Forward)
            .unwrap();
        for item in read {
            assert!(
                matches!(item, Err(Error::Shredded { .. })),
                "shredded stream {} reads again",
                tmp_stream(*key)
            );
        }
    }
    ledger.shreds_seen = log
        .iter()
        .filter(|r| matches!(r, Stored::Shredded { .. }))
        .count() as u64;

    // The processor: given only events the store kept, and everything up to its checkpoint.
    let checkpoints: HashMap<String, u64> = storage.processors().unwrap().into_iter().collect();
    let seen = checkpoints.get("seen").copied().unwrap_or(0);
    assert!(
        seen <= head,
        "processor checkpoint {seen} past the head {head}"
    );
    for (&seq, &id) in &ledger.handled {
        match log.get(seq as usize - 1) {
            Some(Stored::Event { event_id, .. }) => assert_eq!(
                *event_id, id,
                "the processor was given an event at seq {seq} the store does not have"
            ),
            Some(Stored::Shredded { .. }) => {}
            None => panic!("the processor was given seq {seq}, which the store lost"),
        }
    }
    for (i, r) in log.iter().take(seen as usize).enumerate() {
        if matches!(r, Stored::Event { .. }) {
            assert!(
                ledger.handled.contains_key(&(i as u64 + 1)),
                "seq {} is before the processor's checkpoint {seen} but was never handled",
                i + 1
            );
        }
    }

    // The projection: its read model is the events up to its checkpoint, each applied once.
    let projected = checkpoints.get("totals").copied().unwrap_or(0);
    assert!(projected <= head);
    let mut want: BTreeMap<[u8; 16], (u64, u64)> = BTreeMap::new();
    for r in log.iter().take(projected as usize) {
        if let Stored::Event { stream, ev, .. } = r {
            if ev.kind == 0 {
                let t = want.entry(stream.as_u128().to_be_bytes()).or_default();
                t.0 += 1;
                t.1 += ev.amount;
            }
        }
    }
    let got: BTreeMap<[u8; 16], (u64, u64)> = db
        .iter(txn.heed())
        .unwrap()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.try_into().unwrap(), decode_total(v))
        })
        .collect();
    assert_eq!(got, want, "projection at checkpoint {projected}");
    drop(txn);
    head
}

/// Runs one child until the power is cut under it; returns its lines and the cut's report.
fn run_child(
    fs: &PowerCut,
    path: &Path,
    iter: u64,
    key_version: u32,
    acks: u64,
    ops: u64,
    keep: Keep,
) -> (Vec<String>, CutReport) {
    let child = common::Watched::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "power_cut_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, path)
            .env(ENV_ITER, iter.to_string())
            .env(ENV_KEY, key_version.to_string())
            .env_remove("RUST_BACKTRACE"),
        MARK,
    );
    let (report, failure) = child.cut_on_progress(fs, |l| l.contains("ACK"), acks, ops, keep);
    // After the cut the child dies of the kill or of the I/O errors that reach it first: a
    // failed sync, or SIGBUS on a page of its map that can no longer be read.
    let (status, lines, stderr) = child.finish();
    if let Some(what) = failure {
        panic!("child {iter} {what} ({status}); stderr:\n{stderr}");
    }
    (lines, report)
}

#[test]
fn power_cuts_keep_every_acknowledged_write_and_nothing_partial() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let cuts: u64 = common::env_u64("VARVE_POWER_CUTS", 40);
    let seed: u64 = common::env_u64("VARVE_POWER_SEED", 0xC0FF_EE11);
    println!("power-cut test: {cuts} cuts, VARVE_POWER_SEED={seed}");
    let disk = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let on_disk = disk.path().join("store");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut ledger = Ledger {
        key_version: 1,
        ..Default::default()
    };
    let started = Instant::now();
    let (mut head, mut lost, mut kept, mut torn) = (0, 0, 0, 0);
    for iter in 1..=cuts {
        let fs = common::mount_power_cut(disk.path(), mountpoint.path());
        let early = iter % 5 == 0;
        let keep = common::keep_for(iter, next(u64::MAX));
        let acks = if early { 0 } else { 1 + next(40) };
        let ops = 1 + next(if early { 300 } else { 40 });
        let (lines, report) = run_child(
            &fs,
            &fs.mountpoint().join("store"),
            iter,
            ledger.key_version,
            acks,
            ops,
            keep,
        );
        let counters = fs.counters();
        fs.unmount().expect("unmount after the child is gone");
        ledger.absorb(&lines);
        lost += report.pages_lost;
        kept += report.pages_kept;
        torn += report.pages_torn;
        if !on_disk.join("data.mdb").exists() {
            assert!(ledger.txn_acked.is_empty() && ledger.batch_acked.is_empty());
            continue;
        }
        let new_head = verify(&on_disk, &mut ledger);
        assert!(new_head >= head, "the log shrank from {head} to {new_head}");
        head = new_head;
        println!(
            "cut {iter}{}: {} lines, head {head}, key v{}, {} shredded streams; {} writes, {} syncs; unsynced pages {} lost, {} kept, {} torn",
            if early { " (early)" } else { "" },
            lines.len(),
            ledger.key_version,
            ledger.shredded.len(),
            counters.writes,
            counters.syncs,
            report.pages_lost,
            report.pages_kept,
            report.pages_torn,
        );
    }
    println!(
        "power-cut test: {cuts} cuts in {:?}: head {head}, {} transactions and {} batches acknowledged, {} streams shredded ({} events), {} rotations ({} cut in flight with the old key in force, {} with the new), {} events given to the processor; unsynced pages {lost} lost, {kept} kept, {torn} torn",
        started.elapsed(),
        ledger.txn_acked.len(),
        ledger.batch_acked.len(),
        ledger.shredded.len(),
        ledger.shreds_seen,
        ledger.rotations,
        ledger.in_flight.0,
        ledger.in_flight.1,
        ledger.handled.len(),
    );
    assert!(
        !ledger.txn_acked.is_empty(),
        "no transaction was acknowledged"
    );
    assert!(!ledger.shredded.is_empty(), "no shredding was acknowledged");
    assert!(ledger.rotations > 0, "no rotation happened");
    assert!(!ledger.handled.is_empty(), "the processor handled nothing");
    assert!(lost > 0, "no cut lost an unsynced page");
    assert!(torn > 0, "no cut tore a page");
}
