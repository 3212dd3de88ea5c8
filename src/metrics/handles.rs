//! The metric handles of one store, and the recording calls the layers above make on them.
//! Recording touches only the handles: no store, no transaction. (This module sits with the
//! environment, at the bottom of the layers; see `docs/design.md`.)

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::names::*;
use crate::error::{Error, Result};

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
pub(super) struct Handles {
    pub(super) appended_events: Counter,
    pub(super) appended_bytes: Counter,
    pub(super) appended_batches: Counter,
    pub(super) deduplicated_batches: Counter,
    pub(super) conflicts: Counter,
    pub(super) append_duration: Histogram,
    pub(super) commits: Counter,
    pub(super) commit_duration: Histogram,
    pub(super) group_batches: Histogram,
    pub(super) reads: [Counter; 5],
    pub(super) checksum_failures: Counter,
    pub(super) decryption_failures: Counter,
    pub(super) unaligned_copies: Counter,
    pub(super) head: Gauge,
    pub(super) map_size: Gauge,
    pub(super) used_bytes: Gauge,
    pub(super) map_resizes: Counter,
    pub(super) subscriptions: Gauge,
    pub(super) shredded_streams: Gauge,
    pub(super) key_cache_hits: Counter,
    pub(super) key_cache_misses: Counter,
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
    /// Sets the values a store keeps in counters of its own.
    pub(crate) fn store_values(&self, v: StoreValues) {
        self.with(|h| {
            h.head.set(v.head as f64);
            h.map_size.set(v.map_size as f64);
            h.used_bytes.set(v.used_bytes as f64);
            h.map_resizes.absolute(v.map_resizes);
            h.unaligned_copies.absolute(v.unaligned_copies);
            h.key_cache_hits.absolute(v.key_cache_hits);
            h.key_cache_misses.absolute(v.key_cache_misses);
            h.shredded_streams.set(v.shredded_streams as f64);
        });
    }

    pub(super) fn with(&self, f: impl FnOnce(&Handles)) {
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

    /// An event of `event_type` stored at version `from` was read as version `to`.
    #[cold]
    pub(crate) fn upcast(&self, event_type: &str, from: u16, to: u16) {
        counter!(
            UPCASTS,
            "path" => self.path.clone(),
            "type" => event_type.to_string(),
            "from" => from.to_string(),
            "to" => to.to_string()
        )
        .increment(1);
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
pub(crate) fn append_done<T>(metrics: &StoreMetrics, started: Instant, result: &Result<T>) {
    match result {
        Ok(_) => metrics.with(|h| {
            h.append_duration.record(started.elapsed().as_secs_f64());
        }),
        Err(e) => append_failed(metrics, e),
    }
}

/// Records a failed append by the kind of its error.
#[cold]
pub(crate) fn append_failed(metrics: &StoreMetrics, e: &Error) {
    if matches!(e, Error::ConcurrencyConflict { .. }) {
        metrics.with(|h| h.conflicts.increment(1));
    }
    counter!(APPEND_ERRORS, "path" => metrics.path.clone(), "kind" => error_kind(e)).increment(1);
}

/// The values a store keeps in counters of its own, for [`StoreMetrics::store_values`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoreValues {
    pub head: u64,
    pub map_size: usize,
    pub used_bytes: u64,
    pub map_resizes: u64,
    pub unaligned_copies: u64,
    pub key_cache_hits: u64,
    pub key_cache_misses: u64,
    pub shredded_streams: u64,
}

/// What one committed transaction of the log carried, for [`group_done`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GroupCounts {
    /// Batches written.
    pub batches: u64,
    /// Events they held.
    pub events: u64,
    /// Record bytes they held.
    pub bytes: u64,
    /// Batches recognised as retries: nothing written.
    pub deduplicated: u64,
}

/// Records a commit group once its transaction ended: what it wrote, how long it took, how many
/// batches it carried, and the head it left.
pub(crate) fn group_done(metrics: &StoreMetrics, head: u64, counts: GroupCounts, started: Instant) {
    let GroupCounts {
        batches,
        events,
        bytes,
        deduplicated,
    } = counts;
    if batches == 0 && deduplicated == 0 {
        return;
    }
    metrics.with(|h| {
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
            h.head.set(head as f64);
        }
    });
}

/// Records committed checkpoints of processors (and their lag behind the head).
pub(crate) fn checkpoints_committed(
    metrics: &StoreMetrics,
    head: u64,
    checkpoints: &[(String, u64)],
) {
    for (name, seq) in checkpoints {
        checkpoint_committed(metrics, head, name, *seq);
    }
}

/// Records the committed checkpoint `seq` of processor `name` (and its lag behind `head`).
pub(crate) fn checkpoint_committed(metrics: &StoreMetrics, head: u64, name: &str, seq: u64) {
    let labels = [
        ("path", metrics.path.clone()),
        ("processor", name.to_string()),
    ];
    gauge!(PROCESSOR_CHECKPOINT, &labels).set(seq as f64);
    gauge!(PROCESSOR_LAG, &labels).set(head.saturating_sub(seq) as f64);
}

/// Publishes how far a replica applied the cluster's log and how far behind it is.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn replica_progress(
    metrics: &StoreMetrics,
    applied: u64,
    lag_messages: u64,
    lag_seconds: f64,
) {
    let labels = [("path", metrics.path.clone())];
    gauge!(REPLICA_APPLIED, &labels).set(applied as f64);
    gauge!(REPLICA_LAG_MESSAGES, &labels).set(lag_messages as f64);
    gauge!(REPLICA_LAG_SECONDS, &labels).set(lag_seconds);
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
        Error::InvalidStreamName { .. } => "invalid_stream_name",
        Error::StreamNameConflict { .. } => "stream_name_conflict",
        Error::Serialize { .. } => "serialize",
        Error::MapFull { .. } => "map_full",
        Error::Poisoned => "poisoned",
        Error::StreamShredded { .. } => "stream_shredded",
        Error::Corrupted { .. } => "corrupted",
        Error::Damaged { .. } => "damaged",
        Error::LayoutChanged { .. } => "layout_changed",
        Error::UnknownSchemaVersion { .. } => "unknown_schema_version",
        Error::RenamedEventType { .. } => "renamed_event_type",
        Error::SplitEvent { .. } => "split_event",
        Error::Crypto { .. } => "crypto",
        Error::Keystore { .. } => "keystore",
        Error::ReplicaNotWritable { .. } => "replica_not_writable",
        Error::Lmdb(_) => "lmdb",
        Error::Io(_) => "io",
        _ => "other",
    }
}
