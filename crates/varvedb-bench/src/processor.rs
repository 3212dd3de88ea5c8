//! Processors and catch-up subscriptions (VarveDB only, no peers): how fast they catch up on a
//! pre-filled store against VarveDB's own full typed scan of it, and how long a live event takes
//! from its commit to its handler under a paced durable write load.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use varvedb::engine::{EventHandler, Processor, Writer};
use varvedb::subscribe::{Filter, StartFrom, StopHandle, SubscriptionItem};
use varvedb::Envelope;

use crate::common::{
    append_interleaved, interleaved, percentiles, timed, ArchivedBenchEvent, BenchEvent, Plan,
    Rate, Res, Spread,
};
use crate::report::{latency, ratio, Consumer, Live, Report, Workload};
use crate::thousands;
use crate::varve::VarveStore;

/// Sizes of the processor rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events of the pre-filled store (appended 1,000 per `append_batch`).
    pub events: u64,
    /// Streams the fill draws over.
    pub streams: u64,
    /// Repetitions of the catch-up workloads (the median is reported).
    pub reps: usize,
    /// Wall time after which the fill stops starting batches.
    pub write_budget: Duration,
    /// Wall time of each live run.
    pub live_time: Duration,
    /// Appends per second the live writer aims at.
    pub live_rate: u64,
}

const SEED_FILL: u64 = 0x5EED_0006;
/// The processor's default checkpoint interval (`with_checkpoint_every`).
const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;
/// A checkpoint interval that leaves a handful of checkpoint commits in a catch-up run.
const SPARSE_CHECKPOINT_EVERY: u64 = 100_000;
/// How long a live consumer may take to deliver the last events once the writer stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The processor rows: catch-up throughput, then live delivery through a processor and through
/// a subscription, each on its own fresh store; the targets go to the notes.
pub fn rows(s: &Settings, report: &mut Report) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let started = Instant::now();
    let ratios = throughput(s, &runtime, report)?;
    let processor = live(s, &runtime, Feed::Processor, report)?;
    let subscription = live(s, &runtime, Feed::Subscription, report)?;
    notes(s, ratios, [processor, subscription], report);
    eprintln!(
        "processor rows took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Adds the catch-up rows; returns the default processor's and the subscription's ratios to the
/// full typed scan.
fn throughput(s: &Settings, runtime: &Runtime, report: &mut Report) -> Res<[f64; 2]> {
    eprintln!("processor: filling a store with batches of 1,000 ...");
    let store = VarveStore::open()?;
    let plan = Plan::new(s.events, 1_000, Spread::OneStream, s.streams, SEED_FILL);
    let mut appender = store.batch_appender();
    append_interleaved(&plan, s.write_budget, &mut [&mut appender])?;
    let head = store.head();
    store.scan_for_each()?;

    eprintln!("processor: catch-up throughput ...");
    let mut scan = || store.scan_for_each();
    let mut dense = || catch_up_processor(&store, runtime, DEFAULT_CHECKPOINT_EVERY);
    let mut sparse = || catch_up_processor(&store, runtime, SPARSE_CHECKPOINT_EVERY);
    let mut subscription = || catch_up_subscription(&store, runtime);
    let measured = interleaved(
        s.reps,
        &mut [&mut scan, &mut dense, &mut sparse, &mut subscription],
    )?;
    let baseline = measured[0].median;
    let commits = |every: u64| thousands(head.div_ceil(every));
    let names = [
        format!(
            "Full typed scan, warm: {} events, `for_each_in_log` touching a field (the baseline)",
            thousands(head)
        ),
        format!(
            "Processor from checkpoint 0 to the head, handler touching a field, checkpoint every {} events or 1 s (the defaults: at least {} durable checkpoint commits)",
            thousands(DEFAULT_CHECKPOINT_EVERY),
            commits(DEFAULT_CHECKPOINT_EVERY)
        ),
        format!(
            "Processor as above, checkpoint every {} events (at least {} commits): delivery with few checkpoint fsyncs",
            thousands(SPARSE_CHECKPOINT_EVERY),
            commits(SPARSE_CHECKPOINT_EVERY)
        ),
        "Catch-up subscription, `StartFrom::Start` until `CaughtUp`, touching a field (each event copied out of the txn; batches of 256)".to_string(),
    ];
    for (m, name) in measured.iter().zip(names) {
        if m.events != head {
            report.note(format!(
                "WARNING: \"{name}\" delivered {} events instead of {head}",
                m.events
            ));
        }
        report.add(
            Workload::new(name)
                .varvedb(m.median)
                .consumer(Consumer::Throughput { scan: baseline }),
        );
    }
    let vs_scan = |i: usize| measured[i].median / baseline.max(1e-9);
    Ok([vs_scan(1), vs_scan(3)])
}

/// A handler that touches `amount` and stops its processor once it handled `last`.
struct Touch {
    sum: i64,
    events: u64,
    last: u64,
    stop: Arc<OnceLock<StopHandle>>,
}

impl EventHandler<BenchEvent> for Touch {
    fn handle(&mut self, event: &ArchivedBenchEvent) -> varvedb::error::Result<()> {
        self.sum = self.sum.wrapping_add(event.amount.to_native());
        self.events += 1;
        Ok(())
    }

    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        event: &ArchivedBenchEvent,
    ) -> varvedb::error::Result<()> {
        self.handle(event)?;
        if envelope.seq >= self.last {
            if let Some(stop) = self.stop.get() {
                stop.stop();
            }
        }
        Ok(())
    }
}

/// One processor run from checkpoint 0 to the head, timed from `run()` until it returns (the
/// handler stops it at the head; the final checkpoint is committed by then). The checkpoint is
/// reset before the clock starts.
fn catch_up_processor(store: &VarveStore, runtime: &Runtime, every: u64) -> Res<Rate> {
    let name = format!("bench-catch-up-{every}");
    let storage = store.storage();
    storage.reset_processor(&name, 0)?;
    let head = store.head();
    let stop = Arc::new(OnceLock::new());
    let handler = Touch {
        sum: 0,
        events: 0,
        last: head,
        stop: Arc::clone(&stop),
    };
    let mut processor = Processor::new(store.reader(), handler, name, storage.subscribe())
        .with_checkpoint_every(every);
    // Set before `run`: the handler never sees an empty slot.
    let _ = stop.set(processor.stop_handle());
    let rate = timed(|| {
        runtime.block_on(processor.run())?;
        Ok(processor.handler().events)
    })?;
    black_box(processor.handler().sum);
    let checkpoint = processor.checkpoint()?;
    if checkpoint != head {
        return Err(format!("processor stopped with checkpoint {checkpoint}, head {head}").into());
    }
    Ok(rate)
}

/// A catch-up subscription from the start until `CaughtUp`, touching `amount`.
fn catch_up_subscription(store: &VarveStore, runtime: &Runtime) -> Res<Rate> {
    let reader = store.reader();
    timed(|| {
        runtime.block_on(async {
            let mut sub = reader.subscribe(StartFrom::Start, Filter::default())?;
            let (mut sum, mut events) = (0i64, 0u64);
            while let Some(item) = sub.next().await {
                match item? {
                    SubscriptionItem::Event(e) => {
                        sum = sum.wrapping_add(e.amount.to_native());
                        events += 1;
                    }
                    SubscriptionItem::CaughtUp => break,
                }
            }
            black_box(sum);
            Ok(events)
        })
    })
}

/// Who consumes the log in a live run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    Processor,
    Subscription,
}

/// Nanoseconds since the Unix epoch, the clock of the envelope's `timestamp_ns`.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// When a live consumer got an event: its sequence, its envelope's `timestamp_ns`, and the wall
/// time (ns since the epoch) of the handler call or of `next()` returning.
type Sample = (u64, u64, u64);

/// A handler that records, per event, its commit timestamp and the wall time of its call.
struct Clock {
    samples: Vec<Sample>,
    seen: Arc<AtomicU64>,
    sum: i64,
}

impl EventHandler<BenchEvent> for Clock {
    fn handle(&mut self, event: &ArchivedBenchEvent) -> varvedb::error::Result<()> {
        self.sum = self.sum.wrapping_add(event.amount.to_native());
        Ok(())
    }

    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        event: &ArchivedBenchEvent,
    ) -> varvedb::error::Result<()> {
        let now = wall_ns();
        self.samples
            .push((envelope.seq, envelope.timestamp_ns, now));
        self.seen.store(envelope.seq, Ordering::Release);
        self.handle(event)
    }
}

/// A live consumer running on the runtime: how to stop it, and its task, which returns what it
/// got when.
struct Running {
    stop: Box<dyn FnOnce()>,
    task: JoinHandle<Result<Vec<Sample>, String>>,
}

/// Starts `feed` on a fresh, empty store; `seen` follows the last sequence it delivered.
fn start(
    feed: Feed,
    store: &VarveStore,
    runtime: &Runtime,
    seen: &Arc<AtomicU64>,
    capacity: usize,
) -> Running {
    let seen = Arc::clone(seen);
    match feed {
        Feed::Processor => {
            let clock = Clock {
                samples: Vec::with_capacity(capacity),
                seen,
                sum: 0,
            };
            let mut processor = Processor::new(
                store.reader(),
                clock,
                "bench-live",
                store.storage().subscribe(),
            );
            let stop = processor.stop_handle();
            let task = runtime.spawn(async move {
                processor.run().await.map_err(|e| e.to_string())?;
                black_box(processor.handler().sum);
                Ok(processor.handler().samples.clone())
            });
            Running {
                stop: Box::new(move || stop.stop()),
                task,
            }
        }
        Feed::Subscription => {
            let reader = store.reader();
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let task = runtime.spawn(async move {
                let mut sub = reader
                    .subscribe(StartFrom::Start, Filter::default())
                    .map_err(|e| e.to_string())?;
                let mut samples = Vec::with_capacity(capacity);
                let mut sum = 0i64;
                loop {
                    tokio::select! {
                        item = sub.next() => match item {
                            Some(Ok(SubscriptionItem::Event(e))) => {
                                let now = wall_ns();
                                samples.push((e.seq(), e.envelope().timestamp_ns, now));
                                sum = sum.wrapping_add(e.amount.to_native());
                                seen.store(e.seq(), Ordering::Release);
                            }
                            Some(Ok(SubscriptionItem::CaughtUp)) => {}
                            Some(Err(e)) => return Err(e.to_string()),
                            None => break,
                        },
                        _ = &mut stopped => break,
                    }
                }
                black_box(sum);
                Ok(samples)
            });
            Running {
                stop: Box::new(move || {
                    let _ = stop.send(());
                }),
                task,
            }
        }
    }
}

/// What a live run measured, for the notes.
#[derive(Clone, Copy, Debug)]
struct LiveRun {
    feed: Feed,
    appends_per_sec: f64,
    live: Live,
}

/// One live row: a fresh store, `feed` consuming it, and an open-loop durable write load: this
/// thread spawns, every `1 / live_rate` s (absolute deadlines; a late one goes at once), a task
/// that appends one event with `append_async` to a new stream, for `live_time`. Then waits for
/// the appends and for the consumer to deliver the last event, stops it, and reads each appended
/// event's commit timestamp back.
fn live(s: &Settings, runtime: &Runtime, feed: Feed, report: &mut Report) -> Res<LiveRun> {
    eprintln!(
        "processor: live delivery via {feed:?}, {} appends/s for {} s ...",
        s.live_rate,
        s.live_time.as_secs()
    );
    let store = VarveStore::open()?;
    let planned = (s.live_rate as f64 * s.live_time.as_secs_f64()) as usize;
    let seen = Arc::new(AtomicU64::new(0));
    let running = start(feed, &store, runtime, &seen, planned);
    // Let the consumer reach its wait on the head before the first append.
    std::thread::sleep(Duration::from_millis(50));

    let writer = Writer::<BenchEvent>::new(store.storage().clone());
    let period = Duration::from_nanos(1_000_000_000 / s.live_rate.max(1));
    let before = store.storage().stats();
    let mut appends = Vec::with_capacity(planned);
    let started = Instant::now();
    let end = started + s.live_time;
    let mut due = started;
    let mut stream = 0u64;
    while due < end && Instant::now() < end {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream += 1;
        let mut writer = writer.clone();
        appends.push(runtime.spawn(async move {
            let t = Instant::now();
            let seq = writer
                .append_async(stream, 1, BenchEvent::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((seq, t.elapsed().as_nanos() as u64, wall_ns()))
        }));
        due += period;
    }
    let returned = runtime.block_on(async {
        let mut returned = Vec::with_capacity(appends.len());
        for append in appends {
            returned.push(append.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(returned)
    })?;
    let elapsed = started.elapsed();
    let after = store.storage().stats();

    let head = store.head();
    let drain = Instant::now() + DRAIN_TIMEOUT;
    while seen.load(Ordering::Acquire) < head && Instant::now() < drain {
        std::thread::sleep(Duration::from_millis(1));
    }
    (running.stop)();
    let samples = runtime.block_on(running.task)??;

    let reader = store.reader();
    let txn = store.storage().env.read_txn()?;
    let mut calls = Vec::with_capacity(returned.len());
    let mut durable = Vec::with_capacity(returned.len());
    let mut returned_at = HashMap::with_capacity(returned.len());
    for &(seq, call, at) in &returned {
        let envelope = reader
            .envelope(&txn, seq)?
            .ok_or_else(|| format!("appended event {seq} is missing"))?;
        calls.push(call);
        durable.push(at.saturating_sub(envelope.timestamp_ns));
        returned_at.insert(seq, at);
    }
    drop(txn);
    let mut delivery: Vec<u64> = samples
        .iter()
        .map(|&(_, ts, now)| now.saturating_sub(ts))
        .collect();
    let mut after_return: Vec<u64> = samples
        .iter()
        .filter_map(|&(seq, _, now)| Some(now.saturating_sub(*returned_at.get(&seq)?)))
        .collect();

    let appended = returned.len() as u64;
    let appends_per_sec = appended as f64 / elapsed.as_secs_f64().max(1e-9);
    let commits = after.commits - before.commits;
    let live = Live {
        appended,
        delivered: samples.len() as u64,
        append: percentiles(&mut calls),
        durable: percentiles(&mut durable),
        delivery: percentiles(&mut delivery),
        after_return: percentiles(&mut after_return),
    };
    eprintln!(
        "    {appends_per_sec:.0} appends/s in {commits} commits; append {}; commit → returned {}; commit → delivered {}; returned → delivered {}",
        latency(live.append),
        latency(live.durable),
        latency(live.delivery),
        latency(live.after_return)
    );
    let load = format!(
        "load: 1 `append_async` of 1 event (to a new stream) started every {} µs, durable; {} appends in {} commits",
        period.as_micros(),
        thousands(appended),
        thousands(commits)
    );
    let name = match feed {
        Feed::Processor => format!(
            "Processor (checkpoint every {}, the default), handler records now − envelope `timestamp_ns`; {load}",
            thousands(DEFAULT_CHECKPOINT_EVERY)
        ),
        Feed::Subscription => format!(
            "Catch-up subscription from the start, now − `timestamp_ns` when `next()` returns; {load}"
        ),
    };
    if live.delivered != live.appended {
        report.note(format!(
            "WARNING: {feed:?} delivered {} of {} live events within {} s after the writer stopped",
            live.delivered,
            live.appended,
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    report.add(
        Workload::new(name)
            .varvedb(appends_per_sec)
            .consumer(Consumer::Live(live)),
    );
    Ok(LiveRun {
        feed,
        appends_per_sec,
        live,
    })
}

/// The notes on the processor rows, with the targets.
fn notes(s: &Settings, ratios: [f64; 2], live: [LiveRun; 2], report: &mut Report) {
    report.note(format!(
        "Processor catch-up: one store filled with `append_batch` of 1,000 events, warmed by a scan; the four rows run interleaved, median of {} repetitions (`--reps`), ratios to the scan row of this run. Processors run on a tokio runtime with 2 workers (the handler on its blocking pool); each run starts from checkpoint 0 (`reset_processor`, outside the clock) and is timed from `run()` until it returns, its handler having stopped it at the head (the final checkpoint committed). Every checkpoint commit while events flow is a durable write transaction (one fsync), at most every 1 s (`with_checkpoint_interval`) or every `with_checkpoint_every` events, so the default row depends on the disk's fsync time.",
        s.reps
    ));
    report.note(format!(
        "Live delivery: a fresh store per row; the consumer waits on the head before the load starts. The load is open-loop for {} s: every {} µs (absolute deadlines from the start; a late one goes at once) a thread spawns a task on the 2-worker runtime that calls `append_async` once, one event, durable; appends in flight at once share a commit (group commit), so the rate holds when an fsync takes longer than the period. Latencies are wall-clock (`SystemTime`) differences to the envelope's `timestamp_ns`, which the append takes inside its write transaction before the commit and its fsync: \"commit timestamp → append returned\" is that commit and fsync alone, as the appender sees it; \"commit timestamp → delivered\" includes it too; \"append returned → delivered\" is what the consumer adds after the appender learned its event was durable (0 when the consumer got it first; the head is published just before appenders are told). When the processor catches up, its checkpoint rides along with the next committed append group (no fsync of its own) or is committed by the store's commit thread after 50 ms without appends; the subscription writes nothing.",
        s.live_time.as_secs(),
        1_000_000 / s.live_rate.max(1)
    ));
    for run in &live {
        if run.appends_per_sec < 0.95 * s.live_rate as f64 {
            report.note(format!(
                "WARNING: the {:?} row's writer achieved {:.0} appends/s of the {} asked for: appends were slower than the period.",
                run.feed, run.appends_per_sec, s.live_rate
            ));
        }
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let p99 = |run: &LiveRun| {
        run.live.delivery.map_or_else(
            || "not measured".into(),
            |l| {
                format!(
                    "{} ({})",
                    latency(Some(l)),
                    verdict(l.p99 < Duration::from_millis(1))
                )
            },
        )
    };
    let [processor, subscription] = &live;
    report.note(format!(
        "Issue targets: processor catch-up ≥ 0.5× the full typed scan: measured {} with the default checkpoint interval ({}); subscription catch-up: {}. Commit → handler p99 < 1 ms under a durable write load of {} appends/s: processor {} at {:.0} appends/s, subscription {} at {:.0} appends/s (p50 / p99 (max), ms).",
        ratio(Some(ratios[0])),
        verdict(ratios[0] >= 0.5),
        ratio(Some(ratios[1])),
        thousands(s.live_rate),
        p99(processor),
        processor.appends_per_sec,
        p99(subscription),
        subscription.appends_per_sec,
    ));
}
