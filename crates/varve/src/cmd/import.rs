//! `varve import PATH`: reads what `varve export` wrote into a new or empty store.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use serde_json::json;
use varvedb::admin::{ImportError, ImportEvent, Importer};
use varvedb::storage::MAX_EVENT_SIZE_LIMIT;
use varvedb::{StreamId, Uuid};

use super::format::Line;
use super::input;
use crate::error::{CliError, CliResult};
use crate::keys::{self, MASTER_KEY_VAR};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::{open, parse_stream};

pub struct Args<'a> {
    pub path: &'a Path,
    pub input: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub skip_shredded: bool,
    pub allow_truncated: bool,
}

/// Shredded events left out with `--skip-shredded`, and how later sequences move down.
#[derive(Default)]
struct Skipped {
    /// Original sequences of the events left out, ascending.
    seqs: Vec<u64>,
    streams: BTreeSet<StreamId>,
}

impl Skipped {
    /// Moves `event` down past the events left out before it.
    fn renumber(&self, event: &mut ImportEvent) -> Result<(), LineError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        if self.seqs.last().is_some_and(|&last| last >= event.seq) {
            return Err(LineError(format!(
                "sequence {} comes after the left-out shredded event at sequence {}: events must come in log order",
                event.seq,
                self.seqs.last().copied().unwrap_or(0)
            )));
        }
        event.seq -= self.seqs.len() as u64;
        if let Some(prev) = event.prev_seq {
            if self.seqs.binary_search(&prev).is_ok() {
                return Err(LineError(format!(
                    "prev_seq {prev} names a shredded event that was left out, but this event of the same stream is not shredded; a stream's events after a shredded one cannot be readable"
                )));
            }
            event.prev_seq = Some(prev - self.seqs.partition_point(|&s| s < prev) as u64);
        }
        Ok(())
    }
}

pub fn run(args: &Args<'_>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let Args {
        path,
        input,
        key_file,
        skip_shredded,
        allow_truncated,
    } = *args;
    let key = keys::load(path, key_file, MASTER_KEY_VAR)?;
    let mut input = input::open(path, input, allow_truncated)?;
    // The target takes events as large as the largest any store takes.
    let storage = open(path, MAX_EVENT_SIZE_LIMIT, key)?;
    let encrypted = storage.is_encrypted();
    let mut importer = Importer::new(&storage).map_err(|e| import_error(path, e, None))?;
    let mut progress = Progress::new("import", input.events);
    let mut skipped = Skipped::default();
    // The next sequence of the input, before renumbering.
    let mut next_original = 1u64;
    let mut line = String::new();
    let mut lines_read = 0u64;
    while let Some(number) = input.next_line(path, &mut line)? {
        lines_read += 1;
        let committed = importer.imported();
        let mut event =
            parse_line(path, &line).map_err(|e| e.with_line(number, committed, path))?;
        if event.shredded {
            if skip_shredded {
                if event.seq != next_original {
                    return Err(LineError(format!(
                        "expected sequence {next_original}, found {} (events must come in log order, from 1, without gaps)",
                        event.seq
                    ))
                    .with_line(number, committed, path));
                }
                next_original += 1;
                skipped.seqs.push(event.seq);
                skipped.streams.insert(event.stream);
                progress.set(lines_read);
                continue;
            }
            if !encrypted {
                return Err(CliError::new(
                    path,
                    format!(
                        "line {number}: event {} of stream {} is shredded in the exported store: its key was destroyed and its payload is gone, so it cannot be imported as plaintext",
                        event.version, event.stream
                    ),
                )
                .at(event.seq)
                .hint(format!(
                    "import into an encrypted store (give its master key with --key-file or {MASTER_KEY_VAR}), where shredded events keep their place and read as shredded; or pass --skip-shredded to leave them out (later sequences move down to stay gap-free){}",
                    if committed > 0 { format!("; first remove {}, which holds the {committed} events imported so far", path.display()) } else { String::new() }
                )));
            }
        }
        next_original = event.seq.saturating_add(1);
        skipped
            .renumber(&mut event)
            .map_err(|e| e.with_line(number, committed, path))?;
        importer
            .push(event)
            .map_err(|e| import_error(path, e, Some((number, importer.imported()))))?;
        progress.set(lines_read);
    }
    let kept_shredded = importer.shredded_streams();
    let imported = importer.finish().map_err(|e| import_error(path, e, None))?;
    // Streams left out stay burned in an encrypted target, as they are in the source.
    if encrypted {
        for &stream in &skipped.streams {
            storage
                .shred_stream(stream)
                .map_err(|e| CliError::store(path, e))?;
        }
    }
    progress.finish();
    // Damaged records the export left out, all at the end of the log (others are refused).
    let left_out_damaged: Vec<u64> = input
        .trailer
        .as_ref()
        .map(|t| t.skipped.iter().map(|s| s.seq).collect())
        .unwrap_or_default();
    let skipped_events = skipped.seqs.len();
    let skipped_streams = skipped.streams.len();
    if json {
        json_line(
            out,
            &json!({
                "store": path.display().to_string(),
                "events": imported,
                "encrypted": encrypted,
                "shredded_streams": kept_shredded,
                "skipped_events": skipped_events,
                "skipped_streams": skipped_streams,
                "trailer_checked": input.trailer.is_some(),
                "left_out_damaged": left_out_damaged,
            }),
        )?;
    } else {
        writeln!(
            out,
            "imported {imported} events into {}{}",
            path.display(),
            if encrypted { " (encrypted)" } else { "" }
        )?;
        if kept_shredded > 0 {
            writeln!(
                out,
                "{kept_shredded} streams were shredded in the source: their events keep their place and read as shredded"
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
        if skipped_events > 0 {
            writeln!(
                out,
                "left out {skipped_events} shredded events of {skipped_streams} streams; the events after the first of them moved down (sequences renumbered, stream versions, ids and timestamps kept){}",
                if encrypted {
                    "; those streams are shredded in the target"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(0)
}

struct LineError(String);

impl LineError {
    fn with_line(self, number: usize, committed: u64, path: &Path) -> CliError {
        CliError::new(path, format!("line {number}: {}", self.0)).hint(after(committed, path))
    }
}

fn after(committed: u64, path: &Path) -> String {
    if committed == 0 {
        "fix the input (it must be what `varve export` wrote) and import again".into()
    } else {
        format!(
            "{committed} events were imported before the failure: remove {} and import a corrected file into a new store",
            path.display()
        )
    }
}

fn import_error(path: &Path, e: ImportError, line: Option<(usize, u64)>) -> CliError {
    let prefix = line.map_or(String::new(), |(n, _)| format!("line {n}: "));
    let committed = line.map_or(0, |(_, c)| c);
    match e {
        ImportError::Invalid { seq, reason } => {
            let err = CliError::new(path, format!("{prefix}{reason}"));
            let err = if seq > 0 { err.at(seq) } else { err };
            err.hint(after(committed, path))
        }
        ImportError::Store(e) => {
            let mut err = CliError::store(path, e);
            err.message = format!("{prefix}{}", err.message);
            err
        }
        other => CliError::new(path, format!("{prefix}{other}")),
    }
}

fn parse_line(path: &Path, text: &str) -> Result<ImportEvent, LineError> {
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
