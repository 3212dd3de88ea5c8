//! The main job: writes a real workload into a fresh store, reads it back, prints what it did,
//! and keeps the store for `varve` to inspect.
//!
//! ```text
//! cargo run --release --example workload [-- [--store PATH] [EVENTS [STREAMS]]]
//! ```
//!
//! Defaults: 1,000,000 events to 10,000 streams, in batches of 100 events to one stream (each
//! round of batches visits every stream once, in a random order), from a 16 MiB initial map (so
//! the map grows several times), then 1,000 single durable appends, a full typed scan, every
//! stream read by version, and 200,000 random point reads.
//!
//! The store is kept at `PATH`, which must not exist or be empty; without `--store` it goes to
//! `target/varvedb-workload` in the project, replacing the store an earlier run left there.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use varvedb::{Direction, ExpectedVersion};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

/// An account event of about 100 serialized bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[rkyv(derive(Debug))]
pub struct Transfer {
    pub account: u64,
    pub amount_cents: i64,
    pub sequence_in_account: u64,
    pub memo: String,
}

fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs;
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

/// A small deterministic generator, so runs are comparable.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The command line: where the store goes, how many events, how many streams.
struct Args {
    store: PathBuf,
    /// Whether `store` is the default, which a new run may replace.
    default_store: bool,
    events: u64,
    streams: u64,
}

fn args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut store = None;
    let mut numbers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--store" {
            store = Some(PathBuf::from(args.next().ok_or("--store needs a path")?));
        } else {
            numbers.push(
                arg.parse::<u64>()
                    .map_err(|_| format!("{arg:?}: expected EVENTS or STREAMS, a number"))?,
            );
        }
    }
    let (events, streams) = match numbers[..] {
        [] => (1_000_000, 10_000),
        [events] => (events, 10_000),
        [events, streams] => (events, streams),
        _ => return Err("usage: workload [--store PATH] [EVENTS [STREAMS]]".into()),
    };
    if events == 0 || streams == 0 {
        return Err("EVENTS and STREAMS must be at least 1".into());
    }
    let default_store = store.is_none();
    let store = store
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/varvedb-workload"));
    Ok(Args {
        store,
        default_store,
        events,
        streams,
    })
}

/// Makes room for a fresh store at `path`: a path given on the command line must not exist or
/// be an empty directory (the example never deletes what it did not make); the default path is
/// cleared of the store an earlier run left there.
fn prepare(path: &Path, default_store: bool) -> Result<(), Box<dyn std::error::Error>> {
    let empty = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    if empty {
        return Ok(());
    }
    if default_store && path.join("data.mdb").is_file() {
        std::fs::remove_dir_all(path)?;
        return Ok(());
    }
    Err(format!(
        "{} is not empty: give --store a new path (the example does not overwrite data)",
        path.display()
    )
    .into())
}

/// Stream order for one round of batches: every stream once, shuffled.
fn shuffled(streams: u64, rng: &mut XorShift) -> Vec<u64> {
    let mut order: Vec<u64> = (0..streams).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    order
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        store,
        default_store,
        events,
        streams,
    } = args()?;
    let batch = 100u64;
    prepare(&store, default_store)?;
    // Batches go to the streams in shuffled rounds, so with fewer batches than streams only
    // as many streams as batches get events.
    let streams = streams.min(events.div_ceil(batch));
    let storage = Storage::open(StorageConfig {
        path: store.clone(),
        map_size: 16 << 20,
        ..Default::default()
    })?;
    println!(
        "VarveDB workload: {events} events to {streams} streams, store in {}",
        storage.path().display()
    );

    // 1. Batched appends: each batch is 100 events to one stream, durable on return.
    let mut writer = Writer::<Transfer>::new(storage.clone());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut versions = vec![0u64; streams as usize];
    let start = Instant::now();
    let mut written = 0u64;
    let mut round = Vec::new();
    while written < events {
        if round.is_empty() {
            round = shuffled(streams, &mut rng);
        }
        let stream = round.pop().expect("a round has every stream");
        let n = batch.min(events - written);
        let v = versions[stream as usize];
        let batch: Vec<Transfer> = (0..n)
            .map(|i| Transfer {
                account: stream,
                amount_cents: (rng.next() % 100_000) as i64 - 50_000,
                sequence_in_account: v + i + 1,
                memo: format!("transfer {:>8} of account {stream:>6} ........", v + i + 1),
            })
            .collect();
        writer.append_batch(stream, ExpectedVersion::Exact(v), batch)?;
        versions[stream as usize] += n;
        written += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "appended {written} events in batches of {batch}: {:.2} s, {}",
        secs,
        rate(written, secs)
    );

    // 2. Single durable appends: one event, one transaction, one fsync each.
    let singles = 1_000u64;
    let start = Instant::now();
    for i in 0..singles {
        let stream = i % streams;
        let v = versions[stream as usize] + 1;
        writer.append(
            stream,
            v,
            Transfer {
                account: stream,
                amount_cents: 1,
                sequence_in_account: v,
                memo: "single durable append".into(),
            },
        )?;
        versions[stream as usize] = v;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "appended {singles} single events, each durable: {:.2} s, {}",
        secs,
        rate(singles, secs)
    );
    let total = written + singles;
    assert_eq!(storage.head(), total);

    // 3. Full typed scan in transactions renewed every 100 ms.
    let reader = Reader::<Transfer>::new(storage.clone());
    let start = Instant::now();
    let mut sum = 0i64;
    let mut expected_seq = 1;
    reader.for_each_in_log(1, Direction::Forward, |e| {
        assert_eq!(e.seq(), expected_seq, "gap-free global sequence");
        expected_seq += 1;
        sum += e.amount_cents.to_native();
        ControlFlow::Continue(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "scanned {} events (typed, validated, zero-copy): {:.2} s, {} (sum of amounts {sum})",
        expected_seq - 1,
        secs,
        rate(expected_seq - 1, secs)
    );

    // 4. Every stream read by version, checking versions are gap-free.
    let start = Instant::now();
    let mut read = 0u64;
    let txn = storage.env.read_txn()?;
    for stream in 0..streams {
        let mut v = 0;
        for e in reader.read_stream(&txn, stream, 1, Direction::Forward)? {
            let e = e?;
            v += 1;
            assert_eq!(e.version(), v);
            assert_eq!(e.account, stream);
        }
        assert_eq!(v, versions[stream as usize]);
        read += v;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read {streams} streams by version ({read} events): {:.2} s, {}",
        secs,
        rate(read, secs)
    );

    // 5. Random point reads by global sequence.
    let gets = 200_000u64;
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..gets {
        let seq = rng.next() % total + 1;
        if let Some(e) = reader.get(&txn, seq)? {
            found += u64::from(e.account.to_native() < streams);
        }
    }
    drop(txn);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "point reads: {gets} random sequences: {:.2} s, {}",
        secs,
        rate(gets, secs)
    );
    assert_eq!(found, gets);

    let stats = storage.stats();
    let file = std::fs::metadata(storage.path().join("data.mdb"))?.len();
    let listed = reader.streams(&storage.env.read_txn()?)?.count() as u64;
    assert_eq!(listed, streams, "every stream got events");
    println!(
        "store: head {}, {listed} streams, data file {:.1} MiB, map {:.1} MiB after {} resizes, {} unaligned payload copies",
        stats.head,
        file as f64 / (1 << 20) as f64,
        stats.map_size as f64 / (1 << 20) as f64,
        stats.map_resizes,
        stats.unaligned_copies
    );
    let path = storage.path().display().to_string();
    drop(storage);
    println!();
    println!("The store is kept in {path}. Inspect it with the varve tool:");
    for command in [
        format!("info {path}"),
        format!("streams {path} --limit 5"),
        format!("read {path} 0 --limit 5"),
        format!("tail {path} -n 5"),
        format!("verify {path}"),
    ] {
        println!("  cargo run --release -p varve -- {command}");
    }
    Ok(())
}
