//! `varve processors PATH` and `varve processors reset PATH NAME --to SEQ`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::store::open_existing;

pub fn list(path: &Path, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let info = admin::info(&storage).map_err(|e| CliError::store(path, e))?;
    if !json {
        writeln!(
            out,
            "{:<40} {:>14} {:>14}   (head {})",
            "processor", "checkpoint", "lag", info.head
        )?;
    }
    for p in &info.processors {
        if json {
            json_line(
                out,
                &json!({"name": p.name, "checkpoint": p.checkpoint, "lag": p.lag, "head": info.head}),
            )?;
        } else {
            writeln!(out, "{:<40} {:>14} {:>14}", p.name, p.checkpoint, p.lag)?;
        }
    }
    Ok(0)
}

pub fn reset(path: &Path, name: &str, to: u64, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let info = admin::info(&storage).map_err(|e| CliError::store(path, e))?;
    let Some(current) = info.processors.iter().find(|p| p.name == name) else {
        let known: Vec<&str> = info.processors.iter().map(|p| p.name.as_str()).collect();
        return Err(
            CliError::new(path, format!("no processor named {name:?}")).hint(if known.is_empty() {
                "the store has no processors yet; a processor's checkpoint appears when it first runs".to_string()
            } else {
                format!("the store's processors are: {}", known.join(", "))
            }),
        );
    };
    if to > info.head {
        return Err(CliError::new(
            path,
            format!("sequence {to} is past the end of the log ({})", info.head),
        )
        .hint("give a sequence between 0 (the start) and the head shown by `varve info`"));
    }
    storage
        .reset_processor(name, to)
        .map_err(|e| CliError::store(path, e))?;
    if json {
        json_line(
            out,
            &json!({"name": name, "from": current.checkpoint, "to": to, "head": info.head}),
        )?;
    } else {
        writeln!(
            out,
            "processor {name:?} of {}: checkpoint moved from {} to {to}; its next run delivers events {}..={} again (stop it before resetting)",
            path.display(),
            current.checkpoint,
            to + 1,
            info.head
        )?;
    }
    Ok(0)
}
