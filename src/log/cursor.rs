//! A position in the log that a long read moves through in read transactions of bounded age.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::{Log, Scan, Select};
use crate::env::ReadTxn;
use crate::error::Result;
use crate::format::record::DecodedRecord;
use crate::index::StreamIndex;
use crate::metrics::handles::ReadKind;
use crate::types::Direction;

/// How many records a step visits between two looks at the clock, wanted or not.
const CLOCK_EVERY: u64 = 64;

/// How one [`LogCursor::step`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The log ends here (for now): every record up to its end was visited.
    End,
    /// The step's read transaction reached its age; the next step goes on in a new one.
    Renew,
    /// The visitor broke off.
    Stopped,
}

/// Where a long read of the log stands: the next sequence to visit, the direction, and how long
/// one read transaction may stay open. A forward read of a few streams walks their entries of
/// the stream index instead of the log ([`Scan::streams`]). Processors, subscriptions and `Reader::for_each_*` walk
/// the log with it; a read in the caller's own transaction uses [`Scan`] directly.
///
/// Renewing the transaction keeps a slow reader from pinning pages the writers freed, and lets a
/// long read see what was committed since it began.
#[derive(Clone, Debug)]
pub(crate) struct LogCursor {
    next: u64,
    direction: Direction,
    max_age: Duration,
}

impl LogCursor {
    /// A cursor at sequence `from` (inclusive).
    pub(crate) fn new(from: u64, direction: Direction, max_age: Duration) -> LogCursor {
        LogCursor {
            next: from,
            direction,
            max_age,
        }
    }

    /// The next sequence the cursor visits.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// Moves the cursor to `seq`.
    pub(crate) fn seek(&mut self, seq: u64) {
        self.next = seq;
    }

    /// Whether the cursor has gone past either end of the sequence space.
    fn exhausted(&self) -> bool {
        match self.direction {
            Direction::Forward => self.next == u64::MAX,
            Direction::Backward => self.next == 0,
        }
    }

    /// Visits, in one read transaction, the records `select` wants from the cursor's position
    /// on (each counted as a log read in the store's metrics): calls `visit` with each (or with the error item of a record that cannot be read) until
    /// it breaks, the log ends, or the transaction is older than the cursor's age. The cursor
    /// then stands right after the last record visited, wanted or not, or after the one `visit`
    /// broke on: a visitor that breaks has taken that record.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Lmdb`] when a transaction or the range cannot be opened or read. Items
    /// that fail on their own (a damaged or shredded record) go to `visit` instead.
    pub(crate) fn step(
        &mut self,
        log: &Log,
        index: &StreamIndex,
        select: &Select,
        mut visit: impl FnMut(&ReadTxn, Result<DecodedRecord<'_>>) -> ControlFlow<()>,
    ) -> Result<Step> {
        if self.exhausted() {
            return Ok(Step::End);
        }
        let txn = log.env.read_txn()?;
        let opened = Instant::now();
        let through_index = match &select.streams {
            Some(streams) if self.direction == Direction::Forward => {
                Scan::prefers_index(&log.dbs, txn.raw(), streams)?
            }
            _ => false,
        };
        let mut scan = if through_index {
            Scan::streams(&log.dbs, index, txn.raw(), self.next, select.clone())?
        } else {
            Scan::new(
                &log.dbs,
                txn.raw(),
                self.next,
                self.direction,
                select.clone(),
            )?
        };
        let mut yielded = 0u64;
        let step = self.visit_all(&txn, &mut scan, opened, &mut yielded, &mut visit);
        txn.count_reads(ReadKind::Log, yielded);
        step
    }

    fn visit_all(
        &mut self,
        txn: &ReadTxn,
        scan: &mut Scan<'_>,
        opened: Instant,
        yielded: &mut u64,
        visit: &mut impl FnMut(&ReadTxn, Result<DecodedRecord<'_>>) -> ControlFlow<()>,
    ) -> Result<Step> {
        loop {
            scan.refill(CLOCK_EVERY);
            for item in scan.by_ref() {
                let at = match &item {
                    Ok(rec) => rec.seq(),
                    Err(e) => match e.seq() {
                        Some(seq) => seq,
                        // Without a sequence the error comes from LMDB itself: the scan cannot
                        // go on.
                        None => return Err(item.err().expect("an error")),
                    },
                };
                *yielded += 1;
                if visit(txn, item).is_break() {
                    self.advance_past(at);
                    return Ok(Step::Stopped);
                }
            }
            if let Some(last) = scan.last_visited() {
                self.advance_past(last);
            }
            if !scan.budget_spent() || self.exhausted() {
                return Ok(Step::End);
            }
            if opened.elapsed() > self.max_age {
                return Ok(Step::Renew);
            }
        }
    }

    fn advance_past(&mut self, seq: u64) {
        self.next = match self.direction {
            Direction::Forward => seq.saturating_add(1),
            Direction::Backward => seq.saturating_sub(1),
        };
    }
}
