//! The main job: writes a real workload into a fresh store and reads it back, printing what it did.
//!
//! ```text
//! cargo run --release --example workload [-- EVENTS STREAMS]
//! ```
//!
//! Defaults: 1,000,000 events over 10,000 streams, in batches of 100 events per stream, from a
//! 16 MiB initial map (so the map grows several times), then 1,000 single durable appends, a
//! full typed scan, every stream read by version, and 200,000 random point reads.

use std::ops::ControlFlow;
use std::time::Instant;

use varvedb::engine::{Reader, Writer};
use varvedb::storage::{Storage, StorageConfig};
use varvedb::{Direction, ExpectedVersion};

/// An account event of about 100 serialized bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let streams: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let batch = 100u64;
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        map_size: 16 << 20,
        ..Default::default()
    })?;
    println!(
        "VarveDB workload: {events} events over {streams} streams, store in {}",
        storage.path().display()
    );

    // 1. Batched appends: each batch is 100 events to one stream, durable on return.
    let mut writer = Writer::<Transfer>::new(storage.clone());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut versions = vec![0u64; streams as usize];
    let start = Instant::now();
    let mut written = 0u64;
    while written < events {
        let stream = rng.next() % streams;
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
    println!(
        "store: head {}, {} streams, data file {:.1} MiB, map {:.1} MiB after {} resizes, {} unaligned payload copies",
        stats.head,
        reader.streams(&storage.env.read_txn()?)?.count(),
        file as f64 / (1 << 20) as f64,
        stats.map_size as f64 / (1 << 20) as f64,
        stats.map_resizes,
        stats.unaligned_copies
    );
    Ok(())
}
