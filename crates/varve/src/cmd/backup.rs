//! `varve backup PATH DEST`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open_existing;

pub fn run(path: &Path, dest: &Path, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let progress = Progress::spinner(&format!("copying to {}", dest.display()));
    let info = admin::backup(&storage, dest).map_err(|e| {
        CliError::store(path, e).hint(format!(
            "give a new or empty destination directory, check free space there, and run the backup again (remove {} first if a partial copy was left)",
            dest.display()
        ))
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
    }
    Ok(0)
}
