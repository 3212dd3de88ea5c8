//! What `varve import` says when it is done.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::cmd::format::Trailer;
use crate::cmd::verify::not_validated_line;
use crate::error::CliResult;
use crate::output::json_line;

pub struct Summary<'a> {
    pub path: &'a Path,
    pub imported: u64,
    pub encrypted: bool,
    /// Streams shredded in the source whose events kept their place.
    pub kept_shredded: usize,
    /// Shredded events left out with `--skip-shredded`, and their streams.
    pub skipped_events: usize,
    pub skipped_streams: usize,
    /// The trailer the input matched (`None` with `--allow-truncated`).
    pub trailer: Option<&'a Trailer>,
    /// Payloads the application's decoders accepted.
    pub validated: u64,
    /// Payloads of event types without a decoder, by type.
    pub not_validated: &'a BTreeMap<String, u64>,
}

impl Summary<'_> {
    pub fn write(&self, json: bool, out: &mut dyn Write) -> CliResult<()> {
        // Damaged records the export left out, all at the end of its log (others are refused).
        let left_out_damaged: Vec<u64> = self
            .trailer
            .map(|t| t.skipped.iter().map(|s| s.seq).collect())
            .unwrap_or_default();
        if json {
            return json_line(
                out,
                &json!({
                    "store": self.path.display().to_string(),
                    "events": self.imported,
                    "encrypted": self.encrypted,
                    "shredded_streams": self.kept_shredded,
                    "skipped_events": self.skipped_events,
                    "skipped_streams": self.skipped_streams,
                    "trailer_checked": self.trailer.is_some(),
                    "left_out_damaged": left_out_damaged,
                    "payloads_validated": self.validated,
                    "payloads_not_validated": self.not_validated,
                }),
            );
        }
        writeln!(
            out,
            "imported {} events into {}{}",
            self.imported,
            self.path.display(),
            if self.encrypted { " (encrypted)" } else { "" }
        )?;
        if self.kept_shredded > 0 {
            writeln!(
                out,
                "{} streams were shredded in the source: their events keep their place and read as shredded",
                self.kept_shredded
            )?;
        }
        if !left_out_damaged.is_empty() {
            let seqs: Vec<String> = left_out_damaged.iter().map(u64::to_string).collect();
            writeln!(
                out,
                "the export left out damaged records at the end of its log (sequences {}): the store ends before them",
                seqs.join(", ")
            )?;
        }
        if self.skipped_events > 0 {
            writeln!(
                out,
                "left out {} shredded events of {} streams; the events after the first of them moved down (sequences renumbered, stream versions, ids and timestamps kept){}",
                self.skipped_events,
                self.skipped_streams,
                if self.encrypted {
                    "; those streams are shredded in the target"
                } else {
                    ""
                }
            )?;
        }
        if self.validated > 0 {
            writeln!(
                out,
                "{} payloads validated with the registered decoders",
                self.validated
            )?;
        }
        if let Some(line) = not_validated_line(self.not_validated) {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}
