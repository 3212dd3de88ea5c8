//! `varve backup PATH DEST`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open_existing_keyed;
use varvedb::error::Error;

pub fn run(
    path: &Path,
    dest: &Path,
    key_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let (storage, key) = open_existing_keyed(path, key_file)?;
    let progress = Progress::spinner(&format!("copying to {}", dest.display()));
    let info = admin::backup(&storage, dest, key.as_ref()).map_err(|e| {
        let hint = match &e {
            Error::WrongMasterKey { path: p, .. } if p == dest => format!(
                "the copy's keystore does not open with the master key given: it was probably rotated during the backup; the copy in {} opens with the new key (check it with `varve verify`), or remove it and run the backup again",
                dest.display()
            ),
            _ => format!(
                "give a new or empty destination directory, check free space there, and run the backup again (remove {} first if a partial copy was left)",
                dest.display()
            ),
        };
        CliError::store(path, e).hint(hint)
    })?;
    progress.finish();
    if json {
        json_line(
            out,
            &json!({
                "store": path.display().to_string(),
                "dest": info.dest.display().to_string(),
                "bytes": info.bytes,
                "head": info.head,
                "events": info.events,
                "encrypted": info.encrypted,
                "keystore_bytes": info.keystore_bytes,
                "keys": info.keys,
                "shredded": info.shredded,
            }),
        )?;
    } else {
        writeln!(
            out,
            "backed up {} to {}: {} events up to sequence {}, {} bytes",
            path.display(),
            info.dest.display(),
            info.events,
            info.head,
            info.bytes
        )?;
        if info.encrypted {
            writeln!(
                out,
                "keystore copied to {}: {} stream keys, {} shredded streams, {} bytes; the copy opens with the same master key and keeps every key live now, even after a later shred in the store",
                info.dest.join("keys").display(),
                info.keys,
                info.shredded,
                info.keystore_bytes
            )?;
        }
    }
    Ok(0)
}
