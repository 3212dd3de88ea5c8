//! One line of an export, read into an event to import.

use std::path::Path;

use base64::Engine;
use varvedb::admin::ImportEvent;
use varvedb::MAX_EVENT_SIZE_LIMIT;
use varvedb::{StreamName, Uuid};

use super::failure::LineError;
use crate::cmd::format::Line;
use crate::store::parse_stream;

/// The event of an export line: every field checked for its form (the importer checks that it
/// follows the events before it).
pub fn parse(path: &Path, text: &str) -> Result<ImportEvent, LineError> {
    let line: Line =
        serde_json::from_str(text).map_err(|e| LineError(format!("not an exported event: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let uuid = |field: &str, s: &str| {
        Uuid::parse_str(s).map_err(|e| LineError(format!("{field} {s:?} is not a UUID: {e}")))
    };
    let bytes = |field: &str, s: &str| {
        b64.decode(s)
            .map_err(|e| LineError(format!("{field} is not base64: {e}")))
    };
    let stream = parse_stream(path, &line.stream)
        .map_err(|_| LineError(format!("stream {:?} is not a stream id", line.stream)))?;
    let mut event = ImportEvent::new(line.seq, stream, line.version, line.event_type);
    if let Some(name) = &line.stream_name {
        let name = StreamName::new(name).map_err(|e| LineError(e.to_string()))?;
        if name.stream_id() != stream {
            return Err(LineError(format!(
                "stream_name {:?} is the name of stream {}, not of {stream}",
                name.as_str(),
                name.stream_id()
            )));
        }
        event.stream_name = Some(name);
    }
    event.prev_seq = line.prev_seq;
    event.timestamp_ns = line.timestamp_ns;
    event.event_id = uuid("event_id", &line.event_id)?;
    event.correlation_id = line
        .correlation_id
        .as_deref()
        .map(|s| uuid("correlation_id", s))
        .transpose()?;
    event.causation_id = line
        .causation_id
        .as_deref()
        .map(|s| uuid("causation_id", s))
        .transpose()?;
    event.schema_version = line.schema_version;
    event.metadata = line
        .metadata
        .as_deref()
        .map(|s| bytes("metadata", s))
        .transpose()?;
    if line.shredded {
        // What was lost stands as zero bytes of its lengths: an encrypted target seals them
        // under a key it never stores, so the envelope keeps its lengths.
        if line.payload.is_some() || line.metadata.is_some() {
            return Err(LineError(
                "a line marked shredded carries a payload or metadata; an export never writes one"
                    .into(),
            ));
        }
        let payload_len = line
            .payload_len
            .ok_or_else(|| LineError("a line marked shredded has no payload_len".into()))?;
        let too_long = |n: u32| n as usize > MAX_EVENT_SIZE_LIMIT;
        if too_long(payload_len) || line.metadata_len.is_some_and(too_long) {
            return Err(LineError(format!(
                "payload_len or metadata_len exceeds the largest event a store takes ({MAX_EVENT_SIZE_LIMIT} bytes)"
            )));
        }
        event.payload = vec![0; payload_len as usize];
        event.metadata = line.metadata_len.map(|n| vec![0; n as usize]);
        event.shredded = true;
        return Ok(event);
    }
    if line.payload_len.is_some() || line.metadata_len.is_some() {
        return Err(LineError(
            "payload_len and metadata_len belong to lines marked shredded only".into(),
        ));
    }
    let payload = line
        .payload
        .as_deref()
        .ok_or_else(|| LineError("the line has no payload (and is not marked shredded)".into()))?;
    event.payload = bytes("payload", payload)?;
    Ok(event)
}
