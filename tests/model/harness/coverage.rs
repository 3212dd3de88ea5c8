//! Outcomes reached, counted per thread (each test runs on a thread of its own), so that a test
//! can check that its random search reached each outcome it should.

use std::cell::RefCell;
use std::collections::BTreeMap;

use varvedb::Appended;

use super::errors::MErr;
use super::ops::Via;

thread_local! {
    static SEEN: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts one occurrence of `outcome`.
pub fn hit(outcome: &'static str) {
    SEEN.with(|s| *s.borrow_mut().entry(outcome).or_default() += 1);
}

/// The counts so far on this thread.
pub fn seen() -> BTreeMap<&'static str, u64> {
    SEEN.with(|s| s.borrow().clone())
}

fn error(e: &MErr) -> &'static str {
    match e {
        MErr::Conflict { .. } => "conflict",
        MErr::IdConflict { .. } => "id_conflict",
        MErr::DupInBatch { .. } => "dup_in_batch",
        MErr::InvalidVersion { .. } => "invalid_version",
        MErr::Empty { .. } => "empty",
        MErr::StreamShredded { .. } => "stream_shredded",
        MErr::Shredded { .. } => "shredded_read",
        MErr::NotEncrypted { .. } => "not_encrypted",
    }
}

/// Counts a write's outcome (`deduplicated`: the write was a retry that wrote nothing) and, for
/// the async API, whether it succeeded.
pub fn write<T>(result: &Result<T, MErr>, deduplicated: bool, via: Via) {
    hit(match result {
        Ok(_) if deduplicated => "deduplicated",
        Ok(_) => "written",
        Err(e) => error(e),
    });
    if via == Via::Async {
        hit(if result.is_ok() {
            "async_ok"
        } else {
            "async_err"
        });
    }
}

/// Counts a transaction's commit, and the error that failed it.
pub fn transaction(result: &Result<Vec<Appended>, MErr>, via: Via) {
    hit(match result {
        Ok(parts) if parts.is_empty() => "tx_empty",
        Ok(parts) if parts.iter().all(|a| a.deduplicated) => "tx_deduplicated",
        Ok(_) => "tx_written",
        Err(e) => {
            hit(error(e));
            "tx_failed"
        }
    });
    if via == Via::Async {
        hit(if result.is_ok() {
            "tx_async_ok"
        } else {
            "tx_async_err"
        });
    }
}

/// Counts a part that `Transaction::append_batch` refused.
pub fn part_refused(e: &MErr) {
    hit("tx_part_refused");
    hit(error(e));
}
