//! The envelope: everything stored with an event besides its payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::types::StreamId;

/// The envelope of a stored event: its position, identity and metadata.
///
/// Reading an envelope verifies the header checksum but never touches the payload, so listing or
/// filtering events by envelope is cheap. `'a` is the lifetime of the read transaction the envelope
/// was read in: `event_type` and `metadata` borrow from the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope<'a> {
    /// Global sequence number.
    pub seq: u64,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Version of the event in its stream.
    pub version: u64,
    /// Global sequence of the previous event of the same stream (`None` for its first event).
    pub prev_seq: Option<u64>,
    /// Commit time in nanoseconds since the Unix epoch. Non-decreasing along the log.
    pub timestamp_ns: u64,
    /// The event's unique id.
    pub event_id: Uuid,
    /// Correlation id, when the writer gave one.
    pub correlation_id: Option<Uuid>,
    /// Causation id, when the writer gave one.
    pub causation_id: Option<Uuid>,
    /// Event type name.
    pub event_type: &'a str,
    /// Schema version of the payload, for upcasting older events.
    pub schema_version: u16,
    /// Opaque user metadata, when the writer gave some. In an encrypted store metadata is sealed
    /// with the payload, so it is present only in envelopes of decrypted events
    /// ([`EventView::envelope`](crate::EventView::envelope), processors, subscriptions),
    /// and `None` in envelopes read without the payload ([`Reader::envelope`](crate::Reader::envelope)).
    pub metadata: Option<&'a [u8]>,
    /// Length of the serialized (plaintext) payload in bytes.
    pub payload_len: u32,
    /// Whether the event is stored encrypted.
    pub encrypted: bool,
    /// Which of the events an upcast split the stored event into this one is
    /// ([`Part::WHOLE`] for an event read as it is stored, or upcast without a split).
    pub part: Part,
}

/// Which of the events read from one stored event an event is: an upcast that splits
/// ([`Split`](crate::Split)) reads one stored event as several, which share its place in the log
/// (sequence, stream version, event id) and differ by their part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Part {
    /// The event's index among the parts, from 0.
    pub index: u32,
    /// How many events the stored event is read as: 1 when it is not split.
    pub count: u32,
}

impl Part {
    /// The one part of an event that is not split.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// Whether this is the last event read from its stored event (the only one when it is not
    /// split).
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

impl Default for Part {
    fn default() -> Part {
        Part::WHOLE
    }
}

impl Envelope<'_> {
    /// The commit time as a [`SystemTime`].
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.timestamp_ns)
    }

    /// An owned copy, independent of the read transaction.
    pub fn to_owned(&self) -> OwnedEnvelope {
        OwnedEnvelope {
            seq: self.seq,
            stream: self.stream,
            version: self.version,
            prev_seq: self.prev_seq,
            timestamp_ns: self.timestamp_ns,
            event_id: self.event_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            event_type: self.event_type.to_string(),
            schema_version: self.schema_version,
            metadata: self.metadata.map(<[u8]>::to_vec),
            payload_len: self.payload_len,
            encrypted: self.encrypted,
            part: self.part,
        }
    }
}

/// An [`Envelope`] that owns its event type and metadata, for use after the read transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnedEnvelope {
    /// Global sequence number.
    pub seq: u64,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Version of the event in its stream.
    pub version: u64,
    /// Global sequence of the previous event of the same stream (`None` for its first event).
    pub prev_seq: Option<u64>,
    /// Commit time in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The event's unique id.
    pub event_id: Uuid,
    /// Correlation id, when the writer gave one.
    pub correlation_id: Option<Uuid>,
    /// Causation id, when the writer gave one.
    pub causation_id: Option<Uuid>,
    /// Event type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u16,
    /// Opaque user metadata, when the writer gave some (see [`Envelope::metadata`] for encrypted
    /// stores).
    pub metadata: Option<Vec<u8>>,
    /// Length of the serialized (plaintext) payload in bytes.
    pub payload_len: u32,
    /// Whether the event is stored encrypted.
    pub encrypted: bool,
    /// Which of the events read from its stored event this one is (see [`Envelope::part`]).
    pub part: Part,
}
