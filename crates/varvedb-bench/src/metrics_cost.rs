//! What recording metrics costs: appends (and a scan) with a Prometheus recorder in force
//! against no recorder at all, in one run.
//!
//! Two stores with the same configuration get the same events in the same order. The "on" store
//! is only ever used inside `metrics::with_local_recorder` with a `PrometheusRecorder`, bucketed
//! as `varvedb::metrics::serve_prometheus` buckets it; the "off" store runs with no recorder, as
//! in an application that installs none. Each measurement alternates the two (off, on, then on,
//! off, ...) `reps` times and keeps the medians; the recorder's upkeep (what a scrape does) runs
//! between rounds, outside the timing.
//!
//! Rows, cheapest append first, since the cost of recording is per append and per commit:
//!
//! 1. single-event appends without fsync (`Durability::Relaxed`): the worst case, where an
//!    append costs a few microseconds and recording is the largest share of it;
//! 2. batches of 100 events without fsync;
//! 3. single-event durable appends (fsync each, the default): what most applications see;
//! 4. the full typed scan of the log: reads are counted per transaction, not per event.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tempfile::TempDir;
use varvedb::{Direction, ExpectedVersion};
use varvedb::{Durability, Storage, StorageConfig};
use varvedb::{Reader, Writer};

use crate::common::{median, BenchEvent, Res, Rng};

/// Sizes of the metrics rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events of the single-append row without fsync, over all rounds (the batched row writes
    /// 10 times as many).
    pub events: u64,
    /// Events of the durable single-append row, over all rounds.
    pub durable: u64,
    /// Alternations of the two stores per measurement (at least 3, made odd). Many short rounds
    /// rather than a few long ones, so that the noise of a shared machine falls on both alike.
    pub reps: usize,
}

/// The target: appends with metrics on within 5% of appends with them off.
const TARGET: f64 = 0.95;
/// Streams the events are drawn over.
const STREAMS: u64 = 1_000;

struct Store {
    storage: Storage,
    writer: Writer<BenchEvent>,
    rng: Rng,
    written: u64,
    _dir: TempDir,
}

fn open(durability: Durability) -> Res<Store> {
    let dir = tempfile::Builder::new()
        .prefix("varvedb-bench-metrics-")
        .tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        durability,
        ..Default::default()
    })?;
    Ok(Store {
        writer: Writer::new(storage.clone()),
        storage,
        rng: Rng::new(0x5EED_0777),
        written: 0,
        _dir: dir,
    })
}

impl Store {
    /// Appends `events` events in batches of `batch` to random streams; returns the count.
    fn append(&mut self, events: u64, batch: u64) -> Res<u64> {
        let mut done = 0;
        while done < events {
            let n = batch.min(events - done);
            let stream = self.rng.below(STREAMS) + 1;
            let first = self.written;
            self.writer.append_batch(
                stream,
                ExpectedVersion::Any,
                (0..n).map(|i| BenchEvent::new(first + i)),
            )?;
            self.written += n;
            done += n;
        }
        Ok(done)
    }

    /// Scans the whole log, touching a field of each event; returns the count.
    fn scan(&self) -> Res<u64> {
        let reader = Reader::<BenchEvent>::new(self.storage.clone());
        let mut sum = 0i64;
        let n = reader.for_each_in_log(1, Direction::Forward, |e| {
            sum = sum.wrapping_add(e.amount.to_native());
            ControlFlow::Continue(())
        })?;
        black_box(sum);
        Ok(n)
    }
}

/// A recorder like the one `serve_prometheus` installs, without its HTTP listener.
fn recorder() -> Res<PrometheusRecorder> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(varvedb::metrics::COMMIT_GROUP_BATCHES.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )?
        .build_recorder())
}

/// One measured row: events/s with metrics off and on.
struct Row {
    name: String,
    off: f64,
    on: f64,
}

/// Runs `f` on the "off" store without a recorder and on the "on" store with `recorder`,
/// alternating, and returns the median events/s of each.
fn measure(
    reps: usize,
    recorder: &PrometheusRecorder,
    off: &mut Store,
    on: &mut Store,
    mut f: impl FnMut(&mut Store) -> Res<u64>,
) -> Res<(f64, f64)> {
    let mut rates = [Vec::new(), Vec::new()];
    let mut timed = |store: &mut Store, with: Option<&PrometheusRecorder>| -> Res<f64> {
        let started = Instant::now();
        let n = match with {
            Some(r) => metrics::with_local_recorder(r, || f(store))?,
            None => f(store)?,
        };
        Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
    };
    for rep in 0..reps.max(3) {
        if rep % 2 == 0 {
            rates[0].push(timed(off, None)?);
            rates[1].push(timed(on, Some(recorder))?);
        } else {
            rates[1].push(timed(on, Some(recorder))?);
            rates[0].push(timed(off, None)?);
        }
        recorder.handle().run_upkeep();
    }
    Ok((median(&mut rates[0]), median(&mut rates[1])))
}

/// Runs the rows and returns them as a markdown section.
pub fn run(s: &Settings) -> Res<String> {
    let recorder = recorder()?;
    let reps = s.reps.max(3) | 1;
    let per_round = |events: u64| (events / reps as u64).max(100);
    let mut rows = Vec::new();
    let relaxed = Durability::Relaxed {
        sync_interval: None,
    };

    eprintln!("metrics: single appends without fsync ...");
    let (mut off, mut on) = (open(relaxed)?, open(relaxed)?);
    // Warm both up (map pages, allocator, handle registration).
    off.append(1_000, 1)?;
    metrics::with_local_recorder(&recorder, || on.append(1_000, 1))?;
    let (a, b) = measure(reps, &recorder, &mut off, &mut on, |st| {
        st.append(per_round(s.events), 1)
    })?;
    rows.push(Row {
        name: format!(
            "Single-event appends, no fsync (`Durability::Relaxed`), {} per round",
            crate::thousands(per_round(s.events))
        ),
        off: a,
        on: b,
    });

    eprintln!("metrics: batches of 100 without fsync ...");
    let (a, b) = measure(reps, &recorder, &mut off, &mut on, |st| {
        st.append(per_round(s.events * 10), 100)
    })?;
    rows.push(Row {
        name: format!(
            "Batches of 100 events, no fsync, {} events per round",
            crate::thousands(per_round(s.events * 10))
        ),
        off: a,
        on: b,
    });

    eprintln!("metrics: full typed scan ...");
    let (a, b) = measure(reps, &recorder, &mut off, &mut on, |st| st.scan())?;
    rows.push(Row {
        name: format!(
            "Full typed scan (`for_each_in_log`), {} events",
            crate::thousands(off.written)
        ),
        off: a,
        on: b,
    });
    drop((off, on));

    eprintln!("metrics: durable single appends ...");
    let (mut off, mut on) = (open(Durability::Immediate)?, open(Durability::Immediate)?);
    let (a, b) = measure(reps, &recorder, &mut off, &mut on, |st| {
        st.append(per_round(s.durable), 1)
    })?;
    rows.push(Row {
        name: format!(
            "Single-event durable appends (fsync each), {} per round",
            crate::thousands(per_round(s.durable))
        ),
        off: a,
        on: b,
    });
    Ok(render(&rows, reps))
}

fn render(rows: &[Row], reps: usize) -> String {
    let mut out = String::from(
        "\n## Metrics recording: on (Prometheus recorder) vs off (no recorder)\n\n\
         | workload | off, events/s | on, events/s | on / off | on − off, ns per event | target |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let ratio = row.on / row.off;
        let verdict = if ratio >= TARGET {
            "within 5%"
        } else {
            "MISSED (more than 5% slower)"
        };
        let extra_ns = 1e9 / row.on - 1e9 / row.off;
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} | {extra_ns:.0} | {verdict} |\n",
            row.name, row.off, row.on, ratio
        ));
    }
    out.push_str(&format!(
        "\nMedians of {reps} alternating rounds per row; both stores get the same events in the \
         same order. Ratios above 1, and negative costs, are noise.\n"
    ));
    out
}
