//! Golden stores: events written by versions 1 and 2 of an event enum, committed as stores
//! (`tests/fixtures/orders-*`, see the README there), read by today's version 3 through every
//! read path, every field of every event and envelope checked against the table below.
//!
//! - `orders-v1`: events 1-5 of [`ROWS`], all written by version 1.
//! - `orders-v2` and `orders-v2-encrypted`: all of [`ROWS`], versions 1 and 2 mixed (a version-1
//!   build kept writing after version 2 shipped), in four streams, batches, metadata (one empty),
//!   correlation and causation ids. The encrypted one has master key [`MASTER_KEY`].
//!
//! The frozen types [`OrderEventV1`] and [`OrderEventV2`] are the types those stores were written
//! with; [`generate_fixtures`] writes the stores again from [`ROWS`].

mod read_paths;

use std::path::{Path, PathBuf};

use rkyv::rancor;
use varvedb::{
    Error, ExpectedVersion, NewEvent, OwnedEnvelope, Part, Reader, Storage, StorageConfig, Upcast,
    Uuid, Writer,
};

use read_paths::{check_every_path, stored_envelopes, Failure, Seen, Want};

/// Version 1, frozen: the enum as first deployed.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "OrderEvent", version = 1)]
pub enum OrderEventV1 {
    Created { customer: String },
    ItemAdded { sku: String, qty: u32 },
    Shipped,
}

/// Version 2, frozen: `ItemRemoved` inserted in the middle (every later tag moves), and a
/// `gift` flag on `ItemAdded`.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "OrderEvent", version = 2, previous = OrderEventV1)]
pub enum OrderEventV2 {
    Created { customer: String },
    ItemRemoved { sku: String, qty: u32 },
    ItemAdded { sku: String, qty: u32, gift: bool },
    Shipped,
}

impl Upcast<OrderEventV1> for OrderEventV2 {
    fn upcast(old: OrderEventV1) -> Self {
        match old {
            OrderEventV1::Created { customer } => OrderEventV2::Created { customer },
            OrderEventV1::ItemAdded { sku, qty } => OrderEventV2::ItemAdded {
                sku,
                qty,
                gift: false,
            },
            OrderEventV1::Shipped => OrderEventV2::Shipped,
        }
    }
}

/// Version 3, current: `qty` renamed `quantity` and widened to `u64`, a carrier on `Shipped`.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "OrderEvent", version = 3, previous = OrderEventV2)]
pub enum OrderEvent {
    Created {
        customer: String,
    },
    ItemRemoved {
        sku: String,
        quantity: u64,
    },
    ItemAdded {
        sku: String,
        quantity: u64,
        gift: bool,
    },
    Shipped {
        carrier: Option<String>,
    },
}

impl Upcast<OrderEventV2> for OrderEvent {
    fn upcast(old: OrderEventV2) -> Self {
        match old {
            OrderEventV2::Created { customer } => OrderEvent::Created { customer },
            OrderEventV2::ItemRemoved { sku, qty } => OrderEvent::ItemRemoved {
                sku,
                quantity: u64::from(qty),
            },
            OrderEventV2::ItemAdded { sku, qty, gift } => OrderEvent::ItemAdded {
                sku,
                quantity: u64::from(qty),
                gift,
            },
            OrderEventV2::Shipped => OrderEvent::Shipped { carrier: None },
        }
    }
}

mod edited {
    /// Version 2 edited after its events were stored: `gift` moved before `qty`.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "OrderEvent", version = 2)]
    pub enum OrderEventV2 {
        Created { customer: String },
        ItemRemoved { sku: String, qty: u32 },
        ItemAdded { sku: String, gift: bool, qty: u32 },
        Shipped,
    }
}

/// The master key of `orders-v2-encrypted`.
const MASTER_KEY: [u8; 32] = [0x3C; 32];
/// The stream of events 9-11: one given as a UUID.
const STREAM_X: u128 = 0x0123_4567_89AB_CDEF_0011_2233_4455_6677;

/// An event as written: by the version-1 or the version-2 build.
#[derive(Clone, Debug)]
enum Written {
    V1(OrderEventV1),
    V2(OrderEventV2),
}

/// One event of the golden stores: how it was written (`write`: the append call it was part
/// of) and what version 3 reads it as.
struct Row {
    seq: u64,
    stream: u128,
    version: u64,
    prev_seq: Option<u64>,
    write: u8,
    id: u128,
    correlation: Option<u128>,
    causation: Option<u128>,
    metadata: Option<&'static [u8]>,
    written: Written,
    current: OrderEvent,
}

fn v1_created(c: &str) -> Written {
    Written::V1(OrderEventV1::Created { customer: c.into() })
}

fn v1_item(sku: &str, qty: u32) -> Written {
    Written::V1(OrderEventV1::ItemAdded {
        sku: sku.into(),
        qty,
    })
}

fn created(c: &str) -> OrderEvent {
    OrderEvent::Created { customer: c.into() }
}

fn item(sku: &str, quantity: u64, gift: bool) -> OrderEvent {
    OrderEvent::ItemAdded {
        sku: sku.into(),
        quantity,
        gift,
    }
}

const SHIPPED: OrderEvent = OrderEvent::Shipped { carrier: None };

/// Number of rows in `orders-v1`.
const V1_ROWS: usize = 5;

/// Every event of the golden stores, in log order.
fn rows() -> Vec<Row> {
    let row = |seq: u64,
               stream: u128,
               version: u64,
               prev_seq: Option<u64>,
               write: u8,
               written: Written,
               current: OrderEvent| Row {
        seq,
        stream,
        version,
        prev_seq,
        write,
        id: 0x0E00 + u128::from(seq),
        correlation: None,
        causation: None,
        metadata: None,
        written,
        current,
    };
    vec![
        // Written by version 1 (all of orders-v1).
        Row {
            correlation: Some(0xC0),
            ..row(1, 1, 1, None, 1, v1_created("ada"), created("ada"))
        },
        Row {
            correlation: Some(0xC0),
            causation: Some(0x0E01),
            metadata: Some(b"src=web"),
            ..row(
                2,
                1,
                2,
                Some(1),
                2,
                v1_item("apple", 3),
                item("apple", 3, false),
            )
        },
        row(
            3,
            1,
            3,
            Some(2),
            2,
            v1_item("pear", 1),
            item("pear", 1, false),
        ),
        row(4, 2, 1, None, 3, v1_created("bob"), created("bob")),
        row(
            5,
            1,
            4,
            Some(3),
            4,
            Written::V1(OrderEventV1::Shipped),
            SHIPPED,
        ),
        // Version 2 ships, and a version-1 build goes on writing beside it.
        Row {
            metadata: Some(b"gift-wrap"),
            ..row(
                6,
                2,
                2,
                Some(4),
                5,
                Written::V2(OrderEventV2::ItemAdded {
                    sku: "fig".into(),
                    qty: 2,
                    gift: true,
                }),
                item("fig", 2, true),
            )
        },
        row(
            7,
            2,
            3,
            Some(6),
            6,
            Written::V2(OrderEventV2::ItemRemoved {
                sku: "fig".into(),
                qty: 1,
            }),
            OrderEvent::ItemRemoved {
                sku: "fig".into(),
                quantity: 1,
            },
        ),
        row(
            8,
            2,
            4,
            Some(7),
            7,
            v1_item("kiwi", u32::MAX),
            item("kiwi", u64::from(u32::MAX), false),
        ),
        Row {
            metadata: Some(b""),
            ..row(
                9,
                STREAM_X,
                1,
                None,
                8,
                Written::V2(OrderEventV2::Created {
                    customer: "cyd ✓".into(),
                }),
                created("cyd ✓"),
            )
        },
        row(
            10,
            STREAM_X,
            2,
            Some(9),
            8,
            Written::V2(OrderEventV2::ItemAdded {
                sku: "plum".into(),
                qty: 7,
                gift: false,
            }),
            item("plum", 7, false),
        ),
        row(
            11,
            STREAM_X,
            3,
            Some(10),
            8,
            Written::V2(OrderEventV2::Shipped),
            SHIPPED,
        ),
        Row {
            metadata: Some(b"late"),
            ..row(
                12,
                2,
                5,
                Some(8),
                9,
                Written::V2(OrderEventV2::Shipped),
                SHIPPED,
            )
        },
    ]
}

impl Row {
    fn stored_version(&self) -> u16 {
        match self.written {
            Written::V1(_) => 1,
            Written::V2(_) => 2,
        }
    }

    fn payload_len(&self) -> u32 {
        let bytes = match &self.written {
            Written::V1(e) => rkyv::to_bytes::<rancor::Error>(e),
            Written::V2(e) => rkyv::to_bytes::<rancor::Error>(e),
        };
        bytes.unwrap().len() as u32
    }

    /// What a reader makes of this event, as `value`, with the stored envelope.
    fn seen<T>(&self, stored: &OwnedEnvelope, encrypted: bool, value: T) -> Seen<T> {
        Seen {
            seq: self.seq,
            stream: self.stream,
            version: self.version,
            prev_seq: self.prev_seq,
            timestamp_ns: stored.timestamp_ns,
            event_id: Uuid::from_u128(self.id),
            correlation_id: self.correlation.map(Uuid::from_u128),
            causation_id: self.causation.map(Uuid::from_u128),
            event_type: "OrderEvent".into(),
            schema_version: self.stored_version(),
            metadata: self.metadata.map(<[u8]>::to_vec),
            payload_len: self.payload_len(),
            encrypted,
            part: Part::WHOLE,
            value,
        }
    }
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of `tests/fixtures/<name>` in a temporary directory: opening writes to a store.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_dir(name);
    std::fs::copy(src.join("data.mdb"), dir.path().join("data.mdb")).unwrap();
    if src.join("keys").exists() {
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::copy(src.join("keys/data.mdb"), dir.path().join("keys/data.mdb")).unwrap();
    }
    dir
}

fn config(dir: &Path, encrypted: bool) -> StorageConfig {
    StorageConfig {
        path: dir.to_path_buf(),
        map_size: 1 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some(MASTER_KEY),
        ..Default::default()
    }
}

/// A fixture store, opened from a copy.
struct Fixture {
    _dir: tempfile::TempDir,
    storage: Storage,
    encrypted: bool,
    /// The rows it holds.
    rows: Vec<Row>,
    /// Its envelopes as stored (for the commit timestamps).
    stored: Vec<OwnedEnvelope>,
}

fn open_fixture(name: &str) -> Fixture {
    let encrypted = name.ends_with("-encrypted");
    let dir = copy_fixture(name);
    let storage = Storage::open(config(dir.path(), encrypted)).unwrap();
    let mut rows = rows();
    if name == "orders-v1" {
        rows.truncate(V1_ROWS);
    }
    let stored = stored_envelopes(&storage);
    assert_eq!(stored.len(), rows.len(), "{name}: events");
    // The envelopes read without payloads: everything but the metadata of an encrypted store.
    for (row, env) in rows.iter().zip(&stored) {
        let mut want = row.seen(env, encrypted, ());
        if encrypted {
            want.metadata = None;
        }
        let got = Seen::of_owned(env, ());
        assert_eq!(got, want, "{name}: stored envelope of {}", row.seq);
    }
    Fixture {
        _dir: dir,
        storage,
        encrypted,
        rows,
        stored,
    }
}

impl Fixture {
    /// What a reader of version 3 must see: every event, upcast unless written by version 3.
    fn want_v3(&self) -> Vec<Want<OrderEvent>> {
        self.rows
            .iter()
            .zip(&self.stored)
            .map(|(row, env)| Want::Read {
                seen: row.seen(env, self.encrypted, row.current.clone()),
                upcast: true,
            })
            .collect()
    }

    /// What a reader of version 1 must see: the version-1 events as written, and that it has
    /// no way to read version 2.
    fn want_v1(&self) -> Vec<Want<OrderEventV1>> {
        self.rows
            .iter()
            .zip(&self.stored)
            .map(|(row, env)| match &row.written {
                Written::V1(e) => Want::Read {
                    seen: row.seen(env, self.encrypted, e.clone()),
                    upcast: false,
                },
                Written::V2(_) => Want::Fails {
                    seq: row.seq,
                    stream: row.stream,
                    failure: Failure::UnknownSchemaVersion {
                        seq: row.seq,
                        event_type: "OrderEvent".into(),
                        stored: 2,
                        current: 1,
                    },
                },
            })
            .collect()
    }

    /// What a reader of version 2 must see: version 1 upcast, version 2 as written.
    fn want_v2(&self) -> Vec<Want<OrderEventV2>> {
        self.rows
            .iter()
            .zip(&self.stored)
            .map(|(row, env)| {
                let (value, upcast) = match &row.written {
                    Written::V1(e) => (OrderEventV2::upcast(e.clone()), true),
                    Written::V2(e) => (e.clone(), false),
                };
                Want::Read {
                    seen: row.seen(env, self.encrypted, value),
                    upcast,
                }
            })
            .collect()
    }
}

#[test]
fn orders_v1_reads_as_v3_on_every_path() {
    let f = open_fixture("orders-v1");
    check_every_path(&f.storage, &f.want_v3(), "v3");
}

#[test]
fn orders_v1_reads_as_v1_on_every_path() {
    let f = open_fixture("orders-v1");
    check_every_path(&f.storage, &f.want_v1(), "v1");
}

#[test]
fn orders_v2_reads_as_v3_on_every_path() {
    let f = open_fixture("orders-v2");
    check_every_path(&f.storage, &f.want_v3(), "v3");
}

#[test]
fn encrypted_orders_v2_reads_as_v3_on_every_path() {
    let f = open_fixture("orders-v2-encrypted");
    check_every_path(&f.storage, &f.want_v3(), "v3");
}

/// The frozen version 1, read as the current type (an old build): its own events as written,
/// `UnknownSchemaVersion` for those of version 2 on every path, which never pass over them.
#[test]
fn orders_v2_as_v1_reads_v1_and_names_v2() {
    for name in ["orders-v2", "orders-v2-encrypted"] {
        let f = open_fixture(name);
        check_every_path(&f.storage, &f.want_v1(), "v1");
    }
}

#[test]
fn orders_v2_reads_as_v2_on_every_path() {
    for name in ["orders-v2", "orders-v2-encrypted"] {
        let f = open_fixture(name);
        check_every_path(&f.storage, &f.want_v2(), "v2");
    }
}

/// Version 3 writes beside the old events; its own read zero-copy, the old ones upcast, and the
/// old builds name the new version.
#[test]
fn version_3_appends_to_a_golden_store() {
    let mut f = open_fixture("orders-v2");
    let fedex = OrderEvent::Shipped {
        carrier: Some("fedex".into()),
    };
    let seq = Writer::<OrderEvent>::new(f.storage.clone())
        .append_batch(
            3u64,
            ExpectedVersion::NoStream,
            [NewEvent::new(fedex.clone())
                .with_id(Uuid::from_u128(0x0E0D))
                .with_metadata(b"v3".to_vec())],
        )
        .unwrap()
        .last()
        .seq;
    assert_eq!(seq, 13);
    f.stored = stored_envelopes(&f.storage);
    let timestamp_ns = f.stored[12].timestamp_ns;
    let seen = |value| Seen {
        seq: 13,
        stream: 3,
        version: 1,
        prev_seq: None,
        timestamp_ns,
        event_id: Uuid::from_u128(0x0E0D),
        correlation_id: None,
        causation_id: None,
        event_type: "OrderEvent".into(),
        schema_version: 3,
        metadata: Some(b"v3".to_vec()),
        payload_len: rkyv::to_bytes::<rancor::Error>(&fedex).unwrap().len() as u32,
        encrypted: false,
        part: Part::WHOLE,
        value,
    };
    let mut v3 = f.want_v3();
    v3.push(Want::Read {
        seen: seen(fedex.clone()),
        upcast: false,
    });
    check_every_path(&f.storage, &v3, "v3");
    let newer = |current| Failure::UnknownSchemaVersion {
        seq: 13,
        event_type: "OrderEvent".into(),
        stored: 3,
        current,
    };
    let mut v1 = f.want_v1();
    v1.push(Want::Fails {
        seq: 13,
        stream: 3,
        failure: newer(1),
    });
    check_every_path(&f.storage, &v1, "v1");
    let mut v2 = f.want_v2();
    v2.push(Want::Fails {
        seq: 13,
        stream: 3,
        failure: newer(2),
    });
    check_every_path(&f.storage, &v2, "v2");
}

/// A build whose frozen version 2 was edited (same name and version, another layout) can
/// neither write nor read version 2 against the store's record of it.
#[test]
fn an_edited_version_2_is_refused_by_a_golden_store() {
    for name in ["orders-v2", "orders-v2-encrypted"] {
        let f = open_fixture(name);
        let mut writer = Writer::<edited::OrderEventV2>::new(f.storage.clone());
        let refused = writer.append(1u64, 5, edited::OrderEventV2::Shipped);
        assert!(
            matches!(&refused, Err(Error::LayoutChanged { event_type, version: 2, seq: None, .. })
                if event_type == "OrderEvent"),
            "{name}: {refused:?}"
        );
        assert_eq!(f.storage.head(), 12, "{name}: nothing written");
        let reader = Reader::<edited::OrderEventV2>::new(f.storage.clone());
        let txn = f.storage.read_txn().unwrap();
        let read = reader.get(&txn, 6).map(|e| e.is_some());
        assert!(
            matches!(
                &read,
                Err(Error::LayoutChanged {
                    version: 2,
                    seq: Some(6),
                    ..
                })
            ),
            "{name}: {read:?}"
        );
        // Its version 2 is the only one it reads: version 1 is another version to it.
        assert!(matches!(
            reader.get(&txn, 1),
            Err(Error::UnknownSchemaVersion {
                seq: 1,
                stored: 1,
                current: 2,
                ..
            })
        ));
    }
}

/// The layouts differ from version to version: these stores test upcasting, not a no-op.
#[test]
fn every_version_has_its_own_layout() {
    use varvedb::Layout;
    let layouts = [
        <OrderEventV1 as Layout>::LAYOUT,
        <OrderEventV2 as Layout>::LAYOUT,
        <OrderEvent as Layout>::LAYOUT,
        <edited::OrderEventV2 as Layout>::LAYOUT,
    ];
    for (i, a) in layouts.iter().enumerate() {
        for b in &layouts[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

/// Writes `rows` as the builds of their versions did: one append call per `write`.
fn write_rows(storage: &Storage, rows: &[Row]) {
    let mut v1 = Writer::<OrderEventV1>::new(storage.clone());
    let mut v2 = Writer::<OrderEventV2>::new(storage.clone());
    let mut i = 0;
    while i < rows.len() {
        let group: Vec<&Row> = rows[i..]
            .iter()
            .take_while(|r| r.write == rows[i].write)
            .collect();
        i += group.len();
        let first = group[0];
        let expected = match first.version {
            1 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        fn new<E>(row: &Row, event: E) -> NewEvent<E> {
            let mut e = NewEvent::new(event).with_id(Uuid::from_u128(row.id));
            if let Some(c) = row.correlation {
                e = e.with_correlation_id(Uuid::from_u128(c));
            }
            if let Some(c) = row.causation {
                e = e.with_causation_id(Uuid::from_u128(c));
            }
            if let Some(m) = row.metadata {
                e = e.with_metadata(m.to_vec());
            }
            e
        }
        let appended = match &first.written {
            Written::V1(_) => v1.append_batch(
                first.stream,
                expected,
                group.iter().map(|r| match &r.written {
                    Written::V1(e) => new(r, e.clone()),
                    Written::V2(_) => panic!("one append call, one version"),
                }),
            ),
            Written::V2(_) => v2.append_batch(
                first.stream,
                expected,
                group.iter().map(|r| match &r.written {
                    Written::V2(e) => new(r, e.clone()),
                    Written::V1(_) => panic!("one append call, one version"),
                }),
            ),
        }
        .unwrap();
        let placed: Vec<(u64, u64)> = appended
            .positions
            .iter()
            .map(|p| (p.seq, p.version))
            .collect();
        let planned: Vec<(u64, u64)> = group.iter().map(|r| (r.seq, r.version)).collect();
        assert_eq!(placed, planned);
    }
}

/// Writes the golden stores into `tests/fixtures/` (replacing them). Run by hand, after which the
/// tests above must pass unchanged:
///
/// ```sh
/// cargo test --all-features --test golden -- --ignored generate_fixtures
/// ```
///
/// The contents are fixed by [`rows`]; commit timestamps, the store id and the encrypted store's
/// keys and nonces are not, so the bytes differ from run to run.
#[test]
#[ignore = "writes tests/fixtures/orders-*; run by hand"]
fn generate_fixtures() {
    let all = rows();
    for (name, rows, encrypted) in [
        ("orders-v1", &all[..V1_ROWS], false),
        ("orders-v2", &all[..], false),
        ("orders-v2-encrypted", &all[..], true),
    ] {
        let dir = fixture_dir(name);
        for file in ["data.mdb", "lock.mdb", "keys/data.mdb", "keys/lock.mdb"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let storage = Storage::open(config(&dir, encrypted)).unwrap();
        write_rows(&storage, rows);
        drop(storage);
        for file in ["lock.mdb", "keys/lock.mdb"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
}
