//! The export format: one JSON object per event line, and a trailer line at the end.

use serde::{Deserialize, Serialize};

/// One exported event: every field of its envelope and its exact payload bytes. `stream` is a
/// decimal integer or a UUID, as `varve streams` shows it; `stream_name`, present for a stream
/// created by name (format 2), is its name; byte strings are standard base64.
///
/// An event of a shredded stream (its key destroyed) is a marker: `shredded` is `true`,
/// `payload` is absent and `metadata` null, and `payload_len` and `metadata_len` (absent when
/// the event has no metadata) give the lengths of what was lost.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub seq: u64,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    pub version: u64,
    pub prev_seq: Option<u64>,
    pub timestamp_ns: u64,
    pub event_id: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub event_type: String,
    pub schema_version: u16,
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shredded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_len: Option<u32>,
}

/// A record left out of an export with `--skip-damaged`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub seq: u64,
    /// What is wrong with it, as `varve verify` says.
    pub reason: String,
}

/// The last line of an export, `{"trailer": {...}}`: what lets `varve import` tell a whole export
/// from one cut short or changed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailerLine {
    pub trailer: Trailer,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Version of the export format.
    pub format: u32,
    /// Event lines before the trailer, markers of shredded events included.
    pub events: u64,
    /// The last sequence the export covers: the log's head when the export began.
    pub head: u64,
    /// Records left out with `--skip-damaged`, ascending.
    pub skipped: Vec<Skipped>,
    /// CRC-32C (Castagnoli) of every byte before the trailer line, as 8 lowercase hex digits.
    pub crc32c: String,
}

/// The version of the export format this build writes; it reads this one and the ones before
/// (format 1 had no stream names).
pub const FORMAT: u32 = 2;

impl Trailer {
    /// Whether leaving out the skipped records leaves a gap: they are not all at the end.
    pub fn skipped_leave_a_gap(&self) -> bool {
        self.skipped
            .iter()
            .zip(self.events + 1..)
            .any(|(s, seq)| s.seq != seq)
    }
}

/// A running CRC-32C of the bytes of an export.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc(u32);

impl Crc {
    pub fn add(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    /// As the trailer writes it.
    pub fn hex(self) -> String {
        format!("{:08x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(events: u64, skipped: &[u64]) -> Trailer {
        Trailer {
            format: FORMAT,
            events,
            head: events + skipped.len() as u64,
            skipped: skipped
                .iter()
                .map(|&seq| Skipped {
                    seq,
                    reason: "payload checksum mismatch".into(),
                })
                .collect(),
            crc32c: Crc::default().hex(),
        }
    }

    #[test]
    fn records_left_out_at_the_end_of_the_log_leave_no_gap() {
        assert!(!trailer(5, &[]).skipped_leave_a_gap());
        assert!(!trailer(5, &[6]).skipped_leave_a_gap());
        assert!(!trailer(5, &[6, 7]).skipped_leave_a_gap());
        assert!(trailer(5, &[4]).skipped_leave_a_gap());
        assert!(trailer(5, &[6, 8]).skipped_leave_a_gap());
        assert!(trailer(0, &[2]).skipped_leave_a_gap());
    }
}
