//! Encrypted against plain VarveDB, in one run: batched appends, the full typed scan and point
//! reads for events of about 100 bytes and 4 KiB, and the time to rotate the master key of a
//! store with many streams.
//!
//! Both stores get the same events in the same order. Each measurement alternates the two stores
//! `reps` times and keeps the median, so that disk and CPU noise falls on both alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use varvedb::{Direction, ExpectedVersion};
use varvedb::{Durability, Storage, StorageConfig};
use varvedb::{Reader, Writer};

use crate::common::{median, random_seqs, Res, Rng};

/// An event whose archived size is set by its `blob`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct SizedEvent {
    /// The field every typed read touches.
    pub amount: i64,
    /// Filler.
    pub blob: Vec<u8>,
}

/// Sizes of the encryption rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events of the 100-byte rows (the 4 KiB rows write a tenth as many).
    pub events: u64,
    /// Point reads per repetition.
    pub gets: u64,
    /// Alternations of the two stores per measurement.
    pub reps: usize,
    /// Streams of the rotation row.
    pub rotate_streams: u64,
}

/// One row of the table.
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Events/s of the plain store.
    pub plain: f64,
    /// Events/s of the encrypted store.
    pub encrypted: f64,
    /// The target for encrypted/plain, when it sets one.
    pub target: Option<f64>,
}

struct Store {
    storage: Storage,
    _dir: TempDir,
}

const MASTER: [u8; 32] = [0x42; 32];

fn open(encrypted: bool, durability: Durability) -> Res<Store> {
    let dir = tempfile::Builder::new()
        .prefix("varvedb-bench-enc-")
        .tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        encryption_enabled: encrypted,
        master_key: encrypted.then_some(MASTER),
        durability,
        ..Default::default()
    })?;
    Ok(Store { storage, _dir: dir })
}

/// Events/s of `f`, which returns how many events it handled.
fn rate(f: impl FnOnce() -> Res<u64>) -> Res<f64> {
    let t = Instant::now();
    let n = f()?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Where the batches of [`appends`] go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Streams {
    /// Random streams of 1 to 1,000, which [`precreate`] made: the steady state.
    Existing,
    /// A stream never written before per batch: an encrypted store creates its key first.
    New,
}

/// One event in each of the streams 1 to 1,000, so that the steady-state rows do not pay for
/// creating stream keys.
fn precreate(stores: &[Store; 2]) -> Res<()> {
    for store in stores {
        let mut writer = Writer::<SizedEvent>::new(store.storage.clone());
        for stream in 1..=1_000u64 {
            let event = SizedEvent {
                amount: 0,
                blob: Vec::new(),
            };
            writer.append_batch(stream, ExpectedVersion::Any, [event])?;
        }
    }
    Ok(())
}

/// Appends `events` events of `size` bytes in batches of `batch`, in `reps` chunks alternating
/// between the stores; returns the median chunk rate of each.
fn appends(
    stores: &[Store; 2],
    events: u64,
    size: usize,
    batch: u64,
    reps: usize,
    streams: Streams,
) -> Res<[f64; 2]> {
    let mut rates = [Vec::new(), Vec::new()];
    let per_chunk = events / reps as u64;
    let mut writers = stores
        .each_ref()
        .map(|s| Writer::<SizedEvent>::new(s.storage.clone()));
    for chunk in 0..reps {
        for (i, writer) in writers.iter_mut().enumerate() {
            let mut rng = Rng::new(chunk as u64 + 1);
            let r = rate(|| {
                let mut n = 0;
                while n < per_chunk {
                    let stream = match streams {
                        Streams::Existing => rng.below(1_000) + 1,
                        Streams::New => 1_000_000 * (chunk as u64 + 1) + n / batch,
                    };
                    let events = (0..batch).map(|k| SizedEvent {
                        amount: (n + k) as i64,
                        blob: vec![(k % 251) as u8; size],
                    });
                    writer.append_batch(stream, ExpectedVersion::Any, events)?;
                    n += batch;
                }
                Ok(n)
            })?;
            rates[i].push(r);
        }
    }
    Ok(rates.map(|mut r| median(&mut r)))
}

/// The full typed scan (`read_log` in one transaction, touching `amount`), alternated.
fn scans(stores: &[Store; 2], reps: usize) -> Res<[f64; 2]> {
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, store) in stores.iter().enumerate() {
            let reader = Reader::<SizedEvent>::new(store.storage.clone());
            rates[i].push(rate(|| {
                let txn = store.storage.env.read_txn()?;
                let mut sum = 0i64;
                let mut n = 0u64;
                for view in reader.read_log(&txn, 1, Direction::Forward)? {
                    sum = sum.wrapping_add(view?.amount.to_native());
                    n += 1;
                }
                black_box(sum);
                Ok(n)
            })?);
        }
    }
    Ok(rates.map(|mut r| median(&mut r)))
}

/// Random typed point reads (`get`), alternated.
fn gets(stores: &[Store; 2], count: u64, reps: usize) -> Res<[f64; 2]> {
    let head = stores[0].storage.head();
    let seqs = random_seqs(count, head, 7);
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, store) in stores.iter().enumerate() {
            let reader = Reader::<SizedEvent>::new(store.storage.clone());
            rates[i].push(rate(|| {
                let mut sum = 0i64;
                for chunk in seqs.chunks(10_000) {
                    let txn = store.storage.env.read_txn()?;
                    for &seq in chunk {
                        let view = reader.get(&txn, seq)?.ok_or("missing event")?;
                        sum = sum.wrapping_add(view.amount.to_native());
                    }
                }
                black_box(sum);
                Ok(seqs.len() as u64)
            })?);
        }
    }
    Ok(rates.map(|mut r| median(&mut r)))
}

/// The encrypted-versus-plain rows for one event size.
fn rows_for(settings: &Settings, size: usize, label: &str) -> Res<Vec<Row>> {
    // About 1 MB per transaction at 4 KiB, so that both rows move real data per fsync.
    let (events, batch) = if size > 1_000 {
        (settings.events / 4, 250)
    } else {
        (settings.events, 1_000)
    };
    eprintln!("encryption: {label} events, {events} of them");
    let stores = [
        open(false, Durability::Immediate)?,
        open(true, Durability::Immediate)?,
    ];
    precreate(&stores)?;
    let [p, e] = appends(
        &stores,
        events,
        size,
        batch,
        settings.reps.max(5),
        Streams::Existing,
    )?;
    let mut rows = vec![Row {
        name: format!("batched appends, {batch} per txn to existing streams, {label}"),
        plain: p,
        encrypted: e,
        target: Some(0.7),
    }];
    let [p, e] = appends(
        &stores,
        events / 4,
        size,
        batch,
        settings.reps.max(5),
        Streams::New,
    )?;
    rows.push(Row {
        name: format!("the same, each batch to a new stream (its key is created first), {label}"),
        plain: p,
        encrypted: e,
        target: None,
    });
    // The same without fsync: what encryption costs the CPU, without the disk's noise.
    let nosync = Durability::Relaxed {
        sync_interval: None,
    };
    let unsynced = [open(false, nosync)?, open(true, nosync)?];
    precreate(&unsynced)?;
    let [p, e] = appends(
        &unsynced,
        events,
        size,
        batch,
        settings.reps.max(5),
        Streams::Existing,
    )?;
    rows.push(Row {
        name: format!("existing streams without fsync (Durability::Relaxed), {label}"),
        plain: p,
        encrypted: e,
        target: None,
    });
    drop(unsynced);
    let [p, e] = scans(&stores, settings.reps)?;
    rows.push(Row {
        name: format!("full typed scan, {label}"),
        plain: p,
        encrypted: e,
        target: (size < 1_000).then_some(0.3),
    });
    let [p, e] = gets(&stores, settings.gets, settings.reps)?;
    rows.push(Row {
        name: format!("random point reads, {label}"),
        plain: p,
        encrypted: e,
        target: None,
    });
    Ok(rows)
}

/// Creates `streams` streams of one event each in an encrypted store, from many concurrent
/// tasks so that key creation shares keystore transactions, then times one rotation.
/// Returns (setup time, rotation time, keys re-wrapped).
fn rotation(streams: u64) -> Res<(Duration, Duration, u64)> {
    let store = open(
        true,
        Durability::Relaxed {
            sync_interval: None,
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let started = Instant::now();
    const TASKS: u64 = 2_048;
    runtime.block_on(async {
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let mut writer = Writer::<SizedEvent>::new(store.storage.clone());
            handles.push(tokio::spawn(async move {
                let mut s = t;
                while s < streams {
                    let event = SizedEvent {
                        amount: s as i64,
                        blob: Vec::new(),
                    };
                    writer.append_async(s + 1, 1, event).await?;
                    s += TASKS;
                }
                Ok::<(), varvedb::error::Error>(())
            }));
        }
        for h in handles {
            h.await??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let setup = started.elapsed();
    eprintln!("encryption: {streams} streams created in {setup:.1?}; rotating");
    let t = Instant::now();
    let rewrapped = store.storage.rotate_master_key([0x43; 32])?;
    Ok((setup, t.elapsed(), rewrapped))
}

/// Runs every encryption row and renders the table.
pub fn run(settings: &Settings) -> Res<String> {
    let mut rows = rows_for(settings, 80, "100 B")?;
    rows.extend(rows_for(settings, 4_000, "4 KiB")?);
    let (setup, rotate, rewrapped) = rotation(settings.rotate_streams)?;
    let mut out = String::from(
        "\n### Encrypted vs plain (same run)\n\n| workload | plain events/s | encrypted events/s | encrypted / plain | target |\n|---|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let ratio = r.encrypted / r.plain;
        let target = r.target.map_or("".to_string(), |t| {
            format!(
                "≥ {t:.1}× {}",
                if ratio >= t { "(met)" } else { "(missed)" }
            )
        });
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2}× | {} |\n",
            r.name, r.plain, r.encrypted, ratio, target
        ));
    }
    out.push_str(&format!(
        "\nMaster-key rotation with {} streams: {:.2} s ({} keys re-wrapped in one transaction; creating the streams took {:.1} s).\n",
        crate::thousands(settings.rotate_streams),
        rotate.as_secs_f64(),
        crate::thousands(rewrapped),
        setup.as_secs_f64()
    ));
    Ok(out)
}
