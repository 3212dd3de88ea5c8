//! `varve import PATH`: reads what `varve export` wrote into a new or empty store.

mod failure;
mod input;
mod line;
mod renumber;

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin::Importer;
use varvedb::storage::MAX_EVENT_SIZE_LIMIT;

use crate::error::{CliError, CliResult};
use crate::keys::{self, MASTER_KEY_VAR};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open;
use crate::target::Target;
use failure::{Failure, LineError};
use input::Input;
use renumber::Skipped;

pub struct Args<'a> {
    pub path: &'a Path,
    pub input: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub skip_shredded: bool,
    pub allow_truncated: bool,
}

pub fn run(args: &Args<'_>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let path = args.path;
    // What exists at the target before anything is written: a failure removes what the import
    // creates (after `import` has closed the store).
    let target = Target::prepare(path)?;
    let key = keys::load(path, args.key_file, MASTER_KEY_VAR)?;
    let input = input::open(path, args.input, args.allow_truncated)?;
    let failure = Failure {
        path,
        leaves_nothing: target.leaves_nothing(),
    };
    match import(args, key, input, failure, json, out) {
        Ok(code) => {
            target.keep();
            Ok(code)
        }
        Err(e) => match target.removal() {
            Some(removal) if failure.leaves_nothing => {
                Err(e.note(format!("nothing was left behind: {removal}")))
            }
            _ => Err(e),
        },
    }
}

fn import(
    args: &Args<'_>,
    key: Option<[u8; 32]>,
    mut input: Input,
    failure: Failure<'_>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let path = args.path;
    // The target takes events as large as the largest any store takes.
    let storage = open(path, MAX_EVENT_SIZE_LIMIT, key)?;
    let encrypted = storage.is_encrypted();
    let mut importer = Importer::new(&storage).map_err(|e| failure.not_empty(e))?;
    let mut progress = Progress::new("import", input.events);
    let mut skipped = Skipped::default();
    // The next sequence of the input, before renumbering.
    let mut next_original = 1u64;
    let mut line = String::new();
    let mut lines_read = 0u64;
    while let Some(number) = input.next_line(path, &mut line)? {
        lines_read += 1;
        let committed = importer.imported();
        let mut event = line::parse(path, &line).map_err(|e| failure.line(e, number, committed))?;
        if event.shredded {
            if args.skip_shredded {
                if event.seq != next_original {
                    let e = LineError(format!(
                        "expected sequence {next_original}, found {} (events must come in log order, from 1, without gaps)",
                        event.seq
                    ));
                    return Err(failure.line(e, number, committed));
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
                    failure.remove_first(committed)
                )));
            }
        }
        next_original = event.seq.saturating_add(1);
        skipped
            .renumber(&mut event)
            .map_err(|e| failure.line(e, number, committed))?;
        importer
            .push(event)
            .map_err(|e| failure.import(e, Some((number, importer.imported()))))?;
        progress.set(lines_read);
    }
    let kept_shredded = importer.shredded_streams();
    let imported = importer.finish().map_err(|e| failure.import(e, None))?;
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
