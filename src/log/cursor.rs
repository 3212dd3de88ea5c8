//! A position in the log that a long read moves through in read transactions of bounded age.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::{Log, Scan, Select};
use crate::env::ReadTxn;
use crate::error::{Error, Result};
use crate::format::record::DecodedRecord;
use crate::index::StreamIndex;
use crate::metrics::handles::ReadKind;
use crate::types::Direction;

/// How many records a step visits between two looks at the clock, wanted or not.
const CLOCK_EVERY: u64 = 64;

/// How one [`LogCursor::step`] ended.
#[derive(Debug)]
pub(crate) enum Step {
    /// The log ends here (for now): every record up to its end was visited.
    End,
    /// The step's read transaction reached its age; the next step goes on in a new one.
    Renew,
    /// The visitor broke off.
    Stopped,
    /// A record the scan wanted could not be read (its header is damaged, it is missing behind
    /// an index entry): the error, with the record's sequence. The cursor stands after it; the
    /// caller decides whether to go on.
    Failed(Error),
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
    /// on (each counted as a log read in the store's metrics): calls `visit` with each until it
    /// breaks, the log ends, a record cannot be read, or the transaction is older than the
    /// cursor's age. The cursor then stands right after the last record visited, wanted or not,
    /// or after the one `visit` broke on (a visitor that breaks has taken that record), or
    /// after the one that failed.
    ///
    /// The visitor gets records only; a record that fails ends the step with
    /// [`Step::Failed`], so that nothing but a record crosses the hot loop.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Lmdb`] when a transaction or the range cannot be opened or read.
    pub(crate) fn step(
        &mut self,
        log: &Log,
        index: &StreamIndex,
        select: &Select,
        mut visit: impl FnMut(&ReadTxn, DecodedRecord<'_>) -> ControlFlow<()>,
    ) -> Result<Step> {
        if self.exhausted() {
            return Ok(Step::End);
        }
        let txn = log.env.read_txn()?;
        let opened = Instant::now();
        let mut scan = self.open_scan(log, index, select, &txn)?;
        let mut yielded = 0u64;
        let step = self.visit_all(
            log,
            select,
            &txn,
            &mut scan,
            opened,
            &mut yielded,
            &mut visit,
        );
        txn.count_reads(ReadKind::Log, yielded);
        step
    }

    /// The scan of a step, in `txn`: through the stream index for a forward read of a few
    /// streams, through the label index for one of categories or named types, through the log
    /// otherwise. An index whose walk cannot even begin (a damaged head, watermark, entry or
    /// label) leaves the log itself, which holds everything. Out of line: the step's loop is
    /// the same whichever it is.
    #[inline(never)]
    fn open_scan<'t>(
        &self,
        log: &Log,
        index: &StreamIndex,
        select: &Select,
        txn: &'t ReadTxn,
    ) -> Result<Scan<'t>> {
        let through_index = match &select.streams {
            Some(streams) if self.direction == Direction::Forward && !select.scoped() => {
                Scan::prefers_index(&log.dbs, txn.raw(), streams)?
            }
            _ => false,
        };
        if through_index {
            match Scan::streams(&log.dbs, index, txn.raw(), self.next, select.clone()) {
                Ok(scan) => return Ok(scan),
                Err(e) => {
                    tracing::warn!(error = %e, "the stream index is damaged; reading the log instead");
                }
            }
        } else if Scan::walk_of(select).is_some() {
            match Scan::of(
                &log.dbs,
                txn.raw(),
                self.next,
                self.direction,
                select.clone(),
            ) {
                Ok(scan) => return Ok(scan),
                Err(e) => {
                    tracing::warn!(error = %e, "the label index is damaged; reading the log instead");
                }
            }
        }
        Scan::new(
            &log.dbs,
            txn.raw(),
            self.next,
            self.direction,
            select.clone(),
        )
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn visit_all<'t>(
        &mut self,
        log: &Log,
        select: &Select,
        txn: &'t ReadTxn,
        scan: &mut Scan<'t>,
        opened: Instant,
        yielded: &mut u64,
        visit: &mut impl FnMut(&ReadTxn, DecodedRecord<'_>) -> ControlFlow<()>,
    ) -> Result<Step> {
        // The sequence of the last record handed to the visitor in this step.
        let mut last_yielded = None;
        loop {
            scan.refill(CLOCK_EVERY);
            loop {
                // A record goes straight from the scan to the visitor (see `Scan::next_map`).
                let mut stopped_at = None;
                let item = scan.next_map(|rec| {
                    let at = rec.seq();
                    *yielded += 1;
                    last_yielded = Some(at);
                    if visit(txn, rec).is_break() {
                        stopped_at = Some(at);
                    }
                    Ok(())
                });
                match item {
                    None => break,
                    Some(Ok(())) => {
                        if let Some(at) = stopped_at {
                            self.advance_past(at);
                            return Ok(Step::Stopped);
                        }
                    }
                    // The walk through the stream or label index met an entry that does not
                    // lead where it says (a damaged index): the index cannot be trusted for where to go
                    // on. The rest of the step reads the log itself, from right after the last
                    // record the visitor got, so nothing is skipped or handed over twice; the
                    // log then reports whatever is damaged in it.
                    Some(Err(e)) if scan.walks_index() => {
                        tracing::warn!(error = %e, "the stream index is damaged; reading the log instead");
                        let from = last_yielded.map_or(self.next, |s| s + 1);
                        *scan =
                            Scan::new(&log.dbs, txn.raw(), from, self.direction, select.clone())?;
                        scan.refill(CLOCK_EVERY);
                    }
                    // Without a sequence the error comes from LMDB itself: the scan cannot go
                    // on.
                    Some(Err(e)) => match e.seq() {
                        Some(at) => {
                            *yielded += 1;
                            self.advance_past(at);
                            return Ok(Step::Failed(e));
                        }
                        None => return Err(e),
                    },
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

    /// Moves the cursor past `seq`, never back: a sequence that comes from a damaged place
    /// cannot make a read visit what it visited before.
    fn advance_past(&mut self, seq: u64) {
        self.next = match self.direction {
            Direction::Forward => self.next.max(seq.saturating_add(1)),
            Direction::Backward => self.next.min(seq.saturating_sub(1)),
        };
    }
}
