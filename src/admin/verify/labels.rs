//! Stream names and the label index ([`ProblemKind::Labels`]): every name entry intact and
//! naming a stream with events, every label intact with an id of its own, every entry of the
//! label index listing an event up to the index watermark under its own type or its stream's
//! category, and every event up to the watermark listed under both (the label index is written
//! behind the log with the stream index).

use std::collections::{HashMap, HashSet};

use super::report::{reason, ProblemKind, Tick, VerifyReport};
use super::Snapshot;
use crate::env::Dbs;
use crate::error::Result;
use crate::format::name::{decode_name, parse_label_key, LabelKind, LabelRun};
use crate::format::record;
use crate::types::StreamId;

/// Checks names, labels and the label index against the log. `streams` are the streams with
/// events in the log; `damaged` the records that cannot be read (reported already).
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    streams: &dyn Fn(StreamId) -> bool,
    damaged: &HashSet<u64>,
    tick: &mut Tick<'_>,
) -> Result<()> {
    let Snapshot { dbs, txn, .. } = *snap;
    let labels = labels(snap, report)?;
    let by_text: HashMap<(LabelKind, &str), u32> = labels
        .iter()
        .map(|(&id, (kind, text))| ((*kind, text.as_str()), id))
        .collect();

    // Names: intact, of streams with events, their category labelled.
    let mut categories: HashMap<StreamId, u32> = HashMap::new();
    for entry in dbs.stream_names.iter(txn)? {
        let (key, value) = entry?;
        let Ok(stream) = <[u8; 16]>::try_from(key).map(|k| StreamId(u128::from_be_bytes(k))) else {
            report.push(
                ProblemKind::Labels,
                None,
                None,
                format!("a stream name key has {} bytes, not 16", key.len()),
            );
            continue;
        };
        report.named_streams += 1;
        let (name, category) = match decode_name(stream, value) {
            Ok(found) => found,
            Err(e) => {
                report.push(ProblemKind::Labels, None, Some(stream), reason(&e));
                continue;
            }
        };
        if !streams(stream) {
            report.push(
                ProblemKind::Labels,
                None,
                Some(stream),
                format!(
                    "the name {:?} is recorded for a stream without events",
                    name.as_str()
                ),
            );
        }
        match labels.get(&category) {
            Some((LabelKind::Category, text)) if text == name.category() => {}
            _ => report.push(
                ProblemKind::Labels,
                None,
                Some(stream),
                format!(
                    "the name {:?} records label {category} for its category {:?}, which is not that category's",
                    name.as_str(),
                    name.category()
                ),
            ),
        }
        categories.insert(stream, category);
    }

    // Every entry of the index lists events of its label.
    let total = dbs.label_index.len(txn)?;
    tick.now("label index", 0, total);
    let mut runs = 0;
    for entry in dbs.label_index.iter(txn)? {
        let (key, value) = entry?;
        runs += 1;
        tick.every("label index", runs, total);
        let run = match LabelRun::decode(key, value) {
            Ok(run) => run,
            Err(e) => {
                report.push(ProblemKind::Labels, None, None, reason(&e));
                continue;
            }
        };
        let label = run.label;
        for seq in (0..run.len()).map(|i| run.seq(i)) {
            report.label_entries += 1;
            if seq > snap.watermark {
                report.push(
                    ProblemKind::Labels,
                    Some(seq),
                    None,
                    format!(
                        "the label index lists this event, after the index watermark {}",
                        snap.watermark
                    ),
                );
                continue;
            }
            if damaged.contains(&seq) {
                continue;
            }
            let Some((kind, text)) = labels.get(&label) else {
                report.push(
                    ProblemKind::Labels,
                    Some(seq),
                    None,
                    format!(
                        "the label index lists this event under label {label}, which names nothing"
                    ),
                );
                continue;
            };
            let header = match dbs.get_record(txn, seq) {
                Ok(Some(bytes)) => record::decode_header(seq, bytes),
                Ok(None) => {
                    report.push(
                        ProblemKind::Labels,
                        Some(seq),
                        None,
                        format!("the label index lists this sequence under {text:?}, but the log does not hold it"),
                    );
                    continue;
                }
                Err(e) => Err(e),
            };
            let rec = match header {
                Ok(rec) => rec,
                // Reported by the pass over the log.
                Err(_) => continue,
            };
            let fits = match kind {
                LabelKind::EventType => rec.event_type_bytes() == text.as_bytes(),
                LabelKind::Category => categories.get(&rec.stream()) == Some(&label),
            };
            if !fits {
                report.push(
                    ProblemKind::Labels,
                    Some(seq),
                    Some(rec.stream()),
                    format!(
                        "the label index lists this event under {kind:?} {text:?}, which it is not of"
                    ),
                );
            }
        }
    }
    tick.now("label index", runs, total);

    // Every event up to the watermark is listed under its type and its stream's category.
    let mut listed = Listed::default();
    for entry in dbs.log.range(txn, &(1..=snap.watermark))? {
        let (seq, value) = entry?;
        if damaged.contains(&seq) {
            continue;
        }
        let Ok(rec) = dbs
            .record(txn, seq, value)
            .and_then(|bytes| record::decode_header(seq, bytes))
        else {
            continue;
        };
        let name = String::from_utf8_lossy(rec.event_type_bytes());
        let listed_type = by_text
            .get(&(LabelKind::EventType, name.as_ref()))
            .map(|&id| listed.lists(dbs, txn, id, seq))
            .transpose()?
            .unwrap_or(false);
        if !listed_type {
            report.push(
                ProblemKind::Labels,
                Some(seq),
                Some(rec.stream()),
                format!("the label index does not list this event under its type {name:?}"),
            );
        }
        if let Some(&category) = categories.get(&rec.stream()) {
            if !listed.lists(dbs, txn, category, seq)? {
                report.push(
                    ProblemKind::Labels,
                    Some(seq),
                    Some(rec.stream()),
                    "the label index does not list this event under its stream's category".into(),
                );
            }
        }
    }
    Ok(())
}

/// Every label, by id; damaged ones and ids given twice are reported.
fn labels(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
) -> Result<HashMap<u32, (LabelKind, String)>> {
    let Snapshot { dbs, txn, .. } = *snap;
    let mut out = HashMap::new();
    for entry in dbs.labels.iter(txn)? {
        let (key, value) = entry?;
        report.labels += 1;
        let Some((kind, text)) = parse_label_key(key) else {
            report.push(
                ProblemKind::Labels,
                None,
                None,
                format!("a label key {key:?} names no category or event type"),
            );
            continue;
        };
        let id = match crate::format::name::decode_label(key, value) {
            Ok(id) => id,
            Err(e) => {
                report.push(ProblemKind::Labels, None, None, reason(&e));
                continue;
            }
        };
        if let Some((other_kind, other)) = out.insert(id, (kind, text.to_owned())) {
            report.push(
                ProblemKind::Labels,
                None,
                None,
                format!(
                    "label id {id} is given to both {other_kind:?} {other:?} and {kind:?} {text:?}"
                ),
            );
        }
    }
    Ok(out)
}

/// Whether the label index lists events met in ascending order: each label's run is looked up,
/// and its checksum checked, once for all the events it lists rather than once per event.
#[derive(Default)]
struct Listed<'t> {
    runs: HashMap<u32, LabelRun<'t>>,
}

impl<'t> Listed<'t> {
    fn lists(&mut self, dbs: &Dbs, txn: &'t heed::RoTxn<'_>, label: u32, seq: u64) -> Result<bool> {
        if let Some(run) = self.runs.get(&label) {
            if run.seq(0) <= seq && seq <= run.seq(run.len() - 1) {
                return Ok(run.contains(seq));
            }
        }
        Ok(match dbs.label_run_at(txn, label, seq)? {
            Some(run) => {
                let found = run.contains(seq);
                self.runs.insert(label, run);
                found
            }
            None => false,
        })
    }
}
