//! The `heads` database against the log up to the index watermark
//! ([`ProblemKind::StreamHead`]): every head intact, and saying the version, first and last
//! sequence the log says; every stream of the log with a head.

use std::collections::HashMap;

use super::log_order::{LogStreams, Seen};
use super::report::{ProblemKind, Tick, VerifyReport};
use super::Snapshot;
use crate::error::Result;
use crate::format::index::{parse_stream_key, Head};
use crate::types::StreamId;

/// Checks every head; returns the intact ones, for the stream index's checks.
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    log: &LogStreams,
    tick: &mut Tick<'_>,
) -> Result<HashMap<StreamId, Head>> {
    let Snapshot { dbs, txn, .. } = *snap;
    let total = dbs.heads.len(txn)?;
    let mut heads: HashMap<StreamId, Head> = HashMap::new();
    let mut seen_heads = 0u64;
    tick.now("heads", 0, total);
    for entry in dbs.heads.iter(txn)? {
        let (key, value) = entry?;
        seen_heads += 1;
        tick.every("heads", seen_heads, total);
        let Ok(stream) = parse_stream_key(key) else {
            report.push(
                ProblemKind::StreamHead,
                None,
                None,
                format!("a stream head has a key of {} bytes, not 16", key.len()),
            );
            continue;
        };
        let Ok(head) = Head::decode(stream, value) else {
            report.push(
                ProblemKind::StreamHead,
                None,
                Some(stream),
                "the stream head fails its checksum or is malformed".into(),
            );
            continue;
        };
        heads.insert(stream, head);
        match log.indexed.get(&stream) {
            // Its last record is damaged, and reported as such.
            _ if log.damaged.contains(&head.last_seq) => {}
            None => report.push(
                ProblemKind::StreamHead,
                Some(head.last_seq),
                Some(stream),
                "a stream head exists for a stream with no record in the log".into(),
            ),
            Some(seen) => agrees_with_log(report, stream, &head, seen),
        }
    }
    let mut missing: Vec<(&StreamId, &Seen)> = log
        .indexed
        .iter()
        .filter(|(stream, _)| !heads.contains_key(stream))
        .collect();
    missing.sort_by_key(|(_, seen)| seen.first_seq);
    for (stream, seen) in missing {
        report.push(
            ProblemKind::StreamHead,
            Some(seen.last_seq),
            Some(*stream),
            "the stream has records in the log but no head".into(),
        );
    }
    Ok(heads)
}

fn agrees_with_log(report: &mut VerifyReport, stream: StreamId, head: &Head, seen: &Seen) {
    if (seen.version, seen.first_seq, seen.last_seq)
        != (head.version, head.first_seq, head.last_seq)
    {
        report.push(
            ProblemKind::StreamHead,
            Some(head.last_seq),
            Some(stream),
            format!(
                "head says version {} (sequences {}..={}), the log says version {} (sequences {}..={})",
                head.version, head.first_seq, head.last_seq, seen.version, seen.first_seq, seen.last_seq
            ),
        );
    }
}
