//! Multi-stream transactions: several streams' batches appended atomically.

use std::time::Instant;

use std::sync::Arc;

use super::writer::Writer;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::event::EventSerializer;
use crate::types::{Appended, ExpectedVersion, IntoStreamId, NewEvent};
use crate::write::Request;

/// Batches for several streams, appended atomically by [`commit`](Transaction::commit): all of
/// them are written, in the order they were added, in one LMDB transaction and one fsync, or
/// none is.
///
/// Made by [`Writer::transaction`]. Each [`append_batch`](Transaction::append_batch) serializes
/// its events at once (so an oversized event fails there, and the transaction stays usable);
/// versions are checked at commit, each part against the stream as the parts before it leave it,
/// so two parts may name the same stream.
///
/// ```
/// use varvedb::{Storage, StorageConfig};
/// use varvedb::Writer;
/// use varvedb::error::Error;
/// use varvedb::ExpectedVersion;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
/// #[rkyv(derive(Debug))]
/// pub struct Moved { pub cents: i64 }
///
/// let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// let mut writer = Writer::<Moved>::new(storage.clone());
///
/// // A transfer: both accounts' events, or neither.
/// let mut tx = writer.transaction();
/// tx.append_batch(1, ExpectedVersion::NoStream, [Moved { cents: -500 }])?;
/// tx.append_batch(2, ExpectedVersion::NoStream, [Moved { cents: 500 }])?;
/// let appended = tx.commit()?;
/// assert_eq!(appended[1].first().seq, 2);
///
/// // A conflict in one part fails the whole transaction: stream 3 gets nothing either.
/// let mut tx = writer.transaction();
/// tx.append_batch(3, ExpectedVersion::NoStream, [Moved { cents: 1 }])?;
/// tx.append_batch(1, ExpectedVersion::NoStream, [Moved { cents: 1 }])?;
/// assert!(matches!(tx.commit(), Err(Error::ConcurrencyConflict { actual: 1, .. })));
/// assert_eq!(storage.stream_version(3)?, 0);
/// # Ok::<(), varvedb::error::Error>(())
/// ```
#[must_use = "a transaction writes nothing until it is committed"]
pub struct Transaction<'w, E> {
    writer: &'w mut Writer<E>,
    parts: Vec<Request>,
    ids: foldhash::HashSet<u128>,
    events: usize,
}

impl<E> std::fmt::Debug for Transaction<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("parts", &self.parts.len())
            .field("events", &self.events)
            .finish()
    }
}

impl<'w, E> Transaction<'w, E>
where
    E: Event + for<'a> rkyv::Serialize<EventSerializer<'a>>,
{
    pub(crate) fn new(writer: &'w mut Writer<E>) -> Self {
        Transaction {
            writer,
            parts: Vec::new(),
            ids: foldhash::HashSet::default(),
            events: 0,
        }
    }

    /// Adds a batch for `stream`, to be appended at commit if the stream then matches
    /// `expected` (after the parts added before this one). Same rules as
    /// [`Writer::append_batch`], including idempotent retries per part.
    ///
    /// # Errors
    ///
    /// Failures of the batch itself, found now: [`Error::EmptyBatch`], [`Error::EventTooLarge`],
    /// [`Error::InvalidEventType`], [`Error::InvalidStreamId`], [`Error::Serialize`], and
    /// [`Error::DuplicateEventIdInBatch`] when an event id repeats within the whole transaction.
    /// The batch is then left out and the transaction keeps its other parts.
    pub fn append_batch<I, T>(
        &mut self,
        stream: impl IntoStreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<&mut Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<NewEvent<E>>,
    {
        let part = self.writer.prepare(stream, expected, events)?;
        for (i, s) in part.staged.iter().enumerate() {
            if !self.ids.insert(s.id.as_u128()) {
                // The ids this part inserted are those before this one (each was new).
                for earlier in &part.staged[..i] {
                    self.ids.remove(&earlier.id.as_u128());
                }
                return Err(Error::DuplicateEventIdInBatch { event_id: s.id });
            }
        }
        self.events += part.staged.len();
        self.parts.push(part);
        Ok(self)
    }

    /// Adds one event as version `version` of `stream` (the stream must then be at
    /// `version - 1`, after the parts added before this one).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidVersion`] for version 0, and those of
    /// [`append_batch`](Transaction::append_batch).
    pub fn append(
        &mut self,
        stream: impl IntoStreamId,
        version: u64,
        event: impl Into<NewEvent<E>>,
    ) -> Result<&mut Self> {
        let (id, name) = stream.into_named_stream()?;
        if version == 0 {
            return Err(Error::InvalidVersion {
                stream: id,
                version,
            });
        }
        let stream = super::writer::Stream { id, name };
        self.append_batch(stream, ExpectedVersion::Exact(version - 1), [event])
    }

    /// The number of batches added.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// `true` when no batch was added: committing writes nothing.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The number of events added.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Appends every part atomically and returns, once they are durable, one [`Appended`] per
    /// part in the order they were added. An empty transaction writes nothing.
    ///
    /// Parts whose events are all stored already (an exact retry, as in
    /// [`Writer::append_batch`]) write nothing and report their original positions with
    /// `deduplicated: true`; retrying a whole committed transaction therefore writes nothing.
    ///
    /// # Errors
    ///
    /// The first part that fails fails the transaction, and nothing is written:
    /// [`Error::ConcurrencyConflict`] (naming that part's stream), [`Error::EventIdConflict`],
    /// [`Error::StreamShredded`], and [`Error::MapFull`], [`Error::Lmdb`], [`Error::Poisoned`]
    /// for the store.
    pub fn commit(mut self) -> Result<Vec<Appended>> {
        if self.parts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let storage = self.writer.storage().clone();
        let result = storage.store.commit_atomic(&mut self.parts);
        crate::metrics::handles::append_done(storage.env.metrics(), started, &result);
        result
    }

    /// [`commit`](Transaction::commit) without blocking the async runtime: the transaction runs
    /// on a blocking thread, and the future completes once it is durable. Dropping the future
    /// does not cancel the commit.
    ///
    /// # Errors
    ///
    /// As [`commit`](Transaction::commit).
    pub async fn commit_async(self) -> Result<Vec<Appended>> {
        if self.parts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let storage = self.writer.storage().clone();
        let result = Arc::clone(&storage.store)
            .commit_atomic_async(self.parts)
            .await;
        crate::metrics::handles::append_done(storage.env.metrics(), started, &result);
        result
    }
}
