//! Metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! VarveDB records what it does (appends, commits, reads, damaged records, map size, processor
//! lag, key cache use) with the `metrics` crate's facade and installs no recorder of its own: an
//! application that installs none pays next to nothing, and one that installs any `metrics`
//! recorder (Prometheus, StatsD, OpenTelemetry bridges, ...) gets them all. With the cargo feature
//! `prometheus`, `serve_prometheus` installs one and serves it over HTTP in one line.
//!
//! Every metric is named here as a constant and listed, with its type, labels and meaning, in
//! `docs/metrics.md`. Each carries a `path` label: the canonical directory of the store it
//! belongs to.
//!
//! # Where the numbers come from
//!
//! - Appends are recorded once per commit group (events, bytes, batches, commit latency, group
//!   size) and once per `append`/`append_batch` call (its latency, or its error by kind).
//! - Reads are counted in the read transaction and published when it ends, never per event.
//! - Values the store already keeps in counters of its own (map size and use, resizes,
//!   unaligned copies, key cache hits and misses, shredded streams, processor checkpoints and
//!   lag, the head) are published by [`refresh`], which `serve_prometheus` runs every second.
//!   With a recorder of your own, call [`refresh`] before each scrape or on a timer.
//!
//! Metric handles are registered with the recorder in force when a store first records
//! something, and registered again whenever another recorder is in force (a global one installed
//! later, or a thread's local one): installing the recorder after opening stores is fine.
//!
//! ```
//! use varvedb::storage::{Storage, StorageConfig};
//! use varvedb::engine::Writer;
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! pub struct Ping { pub n: u32 }
//!
//! # let dir = tempfile::tempdir()?;
//! // No recorder installed: recording is a no-op and nothing else changes.
//! let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
//! Writer::<Ping>::new(storage.clone()).append(1, 1, Ping { n: 1 })?;
//! varvedb::metrics::refresh();
//! assert_eq!(varvedb::metrics::APPENDED_EVENTS, "varvedb_appended_events_total");
//! # Ok::<(), varvedb::error::Error>(())
//! ```

use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use crate::error::{Error, Result};
use crate::log::append::Request;
use crate::storage::{Env, Shared, Storage};
use crate::types::Appended;

/// Counter: events appended (written, not deduplicated retries).
pub const APPENDED_EVENTS: &str = "varvedb_appended_events_total";
/// Counter: record bytes appended (headers, type names, payloads, padding).
pub const APPENDED_BYTES: &str = "varvedb_appended_bytes_total";
/// Counter: batches (`append` or `append_batch` calls) appended.
pub const APPENDED_BATCHES: &str = "varvedb_appended_batches_total";
/// Counter: batches recognised as exact retries of stored events: nothing written.
pub const DEDUPLICATED_BATCHES: &str = "varvedb_deduplicated_batches_total";
/// Counter: appends refused by the optimistic concurrency check (`Error::ConcurrencyConflict`).
pub const APPEND_CONFLICTS: &str = "varvedb_append_conflicts_total";
/// Counter: failed appends, by error `kind` (conflicts included).
pub const APPEND_ERRORS: &str = "varvedb_append_errors_total";
/// Histogram: seconds from an `append`/`append_batch` call to its durable return (successes).
pub const APPEND_DURATION: &str = "varvedb_append_duration_seconds";
/// Counter: write transactions committed for appends: one fsync each with
/// `Durability::Immediate`.
pub const COMMITS: &str = "varvedb_commits_total";
/// Histogram: seconds to commit one group (keys, transaction, fsync).
pub const COMMIT_DURATION: &str = "varvedb_commit_duration_seconds";
/// Histogram: batches carried by one committed transaction (the commit group size).
pub const COMMIT_GROUP_BATCHES: &str = "varvedb_commit_group_batches";
/// Counter: events read, by `kind` (`get`, `envelope`, `last_in_stream`, `stream`, `log`).
pub const READ_EVENTS: &str = "varvedb_read_events_total";
/// Counter: reads that found a damaged record (`Error::Corrupted`): a failed checksum, or an
/// index that disagrees with the log.
pub const CHECKSUM_FAILURES: &str = "varvedb_checksum_failures_total";
/// Counter: reads of encrypted records that failed authentication (`Error::Decryption`).
pub const DECRYPTION_FAILURES: &str = "varvedb_decryption_failures_total";
/// Counter: payloads copied because they were misaligned in the map (the zero-copy fallback).
pub const UNALIGNED_COPIES: &str = "varvedb_unaligned_copies_total";
/// Gauge: global sequence of the last committed event.
pub const HEAD: &str = "varvedb_head_sequence";
/// Gauge: size of the memory map in bytes.
pub const MAP_SIZE: &str = "varvedb_map_size_bytes";
/// Gauge: bytes of the map in use.
pub const USED_BYTES: &str = "varvedb_used_bytes";
/// Counter: times this process grew the map.
pub const MAP_RESIZES: &str = "varvedb_map_resizes_total";
/// Gauge: open catch-up subscriptions.
pub const SUBSCRIPTIONS: &str = "varvedb_subscriptions";
/// Gauge: shredded streams (encrypted stores).
pub const SHREDDED_STREAMS: &str = "varvedb_shredded_streams";
/// Counter: stream keys found in the key cache (encrypted stores).
pub const KEY_CACHE_HITS: &str = "varvedb_key_cache_hits_total";
/// Counter: stream keys read from the keystore and unwrapped (encrypted stores).
pub const KEY_CACHE_MISSES: &str = "varvedb_key_cache_misses_total";
/// Gauge: committed checkpoint of each `processor`, a global sequence.
pub const PROCESSOR_CHECKPOINT: &str = "varvedb_processor_checkpoint_sequence";
/// Gauge: events of the log after each `processor`'s committed checkpoint (head − checkpoint).
pub const PROCESSOR_LAG: &str = "varvedb_processor_lag_events";

/// Every metric VarveDB records, by name.
pub const ALL: &[&str] = &[
    APPENDED_EVENTS,
    APPENDED_BYTES,
    APPENDED_BATCHES,
    DEDUPLICATED_BATCHES,
    APPEND_CONFLICTS,
    APPEND_ERRORS,
    APPEND_DURATION,
    COMMITS,
    COMMIT_DURATION,
    COMMIT_GROUP_BATCHES,
    READ_EVENTS,
    CHECKSUM_FAILURES,
    DECRYPTION_FAILURES,
    UNALIGNED_COPIES,
    HEAD,
    MAP_SIZE,
    USED_BYTES,
    MAP_RESIZES,
    SUBSCRIPTIONS,
    SHREDDED_STREAMS,
    KEY_CACHE_HITS,
    KEY_CACHE_MISSES,
    PROCESSOR_CHECKPOINT,
    PROCESSOR_LAG,
];

/// Describes every metric (type, unit, help text) to the recorder in force. VarveDB calls it
/// whenever it registers its metrics with a recorder; call it yourself to have the descriptions
/// before any store is opened.
pub fn describe() {
    describe_counter!(
        APPENDED_EVENTS,
        Unit::Count,
        "Events appended (deduplicated retries excluded)."
    );
    describe_counter!(APPENDED_BYTES, Unit::Bytes, "Record bytes appended.");
    describe_counter!(
        APPENDED_BATCHES,
        Unit::Count,
        "Batches (append or append_batch calls) appended."
    );
    describe_counter!(
        DEDUPLICATED_BATCHES,
        Unit::Count,
        "Batches found to be exact retries of stored events; nothing written."
    );
    describe_counter!(
        APPEND_CONFLICTS,
        Unit::Count,
        "Appends refused by the optimistic concurrency check."
    );
    describe_counter!(
        APPEND_ERRORS,
        Unit::Count,
        "Failed appends, by error kind (conflicts included)."
    );
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Time from an append call to its durable return."
    );
    describe_counter!(
        COMMITS,
        Unit::Count,
        "Write transactions committed for appends (one fsync each with immediate durability)."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to commit one group: keys, transaction and fsync."
    );
    describe_histogram!(
        COMMIT_GROUP_BATCHES,
        Unit::Count,
        "Batches carried by one committed transaction."
    );
    describe_counter!(READ_EVENTS, Unit::Count, "Events read, by kind of read.");
    describe_counter!(
        CHECKSUM_FAILURES,
        Unit::Count,
        "Reads that found a damaged record (failed checksum or inconsistent index)."
    );
    describe_counter!(
        DECRYPTION_FAILURES,
        Unit::Count,
        "Reads of encrypted records that failed authentication."
    );
    describe_counter!(
        UNALIGNED_COPIES,
        Unit::Count,
        "Payloads copied because they were misaligned in the map."
    );
    describe_gauge!(
        HEAD,
        Unit::Count,
        "Global sequence of the last committed event."
    );
    describe_gauge!(MAP_SIZE, Unit::Bytes, "Size of the memory map.");
    describe_gauge!(USED_BYTES, Unit::Bytes, "Bytes of the memory map in use.");
    describe_counter!(
        MAP_RESIZES,
        Unit::Count,
        "Times this process grew the memory map."
    );
    describe_gauge!(SUBSCRIPTIONS, Unit::Count, "Open catch-up subscriptions.");
    describe_gauge!(
        SHREDDED_STREAMS,
        Unit::Count,
        "Shredded streams (encrypted stores)."
    );
    describe_counter!(
        KEY_CACHE_HITS,
        Unit::Count,
        "Stream keys found in the key cache."
    );
    describe_counter!(
        KEY_CACHE_MISSES,
        Unit::Count,
        "Stream keys read from the keystore and unwrapped."
    );
    describe_gauge!(
        PROCESSOR_CHECKPOINT,
        Unit::Count,
        "Committed checkpoint of a processor (a global sequence)."
    );
    describe_gauge!(
        PROCESSOR_LAG,
        Unit::Count,
        "Events of the log after a processor's committed checkpoint."
    );
}

/// Kinds of reads, the `kind` label of [`READ_EVENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadKind {
    Get = 0,
    Envelope = 1,
    LastInStream = 2,
    Stream = 3,
    Log = 4,
}

const READ_KINDS: [&str; 5] = ["get", "envelope", "last_in_stream", "stream", "log"];

/// The metric handles of one store, registered with one recorder.
struct Handles {
    appended_events: Counter,
    appended_bytes: Counter,
    appended_batches: Counter,
    deduplicated_batches: Counter,
    conflicts: Counter,
    append_duration: Histogram,
    commits: Counter,
    commit_duration: Histogram,
    group_batches: Histogram,
    reads: [Counter; 5],
    checksum_failures: Counter,
    decryption_failures: Counter,
    unaligned_copies: Counter,
    head: Gauge,
    map_size: Gauge,
    used_bytes: Gauge,
    map_resizes: Counter,
    subscriptions: Gauge,
    shredded_streams: Gauge,
    key_cache_hits: Counter,
    key_cache_misses: Counter,
}

impl Handles {
    fn register(path: &str) -> Handles {
        let p = || ("path", path.to_string());
        let read =
            |kind: &'static str| counter!(READ_EVENTS, "path" => path.to_string(), "kind" => kind);
        Handles {
            appended_events: counter!(APPENDED_EVENTS, &[p()]),
            appended_bytes: counter!(APPENDED_BYTES, &[p()]),
            appended_batches: counter!(APPENDED_BATCHES, &[p()]),
            deduplicated_batches: counter!(DEDUPLICATED_BATCHES, &[p()]),
            conflicts: counter!(APPEND_CONFLICTS, &[p()]),
            append_duration: histogram!(APPEND_DURATION, &[p()]),
            commits: counter!(COMMITS, &[p()]),
            commit_duration: histogram!(COMMIT_DURATION, &[p()]),
            group_batches: histogram!(COMMIT_GROUP_BATCHES, &[p()]),
            reads: READ_KINDS.map(read),
            checksum_failures: counter!(CHECKSUM_FAILURES, &[p()]),
            decryption_failures: counter!(DECRYPTION_FAILURES, &[p()]),
            unaligned_copies: counter!(UNALIGNED_COPIES, &[p()]),
            head: gauge!(HEAD, &[p()]),
            map_size: gauge!(MAP_SIZE, &[p()]),
            used_bytes: gauge!(USED_BYTES, &[p()]),
            map_resizes: counter!(MAP_RESIZES, &[p()]),
            subscriptions: gauge!(SUBSCRIPTIONS, &[p()]),
            shredded_streams: gauge!(SHREDDED_STREAMS, &[p()]),
            key_cache_hits: counter!(KEY_CACHE_HITS, &[p()]),
            key_cache_misses: counter!(KEY_CACHE_MISSES, &[p()]),
        }
    }
}

/// An identity of the recorder in force on this thread (its address), so that handles
/// registered with another recorder are registered again.
fn recorder_id() -> usize {
    metrics::with_recorder(|r| r as *const dyn metrics::Recorder as *const () as usize)
}

#[derive(Default)]
struct Cached {
    recorder: usize,
    handles: Option<Handles>,
}

/// The metrics of one store: its `path` label and its handles.
#[derive(Default)]
pub(crate) struct StoreMetrics {
    path: String,
    cached: Mutex<Cached>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StoreMetrics {
    pub(crate) fn new(path: &std::path::Path) -> StoreMetrics {
        StoreMetrics {
            path: path.display().to_string(),
            cached: Mutex::default(),
        }
    }

    /// Runs `f` with the handles registered with the recorder in force.
    fn with(&self, f: impl FnOnce(&Handles)) {
        let id = recorder_id();
        let mut cached = lock(&self.cached);
        if cached.recorder != id || cached.handles.is_none() {
            describe();
            cached.handles = Some(Handles::register(&self.path));
            cached.recorder = id;
        }
        f(cached.handles.as_ref().expect("registered above"));
    }

    /// Publishes the reads a transaction counted.
    pub(crate) fn reads(&self, counts: &ReadCounts) {
        self.with(|h| {
            for (counter, count) in h.reads.iter().zip(&counts.0) {
                if count.get() > 0 {
                    counter.increment(count.get());
                }
            }
        });
    }

    /// A read failed: counts damaged records and failed authentications.
    #[cold]
    pub(crate) fn read_failed(&self, e: &Error) {
        match e {
            Error::Corrupted { .. } => self.with(|h| h.checksum_failures.increment(1)),
            Error::Decryption { .. } => self.with(|h| h.decryption_failures.increment(1)),
            _ => {}
        }
    }

    /// The map was grown to `map_size` bytes.
    pub(crate) fn resized(&self, map_size: usize) {
        self.with(|h| {
            h.map_resizes.increment(1);
            h.map_size.set(map_size as f64);
        });
    }

    /// A subscription was opened (`+1`) or dropped (`-1`).
    pub(crate) fn subscriptions(&self, delta: f64) {
        self.with(|h| h.subscriptions.increment(delta));
    }
}

/// Reads counted by one read transaction, by [`ReadKind`]; published when it ends.
#[derive(Default)]
pub(crate) struct ReadCounts([Cell<u64>; 5]);

impl ReadCounts {
    #[inline]
    pub(crate) fn add(&self, kind: ReadKind, n: u64) {
        let cell = &self.0[kind as usize];
        cell.set(cell.get() + n);
    }

    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.iter().any(|c| c.get() > 0)
    }
}

/// Records one `append`/`append_batch` call: its latency when it succeeded, its error by kind
/// when it failed.
pub(crate) fn append_done<T>(storage: &Storage, started: Instant, result: &Result<T>) {
    match result {
        Ok(_) => storage.env.metrics().with(|h| {
            h.append_duration.record(started.elapsed().as_secs_f64());
        }),
        Err(e) => append_failed(storage, e),
    }
}

/// Records a failed append by the kind of its error.
#[cold]
pub(crate) fn append_failed(storage: &Storage, e: &Error) {
    let metrics = storage.env.metrics();
    if matches!(e, Error::ConcurrencyConflict { .. }) {
        metrics.with(|h| h.conflicts.increment(1));
    }
    counter!(APPEND_ERRORS, "path" => metrics.path.clone(), "kind" => error_kind(e)).increment(1);
}

/// Records a commit group once its transaction ended: what it wrote, how long it took, how many
/// batches it carried.
pub(crate) fn group_done(
    storage: &Storage,
    group: &[Request],
    results: &[Result<Appended>],
    started: Instant,
) {
    let (mut batches, mut events, mut bytes, mut deduplicated) = (0u64, 0u64, 0u64, 0u64);
    for (request, result) in group.iter().zip(results) {
        match result {
            Ok(a) if a.deduplicated => deduplicated += 1,
            Ok(a) => {
                batches += 1;
                events += a.positions.len() as u64;
                bytes += request.buf.len() as u64;
            }
            Err(_) => {}
        }
    }
    if batches == 0 && deduplicated == 0 {
        return;
    }
    storage.env.metrics().with(|h| {
        if deduplicated > 0 {
            h.deduplicated_batches.increment(deduplicated);
        }
        if batches > 0 {
            h.appended_events.increment(events);
            h.appended_bytes.increment(bytes);
            h.appended_batches.increment(batches);
            h.commits.increment(1);
            h.commit_duration.record(started.elapsed().as_secs_f64());
            h.group_batches.record(batches as f64);
            h.head.set(storage.head() as f64);
        }
    });
}

/// Records committed checkpoints of processors (and their lag behind the head).
pub(crate) fn checkpoints_committed(storage: &Storage, checkpoints: &[(String, u64)]) {
    for (name, seq) in checkpoints {
        checkpoint_committed(storage, name, *seq);
    }
}

/// Records the committed checkpoint `seq` of processor `name` (and its lag behind the head).
pub(crate) fn checkpoint_committed(storage: &Storage, name: &str, seq: u64) {
    let labels = [
        ("path", storage.env.metrics().path.clone()),
        ("processor", name.to_string()),
    ];
    gauge!(PROCESSOR_CHECKPOINT, &labels).set(seq as f64);
    gauge!(PROCESSOR_LAG, &labels).set(storage.head().saturating_sub(seq) as f64);
}

/// Counts an open subscription in [`SUBSCRIPTIONS`] for as long as it lives.
pub(crate) struct OpenSubscription(Env);

impl OpenSubscription {
    pub(crate) fn new(env: &Env) -> OpenSubscription {
        env.metrics().subscriptions(1.0);
        OpenSubscription(env.clone())
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.metrics().subscriptions(-1.0);
    }
}

/// The `kind` label of an error: its variant's name in snake case.
fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::ConcurrencyConflict { .. } => "concurrency_conflict",
        Error::EventIdConflict { .. } => "event_id_conflict",
        Error::DuplicateEventIdInBatch { .. } => "duplicate_event_id_in_batch",
        Error::InvalidVersion { .. } => "invalid_version",
        Error::EmptyBatch { .. } => "empty_batch",
        Error::EventTooLarge { .. } => "event_too_large",
        Error::InvalidEventType { .. } => "invalid_event_type",
        Error::InvalidStreamId { .. } => "invalid_stream_id",
        Error::Serialize { .. } => "serialize",
        Error::MapFull { .. } => "map_full",
        Error::Poisoned => "poisoned",
        Error::StreamShredded { .. } => "stream_shredded",
        Error::Corrupted { .. } => "corrupted",
        Error::Crypto { .. } => "crypto",
        Error::Keystore { .. } => "keystore",
        Error::Lmdb(_) => "lmdb",
        Error::Io(_) => "io",
        _ => "other",
    }
}

/// Stores whose values [`refresh`] publishes.
static STORES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Makes an opened store known to [`refresh`] and publishes its values once.
pub(crate) fn store_opened(shared: &Arc<Shared>) {
    lock(&STORES).push(Arc::downgrade(shared));
    publish(&Storage::from_shared(Arc::clone(shared)));
}

/// Publishes the values that every open store of this process keeps in counters of its own:
/// the head, map size and use, map resizes, unaligned copies, key cache hits and misses,
/// shredded streams, and every processor's committed checkpoint and lag.
/// `serve_prometheus` (feature `prometheus`) calls it every second; with a recorder of your own, call it before each
/// scrape or on a timer. It opens one short read transaction per store.
pub fn refresh() {
    let stores: Vec<Arc<Shared>> = {
        let mut stores = lock(&STORES);
        stores.retain(|w| w.strong_count() > 0);
        stores.iter().filter_map(Weak::upgrade).collect()
    };
    for shared in stores {
        publish(&Storage::from_shared(shared));
    }
}

fn publish(storage: &Storage) {
    let stats = storage.stats();
    let shredded = storage.shredded_streams();
    storage.env.metrics().with(|h| {
        h.head.set(stats.head as f64);
        h.map_size.set(stats.map_size as f64);
        h.used_bytes.set(stats.used_bytes as f64);
        h.map_resizes.absolute(stats.map_resizes);
        h.unaligned_copies.absolute(stats.unaligned_copies);
        h.key_cache_hits.absolute(stats.key_cache_hits);
        h.key_cache_misses.absolute(stats.key_cache_misses);
        h.shredded_streams.set(shredded as f64);
    });
    match storage.processors() {
        Ok(processors) => checkpoints_committed(storage, &processors),
        Err(e) => {
            tracing::warn!(path = %storage.path().display(), error = %e, "metrics: reading the processors' checkpoints failed");
        }
    }
}

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use prometheus::{serve_prometheus, BuildError, PrometheusHandle};

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    /// Bucket bounds of the `_seconds` histograms: 10 µs to 10 s.
    const SECONDS_BUCKETS: &[f64] = &[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
    /// Bucket bounds of the commit group size histogram.
    const GROUP_BUCKETS: &[f64] = &[
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];

    /// Installs a Prometheus recorder as the global `metrics` recorder and serves it over HTTP
    /// at `addr` (any path, for example `http://127.0.0.1:9898/metrics`), in Prometheus text
    /// format, from a thread of its own. Also starts a thread that calls
    /// [`refresh`](super::refresh) every second. Histograms are exported with buckets (10 µs to
    /// 10 s for durations). Returns a handle that renders the same text in-process.
    ///
    /// Needs the cargo feature `prometheus`. Call it once per process: the global recorder can
    /// be set only once.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `addr` cannot be bound, a global recorder is already installed, or the
    /// exporter's runtime or threads cannot be started.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// varvedb::metrics::serve_prometheus("127.0.0.1:9898".parse()?)?;
    /// # Ok(()) }
    /// ```
    pub fn serve_prometheus(addr: SocketAddr) -> Result<PrometheusHandle, BuildError> {
        let builder = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(super::COMMIT_GROUP_BATCHES.into()),
                GROUP_BUCKETS,
            )?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        let (recorder, exporter) = {
            let _entered = runtime.enter();
            builder.build()?
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)?;
        super::describe();
        std::thread::Builder::new()
            .name("varvedb-metrics-http".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(exporter) {
                    tracing::error!(error = ?e, "the Prometheus HTTP listener stopped");
                }
            })
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        std::thread::Builder::new()
            .name("varvedb-metrics-refresh".into())
            .spawn(|| loop {
                super::refresh();
                std::thread::sleep(Duration::from_secs(1));
            })
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        Ok(handle)
    }
}
