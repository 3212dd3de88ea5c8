//! The `event_ids` database ([`ProblemKind::EventIds`]): every record's id is indexed and names
//! that record, and every entry names a record that carries its id.

use std::collections::HashSet;

use super::report::{reason, ProblemKind, Tick, VerifyReport};
use super::Snapshot;
use crate::error::Result;
use crate::format::{record, Envelope};

/// Checks that the id of the record of `env` is indexed and names it (in the pass over the log).
pub(super) fn record_indexed(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    env: &Envelope<'_>,
) -> Result<()> {
    let seq = env.seq;
    match snap
        .dbs
        .event_ids
        .get(snap.txn, &env.event_id.as_u128().to_be_bytes())?
    {
        Some(found) if found == seq => {}
        Some(found) => report.push(
            ProblemKind::EventIds,
            Some(seq),
            Some(env.stream),
            format!(
                "event id {} of this record is indexed at sequence {found}",
                env.event_id
            ),
        ),
        None => report.push(
            ProblemKind::EventIds,
            Some(seq),
            Some(env.stream),
            format!("event id {} of this record is not indexed", env.event_id),
        ),
    }
    Ok(())
}

/// Checks that every entry names a record carrying its id (entries naming a `damaged` record
/// are passed over: the record is reported already).
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    damaged: &HashSet<u64>,
    tick: &mut Tick<'_>,
) -> Result<()> {
    let Snapshot { dbs, txn, .. } = *snap;
    let total = dbs.event_ids.len(txn)?;
    tick.now("event ids", 0, total);
    for entry in dbs.event_ids.iter(txn)? {
        let (key, seq) = entry?;
        report.event_ids += 1;
        tick.every("event ids", report.event_ids, total);
        let Ok(id) = <[u8; 16]>::try_from(key).map(u128::from_be_bytes) else {
            report.push(
                ProblemKind::EventIds,
                Some(seq),
                None,
                format!("an event id key has {} bytes, not 16", key.len()),
            );
            continue;
        };
        if damaged.contains(&seq) {
            continue;
        }
        let id = uuid::Uuid::from_u128(id);
        match dbs.get_record(txn, seq) {
            Ok(Some(bytes)) => match record::decode(seq, bytes) {
                Ok(rec) if rec.envelope().event_id != id => report.push(
                    ProblemKind::EventIds,
                    Some(seq),
                    Some(rec.stream()),
                    format!(
                        "event id {id} names sequence {seq}, whose record has id {}",
                        rec.envelope().event_id
                    ),
                ),
                Ok(_) => {}
                Err(e) => report.push(ProblemKind::Record, Some(seq), None, reason(&e)),
            },
            Ok(None) => report.push(
                ProblemKind::EventIds,
                Some(seq),
                None,
                format!("event id {id} names sequence {seq}, which is not in the log"),
            ),
            Err(e) => report.push(ProblemKind::Record, Some(seq), None, reason(&e)),
        }
    }
    tick.now("event ids", report.event_ids, total);
    Ok(())
}
