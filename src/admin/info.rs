//! A summary of a store: sizes, counts and processors.

use std::path::PathBuf;

use crate::env::FORMAT_VERSION;
use crate::error::Result;
use crate::store::Storage;
use crate::subscribe::checkpoint;

/// What [`info`] reports about a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// The store's directory.
    pub path: PathBuf,
    /// The store's random identity, fixed at creation.
    pub store_id: u128,
    /// On-disk format version (opening checked that it is the one this build reads).
    pub format_version: u32,
    /// Whether the store was opened with encryption.
    pub encrypted: bool,
    /// Number of events in the log.
    pub events: u64,
    /// Number of streams.
    pub streams: u64,
    /// Global sequence of the last event, seen by a fresh read transaction (0 when empty).
    pub head: u64,
    /// Size of `data.mdb` on disk, in bytes.
    pub file_size: u64,
    /// Size of the memory map, in bytes.
    pub map_size: usize,
    /// Bytes of the map in use.
    pub used_bytes: u64,
    /// LMDB page size, in bytes.
    pub page_size: u32,
    /// Every processor and projector with its checkpoint, ordered by name.
    pub processors: Vec<ProcessorInfo>,
}

/// A processor (or projector) and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessorInfo {
    /// Its name.
    pub name: String,
    /// The last global sequence it handled (0: none).
    pub checkpoint: u64,
    /// Events in the log after its checkpoint.
    pub lag: u64,
}

/// Reads the summary of a store in one read transaction.
///
/// # Errors
///
/// [`Error::Corrupted`](crate::error::Error::Corrupted) when a checkpoint is damaged,
/// [`Error::Io`](crate::error::Error::Io) when `data.mdb` cannot be examined,
/// [`Error::Lmdb`](crate::error::Error::Lmdb).
pub fn info(storage: &Storage) -> Result<StoreInfo> {
    let dbs = &storage.log().dbs;
    let (env_info, page_size) = storage.env.info();
    let txn = storage.env.read_txn()?;
    let raw = txn.raw();
    let head = dbs.log.last(raw)?.map_or(0, |(seq, _)| seq);
    let mut processors = Vec::new();
    for entry in dbs.checkpoints.iter(raw)? {
        let (name, _) = entry?;
        let seq = checkpoint::load_in(&storage.log().dbs, raw, name)?;
        processors.push(ProcessorInfo {
            name: name.to_string(),
            checkpoint: seq,
            lag: head.saturating_sub(seq),
        });
    }
    let info = StoreInfo {
        path: storage.path().to_owned(),
        store_id: storage.store_id(),
        format_version: FORMAT_VERSION,
        encrypted: storage.config().encryption_enabled,
        events: dbs.log.len(raw)?,
        streams: streams_in(storage, raw)?,
        head,
        file_size: std::fs::metadata(storage.path().join("data.mdb"))?.len(),
        map_size: env_info.map_size,
        used_bytes: (env_info.last_page_number as u64 + 1) * u64::from(page_size),
        page_size,
        processors,
    };
    Ok(info)
}

/// Streams with events: those with a head on disk, and those only in the unindexed tail.
fn streams_in(storage: &Storage, raw: &heed::RoTxn<'_>) -> Result<u64> {
    let dbs = &storage.log().dbs;
    let mut count = dbs.heads.len(raw)?;
    for stream in storage.store.index.tail_streams(dbs, raw)? {
        if dbs.heads.get(raw, &stream.to_key())?.is_none() {
            count += 1;
        }
    }
    Ok(count)
}
