//! The schema registry of an open store: what the store recorded of the layout of each (event
//! type, schema version) it holds events of (`format::schema`), kept in memory once read.
//!
//! An entry is written in the same transaction as the first event of its pair
//! ([`LogTxn`](crate::write::LogTxn) does it), so every event in the log has one, and an entry
//! never changes once committed: a committed entry read once can be kept for as long as the
//! store is open, by every process.

use std::sync::RwLock;

use crate::env::Dbs;
use crate::error::{Error, Result};
use crate::event::Fingerprint;
use crate::format::schema::{self, Registered};

/// The committed entries read so far, by schema key (see the module documentation).
#[derive(Default)]
pub(crate) struct Schemas {
    known: RwLock<foldhash::HashMap<Vec<u8>, Registered>>,
}

impl Schemas {
    /// A registry that knows nothing yet: entries are read on first use.
    pub(crate) fn new() -> Schemas {
        Schemas::default()
    }

    /// The committed entry under `key`, if this process has read it.
    pub(crate) fn cached(&self, key: &[u8]) -> Option<Registered> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Keeps committed entries.
    pub(crate) fn remember(&self, entries: impl IntoIterator<Item = (Vec<u8>, Registered)>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known.extend(entries);
    }

    /// The committed entry of `name` at `version`: from memory, else read in `txn` (the
    /// transaction an event of it was read in, which sees its entry, written no later than the
    /// event). `None` when the store has none.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], and [`Error::Damaged`] for an entry that cannot be decoded.
    pub(crate) fn committed(
        &self,
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        name: &[u8],
        version: u16,
    ) -> Result<Option<Registered>> {
        let key = schema::key(name, version);
        if let Some(found) = self.cached(&key) {
            return Ok(Some(found));
        }
        let Some(value) = dbs.schemas.get(txn, &key)? else {
            return Ok(None);
        };
        let found = schema::decode(name, version, value)?;
        self.remember([(key, found)]);
        Ok(Some(found))
    }
}

/// Whether a type of layout `current` may write or read the events of an entry: the entry's
/// layout is the same, or not known; else the error to give (`seq`: the record read, if any).
pub(crate) fn check(
    registered: Registered,
    name: &[u8],
    version: u16,
    current: Fingerprint,
    seq: Option<u64>,
) -> Result<()> {
    match registered {
        Registered::Layout(recorded) if recorded != current => Err(Error::LayoutChanged {
            event_type: String::from_utf8_lossy(name).into_owned(),
            version,
            recorded,
            current,
            seq,
        }),
        Registered::Renamed => Err(Error::RenamedEventType {
            event_type: String::from_utf8_lossy(name).into_owned(),
            version,
            seq,
        }),
        _ => Ok(()),
    }
}

/// The names the store keeps the events of `name` under from a version after `after` on:
/// the renames newer builds recorded, followed from name to name. Empty for a type never
/// renamed after `after`.
///
/// # Errors
///
/// [`Error::Lmdb`], and [`Error::Damaged`] for a renamed entry whose name is not one.
pub(crate) fn renamed_after(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    name: &str,
    after: u16,
) -> Result<Vec<String>> {
    let mut found: Vec<String> = Vec::new();
    let mut todo: Vec<(String, u16)> = vec![(name.to_string(), after)];
    while let Some((name, after)) = todo.pop() {
        let Some(first) = after.checked_add(1) else {
            continue;
        };
        let lo = schema::key(name.as_bytes(), first);
        let hi = schema::key(name.as_bytes(), u16::MAX);
        let range = (
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Included(&hi[..]),
        );
        for entry in dbs.schemas.range(txn, &range)? {
            let (key, value) = entry?;
            let (_, version) = schema::parse_key(key)?;
            if let Some(new_name) = schema::renamed_to(name.as_bytes(), version, value)? {
                if new_name != name && !found.iter().any(|f| f == new_name) {
                    found.push(new_name.to_string());
                    // Every rename of the new name, whatever its version.
                    todo.push((new_name.to_string(), 0));
                }
            }
        }
    }
    Ok(found)
}
