//! A scan of the log in one transaction, yielding the records a reader selected.

use std::collections::HashSet;
use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};

use super::prefetch;
use crate::env::Dbs;
use crate::error::{Error, Result};
use crate::format::record::{self, DecodedRecord};
use crate::types::{Direction, StreamId};

/// Which records a scan yields, decided on the verified header alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Select {
    /// Only records of these streams; `None`: every stream.
    pub streams: Option<Arc<HashSet<StreamId>>>,
    /// Only records of these event types; `None`: every type.
    pub types: Option<Arc<[String]>>,
}

impl Select {
    /// Whether the record is wanted.
    #[inline]
    fn matches(&self, rec: &DecodedRecord<'_>) -> bool {
        if let Some(streams) = &self.streams {
            if !streams.contains(&rec.stream()) {
                return false;
            }
        }
        match &self.types {
            Some(types) => {
                let found = rec.event_type_bytes();
                types.iter().any(|t| bytes_eq(t.as_bytes(), found))
            }
            None => true,
        }
    }
}

enum Range<'t> {
    Forward(heed::RoRange<'t, U64<BigEndian>, Bytes>),
    Backward(heed::RoRevRange<'t, U64<BigEndian>, Bytes>),
}

/// The records of the log from a sequence on, in a direction, in the caller's transaction, that
/// `select` wants: each with its header verified (and, for a scan of every stream, its payload
/// checksum in the same pass). A record is passed over when its intact header says it is not
/// wanted, whatever its payload; one whose header is damaged is an error item, since nobody can
/// tell whose it is. The scan goes on after an error item.
pub(crate) struct Scan<'t> {
    dbs: Dbs,
    txn: &'t heed::RoTxn<'t>,
    range: Range<'t>,
    select: Select,
    /// Verify the payload checksum with the header's: one pass over the record, for scans that
    /// want most records. A scan of a few streams checks headers first and payloads only of
    /// what it yields.
    one_pass: bool,
    visited: Option<u64>,
    /// Records the scan may still visit (`u64::MAX`: no limit).
    budget: u64,
}

impl<'t> Scan<'t> {
    /// A scan from `from` (inclusive) in `direction`.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`] when the range cannot be opened.
    pub(crate) fn new(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        from: u64,
        direction: Direction,
        select: Select,
    ) -> Result<Self> {
        let range = match direction {
            Direction::Forward => Range::Forward(dbs.log.range(txn, &(from..))?),
            Direction::Backward => Range::Backward(dbs.log.rev_range(txn, &(..=from))?),
        };
        let one_pass = select.streams.is_none();
        Ok(Scan {
            dbs: *dbs,
            txn,
            range,
            select,
            one_pass,
            visited: None,
            budget: u64::MAX,
        })
    }

    /// Ends the scan after it visited `records` records, yielded or passed over.
    pub(crate) fn with_budget(mut self, records: u64) -> Self {
        self.budget = records;
        self
    }

    /// Lets a scan that spent its budget visit `records` more records.
    pub(crate) fn refill(&mut self, records: u64) {
        self.budget = records;
    }

    /// Whether the scan ended because it spent its budget, not at the end of its range.
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget == 0
    }

    /// The sequence of the last record visited, yielded or passed over.
    pub(crate) fn last_visited(&self) -> Option<u64> {
        self.visited
    }

    /// Decodes the record at `seq` and decides whether to yield it: `None` passes it over.
    #[inline]
    fn judge(&self, seq: u64, bytes: &'t [u8]) -> Option<Result<DecodedRecord<'t>>> {
        let decoded = if self.one_pass {
            record::decode_event(seq, bytes)
        } else {
            record::decode_header(seq, bytes)
        };
        let rec = match decoded {
            Ok(rec) => rec,
            Err(e) => return self.judge_damaged(seq, bytes, e),
        };
        if !self.select.matches(&rec) {
            return None;
        }
        if self.select.types.is_none() {
            // No name was compared with a known one: check it is UTF-8.
            if let Err(e) = rec.check_type_name() {
                return Some(Err(e));
            }
        }
        Some(Ok(rec))
    }

    /// A record that failed to decode in one pass may have an intact header and a damaged
    /// payload: then it is passed over when it is not wanted, like any other.
    #[cold]
    #[inline(never)]
    fn judge_damaged(
        &self,
        seq: u64,
        bytes: &'t [u8],
        e: Error,
    ) -> Option<Result<DecodedRecord<'t>>> {
        if self.one_pass {
            if let Ok(header) = record::decode_header(seq, bytes) {
                if !self.select.matches(&header) {
                    return None;
                }
            }
        }
        Some(Err(e))
    }
}

impl<'t> Iterator for Scan<'t> {
    type Item = Result<DecodedRecord<'t>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            let entry = match &mut self.range {
                Range::Forward(range) => {
                    let entry = range.next()?;
                    if let Ok((_, value)) = &entry {
                        prefetch::after_in_log(value);
                    }
                    entry
                }
                Range::Backward(range) => range.next()?,
            };
            let (seq, value) = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            self.visited = Some(seq);
            let bytes = match self.dbs.record(self.txn, seq, value) {
                Ok(bytes) => bytes,
                Err(e) => return Some(Err(e)),
            };
            if let Some(item) = self.judge(seq, bytes) {
                return Some(item);
            }
        }
    }
}

/// Byte equality for short strings such as event type names, without a call into libc's
/// `memcmp` (which dominated typed scans in profiles).
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return false;
        }
        i += 8;
    }
    a[i..].iter().zip(&b[i..]).all(|(x, y)| x == y)
}
