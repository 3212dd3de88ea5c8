//! Processor checkpoints ([`ProblemKind::Checkpoint`]): each intact and not past the log's end.

use super::report::{ProblemKind, Tick, VerifyReport};
use crate::error::Result;
use crate::subscribe::checkpoint;
use crate::Storage;

/// Checks every checkpoint against [`VerifyReport::head`] (after the pass over the log).
pub(super) fn check(
    storage: &Storage,
    txn: &heed::RoTxn<'static>,
    report: &mut VerifyReport,
    tick: &mut Tick<'_>,
) -> Result<()> {
    let dbs = &storage.log().dbs;
    let total = dbs.checkpoints.len(txn)?;
    for entry in dbs.checkpoints.iter(txn)? {
        let (name, _) = entry?;
        report.checkpoints += 1;
        match checkpoint::load_in(&storage.log().dbs, txn, name) {
            Ok(seq) if seq > report.head => report.push(
                ProblemKind::Checkpoint,
                Some(seq),
                None,
                format!(
                    "processor {name:?} is at sequence {seq}, past the end of the log ({})",
                    report.head
                ),
            ),
            Ok(_) => {}
            Err(_) => report.push(
                ProblemKind::Checkpoint,
                None,
                None,
                format!("the checkpoint of processor {name:?} fails its checksum"),
            ),
        }
    }
    tick.now("checkpoints", report.checkpoints, total);
    Ok(())
}
