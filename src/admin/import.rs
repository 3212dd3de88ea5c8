//! Appending exported records into an empty store, keeping their positions and timestamps.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::cipher::StreamKey;
use crate::env::{Commit, WriteKind};
use crate::error::{Error, Result};
use crate::event::Fingerprint;
use crate::format::record::{self, Place, RecordParts, MAX_EVENT_TYPE_LEN};
use crate::name::StreamName;
use crate::store::Storage;
use crate::types::StreamId;
use crate::write::LogTxn;

/// Most events in one import transaction.
const BATCH_EVENTS: usize = 4096;
/// Most payload and metadata bytes in one import transaction (a larger event goes alone).
const BATCH_BYTES: usize = 32 << 20;

/// One event to import, with every field of its envelope as it was exported.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportEvent {
    /// Global sequence; must be the next one of the target.
    pub seq: u64,
    /// The stream.
    pub stream: StreamId,
    /// The stream's name, when it has one (its id must be `stream`): recorded with the stream's
    /// first event, and checked against the recorded one for a later event.
    pub stream_name: Option<StreamName>,
    /// Version in the stream; must be the stream's next one.
    pub version: u64,
    /// The stream's previous sequence (`None` for version 1); checked, not trusted.
    pub prev_seq: Option<u64>,
    /// Commit time in nanoseconds since the Unix epoch; never earlier than the previous event's.
    pub timestamp_ns: u64,
    /// The event's id; unique in the store.
    pub event_id: Uuid,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// Event type name, 1 to 1,024 bytes.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u16,
    /// Opaque user metadata.
    pub metadata: Option<Vec<u8>>,
    /// The payload bytes (an rkyv archive), stored exactly.
    pub payload: Vec<u8>,
    /// The fingerprint of the layout `payload` is archived with, when it is known: recorded in
    /// the target's schema registry for (`event_type`, `schema_version`) with the first event
    /// of the pair, so that typed readers check it. An event whose pair the target already
    /// recorded with another layout is refused. `None` records the pair's layout as not known
    /// (readers then take any layout, validated by the archive's own checks only).
    pub layout: Option<Fingerprint>,
    /// The event belongs to a stream that was crypto-shredded in the source: only its envelope
    /// is known. It can be imported only into an encrypted store, where it keeps its place and
    /// reads as shredded: the importer writes the stream's tombstone into the target's keystore
    /// (before the event, so the stream's earlier events in the target read as shredded too),
    /// and seals `metadata` and `payload` under a random key that is never stored. They stand
    /// for the lost contents: give zero bytes of the original lengths (as `varve import` does) so
    /// that the envelope's lengths are kept.
    pub shredded: bool,
}

impl ImportEvent {
    /// An event at `seq`, version `version` of `stream`, with everything else empty: set the
    /// other (public) fields after.
    pub fn new(seq: u64, stream: StreamId, version: u64, event_type: impl Into<String>) -> Self {
        ImportEvent {
            seq,
            stream,
            stream_name: None,
            version,
            prev_seq: None,
            timestamp_ns: 0,
            event_id: Uuid::nil(),
            correlation_id: None,
            causation_id: None,
            event_type: event_type.into(),
            schema_version: 1,
            metadata: None,
            payload: Vec::new(),
            layout: None,
            shredded: false,
        }
    }
}

/// Why an import failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ImportError {
    /// The target store already holds events: an import goes into a new, empty store.
    NotEmpty {
        /// The target store's directory.
        path: PathBuf,
        /// Events it holds.
        events: u64,
    },
    /// An event does not fit where it must go; nothing of its batch was written.
    Invalid {
        /// The sequence the event names.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    Store(Error),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotEmpty { path, events } => write!(
                f,
                "the target store at {} is not empty ({events} events); import into a new, empty store",
                path.display()
            ),
            ImportError::Invalid { seq, reason } => {
                write!(f, "event at sequence {seq} cannot be imported: {reason}")
            }
            ImportError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::Store(e) => Some(e),
            ImportError::Invalid { .. } | ImportError::NotEmpty { .. } => None,
        }
    }
}

impl From<Error> for ImportError {
    fn from(e: Error) -> Self {
        ImportError::Store(e)
    }
}

impl From<heed::Error> for ImportError {
    fn from(e: heed::Error) -> Self {
        ImportError::Store(e.into())
    }
}

fn invalid(seq: u64, reason: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        seq,
        reason: reason.into(),
    }
}

/// Imports events, in log order, into an empty store, keeping every field: sequence, stream,
/// version, event id, type, schema version, metadata, correlation and causation ids, commit
/// timestamp and payload bytes.
///
/// Events are written in batches, each in one write transaction that checks, against the
/// store itself, that every event takes the next sequence of the log and the next version of
/// its stream, names the stream's previous sequence and a timestamp not before the log's last,
/// and carries an id not stored yet; it writes the records (padded so that payloads are 16-byte
/// aligned in the map, large ones in `log_large`) and the event ids together, or nothing. The
/// stream index and heads follow in the store's deferred index flushes, as for appends. An
/// import that fails part way leaves the batches before the failure committed.
///
/// Into an encrypted store, every record is sealed under its stream's key, created (and made
/// durable in the keystore) before the transaction that first writes the stream commits, as
/// appends do. Events marked [`ImportEvent::shredded`] are imported as shredded (see there);
/// into a store without encryption they are refused.
///
/// ```
/// use varvedb::admin::{ImportEvent, Importer};
/// use varvedb::{Storage, StorageConfig};
/// use varvedb::StreamId;
///
/// # let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// let mut importer = Importer::new(&storage)?;
/// let mut event = ImportEvent::new(1, StreamId(7), 1, "u32");
/// event.payload = 42u32.to_le_bytes().to_vec();
/// event.event_id = varvedb::Uuid::now_v7();
/// importer.push(event)?;
/// assert_eq!(importer.finish()?, 1);
/// assert_eq!(storage.stream_version(7u64)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Importer {
    storage: Storage,
    batch: Vec<ImportEvent>,
    batch_bytes: usize,
    /// Version and last sequence of each stream, as imported so far.
    streams: HashMap<StreamId, (u64, u64)>,
    next_seq: u64,
    last_ts: u64,
    imported: u64,
    buf: Vec<u8>,
    /// Streams this import shredded in the target (for events shredded in the source).
    shredded: HashSet<StreamId>,
}

impl fmt::Debug for Importer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Importer")
            .field("path", &self.storage.path())
            .field("imported", &self.imported)
            .finish_non_exhaustive()
    }
}

impl Importer {
    /// An importer into `storage`, which must hold no events.
    ///
    /// # Errors
    ///
    /// [`ImportError::NotEmpty`] when the store holds events; [`ImportError::Store`].
    pub fn new(storage: &Storage) -> Result<Importer, ImportError> {
        let dbs = &storage.log().dbs;
        let txn = storage.env.read_txn()?;
        let raw = txn.raw();
        let events = dbs.log.len(raw)?;
        if events > 0 || dbs.heads.len(raw)? > 0 || dbs.event_ids.len(raw)? > 0 {
            return Err(ImportError::NotEmpty {
                path: storage.path().to_owned(),
                events,
            });
        }
        Ok(Importer {
            storage: storage.clone(),
            batch: Vec::new(),
            batch_bytes: 0,
            streams: HashMap::new(),
            next_seq: 1,
            last_ts: 0,
            imported: 0,
            buf: Vec::new(),
            shredded: HashSet::new(),
        })
    }

    /// Events committed so far.
    pub fn imported(&self) -> u64 {
        self.imported
    }

    /// Streams shredded in the target because the input marked their events shredded.
    pub fn shredded_streams(&self) -> usize {
        self.shredded.len()
    }

    /// Checks an event and queues it; commits the queue when it is full.
    ///
    /// # Errors
    ///
    /// [`ImportError::Invalid`] when the event does not follow the events before it (sequence,
    /// stream version, previous sequence, timestamp) or breaks a limit (event type length,
    /// `max_event_size` for payload and metadata), is shredded and the store is not encrypted,
    /// or belongs to a stream an earlier shredded event shredded; nothing of it is queued. Any
    /// error of committing the queue, or of shredding the stream in the target.
    pub fn push(&mut self, event: ImportEvent) -> Result<(), ImportError> {
        let seq = event.seq;
        if seq != self.next_seq {
            return Err(invalid(
                seq,
                format!(
                    "expected sequence {} (events must come in log order, from 1, without gaps)",
                    self.next_seq
                ),
            ));
        }
        if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(invalid(
                seq,
                format!("event type must be 1 to {MAX_EVENT_TYPE_LEN} bytes"),
            ));
        }
        let max = self.storage.config().max_event_size;
        let meta_len = event.metadata.as_ref().map_or(0, Vec::len);
        if event.payload.len() > max || meta_len > max {
            return Err(invalid(
                seq,
                format!(
                    "payload of {} bytes or metadata of {meta_len} bytes exceeds max_event_size ({max})",
                    event.payload.len()
                ),
            ));
        }
        let (version, last) = self.streams.get(&event.stream).copied().unwrap_or((0, 0));
        if event.version != version + 1 {
            return Err(invalid(
                seq,
                format!(
                    "stream {} is at version {version}, so the next version is {}, not {}",
                    event.stream,
                    version + 1,
                    event.version
                ),
            ));
        }
        if event.prev_seq.unwrap_or(0) != last {
            return Err(invalid(
                seq,
                format!(
                    "prev_seq is {:?}, but the stream's previous event is at sequence {last}",
                    event.prev_seq
                ),
            ));
        }
        if event.timestamp_ns < self.last_ts {
            return Err(invalid(
                seq,
                format!(
                    "timestamp {} is earlier than the previous event's {}",
                    event.timestamp_ns, self.last_ts
                ),
            ));
        }
        let encrypted = self.storage.log().crypto.is_some();
        match (event.shredded, encrypted) {
            (true, false) => {
                return Err(invalid(
                    seq,
                    format!(
                        "event {} of stream {} is shredded in the source (its key was destroyed, its payload is gone) and cannot be imported into a store without encryption; import into an encrypted store, where it keeps its place and reads as shredded, or leave shredded events out",
                        event.version, event.stream
                    ),
                ))
            }
            (true, true) if !self.shredded.contains(&event.stream) => {
                // The stream's queued events are written (under its key) before the key is
                // destroyed and its tombstone written.
                self.flush()?;
                self.storage.shred_stream(event.stream)?;
                self.shredded.insert(event.stream);
            }
            (false, _) if self.shredded.contains(&event.stream) => {
                return Err(invalid(
                    seq,
                    format!(
                        "stream {} is shredded (an earlier event of the input is marked shredded) and takes no more events; a shredded stream's later events cannot be readable",
                        event.stream
                    ),
                ))
            }
            _ => {}
        }
        self.streams.insert(event.stream, (event.version, seq));
        self.next_seq += 1;
        self.last_ts = event.timestamp_ns;
        self.batch_bytes += event.payload.len() + meta_len;
        self.batch.push(event);
        if self.batch.len() >= BATCH_EVENTS || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits what is queued, and returns the number of events imported in all.
    ///
    /// # Errors
    ///
    /// As [`Importer::push`].
    pub fn finish(mut self) -> Result<u64, ImportError> {
        self.flush()?;
        Ok(self.imported)
    }

    /// Writes the queue in one transaction.
    fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let storage = &self.storage;
        let batch = &self.batch;
        let keys = keys_for(storage, batch)??;
        let buf = &mut self.buf;
        storage
            .store
            .writes
            .run_exclusive(WriteKind::Import, |txn| {
                Ok(match write_batch(txn, batch, &keys, buf)? {
                    Ok(()) => Commit::Commit(Ok(())),
                    Err(e) => Commit::Abort(Err(e)),
                })
            })??;
        self.imported += self.batch.len() as u64;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

/// The key to seal each event of `batch` with, in an encrypted store (`None` in a plain one):
/// its stream's key, created and made durable in the keystore now, before the log transaction
/// that first uses it; for a shredded event, a random key that is never stored. The inner
/// error means the target refuses an event (its stream has a tombstone there).
#[allow(clippy::type_complexity)]
fn keys_for(
    storage: &Storage,
    batch: &[ImportEvent],
) -> Result<Result<Vec<Option<Arc<StreamKey>>>, ImportError>> {
    let Some(crypto) = storage.log().crypto.as_ref() else {
        return Ok(Ok(vec![None; batch.len()]));
    };
    let mut streams: Vec<StreamId> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for event in batch.iter().filter(|e| !e.shredded) {
        index.entry(event.stream).or_insert_with(|| {
            streams.push(event.stream);
            streams.len() - 1
        });
    }
    let stream_keys = crypto.keys_for_append(&streams)?;
    let mut keys = Vec::with_capacity(batch.len());
    for event in batch {
        if event.shredded {
            keys.push(Some(Arc::new(crypto.throwaway_key()?)));
            continue;
        }
        match &stream_keys[index[&event.stream]] {
            Ok(key) => keys.push(Some(Arc::clone(key))),
            Err(Error::StreamShredded { stream }) => {
                return Ok(Err(invalid(
                    event.seq,
                    format!("stream {stream} is shredded in the target store and takes no events; import into a new store"),
                )))
            }
            Err(e) => return Err(e.duplicate()),
        }
    }
    Ok(Ok(keys))
}

/// Writes a batch in a log transaction, sealing each event under its key in `keys` (an
/// encrypted store). The outer error fails the transaction; the inner one means the store does
/// not take the batch (another writer got there first).
fn write_batch(
    txn: &mut LogTxn<'_, '_>,
    batch: &[ImportEvent],
    keys: &[Option<Arc<StreamKey>>],
    buf: &mut Vec<u8>,
) -> Result<Result<(), ImportError>> {
    for (event, key) in batch.iter().zip(keys) {
        let seq = event.seq;
        let (next_seq, last_ts) = txn.next_position()?;
        if seq != next_seq {
            return Ok(Err(invalid(
                seq,
                format!("the store's next sequence is {next_seq}: another writer appended to it during the import"),
            )));
        }
        let tip = txn.tip(event.stream)?;
        let (version, last) = tip.map_or((0, 0), |t| (t.version, t.last_seq));
        if event.version != version + 1 || event.prev_seq.unwrap_or(0) != last {
            return Ok(Err(invalid(
                seq,
                format!(
                    "stream {} is at version {version} in the store: another writer appended to it during the import",
                    event.stream
                ),
            )));
        }
        if event.timestamp_ns < last_ts {
            return Ok(Err(invalid(
                seq,
                "timestamp is earlier than the store's last event",
            )));
        }
        if let Some(existing) = txn.event_id_seq(event.event_id)? {
            return Ok(Err(invalid(
                seq,
                format!(
                    "event id {} is already stored at sequence {existing}; event ids are unique",
                    event.event_id
                ),
            )));
        }
        if let Some(name) = &event.stream_name {
            if name.stream_id() != event.stream {
                return Ok(Err(invalid(
                    seq,
                    format!(
                        "the stream name {name:?} derives stream {}, not {}",
                        name.stream_id(),
                        event.stream
                    ),
                )));
            }
            if version == 0 {
                txn.record_name(name)?;
            } else if let Err(e) = txn.check_name(event.stream, name)? {
                return Ok(Err(invalid(seq, e.to_string())));
            }
        }
        let name = event.event_type.as_bytes();
        let allowed = match event.layout {
            Some(layout) => txn.record_layout(name, event.schema_version, layout)?,
            None => txn.check_not_renamed(name, event.schema_version)?,
        };
        if let Err(e) = allowed {
            return Ok(Err(invalid(seq, e.to_string())));
        }
        buf.clear();
        let begun = record::begin(
            buf,
            &RecordParts {
                stream: event.stream,
                event_id: event.event_id,
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                metadata: event.metadata.as_deref(),
                encrypted: key.is_some(),
            },
        );
        buf.extend_from_slice(&event.payload);
        let len = record::finish(buf, begun.start, begun.payload_offset);
        txn.put_event(
            &mut buf[begun.start..begun.start + len],
            begun.payload_offset,
            event.stream,
            event.event_id,
            Place {
                seq,
                version: event.version,
                prev_seq: last,
                timestamp_ns: event.timestamp_ns,
            },
            key.as_deref(),
        )?;
    }
    Ok(Ok(()))
}
