//! Filtered reads: a catch-up subscription to a few streams of a large log, which a reader must
//! find without paying for the events of the others.
//!
//! One store per kind (plain, encrypted) holds `events` events of about 100 bytes over `streams`
//! streams, 100 consecutive events to one stream per append. Subscriptions from the start with a
//! stream filter of 1% and of 10% of the streams are read to `CaughtUp`; so is one without a
//! filter, for reference. Each is run `reps` times, alternating, and the median kept: the time to
//! `CaughtUp`, and as a rate, events of the log per second (the log is what the subscription
//! has to cover), next to the events delivered.

use std::time::Instant;

use tempfile::TempDir;
use varvedb::{Durability, ExpectedVersion, Storage, StorageConfig, Writer};
use varvedb::{Filter, Reader, StartFrom, SubscriptionItem};

use crate::common::{median, BenchEvent, Res};

/// Sizes of the filtered rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events in each store.
    pub events: u64,
    /// Streams they are spread over; the filter names 1% of them.
    pub streams: u64,
    /// Runs of each subscription.
    pub reps: usize,
}

const MASTER: [u8; 32] = [0x24; 32];

/// A filled store and the directory it lives in.
struct Filled {
    storage: Storage,
    _dir: TempDir,
}

fn fill(s: &Settings, encrypted: bool) -> Res<Filled> {
    let dir = tempfile::Builder::new()
        .prefix("varvedb-bench-filtered-")
        .tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        encryption_enabled: encrypted,
        master_key: encrypted.then_some(MASTER),
        // Filling is not what is measured: sync once at the end.
        durability: Durability::Relaxed {
            sync_interval: None,
        },
        ..Default::default()
    })?;
    let mut writer = Writer::<BenchEvent>::new(storage.clone());
    let per_batch = 100u64;
    let mut written = 0u64;
    while written < s.events {
        let n = per_batch.min(s.events - written);
        let stream = (written / per_batch) % s.streams;
        let batch: Vec<BenchEvent> = (0..n).map(|i| BenchEvent::new(written + i)).collect();
        writer.append_batch(stream, ExpectedVersion::Any, batch)?;
        written += n;
    }
    storage.sync()?;
    Ok(Filled { storage, _dir: dir })
}

/// Reads a subscription to `CaughtUp`; returns the seconds it took and the events delivered.
fn catch_up(storage: &Storage, filter: Filter) -> Res<(f64, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let reader = Reader::<BenchEvent>::new(storage.clone());
    let started = Instant::now();
    let mut sub = reader.subscribe(StartFrom::Start, filter)?;
    let delivered = runtime.block_on(async {
        let mut delivered = 0u64;
        loop {
            match sub.next().await {
                Some(Ok(SubscriptionItem::Event(_))) => delivered += 1,
                Some(Ok(SubscriptionItem::CaughtUp)) => return Ok(delivered),
                Some(Err(e)) => return Err(e),
                None => return Ok(delivered),
            }
        }
    })?;
    Ok((started.elapsed().as_secs_f64(), delivered))
}

/// A filter of every `step`th stream.
fn every(streams: u64, step: usize) -> Filter {
    (0..streams)
        .step_by(step)
        .fold(Filter::default(), |f, stream| f.stream(stream))
}

/// Runs the rows and returns their table.
pub fn run(s: &Settings) -> Res<String> {
    let mut out = String::from(
        "\n### Filtered catch-up subscriptions (same run)\n\n| store | subscription | ms to CaughtUp | log events/s | events delivered |\n|---|---|---:|---:|---:|\n",
    );
    let kinds: [(&str, Option<usize>); 3] = [
        ("1% of the streams", Some(100)),
        ("10% of the streams", Some(10)),
        ("every stream", None),
    ];
    for encrypted in [false, true] {
        eprintln!(
            "filtered: filling a {} store with {} events",
            if encrypted { "encrypted" } else { "plain" },
            s.events
        );
        let store = fill(s, encrypted)?;
        let kind = if encrypted { "encrypted" } else { "plain" };
        let mut secs = vec![Vec::new(); kinds.len()];
        let mut delivered = vec![0; kinds.len()];
        for _ in 0..s.reps {
            for (i, (_, step)) in kinds.iter().enumerate() {
                let filter = step.map_or_else(Filter::default, |step| every(s.streams, step));
                let (took, n) = catch_up(&store.storage, filter)?;
                secs[i].push(took);
                delivered[i] = n;
            }
        }
        for (i, (name, _)) in kinds.iter().enumerate() {
            let took = median(&mut secs[i]);
            out.push_str(&format!(
                "| {kind} | {name} | {:.1} | {:.0} | {} |\n",
                took * 1e3,
                s.events as f64 / took,
                delivered[i]
            ));
        }
    }
    Ok(out)
}
