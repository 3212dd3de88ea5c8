//! The names of the metrics VarveDB records, and their descriptions.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

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
/// Counter: events of an older schema version read through an upcaster, by event type (`type`)
/// and the version read (`from`) and made (`to`).
pub const UPCASTS: &str = "varvedb_upcasts_total";
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
/// Gauge: the last JetStream sequence a replicated store applied (feature `cluster`).
pub const REPLICA_APPLIED: &str = "varvedb_replica_applied_sequence";
/// Gauge: messages of the cluster's log after the last one a replicated store applied.
pub const REPLICA_LAG_MESSAGES: &str = "varvedb_replica_lag_messages";
/// Gauge: seconds since the cluster stored the last message a replicated store applied, while
/// it has more to apply; 0 when it applied the whole log.
pub const REPLICA_LAG_SECONDS: &str = "varvedb_replica_lag_seconds";

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
    UPCASTS,
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

/// The metrics only a replicated store records (feature `cluster`), by name; not in [`ALL`].
pub const CLUSTER: &[&str] = &[REPLICA_APPLIED, REPLICA_LAG_MESSAGES, REPLICA_LAG_SECONDS];

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
    describe_counter!(
        UPCASTS,
        Unit::Count,
        "Events of an older schema version read through an upcaster, by type and versions."
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
    describe_gauge!(
        REPLICA_APPLIED,
        Unit::Count,
        "The last JetStream sequence the replica applied."
    );
    describe_gauge!(
        REPLICA_LAG_MESSAGES,
        Unit::Count,
        "Messages of the cluster's log the replica has not applied yet."
    );
    describe_gauge!(
        REPLICA_LAG_SECONDS,
        Unit::Seconds,
        "Age of the last message the replica applied while more wait; 0 when caught up."
    );
}
