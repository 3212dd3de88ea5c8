//! Creating the databases of a store and checking its format.

use std::path::Path;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database};

use super::dbs::set_watermark;
use super::{Dbs, Env};
use crate::error::{Error, Result};

/// Version of the on-disk format this build writes (see `docs/format.md`). It also opens stores
/// of versions 1 and 2, and upgrades them to this version on open: version 3 writes the stream
/// index and heads behind the log, up to a watermark, which older builds would not understand.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this build opens.
const OLDEST_READABLE: u32 = 1;

const KEY_FORMAT: &str = "format_version";
const KEY_LAYOUT: &str = "rkyv_layout";
const KEY_STORE_ID: &str = "store_id";
const KEY_ENCRYPTION: &str = "encryption";

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
pub(crate) fn open_databases(env: &Env, path: &Path, encrypted: bool) -> Result<Opened> {
    // No other handle on this environment exists yet (the registry lock is held), so no
    // transaction can be active and none needs the gate.
    let wtxn = env.heed.write_txn()?;
    let mut found = (0, false, true);
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
            found = check_or_init(meta, log, wtxn, path, encrypted)?;
            Ok(CommitOrAbort::<_, ()>::Commit((
                meta,
                log,
                heads,
                stream_index,
                event_ids,
                checkpoints,
                log_large,
            )))
        })?
        .unwrap_commit();
    let (meta, log, heads, stream_index, event_ids, checkpoints, log_large) = dbs;
    let page_size = env.heed.unnamed_database_stat().page_size as usize;
    let (store_id, encrypted, empty) = found;
    Ok(Opened {
        dbs: Dbs {
            meta,
            log,
            heads,
            stream_index,
            event_ids,
            checkpoints,
            log_large,
            inline_limit: crate::format::record::inline_limit(page_size),
        },
        store_id,
        encrypted,
        empty,
    })
}

fn check_or_init(
    meta: Database<'_, Str, Bytes>,
    log: Database<'_, U64<BigEndian>, Bytes>,
    wtxn: &mut heed::RwTxn<'_>,
    path: &Path,
    want_encrypted: bool,
) -> Result<(u128, bool, bool)> {
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
            if found < 3 {
                // Versions 1 and 2 indexed every event in its own transaction: the index is
                // complete up to the end of the log. From here on it may lag behind it, which
                // older builds would not know: the version moves to 3 with the watermark.
                let last = log.last(wtxn)?.map_or(0, |(seq, _)| seq);
                set_watermark(meta, wtxn, last)?;
                if found == 1 {
                    meta.put(wtxn, KEY_ENCRYPTION, &[0])?;
                }
                meta.put(wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
                tracing::info!(path = %path.display(), from = found, to = FORMAT_VERSION, "upgraded the store's format");
            }
            Ok((u128::from_le_bytes(id), encrypted, empty))
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
            let store_id = uuid::Uuid::new_v4().as_u128();
            meta.put(wtxn, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
            meta.put(wtxn, KEY_LAYOUT, &layout)?;
            meta.put(wtxn, KEY_STORE_ID, &store_id.to_le_bytes())?;
            meta.put(wtxn, KEY_ENCRYPTION, &[u8::from(want_encrypted)])?;
            set_watermark(meta, wtxn, 0)?;
            Ok((store_id, want_encrypted, true))
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
