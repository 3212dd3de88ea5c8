//! The typed writer.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use rkyv::rancor;
use rkyv::ser::allocator::Arena;
use tokio::sync::watch;

use super::transaction::Transaction;
use crate::error::{Error, Result};
use crate::event::{Event, EventSerializer};
use crate::format::record::{self, RecordParts, MAX_EVENT_TYPE_LEN};
use crate::name::StreamName;
use crate::store::Storage;
use crate::types::{Appended, ExpectedVersion, IntoStreamId, NewEvent, StreamId};
use crate::write::{Done, Request, Staged};

/// Largest per-event size the buffer of a batch is reserved for ahead: one large event must not
/// make every later small batch reserve as much.
const EVENT_LEN_HINT_MAX: usize = 16 << 10;

/// Appends events of type `E`.
///
/// A writer keeps reusable serialization buffers, hence `&mut self`. Clone it (cheap) to write
/// from several threads or tasks: clones share the store, and appends that arrive while another
/// commit runs are grouped into the next transaction and share its fsync (group commit).
///
/// ```
/// use varvedb::{Storage, StorageConfig};
/// use varvedb::Writer;
/// use varvedb::ExpectedVersion;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
/// #[rkyv(derive(Debug))]
/// pub struct Deposited { pub cents: u64 }
///
/// let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// let mut writer = Writer::<Deposited>::new(storage.clone());
/// assert_eq!(writer.append(7, 1, Deposited { cents: 100 })?, 1);
/// let batch = writer.append_batch(7, ExpectedVersion::Exact(1), vec![
///     Deposited { cents: 5 },
///     Deposited { cents: 6 },
/// ])?;
/// assert_eq!(batch.last().version, 3);
/// assert_eq!(batch.last().seq, 3);
/// # Ok::<(), varvedb::error::Error>(())
/// ```
pub struct Writer<E> {
    storage: Storage,
    event_type: String,
    /// The names of `E`'s older versions that differ from `E`'s (see `Request::renamed_from`).
    renamed_from: Arc<[String]>,
    buf: Vec<u8>,
    arena: Arena,
    staged: Vec<Staged>,
    ids: Vec<u128>,
    /// Bytes per staged event in the last batch (at most [`EVENT_LEN_HINT_MAX`]). A transaction
    /// keeps each part's buffers, so the next part starts from empty ones: they are sized from
    /// this at once rather than grown by doubling (a reallocation per doubling per part).
    event_len: usize,
    _event: PhantomData<fn(E)>,
}

impl<E> Clone for Writer<E> {
    fn clone(&self) -> Self {
        Writer {
            storage: self.storage.clone(),
            event_type: self.event_type.clone(),
            renamed_from: Arc::clone(&self.renamed_from),
            buf: Vec::new(),
            arena: Arena::new(),
            staged: Vec::new(),
            ids: Vec::new(),
            event_len: 0,
            _event: PhantomData,
        }
    }
}

impl<E: Event> std::fmt::Debug for Writer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.storage.path())
            .field("event_type", &self.event_type)
            .field("schema_version", &E::VERSION)
            .finish()
    }
}

impl<E> Writer<E>
where
    E: Event + for<'a> rkyv::Serialize<EventSerializer<'a>>,
{
    /// A writer for events of type `E`, stored with its name [`Event::NAME`] and schema
    /// version [`Event::VERSION`].
    pub fn new(storage: Storage) -> Self {
        let mut renamed_from: Vec<String> = Vec::new();
        for upcaster in E::upcasts() {
            if upcaster.name != E::NAME && !renamed_from.iter().any(|n| n == upcaster.name) {
                renamed_from.push(upcaster.name.to_string());
            }
        }
        Writer {
            storage,
            event_type: E::NAME.to_string(),
            renamed_from: renamed_from.into(),
            buf: Vec::new(),
            arena: Arena::new(),
            staged: Vec::new(),
            ids: Vec::new(),
            event_len: 0,
            _event: PhantomData,
        }
    }

    /// Stores events under another event type name (a [`Reader`](crate::Reader) then
    /// needs [`accept_event_types`](crate::Reader::accept_event_types) with it).
    pub fn with_event_type(mut self, name: impl Into<String>) -> Self {
        self.event_type = name.into();
        self
    }

    /// The store this writer appends to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A receiver of the committed head (see [`Storage::subscribe`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.storage.subscribe()
    }

    /// Appends one event as version `version` of `stream`, which must be the stream's current
    /// version + 1. Returns the event's global sequence. The append is durable when this returns.
    ///
    /// # Errors
    ///
    /// - [`Error::ConcurrencyConflict`] when the stream is not at `version - 1`, with
    ///   `expected: ExpectedVersion::Exact(version - 1)` and the actual version.
    /// - [`Error::InvalidVersion`] for version 0, [`Error::InvalidStreamId`] for a negative id.
    /// - [`Error::EventTooLarge`], [`Error::Serialize`], [`Error::MapFull`], [`Error::Lmdb`].
    ///
    /// Nothing is written when an error is returned.
    pub fn append(&mut self, stream: impl IntoStreamId, version: u64, event: E) -> Result<u64> {
        let (stream, expected) = single(stream, version).inspect_err(|e| {
            crate::metrics::handles::append_failed(self.storage.env.metrics(), e)
        })?;
        let appended = self.append_batch(stream, expected, [event])?;
        Ok(appended.first().seq)
    }

    /// Appends events to one stream atomically: all are written, in order, at consecutive
    /// versions and consecutive global sequences, or none is.
    ///
    /// # Idempotent retries
    ///
    /// Every event has a unique id ([`NewEvent::with_id`], or a generated UUIDv7). When the first
    /// stored id is found:
    ///
    /// - if **every** event of the batch is stored, in this stream, at consecutive versions in
    ///   batch order, each with the same type, schema version, metadata, correlation and causation
    ///   ids and payload bytes, and `expected` agrees with where the first one was written
    ///   (`Exact(v)`: at version v+1; `NoStream`: at 1; `StreamExists`: after 1; `Any`: anywhere),
    ///   the call is a retry: it writes nothing and returns the original positions with
    ///   `deduplicated: true`, whatever the stream's current version now is;
    /// - otherwise it fails with [`Error::EventIdConflict`] naming the id and where it is stored.
    ///
    /// # Errors
    ///
    /// - [`Error::ConcurrencyConflict`] when `expected` does not match the stream.
    /// - [`Error::EventIdConflict`], [`Error::DuplicateEventIdInBatch`] (see above).
    /// - [`Error::EmptyBatch`], [`Error::EventTooLarge`], [`Error::InvalidEventType`],
    ///   [`Error::InvalidStreamId`], [`Error::Serialize`], [`Error::MapFull`], [`Error::Lmdb`].
    ///
    /// Nothing is written when an error is returned.
    pub fn append_batch<I, T>(
        &mut self,
        stream: impl IntoStreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<Appended>
    where
        I: IntoIterator<Item = T>,
        T: Into<NewEvent<E>>,
    {
        let started = Instant::now();
        let result = match self.prepare(stream, expected, events) {
            Ok(request) => {
                let done = self.storage.store.submit_sync(request);
                self.reclaim(done)
            }
            Err(e) => Err(e),
        };
        crate::metrics::handles::append_done(self.storage.env.metrics(), started, &result);
        result
    }

    /// Starts a transaction: batches for several streams, appended atomically by
    /// [`Transaction::commit`]. See [`Transaction`].
    pub fn transaction(&mut self) -> Transaction<'_, E> {
        Transaction::new(self)
    }

    /// Appends one event as version `version` of `stream` without blocking the async runtime:
    /// the future completes once the event is durable. See [`Writer::append`].
    ///
    /// The event is serialized on the calling task; the transaction runs on the store's commit
    /// thread, grouped with concurrent appends. Dropping the future does not cancel the append.
    ///
    /// # Errors
    ///
    /// As [`Writer::append`].
    pub async fn append_async(
        &mut self,
        stream: impl IntoStreamId,
        version: u64,
        event: E,
    ) -> Result<u64> {
        let (stream, expected) = single(stream, version).inspect_err(|e| {
            crate::metrics::handles::append_failed(self.storage.env.metrics(), e)
        })?;
        let appended = self.append_batch_async(stream, expected, [event]).await?;
        Ok(appended.first().seq)
    }

    /// Appends a batch to one stream without blocking the async runtime: the future completes
    /// once the batch is durable. Same rules and errors as [`Writer::append_batch`]; dropping the
    /// future does not cancel the append.
    ///
    /// # Errors
    ///
    /// As [`Writer::append_batch`].
    pub async fn append_batch_async<I, T>(
        &mut self,
        stream: impl IntoStreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<Appended>
    where
        I: IntoIterator<Item = T>,
        T: Into<NewEvent<E>>,
    {
        let started = Instant::now();
        let result = match self.prepare(stream, expected, events) {
            Ok(request) => {
                let rx = self.storage.store.submit_async(request);
                match rx.await {
                    Ok(done) => self.reclaim(done),
                    Err(_) => Err(Error::Io(std::io::Error::other(
                        "the store's commit thread stopped before committing this batch",
                    ))),
                }
            }
            Err(e) => Err(e),
        };
        crate::metrics::handles::append_done(self.storage.env.metrics(), started, &result);
        result
    }

    /// Serializes a batch into a request, taking the writer's reusable buffers.
    pub(crate) fn prepare<I, T>(
        &mut self,
        stream: impl IntoStreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<Request>
    where
        I: IntoIterator<Item = T>,
        T: Into<NewEvent<E>>,
    {
        let (stream, name) = stream.into_named_stream()?;
        self.buf.clear();
        self.staged.clear();
        self.ids.clear();
        let events = events.into_iter();
        let expected_events = events.size_hint().0.max(1);
        self.buf.reserve(self.event_len * expected_events);
        self.staged.reserve(expected_events);
        for event in events {
            self.stage(stream, event.into())?;
        }
        if self.staged.is_empty() {
            return Err(Error::EmptyBatch { stream });
        }
        self.event_len = (self.buf.len() / self.staged.len()).min(EVENT_LEN_HINT_MAX);
        if self.ids.len() > 1 {
            self.ids.sort_unstable();
            if let Some(w) = self.ids.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::DuplicateEventIdInBatch {
                    event_id: uuid::Uuid::from_u128(w[0]),
                });
            }
        }
        Ok(Request {
            stream,
            name,
            expected,
            buf: std::mem::take(&mut self.buf),
            staged: std::mem::take(&mut self.staged),
            layout: E::LAYOUT,
            renamed_from: Arc::clone(&self.renamed_from),
            timestamp_ns: None,
        })
    }

    /// Takes the buffers back from a finished request.
    fn reclaim(&mut self, done: Done) -> Result<Appended> {
        self.buf = done.request.buf;
        self.staged = done.request.staged;
        done.result
    }

    /// Serializes one event into the batch buffer.
    fn stage(&mut self, stream: StreamId, event: NewEvent<E>) -> Result<()> {
        let max = self.storage.config().max_event_size;
        let event_type = event.event_type.as_deref().unwrap_or(&self.event_type);
        if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(Error::InvalidEventType {
                name: event_type.to_string(),
                max: MAX_EVENT_TYPE_LEN,
            });
        }
        if let Some(m) = &event.metadata {
            if m.len() > max {
                return Err(Error::EventTooLarge { size: m.len(), max });
            }
        }
        let parts = RecordParts {
            stream,
            event_id: event.id,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            event_type,
            schema_version: E::VERSION,
            metadata: event.metadata.as_deref(),
            encrypted: self.storage.store.log.crypto.is_some(),
        };
        let begun = record::begin(&mut self.buf, &parts);
        let (start, payload_offset) = (begun.start, begun.payload_offset);
        let archive_start = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        self.buf = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            &event.event,
            buf,
            self.arena.acquire(),
        )
        .map_err(|e| Error::Serialize {
            reason: e.to_string(),
        })?;
        let size = self.buf.len() - archive_start;
        if size > max {
            self.buf.truncate(start);
            return Err(Error::EventTooLarge { size, max });
        }
        let len = record::finish(&mut self.buf, start, payload_offset);
        self.staged.push(Staged {
            start,
            len,
            payload_offset,
            id: event.id,
        });
        self.ids.push(event.id.as_u128());
        Ok(())
    }
}

/// The stream and expectation of a single append at `version` (the stream's current version
/// must be `version - 1`).
fn single(stream: impl IntoStreamId, version: u64) -> Result<(Stream, ExpectedVersion)> {
    let (id, name) = stream.into_named_stream()?;
    if version == 0 {
        return Err(Error::InvalidVersion {
            stream: id,
            version,
        });
    }
    Ok((Stream { id, name }, ExpectedVersion::Exact(version - 1)))
}

/// A stream with the name it was given, if any: what [`single`] hands on to `append_batch`.
pub(crate) struct Stream {
    pub(crate) id: StreamId,
    pub(crate) name: Option<StreamName>,
}

impl IntoStreamId for Stream {
    fn into_stream_id(self) -> Result<StreamId> {
        Ok(self.id)
    }

    fn into_named_stream(self) -> Result<(StreamId, Option<StreamName>)> {
        Ok((self.id, self.name))
    }
}
