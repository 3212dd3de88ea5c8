//! `varve import PATH`: reads what `varve export` wrote into a new or empty store.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use base64::Engine;
use serde_json::json;
use varvedb::admin::{ImportError, ImportEvent, Importer};
use varvedb::storage::MAX_EVENT_SIZE_LIMIT;
use varvedb::Uuid;

use super::export::Line;
use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::{open, parse_stream};

pub fn run(path: &Path, input: Option<&Path>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let reader: Box<dyn BufRead> = match input {
        Some(file) => Box::new(BufReader::new(File::open(file).map_err(|e| {
            CliError::new(path, format!("cannot read {}: {e}", file.display()))
        })?)),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let total = input
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |m| m.len());
    // The target takes events as large as the largest any store takes.
    let storage = open(path, MAX_EVENT_SIZE_LIMIT)?;
    let mut importer = Importer::new(&storage).map_err(|e| import_error(path, e, None))?;
    let mut progress = Progress::new("import", total);
    let mut read_bytes = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| {
            CliError::new(
                path,
                format!("line {number}: reading the input failed: {e}"),
            )
        })?;
        read_bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event =
            parse_line(path, &line).map_err(|e| e.with_line(number, importer.imported(), path))?;
        importer
            .push(event)
            .map_err(|e| import_error(path, e, Some((number, importer.imported()))))?;
        progress.set(read_bytes);
    }
    let imported = importer.finish().map_err(|e| import_error(path, e, None))?;
    progress.finish();
    if json {
        json_line(
            out,
            &json!({"store": path.display().to_string(), "events": imported}),
        )?;
    } else {
        writeln!(out, "imported {imported} events into {}", path.display())?;
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
    event.payload = bytes("payload", &line.payload)?;
    Ok(event)
}
