//! `varve export PATH`: one JSON document per event, per line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use varvedb::admin::{self, RawEvent};
use varvedb::Direction;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open_existing;

/// One exported event: every field of its envelope and its exact payload bytes. `stream` is a
/// decimal integer or a UUID, as `varve streams` shows it; byte strings are standard base64.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub seq: u64,
    pub stream: String,
    pub version: u64,
    pub prev_seq: Option<u64>,
    pub timestamp_ns: u64,
    pub event_id: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub event_type: String,
    pub schema_version: u16,
    pub metadata: Option<String>,
    pub payload: String,
}

/// How long one read transaction of an export stays open at most.
const MAX_TXN_AGE: Duration = Duration::from_millis(100);

fn line_of(event: &RawEvent<'_>, path: &Path) -> CliResult<Line> {
    let e = &event.envelope;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(payload) = event.payload else {
        return Err(CliError::new(
            path,
            "the event is encrypted; exporting encrypted stores is not supported yet",
        )
        .at(e.seq)
        .hint("export the store with a build that can decrypt it"));
    };
    Ok(Line {
        seq: e.seq,
        stream: e.stream.to_string(),
        version: e.version,
        prev_seq: e.prev_seq,
        timestamp_ns: e.timestamp_ns,
        event_id: e.event_id.to_string(),
        correlation_id: e.correlation_id.map(|u| u.to_string()),
        causation_id: e.causation_id.map(|u| u.to_string()),
        event_type: e.event_type.to_string(),
        schema_version: e.schema_version,
        metadata: e.metadata.map(|m| b64.encode(m)),
        payload: b64.encode(payload),
    })
}

pub fn run(path: &Path, output: Option<&Path>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    let mut file;
    let sink: &mut dyn Write = match output {
        Some(file_path) => {
            file = BufWriter::new(File::create(file_path).map_err(|e| {
                CliError::new(path, format!("cannot create {}: {e}", file_path.display()))
            })?);
            &mut file
        }
        None => out,
    };
    let head = {
        let txn = storage.env.read_txn().map_err(err)?;
        admin::last_seq(&storage, &txn).map_err(err)?
    };
    // The export ends at the head seen when it started, so it is a prefix of the log even when
    // writers go on; it reads in short transactions, resuming after the last event written.
    let mut progress = Progress::new("export", head);
    let mut next = 1u64;
    let mut exported = 0u64;
    while next <= head {
        let txn = storage.env.read_txn().map_err(err)?;
        let opened = Instant::now();
        for event in admin::log(&storage, &txn, next, Direction::Forward).map_err(err)? {
            let event = event.map_err(|e| {
                CliError::store(path, e).hint(format!(
                    "the export stops at a damaged record: events 1..{next} were written; run `varve verify {}`",
                    path.display()
                ))
            })?;
            let seq = event.envelope.seq;
            if seq > head {
                next = seq;
                break;
            }
            let line = line_of(&event, path)?;
            serde_json::to_writer(&mut *sink, &line).map_err(std::io::Error::from)?;
            sink.write_all(b"\n")?;
            exported += 1;
            next = seq + 1;
            progress.set(seq);
            if seq.is_multiple_of(256) && opened.elapsed() > MAX_TXN_AGE {
                break;
            }
        }
        if next <= head && admin::last_seq(&storage, &txn).map_err(err)? < next {
            break;
        }
    }
    sink.flush()?;
    progress.finish();
    if output.is_some() {
        if json {
            json_line(
                out,
                &json!({"store": path.display().to_string(), "events": exported, "head": head}),
            )?;
        } else {
            writeln!(out, "exported {exported} events from {}", path.display())?;
        }
    }
    Ok(0)
}
