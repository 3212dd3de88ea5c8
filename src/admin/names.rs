//! Stream names and the label index, read without the application's types: the name of a
//! stream, and the events of categories and event types as raw events.

use std::collections::HashMap;
use std::sync::Arc;

use super::raw::{raw_event, RawEvents};
use crate::env::ReadTxn;
use crate::error::Result;
use crate::log::{Scan, Select};
use crate::name::StreamName;
use crate::store::Storage;
use crate::types::{Direction, IntoStreamId, StreamId};

/// The name `stream` was created with; `None` for a stream created by id, or without events.
///
/// # Errors
///
/// [`Error::InvalidStreamId`](crate::Error::InvalidStreamId),
/// [`Error::InvalidStreamName`](crate::Error::InvalidStreamName),
/// [`Error::ForeignTransaction`](crate::Error::ForeignTransaction), [`Error::Lmdb`](crate::Error::Lmdb),
/// and [`Error::Damaged`](crate::Error::Damaged) for a damaged name entry.
pub fn stream_name(
    storage: &Storage,
    txn: &ReadTxn,
    stream: impl IntoStreamId,
) -> Result<Option<StreamName>> {
    let stream = stream.into_stream_id()?;
    Ok(storage
        .log()
        .dbs
        .stream_name(txn.of(&storage.env)?, stream)?
        .map(|(name, _)| name))
}

/// The names of the streams met, looked up once each in one read transaction: what tools that
/// show many events use.
pub struct StreamNames<'t> {
    storage: Storage,
    txn: &'t ReadTxn,
    known: HashMap<StreamId, Option<StreamName>>,
}

impl<'t> StreamNames<'t> {
    /// Names looked up in `txn`.
    pub fn new(storage: &Storage, txn: &'t ReadTxn) -> Self {
        StreamNames {
            storage: storage.clone(),
            txn,
            known: HashMap::new(),
        }
    }

    /// The name of `stream` (see [`stream_name`]).
    ///
    /// # Errors
    ///
    /// As [`stream_name`].
    pub fn get(&mut self, stream: StreamId) -> Result<Option<&StreamName>> {
        if !self.known.contains_key(&stream) {
            let name = stream_name(&self.storage, self.txn, stream)?;
            self.known.insert(stream, name);
        }
        Ok(self.known.get(&stream).and_then(Option::as_ref))
    }
}

impl std::fmt::Debug for StreamNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamNames")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// The events of the streams in `categories` (all streams when empty) and of `event_types` (all
/// types when empty), from sequence `from` on (inclusive), in `direction`, read from the label
/// index: only the records it lists are read. With neither, every event of the log.
///
/// # Errors
///
/// The call fails on [`Error::ForeignTransaction`](crate::Error::ForeignTransaction),
/// [`Error::Lmdb`](crate::Error::Lmdb) or [`Error::Damaged`](crate::Error::Damaged) for a
/// damaged label; each item fails as [`event`](super::event) does, or with
/// [`Error::Corrupted`](crate::Error::Corrupted) when the label index disagrees with the log.
pub fn filtered<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    categories: &[String],
    event_types: &[String],
    from: u64,
    direction: Direction,
) -> Result<RawEvents<'t>> {
    let raw = txn.of(&storage.env)?;
    let select = Select {
        streams: None,
        categories: (!categories.is_empty()).then(|| Arc::from(categories)),
        types: (!event_types.is_empty()).then(|| Arc::from(event_types)),
        walk_types: !event_types.is_empty(),
        group: None,
        follow: None,
    };
    let scan = Scan::of(&storage.log().dbs, raw, from, direction, select)?;
    Ok(RawEvents::new(Box::new(scan.map(|rec| {
        rec.and_then(|rec| raw_event(rec.seq(), rec.bytes()))
    }))))
}

/// The categories of the store's named streams, in order of their names.
///
/// # Errors
///
/// [`Error::ForeignTransaction`](crate::Error::ForeignTransaction),
/// [`Error::Lmdb`](crate::Error::Lmdb), [`Error::Damaged`](crate::Error::Damaged) for a
/// damaged label.
pub fn categories(storage: &Storage, txn: &ReadTxn) -> Result<Vec<String>> {
    Ok(storage
        .log()
        .dbs
        .labels(txn.of(&storage.env)?)?
        .into_iter()
        .filter(|(kind, _, _)| *kind == crate::format::name::LabelKind::Category)
        .map(|(_, text, _)| text)
        .collect())
}
