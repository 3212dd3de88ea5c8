//! The pass over the log: every record's checksums and header ([`ProblemKind::Record`]), and
//! every large record's stub. Each record is handed on to the checks that read it in the same
//! pass: its place in the log ([`LogOrder`]), its encryption ([`KeyCheck`]), its payload
//! ([`payloads::check`]), its event id ([`event_ids::record_indexed`]) and its event type
//! ([`LogSchemas`]).

use super::event_ids;
use super::keystore::KeyCheck;
use super::log_order::{LogOrder, LogStreams};
use super::payloads;
use super::report::{reason, ProblemKind, Tick, VerifyReport};
use super::schemas::LogSchemas;
use super::Snapshot;
use crate::admin::Decoders;
use crate::error::Result;
use crate::format::record;

/// Reads every record of the log once; returns the streams as the log tells them.
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    keys: &mut KeyCheck<'_>,
    decoders: &Decoders,
    types: &mut LogSchemas,
    tick: &mut Tick<'_>,
) -> Result<LogStreams> {
    let Snapshot { dbs, txn, .. } = *snap;
    let total = dbs.log.len(txn)?;
    let mut order = LogOrder::new(snap.watermark);
    tick.now("log", 0, total);
    for entry in dbs.log.iter(txn)? {
        let (seq, value) = entry?;
        report.records += 1;
        tick.every("log", report.records, total);
        order.sequence(report, seq);
        report.head = seq;
        let rec = match dbs
            .record(txn, seq, value)
            .and_then(|bytes| record::decode(seq, bytes))
        {
            Ok(rec) => rec,
            Err(e) => {
                report.push(ProblemKind::Record, Some(seq), None, reason(&e));
                order.damaged(seq);
                continue;
            }
        };
        let env = rec.envelope();
        types.record(&env);
        // The header is intact: the record's place is known even when its payload is damaged.
        let region = match rec.payload_region() {
            Ok(region) => Some(region),
            Err(e) => {
                report.push(ProblemKind::Record, Some(seq), Some(env.stream), reason(&e));
                None
            }
        };
        let opened = keys.record(report, &rec, region.is_some())?;
        // The payload the application reads: a plain record's in a plain store, an encrypted
        // one's decrypted; none of a shredded, undecryptable or mismatched record.
        let payload = match (&opened, region) {
            (Some(opened), _) => Some(opened.payload()),
            (None, Some(region)) if !report.encrypted && !rec.is_encrypted() => Some(region),
            _ => None,
        };
        if let Some(payload) = payload {
            payloads::check(decoders, report, &env, payload);
        }
        order.record(report, &env);
        event_ids::record_indexed(snap, report, &env)?;
    }
    tick.now("log", report.records, total);
    large_records_have_stubs(snap, report)?;
    Ok(order.finish())
}

/// Every record in `log_large` has its stub in the log.
fn large_records_have_stubs(snap: &Snapshot<'_>, report: &mut VerifyReport) -> Result<()> {
    let Snapshot { dbs, txn, .. } = *snap;
    for entry in dbs.log_large.iter(txn)? {
        let (seq, _) = entry?;
        let has_stub = dbs
            .log
            .get(txn, &seq)?
            .is_some_and(|v| v.len() == record::STUB_LEN);
        if !has_stub {
            report.push(
                ProblemKind::Record,
                Some(seq),
                None,
                "a large record is stored without a stub in the log".into(),
            );
        }
    }
    Ok(())
}
