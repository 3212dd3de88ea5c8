//! `varve info PATH`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::store::open_existing;

pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let info = admin::info(&storage).map_err(|e| CliError::store(path, e))?;
    if json {
        let processors: Vec<_> = info
            .processors
            .iter()
            .map(|p| json!({"name": p.name, "checkpoint": p.checkpoint, "lag": p.lag}))
            .collect();
        json_line(
            out,
            &json!({
                "path": info.path.display().to_string(),
                "store_id": varvedb::Uuid::from_u128(info.store_id).to_string(),
                "format_version": info.format_version,
                "encrypted": info.encrypted,
                "events": info.events,
                "streams": info.streams,
                "head": info.head,
                "file_size": info.file_size,
                "map_size": info.map_size,
                "used_bytes": info.used_bytes,
                "page_size": info.page_size,
                "processors": processors,
            }),
        )?;
        return Ok(0);
    }
    writeln!(out, "store           {}", info.path.display())?;
    writeln!(
        out,
        "store id        {}",
        varvedb::Uuid::from_u128(info.store_id)
    )?;
    writeln!(out, "format version  {}", info.format_version)?;
    writeln!(
        out,
        "encrypted       {}",
        if info.encrypted { "yes" } else { "no" }
    )?;
    writeln!(out, "events          {}", info.events)?;
    writeln!(out, "streams         {}", info.streams)?;
    writeln!(out, "head sequence   {}", info.head)?;
    writeln!(out, "file size       {} bytes", info.file_size)?;
    writeln!(
        out,
        "map size        {} bytes ({} in use, pages of {} bytes)",
        info.map_size, info.used_bytes, info.page_size
    )?;
    if info.processors.is_empty() {
        writeln!(out, "processors      none")?;
    } else {
        writeln!(out, "processors")?;
        for p in &info.processors {
            writeln!(
                out,
                "  {:<30} checkpoint {:>12}  lag {:>12}",
                p.name, p.checkpoint, p.lag
            )?;
        }
    }
    Ok(0)
}
