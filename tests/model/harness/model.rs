//! The in-memory model of the store: a log as a vector, the event ids, the shredded streams, and
//! the rules that decide every write's outcome, errors included.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use varvedb::{Appended, Direction, ExpectedVersion, Position, StreamId, StreamInfo, Uuid};

use super::errors::MErr;

/// The event type of the model runs.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct Ev {
    pub n: u64,
    pub s: String,
}

/// The payload of the `counter`-th event: lengths 0..97, so that payload sizes (and record
/// layouts) vary.
pub fn payload(counter: u64) -> Ev {
    Ev {
        n: counter,
        s: "abcdefghijklmnopqrstuvwxyz0123456789"
            .chars()
            .cycle()
            .take((counter * 7 % 97) as usize)
            .collect(),
    }
}

/// The event type name the `n`-th event is stored under: every third one under `EvB` (read by
/// the harness's reader as `Ev`, which it accepts), so that the log holds two types. Single
/// appends, which take no `NewEvent`, always store `Ev`: the harness gives them payloads of
/// `Ev`'s.
pub fn type_of(n: u64) -> &'static str {
    if n.is_multiple_of(3) {
        "EvB"
    } else {
        "Ev"
    }
}

/// The category of stream `id`: the part of its name before the first `-`; none for a stream
/// written by id.
pub fn category_of(id: u128) -> Option<&'static str> {
    super::ops::name_of(id).map(|name| name.split('-').next().expect("a category"))
}

/// The sequences of the events of `category` (any: `None`) and `event_type` (any: `None`) that
/// a read from `from` in `dir` yields, in its order.
pub fn filtered_seqs(
    log: &[Rec],
    category: Option<&str>,
    event_type: Option<&str>,
    from: u64,
    dir: Direction,
) -> Vec<u64> {
    log_seqs(log, from, dir)
        .into_iter()
        .filter(|&seq| {
            let r = &log[seq as usize - 1];
            category.is_none_or(|c| category_of(r.stream) == Some(c))
                && event_type.is_none_or(|t| type_of(r.ev.n) == t)
        })
        .collect()
}

/// One stored event, as the model knows it.
#[derive(Clone, Debug)]
pub struct Rec {
    pub stream: u128,
    pub version: u64,
    /// Learnt from the store for events appended with a generated id.
    pub id: Uuid,
    pub ev: Ev,
}

/// A batch as it was submitted (alone or as a transaction's part).
#[derive(Clone, Debug)]
pub struct Submitted {
    pub stream: u128,
    pub expected: ExpectedVersion,
    pub events: Vec<(Uuid, Ev)>,
}

#[derive(Default)]
pub struct Model {
    /// The log, in sequence order (seq = index + 1).
    pub log: Vec<Rec>,
    /// Event id -> index in `log`.
    pub ids: HashMap<Uuid, usize>,
    /// Shredded streams (encrypted stores only).
    pub shredded: BTreeSet<u128>,
    /// Streams with a data key in the keystore (encrypted stores): every stream that a write
    /// got past its batch's own checks for, less the shredded ones.
    pub keyed: BTreeSet<u128>,
    /// The index watermark last made certain: by `flush_index`, or by a close and open.
    pub flushed: u64,
    /// Master key rotations.
    pub rotations: u32,
}

/// The version of `stream` in `log`.
pub fn version_in(log: &[Rec], stream: u128) -> u64 {
    log.iter()
        .rev()
        .find(|r| r.stream == stream)
        .map_or(0, |r| r.version)
}

/// What `streams()` lists for `log`.
pub fn streams_in(log: &[Rec]) -> Vec<StreamInfo> {
    let mut heads: BTreeMap<u128, StreamInfo> = BTreeMap::new();
    for (i, r) in log.iter().enumerate() {
        let seq = i as u64 + 1;
        heads
            .entry(r.stream)
            .and_modify(|h| {
                h.version = r.version;
                h.last_seq = seq;
            })
            .or_insert(StreamInfo {
                stream: StreamId(r.stream),
                version: r.version,
                first_seq: seq,
                last_seq: seq,
            });
    }
    heads.into_values().collect()
}

/// Sequences of `log` that `read_stream(stream, from, dir)` returns, in order.
pub fn stream_seqs(log: &[Rec], stream: u128, from: u64, dir: Direction) -> Vec<u64> {
    let mut out: Vec<u64> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.stream == stream
                && match dir {
                    Direction::Forward => r.version >= from,
                    Direction::Backward => r.version <= from,
                }
        })
        .map(|(i, _)| i as u64 + 1)
        .collect();
    if dir == Direction::Backward {
        out.reverse();
    }
    out
}

/// Sequences of `log` that `read_log(from, dir)` returns, in order.
pub fn log_seqs(log: &[Rec], from: u64, dir: Direction) -> Vec<u64> {
    let len = log.len() as u64;
    match dir {
        Direction::Forward => (from.max(1)..=len).collect(),
        Direction::Backward => (1..=from.min(len)).rev().collect(),
    }
}

/// A transaction being built: what its parts did to the model so far.
pub struct TxModel {
    /// The log's length before the transaction.
    mark: usize,
    /// The ids of its accepted parts.
    ids: HashSet<Uuid>,
    /// The streams of its accepted parts, in order.
    streams: Vec<u128>,
    /// The parts' outcomes until the first failure, which decides the transaction.
    outcome: Result<Vec<Appended>, MErr>,
}

impl Model {
    pub fn current(&self, stream: u128) -> u64 {
        version_in(&self.log, stream)
    }

    /// The checks made when a batch is serialized (`Writer::prepare`), before the store is
    /// looked at. `earlier` holds the ids of the transaction's earlier parts.
    fn prepare(stream: u128, events: &[(Uuid, Ev)], earlier: &HashSet<Uuid>) -> Result<(), MErr> {
        if events.is_empty() {
            return Err(MErr::Empty {
                stream: StreamId(stream),
            });
        }
        let mut sorted: Vec<Uuid> = events.iter().map(|e| e.0).collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(MErr::DupInBatch { event_id: w[0] });
        }
        match events.iter().find(|e| earlier.contains(&e.0)) {
            Some(e) => Err(MErr::DupInBatch { event_id: e.0 }),
            None => Ok(()),
        }
    }

    /// The data keys of a write's streams, looked up (and created) before anything else of the
    /// write: the first shredded stream fails it; the others get a key even so.
    fn keys(&mut self, streams: &[u128]) -> Result<(), MErr> {
        let mut first = Ok(());
        for &stream in streams {
            if self.shredded.contains(&stream) {
                if first.is_ok() {
                    first = Err(MErr::StreamShredded {
                        stream: StreamId(stream),
                    });
                }
            } else {
                self.keyed.insert(stream);
            }
        }
        first
    }

    /// What `append(stream, version, ..)` must return: the event's sequence. The caller
    /// [`push`](Model::push)es the event once it has learnt its generated id.
    pub fn append(&mut self, stream: u128, version: u64) -> Result<u64, MErr> {
        let sid = StreamId(stream);
        if version == 0 {
            return Err(MErr::InvalidVersion {
                stream: sid,
                version,
            });
        }
        self.keys(&[stream])?;
        let current = self.current(stream);
        if version != current + 1 {
            return Err(MErr::Conflict {
                stream: sid,
                expected: ExpectedVersion::Exact(version - 1),
                actual: current,
            });
        }
        Ok(self.log.len() as u64 + 1)
    }

    /// Adds an event at the end of the log.
    pub fn push(&mut self, rec: Rec) {
        assert!(
            self.ids.insert(rec.id, self.log.len()).is_none(),
            "id {} stored twice",
            rec.id
        );
        self.log.push(rec);
    }

    /// What `append_batch` must do; applies it when it succeeds.
    pub fn batch(
        &mut self,
        stream: u128,
        expected: ExpectedVersion,
        events: &[(Uuid, Ev)],
    ) -> Result<Appended, MErr> {
        Self::prepare(stream, events, &HashSet::new())?;
        self.keys(&[stream])?;
        self.write(stream, expected, events)
    }

    /// Starts a transaction.
    pub fn begin(&self) -> TxModel {
        TxModel {
            mark: self.log.len(),
            ids: HashSet::new(),
            streams: Vec::new(),
            outcome: Ok(Vec::new()),
        }
    }

    /// What `Transaction::append_batch` must return. An accepted part is applied at once
    /// (undone by [`commit`](Model::commit) if the transaction fails), so that later parts see it.
    pub fn add_part(
        &mut self,
        tx: &mut TxModel,
        stream: u128,
        expected: ExpectedVersion,
        events: &[(Uuid, Ev)],
    ) -> Result<(), MErr> {
        Self::prepare(stream, events, &tx.ids)?;
        tx.ids.extend(events.iter().map(|e| e.0));
        tx.streams.push(stream);
        if let Ok(done) = &mut tx.outcome {
            if self.shredded.contains(&stream) {
                tx.outcome = Err(MErr::StreamShredded {
                    stream: StreamId(stream),
                });
                return Ok(());
            }
            match self.write(stream, expected, events) {
                Ok(appended) => done.push(appended),
                Err(e) => tx.outcome = Err(e),
            }
        }
        Ok(())
    }

    /// What `Transaction::commit` must return: the parts in order, a part of a shredded stream
    /// failing at its turn; the first failure fails the whole transaction, which then leaves
    /// nothing. The keys of every part's live stream are created before, whatever the outcome.
    pub fn commit(&mut self, tx: TxModel) -> Result<Vec<Appended>, MErr> {
        if tx.streams.is_empty() {
            return Ok(Vec::new());
        }
        // The first shredded stream's error is the transaction's only when no earlier part
        // failed: `outcome` already says which came first.
        let _ = self.keys(&tx.streams);
        let outcome = tx.outcome;
        if outcome.is_err() {
            for rec in self.log.drain(tx.mark..) {
                self.ids.remove(&rec.id);
            }
        }
        outcome
    }

    /// The idempotency and version checks of a prepared batch, against the log as it is; applies
    /// the batch when they pass.
    fn write(
        &mut self,
        stream: u128,
        expected: ExpectedVersion,
        events: &[(Uuid, Ev)],
    ) -> Result<Appended, MErr> {
        let sid = StreamId(stream);
        let found: Vec<Option<usize>> =
            events.iter().map(|e| self.ids.get(&e.0).copied()).collect();
        if let Some(i) = found.iter().position(Option::is_some) {
            if found.iter().all(Option::is_some) {
                return self.retry(stream, expected, events, &found);
            }
            let at = found[i].unwrap();
            return Err(MErr::IdConflict {
                event_id: events[i].0,
                seq: at as u64 + 1,
                stream: StreamId(self.log[at].stream),
                version: self.log[at].version,
            });
        }
        let current = self.current(stream);
        if !expected.matches(current) {
            return Err(MErr::Conflict {
                stream: sid,
                expected,
                actual: current,
            });
        }
        let mut positions = Vec::new();
        for (i, (id, ev)) in events.iter().enumerate() {
            let version = current + 1 + i as u64;
            self.push(Rec {
                stream,
                version,
                id: *id,
                ev: ev.clone(),
            });
            positions.push(Position {
                seq: self.log.len() as u64,
                version,
            });
        }
        Ok(Appended {
            stream: sid,
            positions,
            deduplicated: false,
        })
    }

    /// A batch whose ids are all stored: an exact retry, or an `IdConflict`.
    fn retry(
        &self,
        stream: u128,
        expected: ExpectedVersion,
        events: &[(Uuid, Ev)],
        found: &[Option<usize>],
    ) -> Result<Appended, MErr> {
        let mut positions: Vec<Position> = Vec::new();
        for (i, ((id, ev), at)) in events.iter().zip(found).enumerate() {
            let at = at.unwrap();
            let rec = &self.log[at];
            let seq = at as u64 + 1;
            if rec.stream != stream
                || (i > 0 && rec.version != positions[i - 1].version + 1)
                || rec.ev != *ev
            {
                return Err(MErr::IdConflict {
                    event_id: *id,
                    seq,
                    stream: StreamId(rec.stream),
                    version: rec.version,
                });
            }
            positions.push(Position {
                seq,
                version: rec.version,
            });
        }
        let first = positions[0];
        let consistent = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => first.version == 1,
            ExpectedVersion::StreamExists => first.version > 1,
            ExpectedVersion::Exact(v) => first.version == v + 1,
        };
        if !consistent {
            return Err(MErr::IdConflict {
                event_id: events[0].0,
                seq: first.seq,
                stream: StreamId(stream),
                version: first.version,
            });
        }
        Ok(Appended {
            stream: StreamId(stream),
            positions,
            deduplicated: true,
        })
    }

    /// What `shred_stream` must return on an encrypted store; applies it.
    pub fn shred(&mut self, stream: u128) -> bool {
        self.keyed.remove(&stream);
        self.shredded.insert(stream)
    }

    /// What `rotate_master_key` must return on an encrypted store (the number of stream keys
    /// re-wrapped); applies it.
    pub fn rotate(&mut self) -> u64 {
        self.rotations += 1;
        self.keyed.len() as u64
    }
}
