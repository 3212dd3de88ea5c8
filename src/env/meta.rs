//! Creating the databases of a store and checking its format.

use std::path::Path;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database};

use super::dbs::set_watermark;
use super::{Dbs, Env};
use crate::error::{Error, Result};

/// Version of the on-disk format this build writes (see `docs/format.md`). It also opens stores
/// of versions 1 to 5, and upgrades them to this version on open: version 3 writes the stream
/// index and heads behind the log, up to a watermark, version 4 records the layout of every
/// event type and schema version in the log, version 5 records the renames of event types,
/// which older builds would not understand (they would pass over renamed events), and version 6
/// records stream names and lists the events of each category and event type in the label
/// index, which older builds would not keep up to date. Version 8 adds the `replica` database,
/// where a store that replicates a cluster's log records how far it applied it. Version 9 adds
/// records sealed in transit, which the replicas of an encrypted cluster log hold and older
/// builds cannot open.
pub const FORMAT_VERSION: u32 = 9;
/// The oldest format version this build opens.
const OLDEST_READABLE: u32 = 1;

const KEY_FORMAT: &str = "format_version";
const KEY_LAYOUT: &str = "rkyv_layout";
const KEY_STORE_ID: &str = "store_id";
const KEY_ENCRYPTION: &str = "encryption";
const KEY_RKYV: &str = "rkyv_version";
/// The rkyv release line whose archive format this build reads and writes: rkyv keeps its format
/// within a line (0.8.x), and changes it between lines.
const RKYV_VERSION: &[u8] = b"0.8";

/// What the format checks found.
pub(crate) struct Opened {
    pub dbs: Dbs,
    pub store_id: u128,
    /// Whether the store is encrypted (fixed at creation).
    pub encrypted: bool,
    /// Whether the log is empty (a new store, or one without events yet).
    pub empty: bool,
}

/// Describes how this build's rkyv lays out archives: byte order, alignment of a 32-bit integer,
/// size of an archived `usize`. rkyv chooses these with cargo features, which a dependency
/// elsewhere in a build can switch on; a store must be read with the layout it was written with.
pub(crate) fn rkyv_layout() -> [u8; 4] {
    let one = rkyv::to_bytes::<rkyv::rancor::Error>(&1u32).map_or(0, |b| b[0]);
    [
        u8::from(one != 1), // 0 = little-endian
        std::mem::align_of::<rkyv::Archived<u32>>() as u8,
        std::mem::size_of::<rkyv::Archived<usize>>() as u8,
        0,
    ]
}

/// Creates or opens the databases, then checks (or, for a new store, writes) the format version,
/// the rkyv layout, the store id and whether the store is encrypted (`encrypted` is what the
/// caller asks for; a store created otherwise gives `Error::EncryptionMismatch`).
///
/// A store created here gets `new_store_id` as its id, or a random one (a replica of a
/// cluster's log takes the log's id: `crate::cluster`).
pub(crate) fn open_databases(
    env: &Env,
    path: &Path,
    encrypted: bool,
    new_store_id: Option<u128>,
) -> Result<Opened> {
    // No other handle on this environment exists yet (the registry lock is held), so no
    // transaction can be active and none needs the gate.
    let wtxn = env.heed.write_txn()?;
    let mut found = (0, false, true, FORMAT_VERSION);
    let dbs = env
        .heed
        .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
            let meta = opener.create_database(wtxn, Some("meta"))?;
            let log = opener.create_database(wtxn, Some("log"))?;
            let heads = opener.create_database(wtxn, Some("heads"))?;
            let stream_index = opener.create_database(wtxn, Some("stream_index"))?;
            let event_ids = opener.create_database(wtxn, Some("event_ids"))?;
            let checkpoints = opener.create_database(wtxn, Some("checkpoints"))?;
            let log_large = opener.create_database(wtxn, Some("log_large"))?;
            let schemas = opener.create_database(wtxn, Some("schemas"))?;
            let stream_names = opener.create_database(wtxn, Some("stream_names"))?;
            let labels = opener.create_database(wtxn, Some("labels"))?;
            let label_index = opener.create_database(wtxn, Some("label_index"))?;
            let replica = opener.create_database(wtxn, Some("replica"))?;
            found = check_or_init(meta, log, wtxn, path, encrypted, new_store_id)?;
            Ok(CommitOrAbort::<_, ()>::Commit((
                meta,
                log,
                heads,
                stream_index,
                event_ids,
                checkpoints,
                log_large,
                schemas,
                (stream_names, labels, label_index, replica),
            )))
        })?
        .unwrap_commit();
    let (
        meta,
        log,
        heads,
        stream_index,
        event_ids,
        checkpoints,
        log_large,
        schemas,
        (stream_names, labels, label_index, replica),
    ) = dbs;
    let page_size = env.heed.unnamed_database_stat().page_size as usize;
    let (store_id, encrypted, empty, version) = found;
    let opened = Opened {
        dbs: Dbs {
            meta,
            log,
            heads,
            stream_index,
            event_ids,
            checkpoints,
            log_large,
            schemas,
            stream_names,
            labels,
            label_index,
            replica,
            inline_limit: crate::format::record::inline_limit(page_size),
        },
        store_id,
        encrypted,
        empty,
    };
    if version < FORMAT_VERSION {
        upgrade(env, &opened.dbs, path, version)?;
    }
    Ok(opened)
}

/// Brings a store of an older version to this one, in one transaction (a crash before its commit
/// leaves the store as it was, to be upgraded again at the next open), with one read of every
/// record's header:
///
/// - from version 3 (or 1 and 2, just brought to 3): records every (event type, schema version)
///   the log holds events of, with a layout that is not known (the events were written before
///   the store kept fingerprints), and the rkyv line (version 4);
/// - version 5 adds renamed entries, of which older stores have none;
/// - from version 5 and older: lists every event up to the index watermark under its event
///   type in the label index (version 6; the flush lists the later ones, as it writes their
///   stream index entries); no stream has a name yet, so no category has events;
/// - version 7 lists a label's events in runs of up to 500 per entry, where version 6 had an
///   entry per event: a version-6 index is rewritten so, without reading the log;
/// - version 8 adds the `replica` database, which every open creates (empty in an upgraded
///   store: it replicated nothing);
/// - version 9 adds records sealed in transit (record flag bit 4), which only a replica of an
///   encrypted cluster log holds: an upgraded store has none.
///
/// A record whose header cannot be read is left out, for `verify` and the readers to report.
fn upgrade(env: &Env, dbs: &Dbs, path: &Path, from: u32) -> Result<()> {
    use crate::format::name::LabelKind;
    use crate::format::schema;
    let started = std::time::Instant::now();
    let mut wtxn = env.heed.write_txn()?;
    if from >= 7 {
        // The `replica` database is created empty by every open, and no record of an older
        // store is sealed in transit: nothing else changes.
        dbs.meta
            .put(&mut wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
        wtxn.commit()?;
        tracing::info!(path = %path.display(), from, to = FORMAT_VERSION, took = ?started.elapsed(), "upgraded the store's format");
        return Ok(());
    }
    if from == 6 {
        let listed = label_runs_from_entries(dbs, &mut wtxn)?;
        dbs.meta
            .put(&mut wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
        wtxn.commit()?;
        tracing::info!(path = %path.display(), from, to = FORMAT_VERSION, listed, took = ?started.elapsed(), "upgraded the store's format");
        return Ok(());
    }
    // The schema keys of the pairs found, and the label of each event type.
    let mut pairs: foldhash::HashSet<Vec<u8>> = foldhash::HashSet::default();
    let mut types: foldhash::HashMap<Vec<u8>, u32> = foldhash::HashMap::default();
    let mut entries: Vec<(u32, u64)> = Vec::new();
    let mut key = Vec::new();
    let mut damaged = 0u64;
    // The label index holds the events up to the index watermark, as the stream index does;
    // the flush lists the later ones.
    let watermark = dbs.watermark(&wtxn)?;
    for entry in dbs.log.iter(&wtxn)? {
        let (seq, value) = entry?;
        let header = dbs
            .record(&wtxn, seq, value)
            .and_then(|bytes| crate::format::record::decode_header(seq, bytes));
        match header {
            Ok(rec) => {
                if from < 4 {
                    schema::key_into(&mut key, rec.event_type_bytes(), rec.schema_version());
                    if !pairs.contains(&key[..]) {
                        pairs.insert(key.clone());
                    }
                }
                if seq > watermark {
                    continue;
                }
                let name = rec.event_type_bytes();
                let label = match types.get(name) {
                    Some(&label) => label,
                    None => {
                        let label = types.len() as u32 + 1;
                        types.insert(name.to_vec(), label);
                        label
                    }
                };
                entries.push((label, seq));
            }
            Err(_) => damaged += 1,
        }
    }
    for key in &pairs {
        if dbs.schemas.get(&wtxn, key)?.is_none() {
            dbs.schemas
                .put(&mut wtxn, key, &schema::encode(schema::Registered::Unknown))?;
        }
    }
    // Labels in the order the log first used them; the store had none before.
    let mut named: Vec<(&Vec<u8>, &u32)> = types.iter().collect();
    named.sort_by_key(|(_, &label)| label);
    for (name, &label) in named {
        let given = dbs.label_or_new(&mut wtxn, LabelKind::EventType, name)?;
        if given != label {
            return Err(Error::corrupted(
                0,
                format!("the store already lists event types in its label index (found id {given}, not {label}) though its format version is {from}"),
            ));
        }
    }
    // Each label's events in runs, in key order.
    entries.sort_unstable();
    for run in entries.chunk_by(|a, b| a.0 == b.0) {
        let seqs: Vec<u64> = run.iter().map(|&(_, seq)| seq).collect();
        dbs.put_label_runs(&mut wtxn, run[0].0, &seqs)?;
    }
    if from < 4 {
        dbs.meta.put(&mut wtxn, KEY_RKYV, RKYV_VERSION)?;
    }
    dbs.meta
        .put(&mut wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
    wtxn.commit()?;
    if damaged > 0 {
        tracing::warn!(path = %path.display(), damaged, "records whose header cannot be read were left out of the schema registry and the label index; run `varve verify`");
    }
    tracing::info!(path = %path.display(), from, to = FORMAT_VERSION, event_types = types.len(), took = ?started.elapsed(), "upgraded the store's format");
    Ok(())
}

/// Rewrites a version-6 label index (an entry per event and label, with an empty value) as runs
/// (version 7), a bounded batch of entries at a time. Returns the number of entries rewritten.
fn label_runs_from_entries(dbs: &Dbs, wtxn: &mut heed::RwTxn<'_>) -> Result<u64> {
    use crate::format::name::{label_index_key, parse_label_index_key};
    use std::ops::Bound;
    const BATCH: usize = 1 << 20;
    let mut after: Option<[u8; 12]> = None;
    let mut rewritten = 0u64;
    loop {
        let mut batch: Vec<(u32, u64)> = Vec::new();
        {
            let start = match &after {
                Some(key) => Bound::Excluded(&key[..]),
                None => Bound::Unbounded,
            };
            for entry in dbs
                .label_index
                .range(wtxn, &(start, Bound::Unbounded))?
                .take(BATCH)
            {
                let (key, value) = entry?;
                if !value.is_empty() {
                    return Err(Error::Damaged {
                        entry: crate::error::DamagedEntry::Label {
                            what: "the label index".into(),
                        },
                        reason: "a version-6 entry with a value".into(),
                    });
                }
                batch.push(parse_label_index_key(key)?);
            }
        }
        let Some(&(label, seq)) = batch.last() else {
            return Ok(rewritten);
        };
        after = Some(label_index_key(label, seq));
        for &(label, seq) in &batch {
            dbs.label_index.delete(wtxn, &label_index_key(label, seq))?;
        }
        for run in batch.chunk_by(|a, b| a.0 == b.0) {
            let seqs: Vec<u64> = run.iter().map(|&(_, seq)| seq).collect();
            dbs.put_label_runs(wtxn, run[0].0, &seqs)?;
        }
        rewritten += batch.len() as u64;
    }
}

fn check_or_init(
    meta: Database<'_, Str, Bytes>,
    log: Database<'_, U64<BigEndian>, Bytes>,
    wtxn: &mut heed::RwTxn<'_>,
    path: &Path,
    want_encrypted: bool,
    new_store_id: Option<u128>,
) -> Result<(u128, bool, bool, u32)> {
    let layout = rkyv_layout();
    let empty = log.is_empty(wtxn)?;
    match meta.get(wtxn, KEY_FORMAT)? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes)
                .map(u32::from_le_bytes)
                .unwrap_or(0);
            if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&found) {
                return Err(Error::FormatVersion {
                    path: path.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            let stored_layout = meta.get(wtxn, KEY_LAYOUT)?.unwrap_or(&[]);
            if stored_layout != layout {
                return Err(Error::LayoutMismatch {
                    path: path.to_owned(),
                    found: stored_layout.try_into().unwrap_or([0; 4]),
                    current: layout,
                });
            }
            let id = meta.get(wtxn, KEY_STORE_ID)?.unwrap_or(&[]);
            let id: [u8; 16] = id.try_into().map_err(|_| Error::FormatVersion {
                path: path.to_owned(),
                found,
                supported: FORMAT_VERSION,
            })?;
            // Version 1 had no encryption; from version 2 the marker is always written.
            let encrypted = match meta.get(wtxn, KEY_ENCRYPTION)? {
                None if found == 1 => false,
                Some([0]) => false,
                Some([1]) => true,
                _ => {
                    return Err(Error::FormatVersion {
                        path: path.to_owned(),
                        found,
                        supported: FORMAT_VERSION,
                    })
                }
            };
            if encrypted != want_encrypted {
                return Err(Error::EncryptionMismatch {
                    path: path.to_owned(),
                    store_encrypted: encrypted,
                });
            }
            if found >= 4 {
                let stored = meta.get(wtxn, KEY_RKYV)?.unwrap_or(&[]);
                if stored != RKYV_VERSION {
                    return Err(Error::RkyvVersion {
                        path: path.to_owned(),
                        found: String::from_utf8_lossy(stored).into_owned(),
                        current: String::from_utf8_lossy(RKYV_VERSION).into_owned(),
                    });
                }
            }
            if found < 3 {
                // Versions 1 and 2 indexed every event in its own transaction: the index is
                // complete up to the end of the log. From here on it may lag behind it, which
                // older builds would not know: the version moves to 3 with the watermark.
                let last = log.last(wtxn)?.map_or(0, |(seq, _)| seq);
                set_watermark(meta, wtxn, last)?;
                if found == 1 {
                    meta.put(wtxn, KEY_ENCRYPTION, &[0])?;
                }
                meta.put(wtxn, KEY_FORMAT, &3u32.to_le_bytes())?;
                tracing::info!(path = %path.display(), from = found, to = 3, "upgraded the store's format");
            }
            Ok((u128::from_le_bytes(id), encrypted, empty, found.max(3)))
        }
        None => {
            if !empty {
                // Events without a format marker: not a store this build wrote.
                return Err(Error::FormatVersion {
                    path: path.to_owned(),
                    found: 0,
                    supported: FORMAT_VERSION,
                });
            }
            let store_id = new_store_id.unwrap_or_else(|| uuid::Uuid::new_v4().as_u128());
            meta.put(wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
            meta.put(wtxn, KEY_LAYOUT, &layout)?;
            meta.put(wtxn, KEY_STORE_ID, &store_id.to_le_bytes())?;
            meta.put(wtxn, KEY_ENCRYPTION, &[u8::from(want_encrypted)])?;
            meta.put(wtxn, KEY_RKYV, RKYV_VERSION)?;
            set_watermark(meta, wtxn, 0)?;
            Ok((store_id, want_encrypted, true, FORMAT_VERSION))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_rkyv_layout_is_little_endian_aligned_32bit() {
        assert_eq!(super::rkyv_layout(), [0, 4, 4, 0]);
    }
}
