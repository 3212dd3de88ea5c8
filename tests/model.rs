//! Model-based test of the public API: random sequences of appends, batches (with idempotent
//! retries, mutated retries and duplicate ids), reopens and reads are run against the store and
//! against a trivial in-memory model, and every result is compared exactly, errors included.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 64).

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use varvedb::error::Error;
use varvedb::{
    Appended, Direction, ExpectedVersion, NewEvent, Position, StreamId, StreamInfo, Uuid,
};
use varvedb::{EventView, Reader, Writer};
use varvedb::{ReadTxn, Storage, StorageConfig};

/// The event type of the test.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Ev {
    pub n: u64,
    pub s: String,
}

/// The streams the ops pick from (one of them beyond u64, to exercise UUID-sized ids and the
/// big-endian listing order).
const STREAMS: [u128; 5] = [0, 1, 2, 7, 1 << 100];

const MAX_OPS: usize = 40;

/// Outcomes seen over all cases of one test (each test runs on its own thread), to check that the
/// random search reaches each of them.
#[derive(Default, Debug)]
struct Coverage {
    written: AtomicU64,
    deduplicated: AtomicU64,
    conflict: AtomicU64,
    id_conflict: AtomicU64,
    dup_in_batch: AtomicU64,
    invalid_version: AtomicU64,
    empty: AtomicU64,
    reopen: AtomicU64,
}

thread_local! {
    static COVERAGE: Coverage = Coverage::default();
}

fn count<T>(outcome: &Result<T, MErr>, deduplicated: bool) {
    COVERAGE.with(|c| count_in(c, outcome, deduplicated));
}

fn count_in<T>(c: &Coverage, outcome: &Result<T, MErr>, deduplicated: bool) {
    let counter = match outcome {
        Ok(_) if deduplicated => &c.deduplicated,
        Ok(_) => &c.written,
        Err(MErr::Conflict { .. }) => &c.conflict,
        Err(MErr::IdConflict { .. }) => &c.id_conflict,
        Err(MErr::DupInBatch { .. }) => &c.dup_in_batch,
        Err(MErr::InvalidVersion { .. }) => &c.invalid_version,
        Err(MErr::Empty { .. }) => &c.empty,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// How `append` picks its version.
#[derive(Clone, Debug)]
enum VersionSel {
    /// current + 1: succeeds.
    Next,
    /// 0: `InvalidVersion`.
    Zero,
    /// current (or 1 on an empty stream... which is right, so only a conflict when current > 0).
    Current,
    /// current + 1 + k, k >= 1: conflict.
    Ahead(u8),
    /// current + 1 - k, k >= 1 (saturating at 1).
    Behind(u8),
}

/// How a batch picks its expected version.
#[derive(Clone, Debug)]
enum ExpSel {
    Any,
    NoStream,
    StreamExists,
    ExactRight,
    ExactWrong(u8),
}

/// How a retry of an earlier batch differs from it.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    ChangePayload(Index),
    DropFirst,
    DropLast,
    AddFresh,
    Reverse,
}

#[derive(Clone, Debug)]
enum RetryExp {
    /// The expected version the original batch named.
    Same,
    Any,
    Other(ExpSel),
}

#[derive(Clone, Debug)]
struct Reuse {
    which: Index,
    same_stream: bool,
    expected: RetryExp,
    mutation: Mutation,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        version: VersionSel,
    },
    Batch {
        stream: usize,
        expected: ExpSel,
        n: usize,
        /// Make event `.1` reuse the id of event `.0` (when they differ).
        dup: Option<(Index, Index)>,
    },
    Retry(Reuse),
    Reopen,
    Get(Index),
    Envelope(Index),
    ReadStream {
        stream: usize,
        from: Option<Index>,
        dir: Direction,
    },
    ReadLog {
        from: Option<Index>,
        dir: Direction,
    },
    ForEachLog {
        from: Option<Index>,
        dir: Direction,
        stop_after: usize,
    },
    ForEachStream {
        stream: usize,
        from: Option<Index>,
        dir: Direction,
        stop_after: usize,
    },
    LastInStream(usize),
    StreamVersion(usize),
    Streams,
    Snapshot,
    CheckSnapshot,
}

fn dir_strategy() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Forward), Just(Direction::Backward)]
}

fn exp_strategy() -> impl Strategy<Value = ExpSel> {
    prop_oneof![
        2 => Just(ExpSel::Any),
        1 => Just(ExpSel::NoStream),
        1 => Just(ExpSel::StreamExists),
        3 => Just(ExpSel::ExactRight),
        1 => (1u8..4).prop_map(ExpSel::ExactWrong),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    let from = proptest::option::weighted(0.85, any::<Index>());
    prop_oneof![
        8 => (stream.clone(), prop_oneof![
            8 => Just(VersionSel::Next),
            1 => Just(VersionSel::Zero),
            1 => Just(VersionSel::Current),
            1 => (1u8..4).prop_map(VersionSel::Ahead),
            1 => (1u8..4).prop_map(VersionSel::Behind),
        ])
            .prop_map(|(stream, version)| Op::Append { stream, version }),
        8 => (
            stream.clone(),
            exp_strategy(),
            prop_oneof![1 => Just(0usize), 30 => 1usize..5],
            proptest::option::weighted(0.1, (any::<Index>(), any::<Index>())),
        )
            .prop_map(|(stream, expected, n, dup)| Op::Batch { stream, expected, n, dup }),
        4 => (
            any::<Index>(),
            proptest::bool::weighted(0.85),
            prop_oneof![
                4 => Just(RetryExp::Same),
                1 => Just(RetryExp::Any),
                1 => exp_strategy().prop_map(RetryExp::Other),
            ],
            prop_oneof![
                5 => Just(Mutation::None),
                1 => any::<Index>().prop_map(Mutation::ChangePayload),
                1 => Just(Mutation::DropFirst),
                1 => Just(Mutation::DropLast),
                1 => Just(Mutation::AddFresh),
                1 => Just(Mutation::Reverse),
            ],
        )
            .prop_map(|(which, same_stream, expected, mutation)| Op::Retry(Reuse {
                which,
                same_stream,
                expected,
                mutation,
            })),
        1 => Just(Op::Reopen),
        2 => any::<Index>().prop_map(Op::Get),
        1 => any::<Index>().prop_map(Op::Envelope),
        2 => (stream.clone(), from.clone(), dir_strategy())
            .prop_map(|(stream, from, dir)| Op::ReadStream { stream, from, dir }),
        2 => (from.clone(), dir_strategy()).prop_map(|(from, dir)| Op::ReadLog { from, dir }),
        1 => (from.clone(), dir_strategy(), 0usize..6)
            .prop_map(|(from, dir, stop_after)| Op::ForEachLog { from, dir, stop_after }),
        1 => (stream.clone(), from, dir_strategy(), 0usize..4).prop_map(
            |(stream, from, dir, stop_after)| Op::ForEachStream { stream, from, dir, stop_after }
        ),
        1 => stream.clone().prop_map(Op::LastInStream),
        1 => stream.prop_map(Op::StreamVersion),
        1 => Just(Op::Streams),
        1 => Just(Op::Snapshot),
        1 => Just(Op::CheckSnapshot),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// One stored event, as the model knows it.
#[derive(Clone, Debug)]
struct Rec {
    stream: u128,
    version: u64,
    /// Unknown until read back for events appended with a generated id.
    id: Uuid,
    ev: Ev,
}

/// Errors of the API in a comparable form (the `reason` text of `EventIdConflict` is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
enum MErr {
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    IdConflict {
        event_id: Uuid,
        seq: u64,
        stream: StreamId,
        version: u64,
    },
    DupInBatch {
        event_id: Uuid,
    },
    InvalidVersion {
        stream: StreamId,
        version: u64,
    },
    Empty {
        stream: StreamId,
    },
}

fn to_merr(e: Error) -> MErr {
    match e {
        Error::ConcurrencyConflict {
            stream,
            expected,
            actual,
        } => MErr::Conflict {
            stream,
            expected,
            actual,
        },
        Error::EventIdConflict {
            event_id,
            existing_seq,
            existing_stream,
            existing_version,
            reason,
        } => {
            assert!(!reason.is_empty());
            MErr::IdConflict {
                event_id,
                seq: existing_seq,
                stream: existing_stream,
                version: existing_version,
            }
        }
        Error::DuplicateEventIdInBatch { event_id } => MErr::DupInBatch { event_id },
        Error::InvalidVersion { stream, version } => MErr::InvalidVersion { stream, version },
        Error::EmptyBatch { stream } => MErr::Empty { stream },
        other => panic!("unexpected error from the store: {other:?}"),
    }
}

/// A batch as it was submitted.
#[derive(Clone, Debug)]
struct Submitted {
    stream: u128,
    expected: ExpectedVersion,
    events: Vec<(Uuid, Ev)>,
}

#[derive(Default)]
struct Model {
    /// The log, in sequence order (seq = index + 1).
    log: Vec<Rec>,
    /// Event id -> index in `log`.
    ids: HashMap<Uuid, usize>,
}

fn version_in(log: &[Rec], stream: u128) -> u64 {
    log.iter()
        .rev()
        .find(|r| r.stream == stream)
        .map_or(0, |r| r.version)
}

fn streams_in(log: &[Rec]) -> Vec<StreamInfo> {
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
fn stream_seqs(log: &[Rec], stream: u128, from: u64, dir: Direction) -> Vec<u64> {
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
fn log_seqs(log: &[Rec], from: u64, dir: Direction) -> Vec<u64> {
    let len = log.len() as u64;
    match dir {
        Direction::Forward => (from.max(1)..=len).collect(),
        Direction::Backward => (1..=from.min(len)).rev().collect(),
    }
}

impl Model {
    /// What `append_batch` must do; applies it when it succeeds.
    fn batch(
        &mut self,
        stream: u128,
        expected: ExpectedVersion,
        events: &[(Uuid, Ev)],
    ) -> Result<Appended, MErr> {
        let sid = StreamId(stream);
        if events.is_empty() {
            return Err(MErr::Empty { stream: sid });
        }
        let mut sorted: Vec<Uuid> = events.iter().map(|e| e.0).collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(MErr::DupInBatch { event_id: w[0] });
        }
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
        let current = version_in(&self.log, stream);
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
            self.ids.insert(*id, self.log.len());
            self.log.push(Rec {
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
            let conflict = MErr::IdConflict {
                event_id: *id,
                seq,
                stream: StreamId(rec.stream),
                version: rec.version,
            };
            if rec.stream != stream
                || (i > 0 && rec.version != positions[i - 1].version + 1)
                || rec.ev != *ev
            {
                return Err(conflict);
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
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    dir: tempfile::TempDir,
    // Field order: the snapshot and handles drop before the storage.
    snapshot: Option<(ReadTxn, usize)>,
    writer: Option<Writer<Ev>>,
    reader: Option<Reader<Ev>>,
    storage: Option<Storage>,
    model: Model,
    history: Vec<Submitted>,
    counter: u64,
    /// Whether the store is encrypted (the model is the same: encryption must not show).
    encrypted: bool,
}

fn payload(counter: u64) -> Ev {
    Ev {
        n: counter,
        // Lengths 0..97, so payload sizes (and record layouts) vary.
        s: "abcdefghijklmnopqrstuvwxyz0123456789"
            .chars()
            .cycle()
            .take((counter * 7 % 97) as usize)
            .collect(),
    }
}

fn resolve_exp(sel: &ExpSel, current: u64) -> ExpectedVersion {
    match sel {
        ExpSel::Any => ExpectedVersion::Any,
        ExpSel::NoStream => ExpectedVersion::NoStream,
        ExpSel::StreamExists => ExpectedVersion::StreamExists,
        ExpSel::ExactRight => ExpectedVersion::Exact(current),
        ExpSel::ExactWrong(d) => {
            let d = u64::from(*d);
            if d % 2 == 0 && current >= d {
                ExpectedVersion::Exact(current - d)
            } else {
                ExpectedVersion::Exact(current + d)
            }
        }
    }
}

/// A position to read from: an index over 0..=limit+1, or `u64::MAX` when `None`.
fn resolve_from(from: &Option<Index>, limit: u64) -> u64 {
    match from {
        Some(i) => i.index(limit as usize + 2) as u64,
        None => u64::MAX,
    }
}

impl Harness {
    fn new(encrypted: bool) -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().expect("tempdir"),
            snapshot: None,
            writer: None,
            reader: None,
            storage: None,
            model: Model::default(),
            history: Vec::new(),
            counter: 0,
            encrypted,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let storage = Storage::open(StorageConfig {
            path: self.dir.path().to_path_buf(),
            encryption_enabled: self.encrypted,
            master_key: self.encrypted.then_some([0x3C; 32]),
            // Index flushes every few events, so that reads cross the watermark, snapshots
            // outlive flushes and reopening recovers a tail.
            index_interval: if self.encrypted { 16 } else { 3 },
            ..Default::default()
        })
        .expect("open store");
        assert_eq!(
            storage.head(),
            self.model.log.len() as u64,
            "head after open"
        );
        self.writer = Some(Writer::new(storage.clone()));
        self.reader = Some(Reader::new(storage.clone()));
        self.storage = Some(storage);
    }

    fn close(&mut self) {
        self.snapshot = None;
        self.writer = None;
        self.reader = None;
        self.storage = None;
    }

    fn storage(&self) -> &Storage {
        self.storage.as_ref().unwrap()
    }

    fn reader(&self) -> &Reader<Ev> {
        self.reader.as_ref().unwrap()
    }

    fn fresh(&mut self) -> (Uuid, Ev) {
        self.counter += 1;
        (
            Uuid::from_u128(0x5eed_u128 << 100 | u128::from(self.counter)),
            payload(self.counter),
        )
    }

    fn current(&self, stream: u128) -> u64 {
        version_in(&self.model.log, stream)
    }

    /// Submits a batch to both the store and the model and compares the outcomes.
    fn submit(&mut self, stream: u128, expected: ExpectedVersion, events: Vec<(Uuid, Ev)>) {
        let want = self.model.batch(stream, expected, &events);
        let got = self
            .writer
            .as_mut()
            .unwrap()
            .append_batch(
                StreamId(stream),
                expected,
                events
                    .iter()
                    .map(|(id, ev)| NewEvent::new(ev.clone()).with_id(*id)),
            )
            .map_err(to_merr);
        assert_eq!(
            got, want,
            "append_batch(stream {stream}, {expected:?}, {events:?})"
        );
        count(&got, got.as_ref().is_ok_and(|a| a.deduplicated));
        self.history.push(Submitted {
            stream,
            expected,
            events,
        });
    }

    fn check_head(&self) {
        assert_eq!(self.storage().head(), self.model.log.len() as u64, "head");
    }

    /// Compares a view with the model's record at `seq`, given the model log it should match.
    fn check_view(log: &[Rec], view: &EventView<'_, Ev>, seq: u64) {
        assert_eq!(view.seq(), seq, "seq of the view");
        let rec = &log[seq as usize - 1];
        let env = view.envelope();
        assert_eq!(env.seq, seq);
        assert_eq!(env.stream, StreamId(rec.stream), "stream at seq {seq}");
        assert_eq!(env.version, rec.version, "version at seq {seq}");
        assert_eq!(view.version(), rec.version);
        assert_eq!(env.event_id, rec.id, "event id at seq {seq}");
        let prev = log[..seq as usize - 1]
            .iter()
            .rposition(|r| r.stream == rec.stream)
            .map(|i| i as u64 + 1);
        assert_eq!(env.prev_seq, prev, "prev_seq at seq {seq}");
        assert_eq!(env.event_type, "Ev");
        assert_eq!(env.schema_version, 1);
        assert_eq!(env.metadata, None);
        assert_eq!(env.correlation_id, None);
        assert_eq!(env.causation_id, None);
        assert_eq!(view.n.to_native(), rec.ev.n);
        assert_eq!(view.s.as_str(), rec.ev.s);
        assert_eq!(view.deserialize().expect("deserialize"), rec.ev);
    }

    fn check_seq_list<'t>(
        log: &[Rec],
        got: impl Iterator<Item = varvedb::error::Result<EventView<'t, Ev>>>,
        want: &[u64],
        what: &str,
    ) {
        let mut n = 0;
        let mut last_ts = 0;
        for (i, item) in got.enumerate() {
            let view = item.unwrap_or_else(|e| panic!("{what}: item {i} failed: {e:?}"));
            assert!(
                i < want.len(),
                "{what}: more items than expected {want:?}, extra seq {}",
                view.seq()
            );
            Self::check_view(log, &view, want[i]);
            if i > 0 && want[i] > want[i - 1] {
                assert!(
                    view.envelope().timestamp_ns >= last_ts,
                    "{what}: timestamps"
                );
            }
            last_ts = view.envelope().timestamp_ns;
            n += 1;
        }
        assert_eq!(n, want.len(), "{what}: count (wanted {want:?})");
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Append { stream, version } => {
                let stream = STREAMS[*stream];
                let current = self.current(stream);
                let version = match version {
                    VersionSel::Next => current + 1,
                    VersionSel::Zero => 0,
                    VersionSel::Current => current,
                    VersionSel::Ahead(k) => current + 1 + u64::from(*k),
                    VersionSel::Behind(k) => (current + 1).saturating_sub(u64::from(*k)).max(1),
                };
                let (_, ev) = self.fresh();
                let sid = StreamId(stream);
                let want: Result<u64, MErr> = if version == 0 {
                    Err(MErr::InvalidVersion {
                        stream: sid,
                        version: 0,
                    })
                } else if version != current + 1 {
                    Err(MErr::Conflict {
                        stream: sid,
                        expected: ExpectedVersion::Exact(version - 1),
                        actual: current,
                    })
                } else {
                    Ok(self.model.log.len() as u64 + 1)
                };
                let got = self
                    .writer
                    .as_mut()
                    .unwrap()
                    .append(sid, version, ev.clone())
                    .map_err(to_merr);
                assert_eq!(got, want, "append(stream {stream}, version {version})");
                count(&got, false);
                if let Ok(seq) = got {
                    // The id was generated by the writer: learn it from the store.
                    let txn = self.storage().env.read_txn().unwrap();
                    let env = self
                        .reader()
                        .envelope(&txn, seq)
                        .unwrap()
                        .expect("appended event");
                    let id = env.event_id;
                    assert!(!id.is_nil());
                    assert_eq!(id.get_version_num(), 7, "generated ids are UUIDv7");
                    assert!(!self.model.ids.contains_key(&id), "generated id reused");
                    drop(txn);
                    self.model.ids.insert(id, self.model.log.len());
                    self.model.log.push(Rec {
                        stream,
                        version,
                        id,
                        ev,
                    });
                }
            }
            Op::Batch {
                stream,
                expected,
                n,
                dup,
            } => {
                let stream = STREAMS[*stream];
                let expected = resolve_exp(expected, self.current(stream));
                let mut events: Vec<(Uuid, Ev)> = (0..*n).map(|_| self.fresh()).collect();
                if let Some((a, b)) = dup {
                    if *n >= 2 {
                        let a = a.index(*n);
                        let b = b.index(*n);
                        if a != b {
                            events[b].0 = events[a].0;
                        }
                    }
                }
                self.submit(stream, expected, events);
            }
            Op::Retry(reuse) => {
                if self.history.is_empty() {
                    return;
                }
                let orig = self.history[reuse.which.index(self.history.len())].clone();
                let stream = if reuse.same_stream {
                    orig.stream
                } else {
                    let i = STREAMS.iter().position(|s| *s == orig.stream).unwrap();
                    STREAMS[(i + 1) % STREAMS.len()]
                };
                let expected = match &reuse.expected {
                    RetryExp::Same => orig.expected,
                    RetryExp::Any => ExpectedVersion::Any,
                    RetryExp::Other(sel) => resolve_exp(sel, self.current(stream)),
                };
                let mut events = orig.events;
                match &reuse.mutation {
                    Mutation::None => {}
                    Mutation::ChangePayload(i) => {
                        if !events.is_empty() {
                            let i = i.index(events.len());
                            events[i].1.n += 1_000_000;
                        }
                    }
                    Mutation::DropFirst => {
                        if events.len() > 1 {
                            events.remove(0);
                        }
                    }
                    Mutation::DropLast => {
                        if events.len() > 1 {
                            events.pop();
                        }
                    }
                    Mutation::AddFresh => {
                        let e = self.fresh();
                        events.push(e);
                    }
                    Mutation::Reverse => events.reverse(),
                }
                self.submit(stream, expected, events);
            }
            Op::Reopen => {
                COVERAGE.with(|c| c.reopen.fetch_add(1, Ordering::Relaxed));
                self.close();
                self.open();
            }
            Op::Get(i) => {
                let len = self.model.log.len();
                let seq = i.index(len + 3) as u64;
                let txn = self.storage().env.read_txn().unwrap();
                let got = self.reader().get(&txn, seq).expect("get");
                if seq == 0 || seq > len as u64 {
                    assert!(got.is_none(), "get({seq}) beyond the log");
                } else {
                    Self::check_view(&self.model.log, &got.expect("event"), seq);
                }
            }
            Op::Envelope(i) => {
                let len = self.model.log.len();
                let seq = i.index(len + 3) as u64;
                let txn = self.storage().env.read_txn().unwrap();
                let got = self.reader().envelope(&txn, seq).expect("envelope");
                if seq == 0 || seq > len as u64 {
                    assert!(got.is_none(), "envelope({seq}) beyond the log");
                } else {
                    let env = got.expect("envelope");
                    let rec = &self.model.log[seq as usize - 1];
                    assert_eq!(env.seq, seq);
                    assert_eq!(env.stream, StreamId(rec.stream));
                    assert_eq!(env.version, rec.version);
                    assert_eq!(env.event_id, rec.id);
                }
            }
            Op::ReadStream { stream, from, dir } => {
                let stream = STREAMS[*stream];
                let from = resolve_from(from, self.current(stream));
                let want = stream_seqs(&self.model.log, stream, from, *dir);
                let txn = self.storage().env.read_txn().unwrap();
                let got = self
                    .reader()
                    .read_stream(&txn, StreamId(stream), from, *dir)
                    .expect("read_stream");
                Self::check_seq_list(
                    &self.model.log,
                    got,
                    &want,
                    &format!("read_stream({stream}, {from}, {dir:?})"),
                );
            }
            Op::ReadLog { from, dir } => {
                let from = resolve_from(from, self.model.log.len() as u64);
                let want = log_seqs(&self.model.log, from, *dir);
                let txn = self.storage().env.read_txn().unwrap();
                let got = self.reader().read_log(&txn, from, *dir).expect("read_log");
                Self::check_seq_list(
                    &self.model.log,
                    got,
                    &want,
                    &format!("read_log({from}, {dir:?})"),
                );
            }
            Op::ForEachLog {
                from,
                dir,
                stop_after,
            } => {
                let from = resolve_from(from, self.model.log.len() as u64);
                let mut want = log_seqs(&self.model.log, from, *dir);
                if *stop_after > 0 {
                    want.truncate(*stop_after);
                }
                let mut seen = Vec::new();
                let log = &self.model.log;
                let visited = self
                    .reader()
                    .for_each_in_log(from, *dir, |view| {
                        seen.push(view.seq());
                        Self::check_view(log, &view, view.seq());
                        if seen.len() == *stop_after {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .expect("for_each_in_log");
                assert_eq!(seen, want, "for_each_in_log({from}, {dir:?})");
                assert_eq!(visited, want.len() as u64, "for_each_in_log count");
            }
            Op::ForEachStream {
                stream,
                from,
                dir,
                stop_after,
            } => {
                let stream = STREAMS[*stream];
                let from = resolve_from(from, self.current(stream));
                let mut want = stream_seqs(&self.model.log, stream, from, *dir);
                if *stop_after > 0 {
                    want.truncate(*stop_after);
                }
                let mut seen = Vec::new();
                let log = &self.model.log;
                let visited = self
                    .reader()
                    .for_each_in_stream(StreamId(stream), from, *dir, |view| {
                        seen.push(view.seq());
                        Self::check_view(log, &view, view.seq());
                        if seen.len() == *stop_after {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .expect("for_each_in_stream");
                assert_eq!(seen, want, "for_each_in_stream({stream}, {from}, {dir:?})");
                assert_eq!(visited, want.len() as u64, "for_each_in_stream count");
            }
            Op::LastInStream(stream) => {
                let stream = STREAMS[*stream];
                let want = stream_seqs(&self.model.log, stream, u64::MAX, Direction::Backward)
                    .first()
                    .copied();
                let txn = self.storage().env.read_txn().unwrap();
                let got = self
                    .reader()
                    .last_in_stream(&txn, StreamId(stream))
                    .expect("last_in_stream");
                match want {
                    None => assert!(got.is_none(), "last_in_stream({stream}) of an empty stream"),
                    Some(seq) => Self::check_view(&self.model.log, &got.expect("last"), seq),
                }
            }
            Op::StreamVersion(stream) => {
                let stream = STREAMS[*stream];
                let want = self.current(stream);
                let txn = self.storage().env.read_txn().unwrap();
                assert_eq!(
                    self.reader()
                        .stream_version(&txn, StreamId(stream))
                        .unwrap(),
                    want,
                    "Reader::stream_version({stream})"
                );
                drop(txn);
                assert_eq!(
                    self.storage().stream_version(StreamId(stream)).unwrap(),
                    want,
                    "Storage::stream_version({stream})"
                );
            }
            Op::Streams => {
                let txn = self.storage().env.read_txn().unwrap();
                let got: Vec<StreamInfo> = self
                    .reader()
                    .streams(&txn)
                    .expect("streams")
                    .collect::<Result<_, _>>()
                    .expect("stream info");
                assert_eq!(got, streams_in(&self.model.log), "streams()");
            }
            Op::Snapshot => {
                let txn = self.storage().env.read_txn().unwrap();
                self.snapshot = Some((txn, self.model.log.len()));
            }
            Op::CheckSnapshot => {
                let Some((txn, len)) = &self.snapshot else {
                    return;
                };
                let log = &self.model.log[..*len];
                let reader = self.reader();
                let want = log_seqs(log, 1, Direction::Forward);
                let got = reader.read_log(txn, 1, Direction::Forward).unwrap();
                Self::check_seq_list(log, got, &want, "read_log on a snapshot");
                let got: Vec<StreamInfo> = reader
                    .streams(txn)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(got, streams_in(log), "streams() on a snapshot");
                for s in STREAMS {
                    assert_eq!(
                        reader.stream_version(txn, StreamId(s)).unwrap(),
                        version_in(log, s),
                        "stream_version({s}) on a snapshot"
                    );
                }
                assert!(reader.get(txn, *len as u64 + 1).unwrap().is_none());
            }
        }
        self.check_head();
    }

    /// A full comparison of the store with the model.
    fn check_all(&self) {
        let log = &self.model.log;
        let txn = self.storage().env.read_txn().unwrap();
        let reader = self.reader();
        let all = log_seqs(log, 1, Direction::Forward);
        Self::check_seq_list(
            log,
            reader.read_log(&txn, 0, Direction::Forward).unwrap(),
            &all,
            "full log",
        );
        for s in STREAMS {
            let want = stream_seqs(log, s, 0, Direction::Forward);
            Self::check_seq_list(
                log,
                reader
                    .read_stream(&txn, StreamId(s), 0, Direction::Forward)
                    .unwrap(),
                &want,
                "full stream",
            );
        }
        let got: Vec<StreamInfo> = reader
            .streams(&txn)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, streams_in(log), "streams()");
    }
}

fn run_case(ops: &[Op], encrypted: bool) {
    let mut h = Harness::new(encrypted);
    for op in ops {
        h.run(op);
    }
    h.check_all();
    h.close();
    h.open();
    h.check_all();
}

#[test]
fn model_matches_store() {
    model_run(64, false);
}

/// The same model against an encrypted store: encryption must change nothing a caller sees.
#[test]
fn model_matches_encrypted_store() {
    model_run(32, true);
}

fn model_run(default_cases: u32, encrypted: bool) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = Config {
        cases,
        // Only tests/ files of this test may be created; shrunk failures are printed instead.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &proptest::collection::vec(op_strategy(), 1..=MAX_OPS),
        |ops| {
            run_case(&ops, encrypted);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every outcome was reached (with the default number of cases, each many times over).
    COVERAGE.with(|c| check_coverage(c, cases));
}

fn check_coverage(c: &Coverage, cases: u32) {
    println!("{c:?}");
    for (what, n) in [
        ("written", &c.written),
        ("deduplicated", &c.deduplicated),
        ("conflict", &c.conflict),
        ("id_conflict", &c.id_conflict),
        ("dup_in_batch", &c.dup_in_batch),
        ("invalid_version", &c.invalid_version),
        ("empty", &c.empty),
        ("reopen", &c.reopen),
    ] {
        assert!(
            cases < 32 || n.load(Ordering::Relaxed) > 0,
            "no case reached outcome {what}: {c:?}"
        );
    }
}

/// An `Index` that resolves to 0 (the oldest submitted batch): a fully shrunk one.
fn first_index() -> Index {
    let mut tree = any::<Index>()
        .new_tree(&mut TestRunner::deterministic())
        .unwrap();
    while tree.simplify() {}
    let index = tree.current();
    assert_eq!(index.index(1000), 0);
    index
}

/// A few hand-written sequences that the random search might reach only rarely.
#[test]
fn model_fixed_sequences() {
    use Op::*;
    let batch = |stream, expected, n| Batch {
        stream,
        expected,
        n,
        dup: None,
    };
    let retry = |expected, mutation, same_stream| {
        Retry(Reuse {
            which: first_index(),
            same_stream,
            expected,
            mutation,
        })
    };
    let sequences: Vec<Vec<Op>> = vec![
        // A batch, its exact retry before and after a reopen and after other writes.
        vec![
            batch(1, ExpSel::NoStream, 3),
            retry(RetryExp::Same, Mutation::None, true),
            Append {
                stream: 1,
                version: VersionSel::Next,
            },
            retry(RetryExp::Same, Mutation::None, true),
            Reopen,
            retry(RetryExp::Any, Mutation::None, true),
            retry(RetryExp::Other(ExpSel::NoStream), Mutation::None, true),
            retry(RetryExp::Other(ExpSel::StreamExists), Mutation::None, true),
            retry(RetryExp::Same, Mutation::DropFirst, true),
            retry(RetryExp::Same, Mutation::DropLast, true),
            retry(RetryExp::Same, Mutation::Reverse, true),
            retry(RetryExp::Same, Mutation::AddFresh, true),
            retry(RetryExp::Same, Mutation::None, false),
            Streams,
        ],
        // Conflicts of every kind on empty and non-empty streams, then reads.
        vec![
            batch(0, ExpSel::StreamExists, 2),
            batch(0, ExpSel::ExactWrong(1), 2),
            batch(0, ExpSel::NoStream, 0),
            Append {
                stream: 0,
                version: VersionSel::Zero,
            },
            Append {
                stream: 0,
                version: VersionSel::Ahead(2),
            },
            batch(0, ExpSel::ExactRight, 4),
            batch(0, ExpSel::NoStream, 1),
            batch(0, ExpSel::ExactWrong(2), 1),
            Append {
                stream: 0,
                version: VersionSel::Current,
            },
            Snapshot,
            batch(4, ExpSel::Any, 2),
            CheckSnapshot,
            Streams,
        ],
    ];
    for ops in sequences {
        run_case(&ops, false);
    }
}
