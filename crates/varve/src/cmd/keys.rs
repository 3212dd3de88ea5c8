//! `varve shred PATH STREAM` and `varve rotate-key PATH`

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::keys::{self, MASTER_KEY_VAR, NEW_MASTER_KEY_VAR};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::{check_existing, open_with_key, parse_stream};

fn master_key(path: &Path, key_file: Option<&Path>) -> CliResult<[u8; 32]> {
    keys::load(path, key_file, MASTER_KEY_VAR)?.ok_or_else(|| {
        CliError::new(path, "no master key given").hint(format!(
            "give it with --key-file FILE (32 raw bytes or 64 hex characters) or in {MASTER_KEY_VAR} (hex); never on the command line"
        ))
    })
}

pub fn shred(
    path: &Path,
    stream: &str,
    key_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let stream = parse_stream(path, stream)?;
    check_existing(path)?;
    let key = master_key(path, key_file)?;
    let storage = open_with_key(path, Some(key))?;
    let shredded = storage
        .shred_stream(stream)
        .map_err(|e| CliError::store(path, e))?;
    if json {
        json_line(
            out,
            &json!({"store": path.display().to_string(), "stream": stream.to_string(), "shredded": shredded}),
        )?;
    } else if shredded {
        writeln!(
            out,
            "stream {stream} of {} is shredded: its key is destroyed, its payloads can never be read again",
            path.display()
        )?;
    } else {
        writeln!(
            out,
            "stream {stream} of {} was already shredded (or has no key)",
            path.display()
        )?;
    }
    Ok(0)
}

pub fn rotate(
    path: &Path,
    key_file: Option<&Path>,
    new_key_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    check_existing(path)?;
    let key = master_key(path, key_file)?;
    let new_key = keys::load(path, new_key_file, NEW_MASTER_KEY_VAR)?.ok_or_else(|| {
        CliError::new(path, "no new master key given").hint(format!(
            "give it with --new-key-file FILE or in {NEW_MASTER_KEY_VAR} (hex); never on the command line"
        ))
    })?;
    if new_key == key {
        return Err(CliError::new(path, "the new master key is the current one")
            .hint("generate a new random 32-byte key"));
    }
    let storage = open_with_key(path, Some(key))?;
    let progress = Progress::spinner("re-wrapping stream keys");
    let rewrapped = storage
        .rotate_master_key(new_key)
        .map_err(|e| CliError::store(path, e))?;
    progress.finish();
    if json {
        json_line(
            out,
            &json!({"store": path.display().to_string(), "rewrapped": rewrapped, "master_key_version": storage.master_key_version()}),
        )?;
    } else {
        writeln!(
            out,
            "{}: {rewrapped} stream keys re-wrapped; the store now opens only with the new master key (keep it safe, discard the old one)",
            path.display()
        )?;
    }
    Ok(0)
}
