//! Identifiers and small value types shared by the whole API.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::name::StreamName;

/// Identifies a stream: a 128-bit unsigned integer, so that integer ids and UUIDs both fit.
///
/// ```
/// use varvedb::StreamId;
/// let a = StreamId::from(7u64);
/// let b = StreamId::from(uuid::Uuid::from_u128(7));
/// assert_eq!(a, b);
/// assert_eq!(a.as_u128(), 7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(pub u128);

impl StreamId {
    /// The id as an integer.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id as a UUID (same 128 bits).
    pub const fn as_uuid(self) -> Uuid {
        Uuid::from_u128(self.0)
    }

    /// Big-endian bytes: the order in which streams are listed.
    pub(crate) const fn to_key(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Small ids read best as integers, large ones (UUIDs) as UUIDs.
        if self.0 <= u64::MAX as u128 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}", self.as_uuid())
        }
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

macro_rules! stream_id_from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for StreamId {
            fn from(v: $t) -> Self {
                StreamId(v as u128)
            }
        }
    )*};
}
stream_id_from_unsigned!(u8, u16, u32, u64, u128, usize);

impl From<Uuid> for StreamId {
    fn from(v: Uuid) -> Self {
        StreamId(v.as_u128())
    }
}

/// Anything that names a stream: [`StreamId`], unsigned integers, [`Uuid`], signed integers (so
/// that a bare literal such as `1` works), where a negative value is
/// [`Error::InvalidStreamId`], and names: [`StreamName`], `&str` and `String`, whose id is
/// derived from the name ([`StreamName::stream_id`]).
///
/// An append by name records the name with the stream's first event; a read by name reads the
/// stream the name derives, named or not.
///
/// ```
/// use varvedb::{IntoStreamId, StreamName};
/// let by_name = "order-123".into_stream_id()?;
/// assert_eq!(by_name, StreamName::new("order-123")?.stream_id());
/// assert!("-123".into_stream_id().is_err());
/// # Ok::<(), varvedb::Error>(())
/// ```
pub trait IntoStreamId {
    /// Converts into a [`StreamId`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStreamId`] for a negative signed integer, [`Error::InvalidStreamName`] for
    /// a name that does not parse.
    fn into_stream_id(self) -> Result<StreamId>;

    /// Converts into a [`StreamId`] and, for a name, the parsed name, which an append records.
    ///
    /// # Errors
    ///
    /// As [`IntoStreamId::into_stream_id`].
    fn into_named_stream(self) -> Result<(StreamId, Option<StreamName>)>
    where
        Self: Sized,
    {
        Ok((self.into_stream_id()?, None))
    }
}

impl IntoStreamId for StreamName {
    fn into_stream_id(self) -> Result<StreamId> {
        Ok(self.stream_id())
    }

    fn into_named_stream(self) -> Result<(StreamId, Option<StreamName>)> {
        Ok((self.stream_id(), Some(self)))
    }
}

impl IntoStreamId for &StreamName {
    fn into_stream_id(self) -> Result<StreamId> {
        Ok(self.stream_id())
    }

    fn into_named_stream(self) -> Result<(StreamId, Option<StreamName>)> {
        self.clone().into_named_stream()
    }
}

macro_rules! into_stream_id_name {
    ($($t:ty),*) => {$(
        impl IntoStreamId for $t {
            fn into_stream_id(self) -> Result<StreamId> {
                StreamName::new(self).map(|n| n.stream_id())
            }

            fn into_named_stream(self) -> Result<(StreamId, Option<StreamName>)> {
                StreamName::new(self)?.into_named_stream()
            }
        }
    )*};
}
into_stream_id_name!(&str, String, &String);

impl<T: Into<StreamId>> IntoStreamId for T {
    fn into_stream_id(self) -> Result<StreamId> {
        Ok(self.into())
    }
}

macro_rules! into_stream_id_signed {
    ($($t:ty),*) => {$(
        impl IntoStreamId for $t {
            fn into_stream_id(self) -> Result<StreamId> {
                u128::try_from(self)
                    .map(StreamId)
                    .map_err(|_| Error::InvalidStreamId { value: self as i128 })
            }
        }
    )*};
}
into_stream_id_signed!(i8, i16, i32, i64, i128, isize);

/// What the caller expects of a stream's current version before a batch is appended.
///
/// The current version of a stream is the version of its last event, 0 when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet (current version 0).
    NoStream,
    /// The stream must already hold at least one event.
    StreamExists,
    /// The stream's current version must be exactly this (0 means "does not exist").
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at version `current` satisfies this expectation.
    pub fn matches(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where an event was written: its global sequence and its version in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Global sequence number (1-based, gap-free, commit order).
    pub seq: u64,
    /// Version of the event in its stream (1-based, gap-free).
    pub version: u64,
}

/// The outcome of [`Writer::append_batch`](crate::Writer::append_batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream appended to.
    pub stream: StreamId,
    /// One position per event, in batch order.
    pub positions: Vec<Position>,
    /// `true` when the batch was recognised as a retry of events already stored: nothing was
    /// written and `positions` are the original ones.
    pub deduplicated: bool,
}

impl Appended {
    /// Position of the first event of the batch.
    pub fn first(&self) -> Position {
        self.positions[0]
    }

    /// Position of the last event of the batch.
    pub fn last(&self) -> Position {
        self.positions[self.positions.len() - 1]
    }
}

/// Direction of a range read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Increasing sequence or version.
    Forward,
    /// Decreasing sequence or version.
    Backward,
}

/// Summary of one stream, as listed by [`Reader::streams`](crate::Reader::streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Current version: the version of the stream's last event.
    pub version: u64,
    /// Global sequence of the stream's first event.
    pub first_seq: u64,
    /// Global sequence of the stream's last event.
    pub last_seq: u64,
}

/// An event to append, with the optional parts of its envelope.
///
/// Any `E` converts into a `NewEvent<E>` with a generated, time-ordered (UUIDv7) id, so batches can
/// be plain vectors of events; build a `NewEvent` to set the id (for idempotent retries), the
/// correlation and causation ids, metadata, or the event type name.
///
/// ```
/// use varvedb::NewEvent;
/// let id = uuid::Uuid::now_v7();
/// let e = NewEvent::new(42u32).with_id(id).with_metadata(b"{\"user\":7}".to_vec());
/// assert_eq!(e.id(), id);
/// ```
#[derive(Clone, Debug)]
pub struct NewEvent<E> {
    pub(crate) event: E,
    pub(crate) id: Uuid,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) metadata: Option<Vec<u8>>,
    pub(crate) event_type: Option<String>,
}

impl<E> NewEvent<E> {
    /// Wraps an event with a fresh time-ordered id.
    pub fn new(event: E) -> Self {
        NewEvent {
            event,
            id: Uuid::now_v7(),
            correlation_id: None,
            causation_id: None,
            metadata: None,
            event_type: None,
        }
    }

    /// Sets the event id. Re-submitting the same ids makes a retry idempotent.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets opaque user metadata (stored in clear, limited by `max_event_size`).
    pub fn with_metadata(mut self, metadata: Vec<u8>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Overrides the event type name stored with this event (defaults to the writer's).
    pub fn with_event_type(mut self, name: impl Into<String>) -> Self {
        self.event_type = Some(name.into());
        self
    }

    /// The event id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The wrapped event.
    pub fn event(&self) -> &E {
        &self.event
    }
}

impl<E> From<E> for NewEvent<E> {
    fn from(event: E) -> Self {
        NewEvent::new(event)
    }
}

/// The name stores of format 3 and older gave the events of a Rust type that named none: its path
/// without modules, generics kept. `#[derive(varvedb::Event)]` names a non-generic type the same
/// way; a generic one names itself, and can keep reading events stored under this name with
/// [`Reader::accept_event_types`](crate::Reader::accept_event_types).
///
/// ```
/// assert_eq!(varvedb::default_event_type::<Vec<u8>>(), "Vec<u8>");
/// assert_eq!(varvedb::default_event_type::<std::string::String>(), "String");
/// ```
pub fn default_event_type<E: ?Sized>() -> String {
    short_type_name(std::any::type_name::<E>())
}

fn short_type_name(full: &str) -> String {
    // Strip module paths from every path segment, keeping generic arguments.
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for ch in full.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            segment.push(ch);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(""));
            segment.clear();
            out.push(ch);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_strip_modules_everywhere() {
        assert_eq!(
            short_type_name("a::b::Wrap<c::D, e::F<g::H>>"),
            "Wrap<D, F<H>>"
        );
        assert_eq!(short_type_name("u32"), "u32");
        assert_eq!(short_type_name("(a::B, [c::D; 3])"), "(B, [D; 3])");
    }

    #[test]
    fn signed_ids_reject_negatives() {
        assert_eq!(1i32.into_stream_id().unwrap(), StreamId(1));
        assert!(matches!(
            (-1i64).into_stream_id(),
            Err(Error::InvalidStreamId { value: -1 })
        ));
    }

    #[test]
    fn expected_version_rules() {
        assert!(ExpectedVersion::Any.matches(0));
        assert!(ExpectedVersion::NoStream.matches(0));
        assert!(!ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::StreamExists.matches(3));
        assert!(!ExpectedVersion::StreamExists.matches(0));
        assert!(ExpectedVersion::Exact(2).matches(2));
        assert!(!ExpectedVersion::Exact(2).matches(3));
    }
}
