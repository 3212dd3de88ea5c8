//! A scan of the log in one transaction, yielding the records a reader selected.

use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};

use super::prefetch;
use crate::env::Dbs;
use crate::error::{Error, Result};
use crate::format::record::{self, DecodedRecord};
use crate::index::{Merged, StreamIndex};
use crate::types::{Direction, StreamId};

/// Most streams a scan walks through the stream index; more go through the log.
const MERGE_MAX_STREAMS: usize = 256;
/// A scan walks the stream index when its streams are at most one in this many of the streams
/// with a head on disk: reading a record by sequence costs about as much as passing over this
/// many records of a log scan.
const MERGE_SHARE: u64 = 16;

/// Which records a scan yields, decided on the verified header alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Select {
    /// Only records of these streams; `None`: every stream.
    pub streams: Option<Arc<foldhash::HashSet<StreamId>>>,
    /// Only records of these event types; `None`: every type.
    pub types: Option<Arc<[String]>>,
    /// Event types (with the newest version read of each) whose newer versions, when the store
    /// recorded them under a new name, are selected too, so that the reader meets them (as
    /// versions it cannot read) instead of passing over them: added in each scan's transaction.
    pub follow: Option<Arc<[(String, u16)]>>,
}

impl Select {
    /// This selection in `txn`: its types, and the names the store keeps the newer versions
    /// of the followed types under (`schema::renamed_after`).
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged schema entry.
    pub(crate) fn resolved(self, dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Result<Select> {
        let (Some(follow), Some(types)) = (&self.follow, &self.types) else {
            return Ok(self);
        };
        let mut extra: Vec<String> = Vec::new();
        for (name, newest) in follow.iter() {
            for renamed in crate::schema::renamed_after(dbs, txn, name, *newest)? {
                if !types.contains(&renamed) && !extra.contains(&renamed) {
                    extra.push(renamed);
                }
            }
        }
        if extra.is_empty() {
            return Ok(self);
        }
        let types: Arc<[String]> = types.iter().cloned().chain(extra).collect();
        Ok(Select {
            types: Some(types),
            ..self
        })
    }

    /// Whether the record is wanted.
    #[inline(always)]
    fn matches(&self, rec: &DecodedRecord<'_>) -> bool {
        if let Some(streams) = &self.streams {
            if !streams.contains(&rec.stream()) {
                return false;
            }
        }
        match &self.types {
            Some(types) => {
                let found = rec.event_type_bytes();
                has_name(types, found)
            }
            None => true,
        }
    }
}

enum Range<'t> {
    Forward(heed::RoRange<'t, U64<BigEndian>, Bytes>),
    Backward(heed::RoRevRange<'t, U64<BigEndian>, Bytes>),
    /// Forward through the selected streams' entries of the stream index, merged by sequence.
    Streams(Box<Merged<'t>>),
}

/// The records of the log from a sequence on, in a direction, in the caller's transaction, that
/// `select` wants: each with its header verified (and, for a scan of every stream, its payload
/// checksum in the same pass). A record is passed over when its intact header says it is not
/// wanted, whatever its payload; one whose header is damaged is an error item, since nobody can
/// tell whose it is. The scan goes on after an error item.
///
/// A scan of a few streams ([`Scan::streams`]) walks their entries of the stream index instead
/// of the log: it reads only their records, each checked against the entry that led to it.
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
        let select = select.resolved(dbs, txn)?;
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

    /// A forward scan from `from` of the few streams `select` names, through the stream index
    /// (see the type's documentation). Once it is exhausted, it has covered the log up to the
    /// transaction's head.
    ///
    /// # Errors
    ///
    /// As [`StreamIndex::merged`].
    pub(crate) fn streams(
        dbs: &Dbs,
        index: &StreamIndex,
        txn: &'t heed::RoTxn<'t>,
        from: u64,
        select: Select,
    ) -> Result<Self> {
        let select = select.resolved(dbs, txn)?;
        let streams: Vec<StreamId> = select
            .streams
            .as_deref()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let merged = index.merged(dbs, txn, &streams, from)?;
        Ok(Scan {
            dbs: *dbs,
            txn,
            range: Range::Streams(Box::new(merged)),
            select,
            one_pass: false,
            visited: None,
            budget: u64::MAX,
        })
    }

    /// Whether a forward scan of `streams` from a position is best made through the stream
    /// index rather than the log: when they are few, and a small share of the streams in `txn`.
    pub(crate) fn prefers_index(
        dbs: &Dbs,
        txn: &heed::RoTxn<'_>,
        streams: &foldhash::HashSet<StreamId>,
    ) -> Result<bool> {
        if streams.is_empty() || streams.len() > MERGE_MAX_STREAMS {
            return Ok(false);
        }
        let known = dbs.heads.len(txn)?;
        Ok(streams.len() as u64 * MERGE_SHARE <= known)
    }

    /// Whether the scan walks the stream index rather than the log.
    pub(crate) fn walks_index(&self) -> bool {
        matches!(self.range, Range::Streams(_))
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

    /// Whether `select` wants a decoded record: `Some` with the record (or the error of a type
    /// name that is not UTF-8, when no name was compared with a known one), `None` to pass it
    /// over.
    #[inline(always)]
    fn wanted(&self, rec: DecodedRecord<'t>) -> Option<Result<DecodedRecord<'t>>> {
        if !self.select.matches(&rec) {
            return None;
        }
        if self.select.types.is_none() {
            if let Err(e) = rec.check_type_name() {
                return Some(Err(e));
            }
        }
        Some(Ok(rec))
    }

    /// The next record of a walk through the stream index: `Some(None)` for one that is not
    /// wanted, `None` at the end.
    #[inline(never)]
    fn next_indexed(&mut self) -> Option<Option<Result<DecodedRecord<'t>>>> {
        let Range::Streams(merged) = &mut self.range else {
            unreachable!("called on a walk through the stream index")
        };
        let rec = match merged.next() {
            Some(Ok(rec)) => rec,
            Some(Err(e)) => return Some(Some(Err(e))),
            None => {
                // Every event of the streams up to the head was visited.
                let head = merged.head();
                self.visited = Some(self.visited.map_or(head, |v| v.max(head)));
                return None;
            }
        };
        self.visited = Some(rec.seq());
        Some(self.wanted(rec))
    }

    /// The next record the scan yields, handed to `f`, whose result is the item: the one loop of
    /// every scan, inlined into its caller so that a record never goes through memory on its
    /// way from the map to the caller's view of it.
    #[inline(always)]
    pub(crate) fn next_map<T>(
        &mut self,
        mut f: impl FnMut(DecodedRecord<'t>) -> Result<T>,
    ) -> Option<Result<T>> {
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
                Range::Streams(_) => match self.next_indexed()? {
                    Some(Ok(rec)) => return Some(f(rec)),
                    Some(Err(e)) => return Some(Err(e)),
                    None => continue,
                },
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
            match record::decode_verified(seq, bytes, self.one_pass) {
                Ok(rec) => {
                    if !self.select.matches(&rec) {
                        continue;
                    }
                    if self.select.types.is_none() {
                        // No name was compared with a known one: check it is UTF-8.
                        if let Err(e) = rec.check_type_name() {
                            return Some(Err(e));
                        }
                    }
                    return Some(f(rec));
                }
                Err(e) => match self.judge_damaged(seq, bytes, e) {
                    Some(e) => return Some(Err(e)),
                    None => continue,
                },
            }
        }
    }

    /// A record that failed to decode in one pass may have an intact header and a damaged
    /// payload: then it is passed over when it is not wanted, like any other. `Some` is the
    /// error to report.
    #[cold]
    #[inline(never)]
    fn judge_damaged(&self, seq: u64, bytes: &'t [u8], e: Error) -> Option<Error> {
        if self.one_pass {
            if let Ok(header) = record::decode_header(seq, bytes) {
                if !self.select.matches(&header) {
                    return None;
                }
            }
        }
        Some(e)
    }
}

impl<'t> Iterator for Scan<'t> {
    type Item = Result<DecodedRecord<'t>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_map(Ok)
    }
}

/// Whether `names` holds `found`: the one test of an event type name against a reader's or a
/// scan's names.
#[inline]
pub(crate) fn has_name(names: &[String], found: &[u8]) -> bool {
    names.iter().any(|n| bytes_eq(n.as_bytes(), found))
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
