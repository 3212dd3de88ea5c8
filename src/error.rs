//! Errors returned by VarveDB.
//!
//! Every fallible call returns [`Result<T>`], whose error is the [`Error`] enum. Variants carry the
//! fields a caller needs to act (the stream, the expected and the actual version, the sequence of a
//! damaged record), and the enum is `#[non_exhaustive]` so that new failure modes can be added
//! without breaking callers.

use std::path::PathBuf;

use crate::types::{ExpectedVersion, StreamId};

/// The result type of every fallible VarveDB call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error of an application's own code called by VarveDB (an event handler, a projection):
/// any error type, boxed. [`Error::Handler`] carries it as its source.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stored entry beside the log, named in [`Error::Damaged`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamagedEntry {
    /// The head of this stream (the `heads` database).
    StreamHead {
        /// The stream.
        stream: StreamId,
    },
    /// A key of the `heads` database that is not a stream id.
    StreamHeadKey,
    /// A key of the stream index that is not a stream and a version.
    StreamIndexKey,
    /// The layout the store recorded for this event type and schema version.
    Schema {
        /// The event type name.
        event_type: String,
        /// The schema version.
        version: u16,
    },
    /// A key of the `schemas` database that is not an event type and a version.
    SchemaKey,
    /// The entry of this version of this stream in the stream index.
    StreamIndexEntry {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
    },
    /// The index watermark in `meta`.
    IndexWatermark,
    /// The checkpoint of this processor (the `checkpoints` database).
    Checkpoint {
        /// The processor's name.
        processor: String,
    },
    /// The recorded name of this stream (the `stream_names` database).
    StreamName {
        /// The stream.
        stream: StreamId,
    },
    /// An entry of the `labels` database (the ids of categories and event types), or an entry
    /// of the `label_index` that names no label.
    Label {
        /// What the entry is about.
        what: String,
    },
    /// An entry of the `replica` database: where a replica of a cluster's log stands.
    Replica {
        /// What the entry is about.
        what: String,
    },
}

impl std::fmt::Display for DamagedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamagedEntry::StreamHead { stream } => write!(f, "the head of stream {stream}"),
            DamagedEntry::StreamHeadKey => f.write_str("a key of the stream heads"),
            DamagedEntry::StreamIndexKey => f.write_str("a key of the stream index"),
            DamagedEntry::Schema {
                event_type,
                version,
            } => write!(f, "the recorded layout of {event_type} v{version}"),
            DamagedEntry::SchemaKey => f.write_str("a key of the schemas database"),
            DamagedEntry::StreamIndexEntry { stream, version } => {
                write!(
                    f,
                    "the stream index entry of version {version} of stream {stream}"
                )
            }
            DamagedEntry::IndexWatermark => f.write_str("the index watermark"),
            DamagedEntry::Checkpoint { processor } => {
                write!(f, "the checkpoint of processor {processor:?}")
            }
            DamagedEntry::StreamName { stream } => write!(f, "the name of stream {stream}"),
            DamagedEntry::Label { what } => write!(f, "the label entry of {what}"),
            DamagedEntry::Replica { what } => write!(f, "the replica entry of {what}"),
        }
    }
}

/// Everything that can go wrong in VarveDB.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Optimistic concurrency check failed: the stream is not at the version the caller expected.
    /// Nothing was written.
    #[error("concurrency conflict on stream {stream}: expected {expected}, stream is at version {actual}")]
    ConcurrencyConflict {
        /// The stream that was appended to.
        stream: StreamId,
        /// What the caller expected the stream's current version to be.
        expected: ExpectedVersion,
        /// The stream's actual current version (0 when the stream does not exist).
        actual: u64,
    },

    /// An event id of the batch is already stored, but not as an exact retry of this batch (see
    /// the idempotency rules in [`Writer::append_batch`](crate::Writer::append_batch)).
    /// Nothing was written.
    #[error("event id {event_id} is already stored at sequence {existing_seq} (stream {existing_stream}, version {existing_version}): {reason}")]
    EventIdConflict {
        /// The colliding event id.
        event_id: uuid::Uuid,
        /// Where the stored event with this id lives.
        existing_seq: u64,
        /// The stream of the stored event.
        existing_stream: StreamId,
        /// The version of the stored event in its stream.
        existing_version: u64,
        /// Why the batch is not an exact retry.
        reason: &'static str,
    },

    /// The same event id appears twice in one batch. Nothing was written.
    #[error("event id {event_id} appears more than once in the batch")]
    DuplicateEventIdInBatch {
        /// The repeated id.
        event_id: uuid::Uuid,
    },

    /// `append` was called with version 0; stream versions start at 1.
    #[error("invalid version {version} for stream {stream}: stream versions start at 1")]
    InvalidVersion {
        /// The stream appended to.
        stream: StreamId,
        /// The rejected version.
        version: u64,
    },

    /// `append_batch` was called with no events.
    #[error("empty batch for stream {stream}: a batch must hold at least one event")]
    EmptyBatch {
        /// The stream appended to.
        stream: StreamId,
    },

    /// A serialized event is larger than [`StorageConfig::max_event_size`](crate::StorageConfig::max_event_size).
    /// Nothing was written.
    #[error(
        "event of {size} bytes exceeds the limit of {max} bytes (StorageConfig::max_event_size)"
    )]
    EventTooLarge {
        /// Size of the serialized event payload (or of its metadata) in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// An event type name is empty or longer than [`MAX_EVENT_TYPE_LEN`](crate::MAX_EVENT_TYPE_LEN) bytes.
    #[error("invalid event type name {name:?}: must be 1 to {max} bytes")]
    InvalidEventType {
        /// The rejected name.
        name: String,
        /// The limit in bytes.
        max: usize,
    },

    /// A stream id given as a signed integer was negative.
    #[error("invalid stream id {value}: stream ids are unsigned")]
    InvalidStreamId {
        /// The rejected value.
        value: i128,
    },

    /// A stream name does not parse (see [`StreamName`](crate::StreamName)): empty, too long,
    /// with a control character, or with an empty category, entity, category type, id or
    /// cardinal id.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An append by name reached a stream whose id the name derives, but which the store keeps
    /// under another name, or which was created by id without a name: two names (or a name and
    /// an id) that map to one stream are refused, never merged. Nothing was written.
    #[error("stream {stream} is not named {name:?}: {}", match existing { Some(n) => format!("the store keeps it as {n:?}"), None => "it was created by id, without a name".to_owned() })]
    StreamNameConflict {
        /// The stream the name maps to.
        stream: StreamId,
        /// The name the append gave.
        name: String,
        /// The name the store keeps for the stream; `None` for a stream created by id.
        existing: Option<String>,
    },

    /// The configuration passed to [`Storage::open`](crate::Storage::open) is invalid.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A feature was requested that this build does not provide yet.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },

    /// The store on disk was written with a different format version.
    #[error("store at {path} has format version {found}, this build reads format version {supported}; export it with the build that wrote it and import it here")]
    FormatVersion {
        /// The store's directory.
        path: PathBuf,
        /// Format version found in the store.
        found: u32,
        /// Format version this build reads and writes.
        supported: u32,
    },

    /// The store was written by a build whose rkyv archive layout (endianness, alignment or pointer
    /// width, chosen by rkyv cargo features) differs from this build's.
    #[error("store at {path} was written with rkyv layout {found:?}, this build uses {current:?} (check rkyv features such as `big_endian`, `unaligned`, `pointer_width_64` in your dependency tree)")]
    LayoutMismatch {
        /// The store's directory.
        path: PathBuf,
        /// Layout descriptor stored in the file.
        found: [u8; 4],
        /// Layout descriptor of this build.
        current: [u8; 4],
    },

    /// The store was written by a build of another rkyv release line, whose archives this
    /// build's rkyv does not read.
    #[error("store at {path} was written with rkyv {found}, this build uses rkyv {current}")]
    RkyvVersion {
        /// The store's directory.
        path: PathBuf,
        /// The rkyv line recorded in the store.
        found: String,
        /// This build's rkyv line.
        current: String,
    },

    /// The store at this path is already open in this process with an incompatible configuration.
    #[error("store at {path} is already open in this process with a different configuration; reuse that Storage or drop it first")]
    AlreadyOpen {
        /// The store's directory.
        path: PathBuf,
    },

    /// A stored record failed its integrity check. The record is never returned.
    #[error("record at sequence {seq} is corrupted: {reason}")]
    Corrupted {
        /// Global sequence of the damaged record.
        seq: u64,
        /// What check failed.
        reason: String,
    },

    /// An entry stored beside the log (a stream head, the index watermark, a processor
    /// checkpoint) failed its integrity check. It is never used. Stream heads and the watermark
    /// are rebuilt from the log by exporting and importing the store; a checkpoint is set again
    /// with [`Storage::reset_processor`](crate::Storage::reset_processor).
    #[error("{entry} is damaged: {reason}")]
    Damaged {
        /// Which entry.
        entry: DamagedEntry,
        /// What check failed.
        reason: String,
    },

    /// An event was read as a Rust type different from the one it was written as.
    #[error("event at sequence {seq} has type {found:?}, but the reader expects {expected:?}")]
    WrongEventType {
        /// Global sequence of the record.
        seq: u64,
        /// The event types this reader accepts.
        expected: String,
        /// The event type stored in the record.
        found: String,
    },

    /// An event type's archived layout differs from the one the store recorded for its name and
    /// schema version: the type changed without a version bump, or two types claim the same
    /// name and version. Nothing is written, and no event of that version is read with it.
    #[error("{event_type} v{version} changed layout (the store recorded {recorded}, this build has {current}){}: keep the old definition as a frozen type, bump to v{} and add an upcaster (or give one of two types that share the name another name)", seq.map(|s| format!(", at sequence {s}")).unwrap_or_default(), u32::from(*version) + 1)]
    LayoutChanged {
        /// The event type name.
        event_type: String,
        /// The schema version.
        version: u16,
        /// The fingerprint the store recorded for it.
        recorded: crate::event::Fingerprint,
        /// The fingerprint of this build's type.
        current: crate::event::Fingerprint,
        /// The record read, when the error comes from a read.
        seq: Option<u64>,
    },

    /// An event of a type the reader reads, stored at a schema version it has no way to read:
    /// never passed over, never read as the current version.
    #[error("event at sequence {seq} is {event_type} v{stored}; this reader reads v{current} and has no upcast from v{stored}")]
    UnknownSchemaVersion {
        /// Global sequence of the record.
        seq: u64,
        /// The event type name.
        event_type: String,
        /// The schema version of the stored event.
        stored: u16,
        /// The schema version the reader reads.
        current: u16,
    },

    /// An event of a type this build reads, at a version that a newer build stored under a new
    /// name (the store records the rename): this build has no type for it. On a read, the
    /// event's own name and version; on a write, the older name at a version the store already
    /// keeps under the new name. Never passed over, as a type the reader does not know would be.
    #[error("{event_type} v{version}{} is a version of an event type that a newer build of the application renamed; this build has no type for it: read and write it with the newer build's types", match seq { Some(seq) => format!(" (event at sequence {seq})"), None => String::new() })]
    RenamedEventType {
        /// The event type name.
        event_type: String,
        /// The schema version.
        version: u16,
        /// Global sequence of the record read, `None` on a write.
        seq: Option<u64>,
    },

    /// A read of one event by position ([`Reader::get`](crate::Reader::get)) found a stored
    /// event that an upcast ([`Split`](crate::Split)) reads as several events: read them all with
    /// [`Reader::get_parts`](crate::Reader::get_parts). Scans hand out every part.
    #[error("the event at sequence {seq} ({event_type} v{version}) is read as {parts} events, split by an upcast: read them with Reader::get_parts")]
    SplitEvent {
        /// Global sequence of the stored event.
        seq: u64,
        /// Its stored event type name.
        event_type: String,
        /// Its stored schema version.
        version: u16,
        /// How many events it is read as.
        parts: u32,
    },

    /// Internal to VarveDB: the parts of an event that an upcast splits, on their way to the
    /// read path that hands them out one by one. No call of the API returns it; one that did
    /// would be a bug of VarveDB.
    #[doc(hidden)]
    #[error("the event at sequence {} is read as {} events that were not handed out (a bug of VarveDB)", .0.seq, .0.count())]
    Split(crate::event::SplitParts),

    /// The payload passed its checksum but is not a valid archive of the reader's type.
    #[error("event at sequence {seq} is not a valid archive of the reader's type: {reason}")]
    InvalidPayload {
        /// Global sequence of the record.
        seq: u64,
        /// The validation error reported by rkyv/bytecheck.
        reason: String,
    },

    /// An event could not be serialized.
    #[error("serializing the event failed: {reason}")]
    Serialize {
        /// The error reported by rkyv.
        reason: String,
    },

    /// The memory map is full and could not be grown, because read transactions stayed open for
    /// longer than [`StorageConfig::resize_timeout`](crate::StorageConfig::resize_timeout)
    /// or the operating system refused a larger map. Nothing was written.
    #[error("map full at {map_size} bytes and it could not be grown: {reason}")]
    MapFull {
        /// The current map size in bytes.
        map_size: usize,
        /// Why growing failed.
        reason: String,
    },

    /// An earlier write failed at the I/O level (a failed fsync or commit); the store refuses
    /// writes until it is reopened, because the state of the page cache is unknown.
    #[error("the store refuses writes after an I/O failure; reopen it")]
    Poisoned,

    /// A read transaction of one store was passed to a reader of another.
    #[error(
        "the read transaction belongs to another store; open it with this store's env.read_txn()"
    )]
    ForeignTransaction,

    /// The event handler of a processor, or the projection of a projector, failed (after its
    /// retries, when its policy retries) or panicked.
    #[error("processor {processor:?}: handler failed at sequence {seq}: {source}")]
    Handler {
        /// The processor's (or projector's) name.
        processor: String,
        /// Global sequence of the event the handler failed on; the checkpoint stays before it.
        seq: u64,
        /// The handler's own error, or its panic message.
        #[source]
        source: HandlerError,
    },

    /// A processor name is empty or longer than 255 bytes.
    #[error("invalid processor name {name:?}: must be 1 to 255 bytes")]
    InvalidProcessorName {
        /// The rejected name.
        name: String,
    },

    /// The event belongs to a shredded stream: its data key was destroyed
    /// ([`Storage::shred_stream`](crate::Storage::shred_stream)), so its payload can never
    /// be read again. Iterations and processors go on past it.
    #[error("event {seq} of stream {stream} is shredded: its stream's key was destroyed")]
    Shredded {
        /// The shredded stream.
        stream: StreamId,
        /// Global sequence of the event.
        seq: u64,
    },

    /// An append to a shredded stream: its id is burned and takes no more events. Nothing was
    /// written.
    #[error("stream {stream} is shredded and takes no more events; use a new stream id")]
    StreamShredded {
        /// The shredded stream.
        stream: StreamId,
    },

    /// A record whose checksums hold failed authentication: its ciphertext, or a header field
    /// bound to it (stream, version, sequence, type, key version), was changed, or the record was
    /// moved from another place. The record is not readable; nothing else is affected.
    #[error("event {seq} of stream {stream} failed authentication: its ciphertext or header was tampered with or moved")]
    Decryption {
        /// Global sequence of the record.
        seq: u64,
        /// The stream its header names.
        stream: StreamId,
    },

    /// Reaching or agreeing with the NATS JetStream cluster failed (feature `cluster`).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::error::ClusterError),

    /// The master key given in [`StorageConfig::master_key`](crate::StorageConfig::master_key)
    /// does not open this store's keystore.
    #[error("wrong master key for {path}: it does not open the keystore (master key version {master_version}); give the key the store was created or last rotated with")]
    WrongMasterKey {
        /// The store's directory.
        path: PathBuf,
        /// Version of the master key the keystore is wrapped under (1 + rotations).
        master_version: u32,
    },

    /// The keystore of an encrypted store is missing, damaged, truncated or belongs to another
    /// store. Restore the `keys` directory from the backup it was taken with.
    #[error("keystore of {path}: {reason}")]
    Keystore {
        /// The keystore's directory (`<store>/keys`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The store was created with encryption on and is opened with it off, or the reverse.
    /// Encryption is fixed when a store is created.
    #[error("{path} was created {}, but is opened with encryption_enabled: {}", if *.store_encrypted { "encrypted" } else { "without encryption" }, !*.store_encrypted)]
    EncryptionMismatch {
        /// The store's directory.
        path: PathBuf,
        /// Whether the store on disk is encrypted.
        store_encrypted: bool,
    },

    /// A key operation (shredding, rotating the master key) on a store without encryption.
    #[error("{path} is not encrypted: it has no keys to shred or rotate")]
    NotEncrypted {
        /// The store's directory.
        path: PathBuf,
    },

    /// The system's random number generator or the cipher failed; nothing was written.
    #[error("cryptography unavailable: {reason}")]
    Crypto {
        /// What failed.
        reason: &'static str,
    },

    /// The store replicates a cluster's log: events reach it only from the cluster, applied in
    /// the cluster's order. Nothing was written. Append through a store opened with
    /// `Storage::open_replicated` (feature `cluster`).
    #[error("the store replicates JetStream stream {stream:?}: events, shreds and master key rotations reach it only from the cluster; open it with Storage::open_replicated")]
    ReplicaNotWritable {
        /// The JetStream stream the store replicates.
        stream: String,
    },

    /// An error from LMDB.
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),

    /// An I/O error outside LMDB (creating the directory, for example).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn corrupted(seq: u64, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            seq,
            reason: reason.into(),
        }
    }

    /// A copy of a transaction-level error, for every batch of a commit group that it failed.
    /// (`heed::Error` is not `Clone`; an OS error keeps its code, other I/O errors their kind
    /// and message.)
    pub(crate) fn duplicate(&self) -> Self {
        let io = |e: &std::io::Error| match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        };
        match self {
            Error::Lmdb(heed::Error::Mdb(code)) => Error::Lmdb(heed::Error::Mdb(*code)),
            Error::Lmdb(heed::Error::Io(e)) => Error::Lmdb(heed::Error::Io(io(e))),
            Error::Io(e) => Error::Io(io(e)),
            Error::MapFull { map_size, reason } => Error::MapFull {
                map_size: *map_size,
                reason: reason.clone(),
            },
            Error::Poisoned => Error::Poisoned,
            Error::StreamShredded { stream } => Error::StreamShredded { stream: *stream },
            Error::Keystore { path, reason } => Error::Keystore {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Crypto { reason } => Error::Crypto { reason },
            Error::ReplicaNotWritable { stream } => Error::ReplicaNotWritable {
                stream: stream.clone(),
            },
            Error::Damaged { entry, reason } => Error::Damaged {
                entry: entry.clone(),
                reason: reason.clone(),
            },
            other => Error::Io(std::io::Error::other(other.to_string())),
        }
    }

    /// The global sequence of the record this error is about, when it is about one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Error::Corrupted { seq, .. }
            | Error::WrongEventType { seq, .. }
            | Error::InvalidPayload { seq, .. }
            | Error::Shredded { seq, .. }
            | Error::Decryption { seq, .. }
            | Error::Handler { seq, .. }
            | Error::SplitEvent { seq, .. }
            | Error::UnknownSchemaVersion { seq, .. } => Some(*seq),
            Error::Split(parts) => Some(parts.seq),
            Error::LayoutChanged { seq, .. } | Error::RenamedEventType { seq, .. } => *seq,
            _ => None,
        }
    }

    /// Whether this is an optimistic concurrency conflict ([`Error::ConcurrencyConflict`]): the
    /// stream moved on; read it again, decide again, and retry.
    ///
    /// ```
    /// use varvedb::{Error, ExpectedVersion, StreamId};
    /// let e = Error::ConcurrencyConflict {
    ///     stream: StreamId(1),
    ///     expected: ExpectedVersion::Exact(2),
    ///     actual: 3,
    /// };
    /// assert!(e.is_conflict());
    /// assert!(!Error::Poisoned.is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::ConcurrencyConflict { .. })
    }

    /// Whether the event or stream is crypto-shredded ([`Error::Shredded`] on a read,
    /// [`Error::StreamShredded`] on an append): its contents are gone for good.
    pub fn is_shredded(&self) -> bool {
        matches!(self, Error::Shredded { .. } | Error::StreamShredded { .. })
    }

    /// Whether stored bytes failed an integrity check: a damaged record
    /// ([`Error::Corrupted`]), a damaged entry beside the log ([`Error::Damaged`]), or a record
    /// that failed authentication ([`Error::Decryption`]). Restore from a backup.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::Damaged { .. } | Error::Decryption { .. }
        )
    }

    /// Whether this error is LMDB's "map full", which the write path handles by growing the map.
    pub(crate) fn is_map_full(&self) -> bool {
        matches!(self, Error::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull)))
    }
}
