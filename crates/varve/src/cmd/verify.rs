//! `varve verify PATH`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin;

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::open_existing;
use crate::EXIT_FAILURE;

pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let mut progress = Progress::new("log", 0);
    let report = admin::verify(&storage, &mut |p| {
        progress.phase(p.phase, p.total);
        progress.set(p.done);
    })
    .map_err(|e| CliError::store(path, e))?;
    progress.finish();
    let store = path.display().to_string();
    if json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| {
                json!({
                    "kind": p.kind.to_string(),
                    "seq": p.seq,
                    "stream": p.stream.map(|s| s.to_string()),
                    "what": p.what,
                    "fix": p.fix,
                })
            })
            .collect();
        json_line(
            out,
            &json!({
                "store": store,
                "ok": report.is_ok(),
                "records": report.records,
                "streams": report.streams,
                "index_entries": report.index_entries,
                "event_ids": report.event_ids,
                "checkpoints": report.checkpoints,
                "head": report.head,
                "problems": problems,
                "more_problems": report.more_problems,
            }),
        )?;
    } else {
        for p in &report.problems {
            writeln!(out, "store {store}: {p}")?;
        }
        if report.more_problems > 0 {
            writeln!(
                out,
                "store {store}: {} more problems not listed",
                report.more_problems
            )?;
        }
        let verdict = if report.is_ok() {
            "OK".to_string()
        } else {
            format!(
                "{} PROBLEMS",
                report.problems.len() as u64 + report.more_problems
            )
        };
        writeln!(
            out,
            "store {store}: {verdict}: {} records up to sequence {}, {} streams, {} index entries, {} event ids, {} checkpoints checked",
            report.records,
            report.head,
            report.streams,
            report.index_entries,
            report.event_ids,
            report.checkpoints
        )?;
    }
    Ok(if report.is_ok() { 0 } else { EXIT_FAILURE })
}
