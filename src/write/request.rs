//! A batch on its way to the log: records serialized by the caller, waiting for their position.

use std::sync::Arc;

use uuid::Uuid;

use crate::event::Fingerprint;
use crate::name::StreamName;
use crate::types::{ExpectedVersion, StreamId};

/// A serialized record waiting for its position, inside a batch buffer.
pub(crate) struct Staged {
    pub start: usize,
    pub len: usize,
    pub payload_offset: usize,
    pub id: Uuid,
}

/// One caller's batch: staged records for one stream, with the caller's expectation.
pub(crate) struct Request {
    pub stream: StreamId,
    /// The stream's name, when the caller gave one: recorded with the stream's first event,
    /// checked against the recorded one after.
    pub name: Option<StreamName>,
    pub expected: ExpectedVersion,
    pub buf: Vec<u8>,
    pub staged: Vec<Staged>,
    /// The layout of the batch's events (one Rust type), recorded for each event type name and
    /// schema version the staged records name when the store has no entry for it yet.
    pub layout: Fingerprint,
    /// The names the older versions of the batch's type had, where they differ from the names
    /// its events are stored under: when an event type name is first recorded, each of these
    /// gets a renamed entry pointing to it (see `format::schema`).
    pub renamed_from: Arc<[String]>,
    /// The commit timestamp the batch asks for (a replicated batch carries the one its writer
    /// gave it, so that every replica stores the same); `None` for now. The log's timestamps
    /// never go back: an older one is raised to the log's last.
    pub timestamp_ns: Option<u64>,
}
