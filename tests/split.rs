//! Upcasts that split one stored event into several ([`varvedb::Split`]): every read path hands
//! out each part at the stored event's place in the log, in the read's order; `get` names the
//! split and `get_parts` reads it; processors pass the stored event only once every part is
//! handled; a split that makes nothing is an error; a migration keeps split events as stored.
//!
//! The chain: `ItemsAdded` v1 (one line) → v2 (a list of lines) → split into `ItemAdded` v3,
//! one event per line, under a new name → `ItemAdded` v4 (the quantity widened, a note).

mod read_paths;

use std::ops::ControlFlow;
use std::time::Duration;

use rkyv::rancor;
use varvedb::admin::Migration;
use varvedb::{
    Direction, Envelope, Error, ErrorPolicy, EventHandler, EventSet, ExpectedVersion, NewEvent,
    Part, Processor, Reader, Split, Storage, StorageConfig, Upcast, Uuid, Writer,
};

use read_paths::{check_every_path, stored_envelopes, Seen, Want};

/// A line of an order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Layout, Debug, Clone)]
pub struct Line {
    pub sku: String,
    pub qty: u32,
}

/// Version 1, frozen: one line.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[event(name = "ItemsAdded", version = 1)]
pub struct ItemsAddedV1 {
    pub line: Line,
}

/// Version 2, frozen: several lines in one event.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[event(name = "ItemsAdded", version = 2, previous = ItemsAddedV1)]
pub struct ItemsAddedV2 {
    pub lines: Vec<Line>,
}

impl Upcast<ItemsAddedV1> for ItemsAddedV2 {
    fn upcast(old: ItemsAddedV1) -> Self {
        ItemsAddedV2 {
            lines: vec![old.line],
        }
    }
}

/// Version 3, frozen: one event per line, renamed.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[event(name = "ItemAdded", version = 3, previous = ItemsAddedV2, split)]
pub struct ItemAddedV3 {
    pub sku: String,
    pub qty: u32,
}

impl Split<ItemsAddedV2> for ItemAddedV3 {
    fn split(old: ItemsAddedV2) -> Vec<Self> {
        old.lines
            .into_iter()
            .map(|l| ItemAddedV3 {
                sku: l.sku,
                qty: l.qty,
            })
            .collect()
    }
}

/// Version 4, current: the quantity widened, a note.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "ItemAdded", version = 4, previous = ItemAddedV3)]
#[rkyv(derive(Debug))]
pub struct ItemAdded {
    pub sku: String,
    pub qty: u64,
    pub note: String,
}

impl Upcast<ItemAddedV3> for ItemAdded {
    fn upcast(old: ItemAddedV3) -> Self {
        ItemAdded {
            sku: old.sku,
            qty: u64::from(old.qty),
            note: "-".into(),
        }
    }
}

fn line(sku: &str, qty: u32) -> Line {
    Line {
        sku: sku.into(),
        qty,
    }
}

fn item(sku: &str, qty: u64) -> ItemAdded {
    ItemAdded {
        sku: sku.into(),
        qty,
        note: "-".into(),
    }
}

fn config(dir: &std::path::Path, encrypted: bool) -> StorageConfig {
    StorageConfig {
        path: dir.to_path_buf(),
        map_size: 16 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([0x5A; 32]),
        ..Default::default()
    }
}

/// What was written at one sequence.
enum Wrote {
    V1(ItemsAddedV1),
    V2(ItemsAddedV2),
    V3(ItemAddedV3),
    V4(ItemAdded),
    Other(u64),
}

/// One event written: where, what, and with which id and metadata.
struct Row {
    stream: u128,
    wrote: Wrote,
    metadata: Option<Vec<u8>>,
}

/// Writes `rows` one event per transaction, with ids `0xE000 + seq`.
fn write(storage: &Storage, rows: &[Row]) {
    for (i, row) in rows.iter().enumerate() {
        let id = Uuid::from_u128(0xE000 + i as u128 + 1);
        macro_rules! put {
            ($t:ty, $e:expr) => {{
                let mut event = NewEvent::new($e.clone()).with_id(id);
                if let Some(m) = &row.metadata {
                    event = event.with_metadata(m.clone());
                }
                Writer::<$t>::new(storage.clone())
                    .append_batch(row.stream, ExpectedVersion::Any, [event])
                    .unwrap();
            }};
        }
        match &row.wrote {
            Wrote::V1(e) => put!(ItemsAddedV1, e),
            Wrote::V2(e) => put!(ItemsAddedV2, e),
            Wrote::V3(e) => put!(ItemAddedV3, e),
            Wrote::V4(e) => put!(ItemAdded, e),
            Wrote::Other(e) => put!(u64, e),
        }
    }
}

/// What a reader of `ItemAdded` makes of each row, with the envelopes as stored.
fn want(storage: &Storage, rows: &[Row], encrypted: bool) -> Vec<Want<ItemAdded>> {
    let stored = stored_envelopes(storage);
    let mut versions = std::collections::HashMap::new();
    let mut last_seq = std::collections::HashMap::new();
    rows.iter()
        .zip(&stored)
        .enumerate()
        .map(|(i, (row, env))| {
            let seq = i as u64 + 1;
            let version = versions.entry(row.stream).or_insert(0u64);
            *version += 1;
            let prev_seq = last_seq.insert(row.stream, seq);
            let (name, schema_version, payload_len, values, upcast) = match &row.wrote {
                Wrote::V1(e) => (
                    "ItemsAdded",
                    1,
                    len(e),
                    vec![item(&e.line.sku, e.line.qty.into())],
                    true,
                ),
                Wrote::V2(e) => (
                    "ItemsAdded",
                    2,
                    len(e),
                    e.lines.iter().map(|l| item(&l.sku, l.qty.into())).collect(),
                    true,
                ),
                Wrote::V3(e) => (
                    "ItemAdded",
                    3,
                    len(e),
                    vec![item(&e.sku, e.qty.into())],
                    true,
                ),
                Wrote::V4(e) => ("ItemAdded", 4, len(e), vec![e.clone()], false),
                Wrote::Other(_) => {
                    return Want::Other {
                        seq,
                        stream: row.stream,
                        failure: read_paths::Failure::WrongEventType {
                            seq,
                            found: "u64".into(),
                        },
                    }
                }
            };
            let count = values.len() as u32;
            let seen = |index: u32, value: ItemAdded| Seen {
                seq,
                stream: row.stream,
                version: *version,
                prev_seq,
                timestamp_ns: env.timestamp_ns,
                event_id: Uuid::from_u128(0xE000 + u128::from(seq)),
                correlation_id: None,
                causation_id: None,
                event_type: name.into(),
                schema_version,
                metadata: row.metadata.clone(),
                payload_len,
                encrypted,
                part: Part { index, count },
                value,
            };
            if count == 1 {
                let value = values.into_iter().next().unwrap();
                Want::Read {
                    seen: Seen {
                        part: Part::WHOLE,
                        ..seen(0, value)
                    },
                    upcast,
                }
            } else {
                Want::Split {
                    parts: values
                        .into_iter()
                        .zip(0..)
                        .map(|(v, i)| seen(i, v))
                        .collect(),
                }
            }
        })
        .collect()
}

fn len<T>(value: &T) -> u32
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value).unwrap().len() as u32
}

/// Every version in three streams, splits of three and two parts (one with metadata, one the
/// only event of its stream), a one-line list that is no split, and an event of another type.
fn rows() -> Vec<Row> {
    let row = |stream, wrote| Row {
        stream,
        wrote,
        metadata: None,
    };
    vec![
        row(1, Wrote::V1(ItemsAddedV1 { line: line("a", 1) })),
        Row {
            metadata: Some(b"three lines".to_vec()),
            ..row(
                1,
                Wrote::V2(ItemsAddedV2 {
                    lines: vec![line("b", 2), line("c", 3), line("d", 4)],
                }),
            )
        },
        row(2, Wrote::Other(77)),
        row(
            2,
            Wrote::V2(ItemsAddedV2 {
                lines: vec![line("e", 5)],
            }),
        ),
        row(
            1,
            Wrote::V3(ItemAddedV3 {
                sku: "f".into(),
                qty: 6,
            }),
        ),
        row(
            2,
            Wrote::V2(ItemsAddedV2 {
                lines: vec![line("g", 7), line("h", 8)],
            }),
        ),
        row(1, Wrote::V4(item("i", 9))),
        row(
            2,
            Wrote::V2(ItemsAddedV2 {
                lines: vec![line("j", 10), line("k", 11)],
            }),
        ),
        // A stream whose only event splits: the ends of a stream come between parts.
        row(
            3,
            Wrote::V2(ItemsAddedV2 {
                lines: vec![line("l", 12), line("m", 13)],
            }),
        ),
    ]
}

#[test]
fn every_path_reads_each_part_of_a_split() {
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(config(dir.path(), encrypted)).unwrap();
        let rows = rows();
        write(&storage, &rows);
        let want = want(&storage, &rows, encrypted);
        assert!(matches!(&want[1], Want::Split { parts } if parts.len() == 3));
        assert!(matches!(&want[3], Want::Read { .. }));
        check_every_path(
            &storage,
            &want,
            if encrypted { "encrypted" } else { "plain" },
        );
    }
}

/// A stream read that renews its transaction (every 64 events once it is older than the
/// reader's limit, here at once) never does so between the parts of one stored event: each is
/// handed out once, in order.
#[test]
fn a_walk_that_renews_its_transaction_keeps_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), false)).unwrap();
    let lines: Vec<Line> = (0..130).map(|i| line(&format!("s{i}"), i)).collect();
    let rows = vec![
        Row {
            stream: 5,
            wrote: Wrote::V1(ItemsAddedV1 { line: line("x", 1) }),
            metadata: None,
        },
        Row {
            stream: 5,
            wrote: Wrote::V2(ItemsAddedV2 {
                lines: lines.clone(),
            }),
            metadata: None,
        },
        Row {
            stream: 5,
            wrote: Wrote::V4(item("y", 2)),
            metadata: None,
        },
    ];
    write(&storage, &rows);
    let reader = Reader::<ItemAdded>::new(storage.clone()).with_max_txn_age(Duration::ZERO);
    let mut expected: Vec<(u64, u32, String)> = vec![(1, 0, "x".into())];
    expected.extend((0..130).map(|i| (2, i, format!("s{i}"))));
    expected.push((3, 0, "y".into()));
    for direction in [Direction::Forward, Direction::Backward] {
        let mut got = Vec::new();
        let from = if direction == Direction::Forward {
            1
        } else {
            u64::MAX
        };
        let visited = reader
            .for_each_in_stream(5, from, direction, |view| {
                got.push((view.version(), view.part().index, view.sku.to_string()));
                ControlFlow::Continue(())
            })
            .unwrap();
        let mut want = expected.clone();
        if direction == Direction::Backward {
            want.reverse();
        }
        assert_eq!(visited, 132, "{direction:?}");
        assert_eq!(got, want, "{direction:?}");
    }
}

/// A split that makes no event is an error on every path, never an event passed over: reads
/// fail with it, a processor stops before it whatever its policy.
#[test]
fn a_split_into_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), false)).unwrap();
    write(
        &storage,
        &[
            Row {
                stream: 1,
                wrote: Wrote::V4(item("a", 1)),
                metadata: None,
            },
            Row {
                stream: 1,
                wrote: Wrote::V2(ItemsAddedV2 { lines: Vec::new() }),
                metadata: None,
            },
            Row {
                stream: 1,
                wrote: Wrote::V4(item("b", 2)),
                metadata: None,
            },
        ],
    );
    let reader = Reader::<ItemAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let empty = |e: &Error| matches!(e, Error::InvalidPayload { seq: 2, reason } if reason.contains("made no events"));
    assert!(empty(&reader.get(&txn, 2).unwrap_err()), "get");
    assert!(empty(&reader.get_parts(&txn, 2).unwrap_err()), "get_parts");
    let items: Vec<_> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[2].is_ok());
    assert!(empty(items[1].as_ref().unwrap_err()), "read_log");
    drop(txn);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut processor = Processor::new(
        reader.clone(),
        Parts::default(),
        "skipper",
        storage.subscribe(),
    )
    .with_error_policy(ErrorPolicy::Skip);
    let err = rt.block_on(processor.run_until_caught_up()).unwrap_err();
    assert!(empty(&err), "processor: {err:?}");
    assert_eq!(processor.checkpoint().unwrap(), 1);
    assert_eq!(
        processor.handler().seen,
        [(1, Part::WHOLE, "a".to_string())]
    );
}

/// What a processor's handler was handed: sequence, part and sku; it fails once on the part
/// `fail_at` names.
#[derive(Default)]
struct Parts {
    seen: Vec<(u64, Part, String)>,
    fail_at: Option<(u64, u32)>,
}

impl EventHandler<ItemAdded> for Parts {
    fn handle(&mut self, _event: &ArchivedItemAdded) -> varvedb::Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        event: &ArchivedItemAdded,
    ) -> varvedb::Result<()> {
        if self.fail_at == Some((envelope.seq, envelope.part.index)) {
            self.fail_at = None;
            return Err(Error::Io(std::io::Error::other("handler failed")));
        }
        self.seen
            .push((envelope.seq, envelope.part, event.sku.to_string()));
        Ok(())
    }
}

/// A processor whose handler fails on the second part of a split stops with its checkpoint
/// before the stored event; run again, it hands over every part of it, from the first.
#[test]
fn a_processor_passes_a_split_event_only_once_every_part_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), false)).unwrap();
    write(&storage, &rows());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reader = Reader::<ItemAdded>::new(storage.clone());
    let mut processor = Processor::new(
        reader.clone(),
        Parts {
            fail_at: Some((2, 1)),
            ..Parts::default()
        },
        "lines",
        storage.subscribe(),
    );
    let err = rt.block_on(processor.run_until_caught_up()).unwrap_err();
    assert!(matches!(err, Error::Handler { seq: 2, .. }), "{err:?}");
    assert_eq!(processor.checkpoint().unwrap(), 1);
    let three = |index| Part { index, count: 3 };
    assert_eq!(
        processor.handler().seen,
        [
            (1, Part::WHOLE, "a".to_string()),
            (2, three(0), "b".to_string()),
        ]
    );

    let mut processor = Processor::new(reader, Parts::default(), "lines", storage.subscribe());
    assert_eq!(
        rt.block_on(processor.run_until_caught_up()).unwrap(),
        storage.head()
    );
    let seen = &processor.handler().seen;
    assert_eq!(
        seen[..3],
        [
            (2, three(0), "b".to_string()),
            (2, three(1), "c".to_string()),
            (2, three(2), "d".to_string()),
        ]
    );
    let skus: Vec<&str> = seen.iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(
        skus,
        ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"]
    );
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(name = "CartOpened")]
pub struct CartOpened {
    pub cart: u64,
}

#[derive(EventSet)]
pub enum Cart {
    Opened(CartOpened),
    Added(ItemAdded),
}

/// A reader of a set hands out the parts of a member's split as that member, in log order
/// among the other members' events.
#[test]
fn a_set_reads_each_part_as_its_member() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), false)).unwrap();
    Writer::<CartOpened>::new(storage.clone())
        .append(9, 1, CartOpened { cart: 9 })
        .unwrap();
    Writer::<ItemsAddedV2>::new(storage.clone())
        .append(
            9,
            2,
            ItemsAddedV2 {
                lines: vec![line("p", 1), line("q", 2)],
            },
        )
        .unwrap();
    Writer::<CartOpened>::new(storage.clone())
        .append(10, 1, CartOpened { cart: 10 })
        .unwrap();
    let reader = Reader::<Cart>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let read = |direction, from| -> Vec<String> {
        reader
            .read_log(&txn, from, direction)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                match e.event() {
                    CartRef::Opened(o) => format!("{}:opened {}", e.seq(), o.cart),
                    CartRef::Added(a) => {
                        format!(
                            "{}:{} {}/{}",
                            e.seq(),
                            a.sku,
                            e.part().index,
                            e.part().count
                        )
                    }
                }
            })
            .collect()
    };
    assert_eq!(
        read(Direction::Forward, 1),
        ["1:opened 9", "2:p 0/2", "2:q 1/2", "3:opened 10"]
    );
    assert_eq!(
        read(Direction::Backward, u64::MAX),
        ["3:opened 10", "2:q 1/2", "2:p 0/2", "1:opened 9"]
    );
    assert!(matches!(
        reader.get(&txn, 2),
        Err(Error::SplitEvent { seq: 2, parts: 2, ref event_type, version: 2 }) if event_type == "ItemsAdded"
    ));
    let parts = reader.get_parts(&txn, 2).unwrap();
    assert_eq!(parts.len(), 2);
    assert!(matches!(parts[1].event(), CartRef::Added(a) if a.sku == "q"));
}

/// A migration rewrites the events whose chain makes one event, and copies the split ones as
/// stored (rewritten as their parts, they would move every later event): the target reads the
/// same on every path, at the same sequences.
#[test]
fn a_migration_keeps_split_events_as_stored() {
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let source = Storage::open(config(&dir.path().join("source"), encrypted)).unwrap();
        let rows = rows();
        write(&source, &rows);
        let target_config = config(&dir.path().join("target"), encrypted);
        let report = Migration::new(&source, target_config.clone())
            .upcast::<ItemAdded>()
            .verify(true)
            .run()
            .unwrap();
        assert_eq!(report.events, rows.len() as u64);
        let split: Vec<(String, u16, u64)> = report
            .split
            .iter()
            .map(|c| (c.event_type.clone(), c.version, c.events))
            .collect();
        assert_eq!(split, [("ItemsAdded".to_string(), 2, 4)]);
        // v1, the one-line v2 and v3 are rewritten as v4.
        let upcast: u64 = report.upcast.iter().map(|c| c.events).sum();
        assert_eq!(upcast, 3);

        let target = Storage::open(target_config).unwrap();
        let reader = Reader::<ItemAdded>::new(target.clone());
        let txn = target.read_txn().unwrap();
        for seq in [1, 4, 5, 7] {
            let view = reader.get(&txn, seq).unwrap().unwrap();
            assert!(!view.is_upcast(), "seq {seq} is rewritten");
            assert_eq!(view.envelope().schema_version, 4);
        }
        drop(txn);
        // The target reads as the source: the rewritten events as current ones, with the
        // current type's name and version.
        let mut want = want(&source, &rows, encrypted);
        for w in &mut want {
            if let Want::Read { seen, upcast } = w {
                seen.event_type = "ItemAdded".into();
                seen.schema_version = 4;
                seen.payload_len = len(&seen.value);
                *upcast = false;
            }
        }
        check_every_path(&target, &want, "migrated");
    }
}
