//! A scan of the log in one transaction, yielding the records a reader selected.

use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};

use super::labels::{in_categories, LabelWalk, Labels};
use super::prefetch;
use crate::env::Dbs;
use crate::error::{Error, Result};
use crate::format::name::LabelKind;
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
    /// Only records of these streams; `None`: every stream (unless `categories` is given).
    pub streams: Option<Arc<foldhash::HashSet<StreamId>>>,
    /// Only records of streams in these categories, besides those of `streams`: (categories ∪
    /// streams); `None`: no category. A scan of categories alone walks the label index.
    pub categories: Option<Arc<[String]>>,
    /// The types were named by the reader's filter: a scan of no stream and no category walks
    /// their entries of the label index instead of the log.
    pub walk_types: bool,
    /// Only records of the streams that member `.0` of a consumer group of `.1` members
    /// handles (`StreamName::group_member`): decided per stream, off the path of other scans.
    pub group: Option<(u32, u32)>,
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

    /// Whether the select decides on each record's stream beyond its ids: by its category or
    /// its consumer group member, which a scan looks up per stream (`next_scoped`).
    pub(crate) fn scoped(&self) -> bool {
        self.categories.is_some() || self.group.is_some()
    }

    /// Whether the record is wanted.
    /// (A select with categories also wants the records of streams it does not name: the scan
    /// looks up their categories in `next_scoped`.)
    #[inline(always)]
    fn matches(&self, rec: &DecodedRecord<'_>) -> bool {
        if let Some(streams) = &self.streams {
            if !streams.contains(&rec.stream()) && self.categories.is_none() {
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
    /// Every other kind of scan, out of the loop of plain ones ([`Scan::next_other`]).
    Other(Box<Other<'t>>),
}

/// A scan that is not a plain one of the log, with what it needs beyond a plain scan.
struct Other<'t> {
    kind: OtherKind<'t>,
    direction: Direction,
    /// What a scan through the label index goes on with when its range ends.
    then: Option<Then>,
    /// The consumer group member of each stream met (a select with a group).
    members: foldhash::HashMap<StreamId, u32>,
}

// Held in the one box of a scan that is not a plain one (`Range::Other`): its size costs only
// that box, never a record.
#[allow(clippy::large_enum_variant)]
enum OtherKind<'t> {
    /// Forward through the selected streams' entries of the stream index, merged by sequence.
    Streams(Merged<'t>),
    /// The log, for a select that decides on each record's stream beyond its id (its category,
    /// its group member), or before a walk of the label index backwards.
    Scoped(Scoped<'t>),
    /// Through the selected categories' or types' entries of the label index (which holds the
    /// events up to the index watermark), merged by sequence, in either direction.
    Labels(LabelWalk<'t>),
}

/// The log range of a scoped scan, and what it knows of the streams it met.
struct Scoped<'t> {
    range: LogRange<'t>,
    /// Whether each stream met is in one of the select's categories.
    known: foldhash::HashMap<StreamId, bool>,
}

impl<'t> Scoped<'t> {
    fn new(range: LogRange<'t>) -> Self {
        Scoped {
            range,
            known: foldhash::HashMap::default(),
        }
    }
}

enum LogRange<'t> {
    Forward(heed::RoRange<'t, U64<BigEndian>, Bytes>),
    Backward(heed::RoRevRange<'t, U64<BigEndian>, Bytes>),
}

impl<'t> LogRange<'t> {
    fn next(&mut self) -> Option<heed::Result<(u64, &'t [u8])>> {
        match self {
            LogRange::Forward(range) => range.next(),
            LogRange::Backward(range) => range.next(),
        }
    }
}

/// What a walk through the label index goes on with when its range ends: the label index
/// holds the events up to the index watermark, and the log holds the rest.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Forward: the log from this sequence (the one after the watermark).
    Log(u64),
    /// Backward: the label index from this sequence (the watermark) down.
    Labels(u64),
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
        let within = match direction {
            Direction::Forward => from..=u64::MAX,
            Direction::Backward => 0..=from,
        };
        let range = match Scan::log_range(dbs, txn, within, direction)? {
            LogRange::Forward(range) if !select.scoped() => Range::Forward(range),
            LogRange::Backward(range) if !select.scoped() => Range::Backward(range),
            range => Scan::other(OtherKind::Scoped(Scoped::new(range)), direction, None),
        };
        let one_pass = select.streams.is_none() && !select.scoped();
        Ok(Scan::with(dbs, txn, range, select, one_pass))
    }

    /// A scan of `range` for `select`, that has visited nothing yet and has no budget.
    fn with(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        range: Range<'t>,
        select: Select,
        one_pass: bool,
    ) -> Self {
        Scan {
            dbs: *dbs,
            txn,
            range,
            select,
            one_pass,
            visited: None,
            budget: u64::MAX,
        }
    }

    /// The log's records in `within`, in `direction` (from its end backwards).
    fn log_range(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        within: std::ops::RangeInclusive<u64>,
        direction: Direction,
    ) -> Result<LogRange<'t>> {
        Ok(match direction {
            Direction::Forward => LogRange::Forward(dbs.log.range(txn, &within)?),
            Direction::Backward => LogRange::Backward(dbs.log.rev_range(txn, &within)?),
        })
    }

    /// A range of another kind than a plain scan of the log.
    fn other(kind: OtherKind<'t>, direction: Direction, then: Option<Then>) -> Range<'t> {
        Range::Other(Box::new(Other {
            kind,
            direction,
            then,
            members: foldhash::HashMap::default(),
        }))
    }

    /// A scan of what `select` wants from `from` in `direction`: through the label index when it
    /// names categories and no stream, or types it was told to walk ([`Scan::walk_of`]); through
    /// the log otherwise. The label index holds the events up to the index watermark: a walk
    /// forward goes on with the log after it, one backward begins with the log down to it.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`] when a range cannot be opened, [`Error::Damaged`] for a damaged label or
    /// watermark.
    pub(crate) fn of(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        from: u64,
        direction: Direction,
        select: Select,
    ) -> Result<Self> {
        if Scan::walk_of(&select).is_none() {
            return Scan::new(dbs, txn, from, direction, select);
        }
        let watermark = dbs.watermark(txn)?;
        if direction == Direction::Forward && from > watermark {
            // Forward past the watermark, the label index lists nothing to read.
            return Scan::new(dbs, txn, from, direction, select);
        }
        let select = select.resolved(dbs, txn)?;
        let range = match direction {
            Direction::Forward => Scan::other(
                Scan::label_walk(dbs, txn, &select, from, watermark, direction)?,
                direction,
                Some(Then::Log(watermark + 1)),
            ),
            Direction::Backward if from > watermark => {
                let range = Scan::log_range(dbs, txn, watermark + 1..=from, direction)?;
                Scan::other(
                    OtherKind::Scoped(Scoped::new(range)),
                    direction,
                    Some(Then::Labels(watermark)),
                )
            }
            Direction::Backward => Scan::other(
                Scan::label_walk(dbs, txn, &select, from, watermark, direction)?,
                direction,
                None,
            ),
        };
        Ok(Scan::with(dbs, txn, range, select, false))
    }

    /// A walk of the label index for `select` from `from`, up to `watermark`.
    fn label_walk(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        select: &Select,
        from: u64,
        watermark: u64,
        direction: Direction,
    ) -> Result<OtherKind<'t>> {
        let labels = Scan::walk_of(select).expect("a select that walks the label index");
        let walk = LabelWalk::new(dbs, txn, labels, from.min(watermark), watermark, direction)?;
        Ok(OtherKind::Labels(walk))
    }

    /// The labels a scan of `select` walks, if it walks the label index: its categories when it
    /// names no stream; the types it was told to walk when it names neither.
    pub(crate) fn walk_of(select: &Select) -> Option<Labels> {
        if select.streams.is_some() {
            return None;
        }
        if let Some(categories) = &select.categories {
            return Some(Labels {
                kind: LabelKind::Category,
                names: categories.to_vec(),
            });
        }
        match &select.types {
            Some(types) if select.walk_types => Some(Labels {
                kind: LabelKind::EventType,
                names: types.to_vec(),
            }),
            _ => None,
        }
    }

    /// The scan's direction.
    fn direction(&self) -> Direction {
        match &self.range {
            Range::Forward(_) => Direction::Forward,
            Range::Backward(_) => Direction::Backward,
            Range::Other(other) => other.direction,
        }
    }

    /// The same scan, started again at `from` in the same transaction.
    ///
    /// # Errors
    ///
    /// As [`Scan::of`].
    pub(crate) fn again_at(&self, from: u64) -> Result<Scan<'t>> {
        Scan::of(
            &self.dbs,
            self.txn,
            from,
            self.direction(),
            self.select.clone(),
        )
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
        let range = Scan::other(OtherKind::Streams(merged), Direction::Forward, None);
        Ok(Scan::with(dbs, txn, range, select, false))
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

    /// Whether the scan walks the stream index or the label index rather than the log.
    pub(crate) fn walks_index(&self) -> bool {
        matches!(
            &self.range,
            Range::Other(other) if matches!(other.kind, OtherKind::Streams(_) | OtherKind::Labels(_))
        )
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

    /// The next record of a scan that is not a plain one of the log: `Some(None)` for one that
    /// is not wanted (or when the scan moved on to its next part), `None` at the end.
    #[inline(never)]
    fn next_other(&mut self) -> Option<Option<Result<DecodedRecord<'t>>>> {
        let Range::Other(other) = &mut self.range else {
            unreachable!("a plain scan of the log is read in `next_map`")
        };
        let cx = Ctx {
            dbs: &self.dbs,
            txn: self.txn,
            select: &self.select,
        };
        let item = match &mut other.kind {
            OtherKind::Streams(merged) => next_indexed(&cx, merged, &mut self.visited),
            OtherKind::Scoped(scoped) => next_scoped(&cx, scoped, &mut self.visited),
            OtherKind::Labels(walk) => next_labeled(&cx, walk, &mut self.visited),
        };
        match item {
            // The part ended: the next one, if any.
            None => match other.next_part(&cx) {
                Ok(true) => Some(None),
                Ok(false) => None,
                Err(e) => Some(Some(Err(e))),
            },
            Some(Some(Ok(rec))) => match other.in_group(&cx, rec.stream()) {
                Ok(true) => Some(Some(Ok(rec))),
                Ok(false) => Some(None),
                Err(e) => Some(Some(Err(e))),
            },
            item => item,
        }
    }

    /// The next record the scan yields, handed to `f`, whose result is the item: the one loop of
    /// every scan, inlined into its caller so that a record never goes through memory on its
    /// way from the map to the caller's view of it.
    #[inline(always)]
    pub(crate) fn next_map<T>(
        &mut self,
        mut f: impl FnMut(DecodedRecord<'t>) -> Result<T>,
    ) -> Option<Result<T>> {
        // One call of `f`, after the loop: a visitor called from one place is inlined into
        // it, so the record stays in registers on its way to the view.
        let rec = loop {
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
                // The walks through an index and the scoped scans, out of the loop of plain
                // scans: one arm, so that the loop is the same as without them.
                Range::Other(_) => match self.next_other()? {
                    Some(Ok(rec)) => break rec,
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
                    break rec;
                }
                Err(e) => match self.judge_damaged(seq, bytes, e) {
                    Some(e) => return Some(Err(e)),
                    None => continue,
                },
            }
        };
        Some(f(rec))
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

/// What the other kinds of scan read with.
struct Ctx<'a, 't> {
    dbs: &'a Dbs,
    txn: &'t heed::RoTxn<'t>,
    select: &'a Select,
}

impl<'t> Ctx<'_, 't> {
    /// Whether the select wants a record whose header is verified (see `Scan::next_map`): `Some`
    /// with it (or the error of a type name that is not UTF-8, when no name was compared with a
    /// known one), `None` to pass it over.
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
}

impl<'t> Other<'t> {
    /// Moves a scan through the label index on to its next part when its range ends: `true`
    /// when there is one.
    fn next_part(&mut self, cx: &Ctx<'_, 't>) -> Result<bool> {
        let Some(then) = self.then.take() else {
            return Ok(false);
        };
        self.kind = match then {
            Then::Log(from) => OtherKind::Scoped(Scoped::new(Scan::log_range(
                cx.dbs,
                cx.txn,
                from..=u64::MAX,
                self.direction,
            )?)),
            Then::Labels(watermark) => Scan::label_walk(
                cx.dbs,
                cx.txn,
                cx.select,
                watermark,
                watermark,
                self.direction,
            )?,
        };
        Ok(true)
    }

    /// Whether `stream` is handled by the select's consumer group member (always, without a
    /// group): by the cardinal id of its recorded name, or by its id for a stream without one,
    /// remembered per stream.
    fn in_group(&mut self, cx: &Ctx<'_, 't>, stream: StreamId) -> Result<bool> {
        let Some((member, members)) = cx.select.group else {
            return Ok(true);
        };
        if let Some(&found) = self.members.get(&stream) {
            return Ok(found == member);
        }
        let found = match cx.dbs.stream_name(cx.txn, stream)? {
            Some((name, _)) => name.group_member(members),
            None => crate::name::group_member_of(&stream.to_key(), members),
        };
        self.members.insert(stream, found);
        Ok(found == member)
    }
}

/// The next record of a walk through the stream index: `Some(None)` for one that is not
/// wanted, `None` at the end.
fn next_indexed<'t>(
    cx: &Ctx<'_, 't>,
    merged: &mut Merged<'t>,
    visited: &mut Option<u64>,
) -> Option<Option<Result<DecodedRecord<'t>>>> {
    match merged.next() {
        Some(Ok(rec)) => {
            *visited = Some(rec.seq());
            Some(cx.wanted(rec))
        }
        Some(Err(e)) => Some(Some(Err(e))),
        None => {
            // Every event of the streams up to the head was visited.
            let head = merged.head();
            *visited = Some(visited.map_or(head, |v| v.max(head)));
            None
        }
    }
}

/// The next record of a walk through the label index: `Some(None)` for one that is not
/// wanted, `None` at the end of the walk.
fn next_labeled<'t>(
    cx: &Ctx<'_, 't>,
    walk: &mut LabelWalk<'t>,
    visited: &mut Option<u64>,
) -> Option<Option<Result<DecodedRecord<'t>>>> {
    let seq = match walk.next_seq() {
        Some(Ok(seq)) => seq,
        Some(Err(e)) => return Some(Some(Err(e))),
        None => {
            // Every event of the labels up to the watermark (or back to the start) was visited.
            *visited = Some(walk.covered());
            return None;
        }
    };
    *visited = Some(seq);
    let rec = walk
        .record(seq)
        .and_then(|bytes| record::decode_verified(seq, bytes, false))
        .and_then(|rec| walk.check(&rec).map(|()| rec));
    match rec {
        // The walk checked the record's label (its category or type); the select's types are
        // checked here.
        Ok(rec) => Some(cx.wanted(rec)),
        Err(e) => Some(Some(Err(e))),
    }
}

/// The next record of a scoped scan of the log (a select that decides on each record's stream,
/// or a part of a walk through the label index): `Some(None)` for one that is not wanted,
/// `None` at the end of its range.
fn next_scoped<'t>(
    cx: &Ctx<'_, 't>,
    scoped: &mut Scoped<'t>,
    visited: &mut Option<u64>,
) -> Option<Option<Result<DecodedRecord<'t>>>> {
    let (seq, value) = match scoped.range.next()? {
        Ok(entry) => entry,
        Err(e) => return Some(Some(Err(e.into()))),
    };
    *visited = Some(seq);
    let rec = match cx
        .dbs
        .record(cx.txn, seq, value)
        .and_then(|bytes| record::decode_verified(seq, bytes, false))
    {
        Ok(rec) => rec,
        Err(e) => return Some(Some(Err(e))),
    };
    if !cx.select.matches(&rec) {
        return Some(None);
    }
    let stream = rec.stream();
    let listed = cx.select.categories.is_none()
        || cx
            .select
            .streams
            .as_ref()
            .is_some_and(|s| s.contains(&stream));
    if !listed {
        let categories = cx.select.categories.as_deref().unwrap_or(&[]);
        match in_categories(cx.dbs, cx.txn, &mut scoped.known, categories, stream) {
            Ok(true) => {}
            Ok(false) => return Some(None),
            Err(e) => return Some(Some(Err(e))),
        }
    }
    Some(cx.wanted(rec))
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
