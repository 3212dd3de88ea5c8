//! Model test of typed upcasting: five versions of one event (frozen types [`CounterV1`],
//! [`CounterV2`], [`TallyV3`], [`TallyV4`], [`TallyV5`], the stored name changing from `Counter`
//! to `Tally` at version 3, and version 5 splitting a tagged tally into one event per tag),
//! random batches written under every version across a few streams, then a reader of each
//! version `k` reads through every read path (`tests/read_paths`) and must give exactly the
//! model:
//!
//! - an event written at version `j <= k` is its written value taken through the same
//!   [`Upcast`] and [`Split`] steps `j -> j+1 -> ... -> k`, with its stored envelope (stored
//!   name and version): one event, or the parts of a split, in order;
//! - an event written at `j > k` under the reader's own name is `UnknownSchemaVersion` on every
//!   path that reaches it, never a value;
//! - one written at `j > k` under the other name is a newer version renamed by a newer build
//!   (the store records the rename): `RenamedEventType` on every path, never passed over.
//!
//! Each case checks the readers of all four versions on the same store. `PROPTEST_CASES`
//! overrides the number of cases (default 256).

mod read_paths;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rkyv::rancor;
use varvedb::{
    Durability, Event, ExpectedVersion, NewEvent, Part, Split, Storage, StorageConfig, Upcast,
    Uuid, Writer,
};

use read_paths::{check_every_path, stored_envelopes, Failure, Seen, Want};

/// Version 1, frozen.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Counter", version = 1)]
pub struct CounterV1 {
    pub name: String,
    pub n: u32,
}

/// Version 2, frozen: `n` widened, tags added.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Counter", version = 2, previous = CounterV1)]
pub struct CounterV2 {
    pub name: String,
    pub n: u64,
    pub tags: Vec<String>,
}

impl Upcast<CounterV1> for CounterV2 {
    fn upcast(old: CounterV1) -> Self {
        CounterV2 {
            tags: if old.name.is_empty() {
                vec!["anonymous".into()]
            } else {
                Vec::new()
            },
            name: old.name,
            n: u64::from(old.n),
        }
    }
}

/// Version 3, frozen: stored as `Tally`, `name` renamed `label`, a flag.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Tally", version = 3, previous = CounterV2)]
pub struct TallyV3 {
    pub label: String,
    pub n: u64,
    pub tags: Vec<String>,
    pub flagged: bool,
}

impl Upcast<CounterV2> for TallyV3 {
    fn upcast(old: CounterV2) -> Self {
        TallyV3 {
            label: old.name,
            n: old.n,
            flagged: old.tags.len() > 1,
            tags: old.tags,
        }
    }
}

/// Version 4, current: an enum, the count signed and wider.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Tally", version = 4, previous = TallyV3)]
pub enum TallyV4 {
    Plain {
        label: String,
        total: i128,
    },
    Tagged {
        label: String,
        total: i128,
        tags: Vec<String>,
        flagged: bool,
    },
}

impl Upcast<TallyV3> for TallyV4 {
    fn upcast(old: TallyV3) -> Self {
        let total = i128::from(old.n);
        if old.tags.is_empty() && !old.flagged {
            TallyV4::Plain {
                label: old.label,
                total,
            }
        } else {
            TallyV4::Tagged {
                label: old.label,
                total,
                tags: old.tags,
                flagged: old.flagged,
            }
        }
    }
}

/// Version 5, current: one event per tag (an untagged tally is one event without a tag).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Tally", version = 5, previous = TallyV4, split)]
pub struct TallyV5 {
    pub label: String,
    pub tag: Option<String>,
    pub total: i128,
    pub flagged: bool,
}

impl Split<TallyV4> for TallyV5 {
    fn split(old: TallyV4) -> Vec<Self> {
        match old {
            TallyV4::Plain { label, total } => vec![TallyV5 {
                label,
                tag: None,
                total,
                flagged: false,
            }],
            TallyV4::Tagged {
                label,
                total,
                tags,
                flagged,
            } if tags.is_empty() => vec![TallyV5 {
                label,
                tag: None,
                total,
                flagged,
            }],
            TallyV4::Tagged {
                label,
                total,
                tags,
                flagged,
            } => tags
                .into_iter()
                .map(|tag| TallyV5 {
                    label: label.clone(),
                    tag: Some(tag),
                    total,
                    flagged,
                })
                .collect(),
        }
    }
}

/// A value of any version.
#[derive(Clone, Debug, PartialEq)]
enum Any {
    V1(CounterV1),
    V2(CounterV2),
    V3(TallyV3),
    V4(TallyV4),
    V5(TallyV5),
}

impl Any {
    fn version(&self) -> u16 {
        match self {
            Any::V1(_) => 1,
            Any::V2(_) => 2,
            Any::V3(_) => 3,
            Any::V4(_) => 4,
            Any::V5(_) => 5,
        }
    }

    /// One step up, through the type's own `Upcast` or `Split`.
    fn up(self) -> Vec<Any> {
        match self {
            Any::V1(v) => vec![Any::V2(CounterV2::upcast(v))],
            Any::V2(v) => vec![Any::V3(TallyV3::upcast(v))],
            Any::V3(v) => vec![Any::V4(TallyV4::upcast(v))],
            Any::V4(v) => TallyV5::split(v).into_iter().map(Any::V5).collect(),
            Any::V5(_) => panic!("no version after 5"),
        }
    }

    /// The values at version `k` (at least its own): one, or the parts of a split.
    fn at(self, k: u16) -> Vec<Any> {
        let mut values = vec![self];
        while values[0].version() < k {
            values = values.into_iter().flat_map(Any::up).collect();
        }
        values
    }

    fn payload_len(&self) -> u32 {
        let bytes = match self {
            Any::V1(v) => rkyv::to_bytes::<rancor::Error>(v),
            Any::V2(v) => rkyv::to_bytes::<rancor::Error>(v),
            Any::V3(v) => rkyv::to_bytes::<rancor::Error>(v),
            Any::V4(v) => rkyv::to_bytes::<rancor::Error>(v),
            Any::V5(v) => rkyv::to_bytes::<rancor::Error>(v),
        };
        bytes.unwrap().len() as u32
    }
}

/// The stored name of version `v`.
fn name_of(v: u16) -> &'static str {
    match v {
        1 => CounterV1::NAME,
        2 => CounterV2::NAME,
        3 => TallyV3::NAME,
        4 => TallyV4::NAME,
        _ => TallyV5::NAME,
    }
}

/// A version's type, out of [`Any`].
trait Version: Event + Sized {
    fn from_any(any: Any) -> Self;
}

macro_rules! version {
    ($t:ty, $v:ident) => {
        impl Version for $t {
            fn from_any(any: Any) -> Self {
                match any {
                    Any::$v(v) => v,
                    other => panic!("not {}: {other:?}", stringify!($t)),
                }
            }
        }
    };
}
version!(CounterV1, V1);
version!(CounterV2, V2);
version!(TallyV3, V3);
version!(TallyV4, V4);
version!(TallyV5, V5);

const STREAMS: [u128; 3] = [1, 2, u128::MAX >> 1];

/// One append call: a batch of events of one version, to one stream.
#[derive(Clone, Debug)]
struct Write {
    stream: usize,
    events: Vec<(Any, Option<Vec<u8>>)>,
}

/// What the model keeps of each event written.
struct Stored {
    seq: u64,
    stream: u128,
    version: u64,
    prev_seq: Option<u64>,
    metadata: Option<Vec<u8>>,
    value: Any,
}

fn text() -> impl Strategy<Value = String> {
    "[a-zé]{0,3}"
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..3)
}

/// A batch of 1-3 events of one version.
fn batch() -> impl Strategy<Value = Vec<Any>> {
    let v1 = (text(), any::<u32>()).prop_map(|(name, n)| Any::V1(CounterV1 { name, n }));
    let v2 = (text(), any::<u64>(), tags())
        .prop_map(|(name, n, tags)| Any::V2(CounterV2 { name, n, tags }));
    let v3 = (text(), any::<u64>(), tags(), any::<bool>()).prop_map(|(label, n, tags, flagged)| {
        Any::V3(TallyV3 {
            label,
            n,
            tags,
            flagged,
        })
    });
    let v4 = prop_oneof![
        (text(), any::<i128>()).prop_map(|(label, total)| Any::V4(TallyV4::Plain { label, total })),
        (text(), any::<i128>(), tags(), any::<bool>()).prop_map(|(label, total, tags, flagged)| {
            Any::V4(TallyV4::Tagged {
                label,
                total,
                tags,
                flagged,
            })
        }),
    ];
    let v5 = (
        text(),
        proptest::option::of(text()),
        any::<i128>(),
        any::<bool>(),
    )
        .prop_map(|(label, tag, total, flagged)| {
            Any::V5(TallyV5 {
                label,
                tag,
                total,
                flagged,
            })
        });
    prop_oneof![
        vec(v1, 1..4),
        vec(v2, 1..4),
        vec(v3, 1..4),
        vec(v4, 1..4),
        vec(v5, 1..4)
    ]
}

fn write() -> impl Strategy<Value = Write> {
    (
        0..STREAMS.len(),
        batch(),
        vec(proptest::option::of(vec(any::<u8>(), 0..3)), 3),
    )
        .prop_map(|(stream, events, metadata)| Write {
            stream,
            events: events.into_iter().zip(metadata).collect(),
        })
}

fn open(dir: &std::path::Path, encrypted: bool) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        map_size: 4 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([9; 32]),
        // Nothing here needs to survive a crash: no fsync per commit.
        durability: Durability::Relaxed {
            sync_interval: None,
        },
        ..Default::default()
    })
    .unwrap()
}

fn new_event<E>(seq: u64, event: E, metadata: &Option<Vec<u8>>) -> NewEvent<E> {
    let e = NewEvent::new(event).with_id(Uuid::from_u128(u128::from(seq)));
    match metadata {
        Some(m) => e.with_metadata(m.clone()),
        None => e,
    }
}

/// Appends `write` with the writer of its version; returns what the model keeps.
fn apply(storage: &Storage, write: &Write, log: &mut Vec<Stored>) {
    let stream = STREAMS[write.stream];
    let first = log.len() as u64 + 1;
    macro_rules! append {
        ($t:ty, $v:ident) => {
            Writer::<$t>::new(storage.clone()).append_batch(
                stream,
                ExpectedVersion::Any,
                write.events.iter().enumerate().map(|(i, (e, m))| match e {
                    Any::$v(e) => new_event(first + i as u64, e.clone(), m),
                    other => panic!("a batch of one version: {other:?}"),
                }),
            )
        };
    }
    let appended = match &write.events[0].0 {
        Any::V1(_) => append!(CounterV1, V1),
        Any::V2(_) => append!(CounterV2, V2),
        Any::V3(_) => append!(TallyV3, V3),
        Any::V4(_) => append!(TallyV4, V4),
        Any::V5(_) => append!(TallyV5, V5),
    }
    .unwrap();
    for ((value, metadata), pos) in write.events.iter().zip(&appended.positions) {
        let prev = log.iter().rev().find(|s| s.stream == stream);
        let stored = Stored {
            seq: log.len() as u64 + 1,
            stream,
            version: prev.map_or(1, |p| p.version + 1),
            prev_seq: prev.map(|p| p.seq),
            metadata: metadata.clone(),
            value: value.clone(),
        };
        assert_eq!((pos.seq, pos.version), (stored.seq, stored.version));
        log.push(stored);
    }
}

/// What a reader of version `E::VERSION` must make of each event of `log`.
fn want<E: Version + Clone>(storage: &Storage, log: &[Stored], encrypted: bool) -> Vec<Want<E>> {
    let k = E::VERSION;
    let stored = stored_envelopes(storage);
    log.iter()
        .zip(&stored)
        .map(|(s, env)| {
            let j = s.value.version();
            if j <= k {
                let values = s.value.clone().at(k);
                let count = values.len() as u32;
                let seen = |part, value| Seen {
                    seq: s.seq,
                    stream: s.stream,
                    version: s.version,
                    prev_seq: s.prev_seq,
                    timestamp_ns: env.timestamp_ns,
                    event_id: Uuid::from_u128(u128::from(s.seq)),
                    correlation_id: None,
                    causation_id: None,
                    event_type: name_of(j).into(),
                    schema_version: j,
                    metadata: s.metadata.clone(),
                    payload_len: s.value.payload_len(),
                    encrypted,
                    part,
                    value: E::from_any(value),
                };
                if count == 1 {
                    Want::Read {
                        seen: seen(Part::WHOLE, values.into_iter().next().unwrap()),
                        upcast: j < k,
                    }
                } else {
                    Want::Split {
                        parts: values
                            .into_iter()
                            .zip(0..)
                            .map(|(value, index)| seen(Part { index, count }, value))
                            .collect(),
                    }
                }
            } else if name_of(j) == E::NAME {
                Want::Fails {
                    seq: s.seq,
                    stream: s.stream,
                    failure: Failure::UnknownSchemaVersion {
                        seq: s.seq,
                        event_type: E::NAME.into(),
                        stored: j,
                        current: k,
                    },
                }
            } else {
                Want::Fails {
                    seq: s.seq,
                    stream: s.stream,
                    failure: Failure::RenamedEventType {
                        seq: Some(s.seq),
                        event_type: name_of(j).into(),
                        version: j,
                    },
                }
            }
        })
        .collect()
}

fn run_case(writes: &[Write], encrypted: bool) {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let storage = open(dir.path(), encrypted);
    let mut log = Vec::new();
    for w in writes {
        apply(&storage, w, &mut log);
    }
    check_every_path(
        &storage,
        &want::<CounterV1>(&storage, &log, encrypted),
        "v1",
    );
    check_every_path(
        &storage,
        &want::<CounterV2>(&storage, &log, encrypted),
        "v2",
    );
    check_every_path(&storage, &want::<TallyV3>(&storage, &log, encrypted), "v3");
    check_every_path(&storage, &want::<TallyV4>(&storage, &log, encrypted), "v4");
    check_every_path(&storage, &want::<TallyV5>(&storage, &log, encrypted), "v5");
}

/// Random writes under every version, read by a reader of every version on every path.
#[test]
fn every_version_reads_the_model() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(vec(write(), 1..8), any::<bool>()),
            |(writes, encrypted)| {
                run_case(&writes, encrypted);
                Ok(())
            },
        )
        .unwrap();
}

/// Each version's reader meets each other version at least once: one write of every version
/// (two splits among them at version 5), oldest first and newest first.
#[test]
fn every_pair_of_versions() {
    let one = |v: Any| Write {
        stream: 0,
        events: vec![(v, Some(b"m".to_vec()))],
    };
    let writes = vec![
        one(Any::V1(CounterV1 {
            name: String::new(),
            n: u32::MAX,
        })),
        one(Any::V2(CounterV2 {
            name: "b".into(),
            n: u64::MAX,
            tags: vec!["x".into(), "y".into()],
        })),
        one(Any::V3(TallyV3 {
            label: "c".into(),
            n: 3,
            tags: Vec::new(),
            flagged: true,
        })),
        one(Any::V4(TallyV4::Plain {
            label: "d".into(),
            total: -4,
        })),
        one(Any::V4(TallyV4::Tagged {
            label: "e".into(),
            total: 5,
            tags: vec!["p".into(), "q".into(), "r".into()],
            flagged: false,
        })),
        one(Any::V5(TallyV5 {
            label: "f".into(),
            tag: Some("s".into()),
            total: 6,
            flagged: true,
        })),
    ];
    let mut backwards = writes.clone();
    backwards.reverse();
    for encrypted in [false, true] {
        run_case(&writes, encrypted);
        run_case(&backwards, encrypted);
    }
}
