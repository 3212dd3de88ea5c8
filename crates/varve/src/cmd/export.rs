//! `varve export PATH`: one JSON document per event, per line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use varvedb::admin::{self, RawEvent, StreamNames};
use varvedb::error::Error;
use varvedb::Direction;
use varvedb::Storage;

use super::format::{Crc, Line, Skipped, Trailer, TrailerLine, FORMAT};
use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open_existing_keyed;

/// How long one read transaction of an export stays open at most.
const MAX_TXN_AGE: Duration = Duration::from_millis(100);

pub struct Args<'a> {
    pub path: &'a Path,
    pub output: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub skip_damaged: bool,
}

/// The line of an event: its plaintext (decrypted in an encrypted store), or a shredded marker.
fn line_of(
    storage: &Storage,
    names: &mut StreamNames<'_>,
    event: &RawEvent<'_>,
) -> Result<Line, Error> {
    let e = &event.envelope;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut line = Line {
        seq: e.seq,
        stream: e.stream.to_string(),
        stream_name: names.get(e.stream)?.map(|n| n.as_str().to_owned()),
        version: e.version,
        prev_seq: e.prev_seq,
        timestamp_ns: e.timestamp_ns,
        event_id: e.event_id.to_string(),
        correlation_id: e.correlation_id.map(|u| u.to_string()),
        causation_id: e.causation_id.map(|u| u.to_string()),
        event_type: e.event_type.to_string(),
        schema_version: e.schema_version,
        metadata: None,
        payload: None,
        shredded: false,
        payload_len: None,
        metadata_len: None,
    };
    match admin::contents(storage, event) {
        Ok(contents) => {
            line.metadata = contents.metadata().map(|m| b64.encode(m));
            line.payload = Some(b64.encode(contents.payload()));
        }
        Err(Error::Shredded { .. }) => {
            line.shredded = true;
            line.payload_len = Some(e.payload_len);
            line.metadata_len = event.metadata_len();
        }
        Err(err) => return Err(err),
    }
    Ok(line)
}

/// What is wrong with a record that cannot be exported, without its sequence.
fn damage(e: &Error) -> String {
    match e {
        Error::Corrupted { reason, .. } | Error::Keystore { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// The error that stops an export at the damaged record `seq`.
fn stopped_at(path: &Path, e: Error, seq: u64, exported: u64) -> CliError {
    let written = match exported {
        0 => "nothing was written".to_string(),
        1 => "the 1 event before it was written".to_string(),
        n => format!("the {n} events before it were written"),
    };
    CliError::store(path, e).at(seq).hint(format!(
        "the export stops at this record: {written}. Run `varve verify {}` (with the master key) to list every damaged record, or pass --skip-damaged to export around them (each is listed)",
        path.display()
    ))
}

pub fn run(args: &Args<'_>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let Args {
        path,
        output,
        key_file,
        skip_damaged,
    } = *args;
    let (storage, _) = open_existing_keyed(path, key_file)?;
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
    // writers go on; it reads in short transactions, resuming after the last event handled.
    let mut progress = Progress::new("export", head);
    let mut next = 1u64;
    let mut exported = 0u64;
    let mut shredded = 0u64;
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut crc = Crc::default();
    let mut buf = Vec::new();
    while next <= head {
        let txn = storage.env.read_txn().map_err(err)?;
        let opened = Instant::now();
        let mut names = StreamNames::new(&storage, &txn);
        for item in admin::log(&storage, &txn, next, Direction::Forward).map_err(err)? {
            let (seq, line) = match item {
                Ok(event) => (event.envelope.seq, line_of(&storage, &mut names, &event)),
                Err(e) => match e.seq() {
                    Some(seq) => (seq, Err(e)),
                    None => return Err(err(e)),
                },
            };
            if seq > head {
                next = seq;
                break;
            }
            match line {
                Ok(line) => {
                    shredded += u64::from(line.shredded);
                    buf.clear();
                    serde_json::to_writer(&mut buf, &line).map_err(std::io::Error::from)?;
                    buf.push(b'\n');
                    crc.add(&buf);
                    sink.write_all(&buf)?;
                    exported += 1;
                }
                Err(e @ (Error::Lmdb(_) | Error::Io(_))) => return Err(err(e).at(seq)),
                Err(e) if skip_damaged => {
                    let reason = damage(&e);
                    eprintln!(
                        "varve: store {}: record {seq} left out of the export: {reason}",
                        path.display()
                    );
                    skipped.push(Skipped { seq, reason });
                }
                Err(e) => {
                    sink.flush()?;
                    return Err(stopped_at(path, e, seq, exported));
                }
            }
            next = seq + 1;
            progress.set(exported + skipped.len() as u64);
            if seq.is_multiple_of(256) && opened.elapsed() > MAX_TXN_AGE {
                break;
            }
        }
        if next <= head && admin::last_seq(&storage, &txn).map_err(err)? < next {
            break;
        }
    }
    let trailer = TrailerLine {
        trailer: Trailer {
            format: FORMAT,
            events: exported,
            head,
            skipped,
            crc32c: crc.hex(),
        },
    };
    serde_json::to_writer(&mut *sink, &trailer).map_err(std::io::Error::from)?;
    sink.write_all(b"\n")?;
    sink.flush()?;
    progress.finish();
    let skipped = trailer.trailer.skipped;
    if output.is_some() {
        if json {
            json_line(
                out,
                &json!({
                    "store": path.display().to_string(),
                    "events": exported,
                    "head": head,
                    "shredded": shredded,
                    "skipped": skipped,
                }),
            )?;
        } else {
            writeln!(out, "exported {exported} events from {}", path.display())?;
        }
    }
    if !skipped.is_empty() {
        let seqs: Vec<String> = skipped.iter().map(|s| s.seq.to_string()).collect();
        eprintln!(
            "varve: store {}: left out {} damaged records (sequences {}); `varve verify {}` lists every problem and what to do",
            path.display(),
            skipped.len(),
            seqs.join(", "),
            path.display()
        );
    }
    if shredded > 0 && !(json && output.is_some()) {
        eprintln!(
            "varve: store {}: {shredded} events of shredded streams were exported as markers without payload (\"shredded\": true); `varve import` keeps them as shredded in an encrypted store, or leaves them out with --skip-shredded",
            path.display()
        );
    }
    Ok(0)
}
