//! `varve verify PATH`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use varvedb::admin::{self, Decoders, Problem, VerifyReport};
use varvedb::Storage;

use crate::error::{CliError, CliResult};
use crate::output::{count, json_line};
use crate::progress::Progress;
use crate::store::open_existing_keyed;
use crate::EXIT_FAILURE;

/// Verifies the store at `path` (its payloads with `decoders`), showing progress.
pub fn check(storage: &Storage, path: &Path, decoders: &Decoders) -> CliResult<VerifyReport> {
    let mut progress = Progress::new("log", 0);
    let report = admin::verify_with(storage, decoders, &mut |p| {
        progress.phase(p.phase, p.total);
        progress.set(p.done);
    })
    .map_err(|e| CliError::store(path, e))?;
    progress.finish();
    Ok(report)
}

/// A problem as a JSON document.
pub fn problem_json(p: &Problem) -> Value {
    json!({
        "kind": p.kind.to_string(),
        "seq": p.seq,
        "stream": p.stream.map(|s| s.to_string()),
        "what": p.what,
        "fix": p.fix,
    })
}

/// The line that says which payloads were not validated, when any were not.
pub fn not_validated_line(not_validated: &BTreeMap<String, u64>) -> Option<String> {
    if not_validated.is_empty() {
        return None;
    }
    let types: Vec<String> = not_validated
        .iter()
        .map(|(t, &n)| format!("{t} ({})", count(n, "event")))
        .collect();
    Some(format!(
        "payloads of {} were not validated: no decoder registered for {} (an application's own varve validates its event types; see the README)",
        count(not_validated.len() as u64, "event type"),
        types.join(", ")
    ))
}

pub fn run(
    path: &Path,
    key_file: Option<&Path>,
    decoders: &Decoders,
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let (storage, _) = open_existing_keyed(path, key_file)?;
    let report = check(&storage, path, decoders)?;
    let store = path.display().to_string();
    if json {
        let problems: Vec<_> = report.problems.iter().map(problem_json).collect();
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
                "encrypted": report.encrypted,
                "decrypted": report.decrypted,
                "keys": report.keys,
                "shredded_streams": report.shredded_streams,
                "shredded_events": report.shredded_events,
                "keys_without_events": report.keys_without_events,
                "payloads_validated": report.payloads_validated,
                "payloads_not_validated": report.not_validated,
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
        if report.encrypted {
            writeln!(
                out,
                "store {store}: encrypted: {} records decrypted and authenticated, {} stream keys, {} shredded streams ({} events of them in the log, unreadable by design)",
                report.decrypted, report.keys, report.shredded_streams, report.shredded_events
            )?;
            if report.keys_without_events > 0 {
                writeln!(
                    out,
                    "store {store}: note: {} stream keys belong to streams without events in the log (created for an append that did not commit, or after the log was read): harmless",
                    report.keys_without_events
                )?;
            }
        }
        if report.payloads_validated > 0 {
            writeln!(
                out,
                "store {store}: {} payloads validated with the registered decoders",
                report.payloads_validated
            )?;
        }
        if let Some(line) = not_validated_line(&report.not_validated) {
            writeln!(out, "store {store}: {line}")?;
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
