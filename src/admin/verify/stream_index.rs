//! The `stream_index` database and its watermark ([`ProblemKind::StreamIndex`]): versions
//! `1..=head` of every stream, each naming a record of that stream and version, no entry past
//! the watermark, and the watermark within the log.

use std::collections::{HashMap, HashSet};

use super::log_order::LogStreams;
use super::report::{reason, ProblemKind, Tick, VerifyReport};
use super::Snapshot;
use crate::error::Result;
use crate::format::index::{parse_index_seq, parse_stream_version_key, Head};
use crate::format::record;
use crate::types::StreamId;

/// Checks that the watermark is not past the log's last sequence, and sets
/// [`VerifyReport::index_watermark`] (after the pass over the log).
pub(super) fn watermark_within_log(snap: &Snapshot<'_>, report: &mut VerifyReport) {
    let watermark = snap.watermark;
    if watermark != u64::MAX && watermark > report.head {
        report.push(
            ProblemKind::StreamIndex,
            Some(watermark),
            None,
            format!(
                "the index watermark is at sequence {watermark}, past the end of the log ({})",
                report.head
            ),
        );
    }
    report.index_watermark = watermark.min(report.head);
}

/// Checks every entry of the index against the log and the heads.
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    log: &LogStreams,
    heads: &HashMap<StreamId, Head>,
    tick: &mut Tick<'_>,
) -> Result<()> {
    let Snapshot {
        dbs,
        txn,
        watermark,
    } = *snap;
    let total = dbs.stream_index.len(txn)?;
    tick.now("stream index", 0, total);
    let mut current: Option<(StreamId, u64)> = None; // stream, last version seen
    let mut indexed: HashSet<StreamId> = HashSet::new();
    let end_stream = |report: &mut VerifyReport, stream: StreamId, last: u64| {
        if let Some(head) = heads.get(&stream) {
            if last != head.version && !log.damaged.contains(&head.last_seq) {
                report.push(
                    ProblemKind::StreamIndex,
                    Some(head.last_seq),
                    Some(stream),
                    format!(
                        "the index ends at version {last}, the stream head is at version {}",
                        head.version
                    ),
                );
            }
        }
    };
    for entry in dbs.stream_index.iter(txn)? {
        let (key, value) = entry?;
        report.index_entries += 1;
        tick.every("stream index", report.index_entries, total);
        let Some((stream, version)) = parse_stream_version_key(key) else {
            report.push(
                ProblemKind::StreamIndex,
                None,
                None,
                format!("an index key has {} bytes, not 24", key.len()),
            );
            continue;
        };
        let seq = match parse_index_seq(stream, version, value) {
            Ok(seq) => seq,
            Err(e) => {
                report.push(ProblemKind::StreamIndex, None, Some(stream), e.to_string());
                continue;
            }
        };
        let expected_version = match current {
            Some((s, last)) if s == stream => last + 1,
            Some((s, last)) => {
                end_stream(report, s, last);
                1
            }
            None => 1,
        };
        if indexed.insert(stream)
            && !heads.contains_key(&stream)
            && !log.indexed.contains_key(&stream)
        {
            report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                Some(stream),
                "the index holds entries for a stream with no head and no record".into(),
            );
        }
        if version != expected_version {
            let what = if version > expected_version {
                format!(
                    "versions {expected_version}..={} are missing from the index",
                    version - 1
                )
            } else {
                format!("version {version} is out of order in the index")
            };
            report.push(ProblemKind::StreamIndex, Some(seq), Some(stream), what);
        }
        current = Some((stream, version));
        if seq > watermark {
            report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                Some(stream),
                format!("the index holds sequence {seq}, past its watermark {watermark}"),
            );
        }
        if !log.damaged.contains(&seq) {
            names_its_record(snap, report, stream, version, seq);
        }
    }
    if let Some((s, last)) = current {
        end_stream(report, s, last);
    }
    let mut unindexed: Vec<(&StreamId, &Head)> = heads
        .iter()
        .filter(|(stream, _)| !indexed.contains(stream))
        .collect();
    unindexed.sort_by_key(|(_, head)| head.first_seq);
    for (stream, head) in unindexed {
        report.push(
            ProblemKind::StreamIndex,
            Some(head.first_seq),
            Some(*stream),
            format!(
                "the stream has a head at version {} but no entry in the index",
                head.version
            ),
        );
    }
    tick.now("stream index", report.index_entries, total);
    Ok(())
}

/// Checks that the entry for `version` of `stream` names a record of that stream and version.
fn names_its_record(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    stream: StreamId,
    version: u64,
    seq: u64,
) {
    match snap.dbs.get_record(snap.txn, seq) {
        Ok(Some(bytes)) => match record::decode(seq, bytes) {
            Ok(rec) => {
                if rec.stream() != stream || rec.version() != version {
                    report.push(
                        ProblemKind::StreamIndex,
                        Some(seq),
                        Some(stream),
                        format!(
                            "the index names sequence {seq} as version {version}, which holds stream {} version {}",
                            rec.stream(),
                            rec.version()
                        ),
                    );
                }
            }
            Err(e) => report.push(ProblemKind::Record, Some(seq), Some(stream), reason(&e)),
        },
        Ok(None) => report.push(
            ProblemKind::StreamIndex,
            Some(seq),
            Some(stream),
            format!("version {version} names sequence {seq}, which is not in the log"),
        ),
        Err(e) => report.push(ProblemKind::Record, Some(seq), Some(stream), reason(&e)),
    }
}
