//! `varve backup PATH DEST`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin::{self, BackupInfo, Decoders, VerifyReport};
use varvedb::error::Error;

use super::verify::{check, problem_json};
use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::progress::Progress;
use crate::store::{open_existing_keyed, open_with_key};
use crate::target::Target;

pub struct Args<'a> {
    pub path: &'a Path,
    pub dest: &'a Path,
    pub key_file: Option<&'a Path>,
    pub allow_damaged: bool,
}

pub fn run(args: &Args<'_>, decoders: &Decoders, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let Args {
        path,
        dest,
        key_file,
        allow_damaged,
    } = *args;
    let (storage, key) = open_existing_keyed(path, key_file)?;
    // Declared before the copy is opened, so that the copy is closed before a failure removes it.
    let target = Target::prepare(dest)?;
    let progress = Progress::spinner(&format!("copying to {}", dest.display()));
    let info = match admin::backup(&storage, dest, key.as_ref()) {
        Ok(info) => info,
        Err(e) => {
            let rotated = matches!(&e, Error::WrongMasterKey { path: p, .. } if p == dest);
            let hint = if rotated {
                // The copy is complete: it opens with the key the store was rotated to.
                target.keep();
                format!(
                    "the copy's keystore does not open with the master key given: it was probably rotated during the backup; the copy in {} opens with the new key (check it with `varve verify`), or remove it and run the backup again",
                    dest.display()
                )
            } else {
                let mut hint = "give a new or empty destination directory, check free space there, and run the backup again".to_string();
                if let Some(removal) = target.removal() {
                    hint.push_str(&format!(" ({removal})"));
                }
                hint
            };
            return Err(CliError::store(path, e).hint(hint));
        }
    };
    progress.finish();
    drop(storage);
    // The copy holds the store's records byte for byte, damaged ones included: check it.
    let report = check(&open_with_key(dest, key)?, dest, decoders)?;
    if !report.is_ok() {
        report_damage(path, &report, json);
        if !allow_damaged {
            let removal = target
                .removal()
                .unwrap_or_else(|| "nothing was left behind".into());
            drop(target);
            if json {
                write_summary(out, path, &info, &report, false)?;
            }
            return Err(CliError::new(
                path,
                format!(
                    "the store is damaged: the copy has {} problems (listed above); {removal}",
                    problem_count(&report)
                ),
            )
            .hint(format!(
                "run `varve verify {}` for every problem and what to do about it; restore from an earlier backup, or pass --allow-damaged to keep a copy that holds the damage",
                path.display()
            )));
        }
    }
    target.keep();
    if json {
        write_summary(out, path, &info, &report, true)?;
        return Ok(0);
    }
    writeln!(
        out,
        "backed up {} to {}: {} events up to sequence {}, {} bytes",
        path.display(),
        info.dest.display(),
        info.events,
        info.head,
        info.bytes
    )?;
    if !report.is_ok() {
        writeln!(
            out,
            "the copy holds the store's damage: {} problems (listed on standard error); `varve verify {}` lists them",
            problem_count(&report),
            info.dest.display()
        )?;
    }
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
    Ok(0)
}

fn problem_count(report: &VerifyReport) -> u64 {
    report.problems.len() as u64 + report.more_problems
}

/// Lists the problems of the copy on standard error (in the JSON summary with `--json`).
fn report_damage(path: &Path, report: &VerifyReport, json: bool) {
    if json {
        return;
    }
    for p in &report.problems {
        let mut line = format!("varve: store {}: {}", path.display(), p.kind);
        if let Some(seq) = p.seq {
            line.push_str(&format!(" at sequence {seq}"));
        }
        if let Some(stream) = p.stream {
            line.push_str(&format!(" (stream {stream})"));
        }
        eprintln!("{line}: {}", p.what);
    }
    if report.more_problems > 0 {
        eprintln!(
            "varve: store {}: {} more problems not listed",
            path.display(),
            report.more_problems
        );
    }
}

fn write_summary(
    out: &mut dyn Write,
    path: &Path,
    info: &BackupInfo,
    report: &VerifyReport,
    kept: bool,
) -> CliResult<()> {
    let problems: Vec<_> = report.problems.iter().map(problem_json).collect();
    json_line(
        out,
        &json!({
            "store": path.display().to_string(),
            "dest": info.dest.display().to_string(),
            "kept": kept,
            "bytes": info.bytes,
            "head": info.head,
            "events": info.events,
            "encrypted": info.encrypted,
            "keystore_bytes": info.keystore_bytes,
            "keys": info.keys,
            "shredded": info.shredded,
            "ok": report.is_ok(),
            "problems": problems,
            "more_problems": report.more_problems,
        }),
    )
}
