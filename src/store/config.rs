//! Configuration of a store.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::write::GroupCommit;

/// Default initial map size: 1 GiB. The map is a reservation of address space, not of disk: the
/// file grows only with the data, and the map doubles by itself when it is full.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// Default limit on the serialized size of one event payload (and of its metadata): 16 MiB.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 << 20;
/// Largest accepted `max_event_size`: 1 GiB.
pub const MAX_EVENT_SIZE_LIMIT: usize = 1 << 30;

/// How a store is opened. All fields are public, and `Default` fills in the rest:
///
/// ```
/// use varvedb::StorageConfig;
/// let config = StorageConfig { path: "/tmp/my-store".into(), ..Default::default() };
/// assert_eq!(config.map_size, varvedb::DEFAULT_MAP_SIZE);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Directory of the store. Created with mode 0700 when missing. Default: `./varvedb_data`.
    pub path: PathBuf,
    /// Initial size of the memory map in bytes (rounded up to the page size). The map grows by
    /// itself when full, so this only sets where growth starts. Default: [`DEFAULT_MAP_SIZE`].
    pub map_size: usize,
    /// Largest serialized payload, and largest metadata, of one event in bytes. Larger events are
    /// refused with [`Error::EventTooLarge`]. Default: [`DEFAULT_MAX_EVENT_SIZE`].
    pub max_event_size: usize,
    /// Encrypt event payloads and metadata at rest with per-stream keys (AES-256-GCM), so that
    /// streams can be shredded. Requires `master_key`. Fixed when the store is created: opening
    /// it otherwise gives [`Error::EncryptionMismatch`]. Default: `false`.
    pub encryption_enabled: bool,
    /// The 32-byte master key that wraps the stream keys. Never written to disk, never printed by
    /// `Debug`; once the store is open, [`Storage::config`](crate::Storage::config)
    /// shows `None` here, and the only copy is inside the store's cipher context.
    pub master_key: Option<[u8; 32]>,
    /// How many unwrapped stream keys an encrypted store keeps in memory (first in, first out).
    /// A key not in the cache is unwrapped once on its next use. Default: 10,000.
    pub key_cache_capacity: usize,
    /// How long a write that needs to grow the map waits for open read transactions of this
    /// process to end before it fails with [`Error::MapFull`]. Default: 10 s.
    pub resize_timeout: Duration,
    /// Maximum number of concurrent read transactions (LMDB reader slots), across processes.
    /// Default: 1024.
    pub max_readers: u32,
    /// Limits of group commit: how many appends of concurrent callers share one transaction
    /// and one fsync.
    pub group_commit: GroupCommit,
    /// When appended data reaches the disk. Default: [`Durability::Immediate`].
    pub durability: Durability,
    /// How many events are appended between two writes of the stream index and heads, which
    /// run behind the log in one sorted batch (see `docs/write-path.md`). Larger intervals make
    /// appends to many streams cheaper and cost memory (about 40 bytes per event) and time at
    /// open after a crash (reading those events back). Default:
    /// [`DEFAULT_INDEX_INTERVAL`](crate::DEFAULT_INDEX_INTERVAL), 100,000.
    pub index_interval: u64,
}

/// When appended data reaches the disk, and what a crash can lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is `fdatasync`ed before the append returns. An append that returned `Ok`
    /// survives a killed process, an operating-system crash and power loss (as far as the disk
    /// honours fsync).
    #[default]
    Immediate,
    /// Commits are not synced; the store syncs every `sync_interval` (when `Some`), on
    /// [`Storage::sync`](crate::Storage::sync), and when it is closed.
    ///
    /// - A killed or crashed **process** loses nothing that returned `Ok`: the data is in the
    ///   operating system's page cache.
    /// - An **operating-system crash or power loss** loses the appends since the last sync. LMDB
    ///   warns that without syncs the file's integrity then depends on the file system writing
    ///   pages in order; if it does not, the store may fail to open or report corrupted records
    ///   (VarveDB's checksums detect damaged records, never return them). Use this mode only for
    ///   data you can rebuild.
    Relaxed {
        /// How often to sync; `None` syncs only on demand and at close.
        sync_interval: Option<Duration>,
    },
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("varvedb_data"),
            map_size: DEFAULT_MAP_SIZE,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            encryption_enabled: false,
            master_key: None,
            key_cache_capacity: 10_000,
            resize_timeout: Duration::from_secs(10),
            max_readers: 1024,
            index_interval: crate::index::DEFAULT_INDEX_INTERVAL,
            group_commit: GroupCommit::default(),
            durability: Durability::Immediate,
        }
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("path", &self.path)
            .field("map_size", &self.map_size)
            .field("max_event_size", &self.max_event_size)
            .field("encryption_enabled", &self.encryption_enabled)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("key_cache_capacity", &self.key_cache_capacity)
            .field("resize_timeout", &self.resize_timeout)
            .field("max_readers", &self.max_readers)
            .field("index_interval", &self.index_interval)
            .field("group_commit", &self.group_commit)
            .field("durability", &self.durability)
            .finish()
    }
}

impl StorageConfig {
    /// Checks the configuration before anything touches the disk.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.path.as_os_str().is_empty() {
            return invalid("path is empty");
        }
        if self.encryption_enabled && self.master_key.is_none() {
            return invalid("encryption_enabled is true but no master_key was given");
        }
        if !self.encryption_enabled && self.master_key.is_some() {
            return invalid(
                "a master_key was given but encryption_enabled is false; set encryption_enabled: true or drop the key",
            );
        }
        if self.max_event_size == 0 || self.max_event_size > MAX_EVENT_SIZE_LIMIT {
            return invalid("max_event_size must be between 1 byte and 1 GiB");
        }
        if self.group_commit.max_batches == 0 || self.group_commit.max_bytes == 0 {
            return invalid("group_commit.max_batches and max_bytes must be at least 1");
        }
        if let Durability::Relaxed {
            sync_interval: Some(interval),
        } = self.durability
        {
            if interval.is_zero() {
                return invalid("a relaxed sync_interval must be longer than zero");
            }
        }
        if self.max_readers == 0 {
            return invalid("max_readers must be at least 1");
        }
        if self.key_cache_capacity == 0 {
            return invalid("key_cache_capacity must be at least 1");
        }
        if self.index_interval == 0 {
            return invalid("index_interval must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_key() {
        let config = StorageConfig {
            encryption_enabled: true,
            master_key: Some([0xAB; 32]),
            ..Default::default()
        };
        let text = format!("{config:?}");
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("171") && !text.contains("AB") && !text.contains("ab, "));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let no_key = StorageConfig {
            encryption_enabled: true,
            ..Default::default()
        };
        assert!(matches!(
            no_key.validate(),
            Err(Error::InvalidConfig { .. })
        ));
        let key_without_flag = StorageConfig {
            master_key: Some([1; 32]),
            ..Default::default()
        };
        assert!(matches!(
            key_without_flag.validate(),
            Err(Error::InvalidConfig { .. })
        ));
        let zero_size = StorageConfig {
            max_event_size: 0,
            ..Default::default()
        };
        assert!(matches!(
            zero_size.validate(),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(StorageConfig::default().validate().is_ok());
    }
}
