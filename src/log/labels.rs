//! A walk through the label index: the events of some categories, or of some event types, in
//! global order from a sequence on, in either direction. A reader of a category or a type walks
//! it instead of the log, and reads only the records it lists.
//!
//! Each entry is checked against the record it leads to (`LabelWalk::check`): an entry that
//! lists an event under a label it does not have (a damaged index) is an error, never another
//! category's or type's event.

use std::ops::Bound;

use heed::types::Bytes;

use crate::env::{Dbs, LogLookup};
use crate::error::{Error, Result};
use crate::format::name::{label_index_key, LabelKind, LabelRun};
use crate::format::record::DecodedRecord;
use crate::types::{Direction, StreamId};

/// One label's events from the walk's start, with the next one read ahead: the label's runs
/// (`label_index` entries of up to `LABEL_RUN` sequences), one after the other.
struct Lane<'t> {
    label: u32,
    range: LaneRange<'t>,
    forward: bool,
    /// The walk's bounds: forward, sequences from `lo` up to `hi`; backward, from `hi` down.
    lo: u64,
    hi: u64,
    /// The run being read, with the index of its next sequence (backward: one past it).
    run: Option<(LabelRun<'t>, usize)>,
    /// The sequence of the next event; `None` once the lane is exhausted.
    next: Option<u64>,
}

enum LaneRange<'t> {
    Forward(heed::RoRange<'t, Bytes, Bytes>),
    Backward(heed::RoRevRange<'t, Bytes, Bytes>),
}

impl<'t> Lane<'t> {
    /// Reads the lane's next event ahead.
    fn advance(&mut self) -> Result<()> {
        let last = self.next.take();
        loop {
            if let Some((run, i)) = &mut self.run {
                let seq = if self.forward {
                    (*i < run.len()).then(|| {
                        *i += 1;
                        run.seq(*i - 1)
                    })
                } else {
                    (*i > 0).then(|| {
                        *i -= 1;
                        run.seq(*i)
                    })
                };
                match seq {
                    Some(seq) if self.forward && seq < self.lo => continue,
                    Some(seq) if !self.forward && seq > self.hi => continue,
                    Some(seq) if self.forward && seq > self.hi => return Ok(()),
                    Some(seq) => {
                        let ordered = match last {
                            None => true,
                            Some(last) => (seq > last) == self.forward && seq != last,
                        };
                        if !ordered {
                            return Err(Error::corrupted(
                                seq,
                                format!(
                                    "the label index lists it out of order under label {}",
                                    self.label
                                ),
                            ));
                        }
                        self.next = Some(seq);
                        return Ok(());
                    }
                    None => self.run = None,
                }
            }
            let entry = match &mut self.range {
                LaneRange::Forward(range) => range.next(),
                LaneRange::Backward(range) => range.next(),
            };
            let Some(entry) = entry else {
                return Ok(());
            };
            let (key, value) = entry?;
            let run = LabelRun::decode(key, value)?;
            if run.label != self.label {
                return Err(Error::corrupted(
                    run.seq(0),
                    format!(
                        "the label index lists it under label {} in the range of label {}",
                        run.label, self.label
                    ),
                ));
            }
            let at = if self.forward { 0 } else { run.len() };
            self.run = Some((run, at));
        }
    }
}

/// What a walk lists: the events of these categories, or of these event types.
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    pub kind: LabelKind,
    pub names: Vec<String>,
}

/// The events of some labels in global order (see the module documentation).
pub(crate) struct LabelWalk<'t> {
    dbs: Dbs,
    txn: &'t heed::RoTxn<'t>,
    lanes: Vec<Lane<'t>>,
    labels: Labels,
    direction: Direction,
    /// The index watermark in the walk's transaction: the label index lists the events up to
    /// here, and a walk forward that is exhausted has listed every event of its labels up to it.
    watermark: u64,
    /// Whether each stream met is in one of the categories walked (a category walk).
    streams: foldhash::HashMap<StreamId, bool>,
    /// The records the walk lists, looked up in order: events of a label often come in runs
    /// (a batch of one stream), which a walk forward steps through.
    log: LogLookup<'t>,
}

impl<'t> LabelWalk<'t> {
    /// A walk of `labels` from `from` (inclusive, at most `watermark`) in `direction`, in `txn`,
    /// through the entries up to `watermark`. A label the store has no id for has no events in
    /// the index yet.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged label entry.
    pub(crate) fn new(
        dbs: &Dbs,
        txn: &'t heed::RoTxn<'t>,
        labels: Labels,
        from: u64,
        watermark: u64,
        direction: Direction,
    ) -> Result<Self> {
        let mut lanes = Vec::with_capacity(labels.names.len());
        for name in &labels.names {
            let Some(label) = dbs.label(txn, labels.kind, name.as_bytes())? else {
                continue;
            };
            if lanes.iter().any(|l: &Lane<'_>| l.label == label) {
                continue;
            }
            let (range, lo, hi) = match direction {
                Direction::Forward => {
                    // From the run that holds `from`, if one does.
                    let start = dbs
                        .label_run_at(txn, label, from)?
                        .map_or(from, |run| run.seq(0));
                    let lo = label_index_key(label, start);
                    let hi = label_index_key(label, watermark);
                    let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
                    let range = LaneRange::Forward(dbs.label_index.range(txn, &bounds)?);
                    (range, from, watermark)
                }
                Direction::Backward => {
                    let lo = label_index_key(label, 0);
                    let hi = label_index_key(label, from);
                    let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
                    (
                        LaneRange::Backward(dbs.label_index.rev_range(txn, &bounds)?),
                        0,
                        from,
                    )
                }
            };
            let mut lane = Lane {
                label,
                range,
                forward: direction == Direction::Forward,
                lo,
                hi,
                run: None,
                next: None,
            };
            lane.advance()?;
            lanes.push(lane);
        }
        Ok(LabelWalk {
            dbs: *dbs,
            txn,
            lanes,
            labels,
            direction,
            watermark,
            streams: foldhash::HashMap::default(),
            log: LogLookup::new(dbs, txn),
        })
    }

    /// The sequence up to which (forward: the index watermark) or down to which (backward: 1)
    /// a walk that is exhausted has listed every event of its labels.
    pub(crate) fn covered(&self) -> u64 {
        match self.direction {
            Direction::Forward => self.watermark,
            Direction::Backward => 1,
        }
    }

    /// The sequence of the next event listed, in the walk's direction; `None` at the end.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Corrupted`] for a damaged entry.
    pub(crate) fn next_seq(&mut self) -> Option<Result<u64>> {
        let forward = self.direction == Direction::Forward;
        let mut best: Option<(usize, u64)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(seq) = lane.next {
                let better = match best {
                    None => true,
                    Some((_, b)) => (forward && seq < b) || (!forward && seq > b),
                };
                if better {
                    best = Some((i, seq));
                }
            }
        }
        let (i, seq) = best?;
        if let Err(e) = self.lanes[i].advance() {
            self.lanes[i].next = None;
            return Some(Err(e));
        }
        Some(Ok(seq))
    }

    /// The record at `seq`, which the walk listed ([`LogLookup::get`]).
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Corrupted`] when the log does not hold it.
    pub(crate) fn record(&mut self, seq: u64) -> Result<&'t [u8]> {
        self.log.get(seq)?.ok_or_else(|| {
            Error::corrupted(seq, "the label index lists an event the log does not hold")
        })
    }

    /// Checks that the record an entry led to has the entry's label: its event type, or its
    /// stream's category.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when it does not, [`Error::Damaged`] for a damaged stream name.
    pub(crate) fn check(&mut self, rec: &DecodedRecord<'_>) -> Result<()> {
        let listed = match self.labels.kind {
            LabelKind::EventType => {
                let found = rec.event_type_bytes();
                self.labels
                    .names
                    .iter()
                    .any(|n| super::bytes_eq(n.as_bytes(), found))
            }
            LabelKind::Category => in_categories(
                &self.dbs,
                self.txn,
                &mut self.streams,
                &self.labels.names,
                rec.stream(),
            )?,
        };
        if listed {
            return Ok(());
        }
        let what = match self.labels.kind {
            LabelKind::EventType => "event types",
            LabelKind::Category => "categories",
        };
        Err(Error::corrupted(
            rec.seq(),
            format!(
                "the label index lists it among the events of the {what} {:?}, which it is not of",
                self.labels.names
            ),
        ))
    }
}

/// Whether `stream` is in one of `categories`, as its recorded name says (a stream without a
/// name is in none), remembered in `known`.
///
/// # Errors
///
/// [`Error::Lmdb`], [`Error::Damaged`] for a damaged stream name.
pub(crate) fn in_categories(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    known: &mut foldhash::HashMap<StreamId, bool>,
    categories: &[String],
    stream: StreamId,
) -> Result<bool> {
    if let Some(&found) = known.get(&stream) {
        return Ok(found);
    }
    let found = match dbs.stream_name(txn, stream)? {
        Some((name, _)) => categories.iter().any(|c| c == name.category()),
        None => false,
    };
    known.insert(stream, found);
    Ok(found)
}
