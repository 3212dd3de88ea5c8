//! Rendering events and values, as text or JSON.

use std::io::Write;

use serde_json::{json, Value};
use varvedb::admin::{self, Decoders, RawEvent};
use varvedb::error::Error;
use varvedb::Envelope;
use varvedb::Storage;

use crate::cli::PayloadMode;
use crate::error::CliResult;

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A commit timestamp as RFC 3339, in UTC with nanoseconds: `2026-12-05T10:16:23.123456789Z`.
pub fn rfc3339(envelope: &Envelope<'_>) -> String {
    humantime::format_rfc3339_nanos(envelope.timestamp()).to_string()
}

/// `n` and `noun`, plural unless `n` is 1: "1 event", "3 events".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes one JSON document on its own line.
pub fn json_line(out: &mut dyn Write, value: &Value) -> CliResult<()> {
    writeln!(out, "{value}")?;
    Ok(())
}

/// The payload as the mode asks: `(json, hex, note)`.
fn payload_parts(
    envelope: &Envelope<'_>,
    payload: Option<&[u8]>,
    mode: PayloadMode,
    decoders: &Decoders,
) -> (Option<Value>, Option<String>, Option<String>) {
    let Some(payload) = payload else {
        let note = (mode != PayloadMode::None && mode != PayloadMode::Auto)
            .then(|| "payload is encrypted".to_string());
        return (None, None, note);
    };
    let decoded = match mode {
        PayloadMode::Auto | PayloadMode::Json => decoders.to_json(envelope, payload),
        _ => None,
    };
    match (mode, decoded) {
        (_, Some(Ok(text))) => match serde_json::from_str::<Value>(&text) {
            Ok(value) => (Some(value), None, None),
            Err(e) => (
                None,
                Some(hex(payload)),
                Some(format!(
                    "the decoder for {:?} returned invalid JSON: {e}",
                    envelope.event_type
                )),
            ),
        },
        (_, Some(Err(e))) => (
            None,
            Some(hex(payload)),
            Some(format!(
                "the decoder for {:?} failed: {e}",
                envelope.event_type
            )),
        ),
        (PayloadMode::Json, None) => (
            None,
            Some(hex(payload)),
            Some(format!(
                "no decoder registered for {:?}",
                envelope.event_type
            )),
        ),
        (PayloadMode::Hex, None) => (None, Some(hex(payload)), None),
        _ => (None, None, None),
    }
}

/// An event as a JSON document.
pub fn event_json(event: &RawEvent<'_>, mode: PayloadMode, decoders: &Decoders) -> Value {
    let e = &event.envelope;
    let mut doc = json!({
        "seq": e.seq,
        "stream": e.stream.to_string(),
        "version": e.version,
        "prev_seq": e.prev_seq,
        "timestamp_ns": e.timestamp_ns,
        "timestamp": rfc3339(e),
        "event_id": e.event_id.to_string(),
        "correlation_id": e.correlation_id.map(|u| u.to_string()),
        "causation_id": e.causation_id.map(|u| u.to_string()),
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "metadata_hex": e.metadata.map(hex),
        "payload_len": e.payload_len,
        "encrypted": e.encrypted,
    });
    let (value, hex, note) = payload_parts(e, event.payload, mode, decoders);
    if let Some(value) = value {
        doc["payload"] = value;
    }
    if let Some(hex) = hex {
        doc["payload_hex"] = Value::String(hex);
    }
    if let Some(note) = note {
        doc["payload_note"] = Value::String(note);
    }
    doc
}

/// An event as one or a few lines of text.
pub fn event_text(event: &RawEvent<'_>, mode: PayloadMode, decoders: &Decoders) -> String {
    let e = &event.envelope;
    let mut s = format!(
        "#{} stream {} v{} {} (schema {}) id {} at {}, {} bytes",
        e.seq,
        e.stream,
        e.version,
        e.event_type,
        e.schema_version,
        e.event_id,
        rfc3339(e),
        e.payload_len
    );
    if e.encrypted {
        s.push_str(", encrypted");
    }
    if let Some(id) = e.correlation_id {
        s.push_str(&format!(", correlation {id}"));
    }
    if let Some(id) = e.causation_id {
        s.push_str(&format!(", causation {id}"));
    }
    if let Some(m) = e.metadata {
        match std::str::from_utf8(m) {
            Ok(text) => s.push_str(&format!("\n  metadata: {text:?}")),
            Err(_) => s.push_str(&format!("\n  metadata (hex): {}", hex(m))),
        }
    }
    let (value, hex, note) = payload_parts(e, event.payload, mode, decoders);
    if let Some(value) = value {
        s.push_str(&format!("\n  payload: {value}"));
    }
    if let Some(hex) = hex {
        s.push_str(&format!("\n  payload (hex): {hex}"));
    }
    if let Some(note) = note {
        s.push_str(&format!("\n  note: {note}"));
    }
    s
}

/// Writes an event in the chosen form; an encrypted one decrypted (its payload shown as the
/// mode asks, its metadata in the clear), or with a note saying why it cannot be.
pub fn write_event(
    out: &mut dyn Write,
    json: bool,
    storage: &Storage,
    event: &RawEvent<'_>,
    mode: PayloadMode,
    decoders: &Decoders,
) -> CliResult<()> {
    let contents;
    let mut shown = *event;
    let mut note = None;
    if event.is_encrypted() && mode != PayloadMode::None {
        match admin::contents(storage, event) {
            Ok(c) => {
                contents = c;
                shown.payload = Some(contents.payload());
                shown.envelope.metadata = contents.metadata();
            }
            Err(Error::Shredded { .. }) => {
                note = Some("the stream is shredded: its payload was destroyed".to_string())
            }
            Err(e) => note = Some(format!("cannot be decrypted: {e}")),
        }
    }
    if json {
        let mut doc = event_json(&shown, mode, decoders);
        if let Some(note) = note {
            doc["payload_note"] = Value::String(note);
        }
        json_line(out, &doc)
    } else {
        let mut text = event_text(&shown, mode, decoders);
        if let Some(note) = note {
            text.push_str(&format!("\n  note: {note}"));
        }
        writeln!(out, "{text}")?;
        Ok(())
    }
}
