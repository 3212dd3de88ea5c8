//! The input of `varve import`: an export, read whole and checked against its trailer before
//! anything is written. Standard input is copied to a temporary file first, so that it is
//! checked the same way.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use crate::cmd::format::{Crc, Line, Trailer, TrailerLine, FORMAT};
use crate::error::{CliError, CliResult};

/// An export whose trailer was checked (or, with `--allow-truncated`, found missing or wrong and
/// reported), ready to be read line by line.
pub struct Input {
    reader: BufReader<File>,
    /// Event lines to import: the non-blank lines before the trailer, less an incomplete last
    /// line.
    pub events: u64,
    /// Event lines read so far.
    read: u64,
    /// Lines read so far, blank ones included.
    number: usize,
    /// The trailer, when the input ends with one that matches it.
    pub trailer: Option<Trailer>,
}

/// What one pass over the input found.
struct Scan {
    /// Non-blank lines.
    lines: u64,
    /// The last non-blank line and the checksum of every byte before it.
    last: Option<(Vec<u8>, Crc)>,
    /// Whether the input ends without a final newline.
    cut: bool,
    /// Whether the input holds no byte at all.
    empty: bool,
}

fn scan(reader: &mut impl BufRead) -> std::io::Result<Scan> {
    let mut crc = Crc::default();
    let mut line = Vec::new();
    let mut last = Vec::new();
    let mut last_crc = None;
    let mut lines = 0;
    let mut empty = true;
    let mut cut = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        empty = false;
        cut = line.last() != Some(&b'\n');
        let before = crc;
        crc.add(&line);
        if !line.trim_ascii().is_empty() {
            lines += 1;
            std::mem::swap(&mut line, &mut last);
            last_crc = Some(before);
        }
    }
    Ok(Scan {
        lines,
        last: last_crc.map(|crc| (last, crc)),
        cut,
        empty,
    })
}

/// Opens `input` (standard input when `None`) and checks it against its trailer: refuses an
/// input without one, or that does not match it, unless `allow_truncated` (then it says what is
/// wrong on standard error); refuses, always, an export that left out damaged records in the
/// middle of the log.
pub fn open(store: &Path, input: Option<&Path>, allow_truncated: bool) -> CliResult<Input> {
    let name = input.map_or("standard input".into(), |f| f.display().to_string());
    let failed = |e: std::io::Error| CliError::new(store, format!("cannot read {name}: {e}"));
    let mut file = match input {
        Some(path) => File::open(path).map_err(failed)?,
        None => {
            let mut spool = tempfile::tempfile().map_err(|e| {
                CliError::new(
                    store,
                    format!("cannot create a temporary file for standard input: {e}"),
                )
                .hint("set TMPDIR to a directory with room for the export")
            })?;
            std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(failed)?;
            spool
        }
    };
    file.seek(SeekFrom::Start(0)).map_err(failed)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let found = scan(&mut reader).map_err(failed)?;
    reader.seek(SeekFrom::Start(0)).map_err(failed)?;
    let (events, trailer) = check(store, &name, found, allow_truncated)?;
    Ok(Input {
        reader,
        events,
        read: 0,
        number: 0,
        trailer,
    })
}

/// The event lines and the trailer of what `scan` found.
fn check(
    store: &Path,
    name: &str,
    found: Scan,
    allow_truncated: bool,
) -> CliResult<(u64, Option<Trailer>)> {
    let refuse = |what: String| -> CliResult<()> {
        if allow_truncated {
            eprintln!(
                "varve: store {}: warning: {name}: {what}; importing its complete event lines as --allow-truncated asks",
                store.display()
            );
            return Ok(());
        }
        Err(CliError::new(store, format!("{name}: {what}")).hint(
            "export the store again: an export ends with a trailer line holding its event count and checksum, which this input must match; to import the complete event lines it holds anyway, pass --allow-truncated",
        ))
    };
    let Some((last, crc)) = found.last else {
        refuse(if found.empty {
            "the input is empty: an export ends with a trailer line, even when it holds no event"
                .into()
        } else {
            "the input holds only blank lines and no trailer".into()
        })?;
        return Ok((0, None));
    };
    let Ok(TrailerLine { trailer }) = serde_json::from_slice::<TrailerLine>(&last) else {
        // Without a trailer every non-blank line is an event line, but an incomplete last line
        // is no event.
        let incomplete = found.cut && serde_json::from_slice::<Line>(&last).is_err();
        refuse(if incomplete {
            format!("the input ends in the middle of a line (event line {}) and has no trailer: it was cut short, and that line is left out", found.lines)
        } else {
            format!("the input has no trailer line after its {} event lines: it may have been cut short at a line's end", found.lines)
        })?;
        return Ok((found.lines - u64::from(incomplete), None));
    };
    let events = found.lines - 1;
    if !(1..=FORMAT).contains(&trailer.format) {
        return Err(CliError::new(
            store,
            format!(
                "{name}: the trailer says export format {}; this varve reads formats 1 to {FORMAT}",
                trailer.format
            ),
        )
        .hint("import with a varve of the version that wrote the export"));
    }
    if trailer.skipped_leave_a_gap() {
        let seqs: Vec<String> = trailer.skipped.iter().map(|s| s.seq.to_string()).collect();
        return Err(CliError::new(
            store,
            format!(
                "{name}: the export left out damaged records at sequences {} (`varve export --skip-damaged`): an import keeps every event's sequence and stream version, so it cannot leave gaps in their place",
                seqs.join(", ")
            ),
        )
        .hint("restore the exported store from a backup and export it again; the lines of this export stay readable JSON, for salvage by other means"));
    }
    let mut wrong = Vec::new();
    if events != trailer.events {
        wrong.push(format!(
            "{events} event lines, where the trailer says {}",
            trailer.events
        ));
    }
    if crc.hex() != trailer.crc32c {
        wrong.push(format!(
            "CRC-32C {} before the trailer, where the trailer says {}",
            crc.hex(),
            trailer.crc32c
        ));
    }
    if wrong.is_empty() {
        return Ok((events, Some(trailer)));
    }
    refuse(format!(
        "the input does not match its trailer ({}): it was cut, damaged or edited after the export",
        wrong.join("; ")
    ))?;
    Ok((events, None))
}

impl Input {
    /// Reads the next event line into `text`; returns its line number, or `None` after the
    /// last event line.
    pub fn next_line(&mut self, store: &Path, text: &mut String) -> CliResult<Option<usize>> {
        while self.read < self.events {
            text.clear();
            self.number += 1;
            let n = self.reader.read_line(text).map_err(|e| {
                CliError::new(
                    store,
                    format!("line {}: reading the input failed: {e}", self.number),
                )
            })?;
            if n == 0 {
                return Err(CliError::new(
                    store,
                    format!(
                        "line {}: the input ended early: it changed while it was imported",
                        self.number
                    ),
                ));
            }
            if !text.trim().is_empty() {
                self.read += 1;
                return Ok(Some(self.number));
            }
        }
        Ok(None)
    }
}
