//! `varve streams PATH`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::store::open_existing;

pub fn run(path: &Path, limit: Option<u64>, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    let txn = storage.env.read_txn().map_err(err)?;
    if !json {
        writeln!(
            out,
            "{:<40} {:>12} {:>14} {:>14}",
            "stream", "version", "first seq", "last seq"
        )?;
    }
    for info in admin::streams(&storage, &txn)
        .map_err(err)?
        .take(limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    {
        let info = info.map_err(err)?;
        if json {
            json_line(
                out,
                &json!({
                    "stream": info.stream.to_string(),
                    "version": info.version,
                    "first_seq": info.first_seq,
                    "last_seq": info.last_seq,
                }),
            )?;
        } else {
            writeln!(
                out,
                "{:<40} {:>12} {:>14} {:>14}",
                info.stream.to_string(),
                info.version,
                info.first_seq,
                info.last_seq
            )?;
        }
    }
    Ok(0)
}
