//! `varve import PATH`: reads what `varve export` wrote into a new or empty store.

mod failure;
mod input;
mod line;
mod renumber;
mod summary;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use varvedb::admin::{Decoders, Importer};
use varvedb::MAX_EVENT_SIZE_LIMIT;

use crate::error::{CliError, CliResult};
use crate::keys::{self, MASTER_KEY_VAR};
use crate::progress::Progress;
use crate::store::open;
use crate::target::Target;
use failure::{Failure, LineError};
use input::Input;
use renumber::Skipped;
use summary::Summary;

pub struct Args<'a> {
    pub path: &'a Path,
    pub input: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub skip_shredded: bool,
    pub allow_truncated: bool,
}

pub fn run(args: &Args<'_>, decoders: &Decoders, json: bool, out: &mut dyn Write) -> CliResult<u8> {
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
    match import(args, decoders, key, input, failure, json, out) {
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
    decoders: &Decoders,
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
    // Payloads the application's decoders accepted, and those of types without a decoder.
    let mut validated = 0u64;
    let mut not_validated: BTreeMap<String, u64> = BTreeMap::new();
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
        if !event.shredded {
            match decoders.validate_import(&event) {
                Some(Ok(())) => validated += 1,
                Some(Err(e)) => return Err(failure.invalid_payload(&event, e, number, committed)),
                None => *not_validated.entry(event.event_type.clone()).or_default() += 1,
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
    let summary = Summary {
        path,
        imported,
        encrypted,
        kept_shredded,
        skipped_events: skipped.seqs.len(),
        skipped_streams: skipped.streams.len(),
        trailer: input.trailer.as_ref(),
        validated,
        not_validated: &not_validated,
    };
    summary.write(json, out)?;
    Ok(0)
}
