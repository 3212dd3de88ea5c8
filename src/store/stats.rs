//! Counters and sizes of an open store.

/// Counters and sizes of an open store, readable without any metrics system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Global sequence of the last committed event (0 when the log is empty).
    pub head: u64,
    /// Current size of the memory map in bytes.
    pub map_size: usize,
    /// Bytes of the map in use (last used page, times the page size).
    pub used_bytes: u64,
    /// Times this process grew the map.
    pub map_resizes: u64,
    /// Payloads copied into an aligned buffer because they were not 16-byte aligned in the map.
    /// Zero-copy reads leave this unchanged.
    pub unaligned_copies: u64,
    /// Write transactions this process committed for appends (one fsync each).
    pub commits: u64,
    /// Batches (`append` or `append_batch` calls) those transactions carried; divided by
    /// `commits`, the average commit group size.
    pub committed_batches: u64,
    /// Reader slots of dead processes that LMDB still held and that were cleared when this
    /// process opened the store.
    pub stale_readers_cleared: u64,
    /// Whether the store is encrypted.
    pub encrypted: bool,
    /// Stream keys found in the key cache (encrypted stores).
    pub key_cache_hits: u64,
    /// Stream keys that had to be read from the keystore and unwrapped (encrypted stores).
    pub key_cache_misses: u64,
    /// The sequence up to which the stream index and heads on disk are written, as far as this
    /// process knows; later events are indexed in memory until the next index flush.
    pub indexed_through: u64,
}
