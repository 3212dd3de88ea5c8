//! Sets of event types: an enum whose variants each hold an event type is read by one reader,
//! subscription, processor or projector, in log order, each record as its member by that
//! member's rules; a set with a new variant, anywhere, reads the old records as before.

use std::ops::ControlFlow;

use varvedb::{
    Direction, Error, EventHandler, EventSet, Filter, Processor, Projection, Projector, Reader,
    StartFrom, Storage, StorageConfig, SubscriptionItem, Upcast, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "OrderCreated")]
pub struct Created {
    pub customer: String,
}

/// The frozen first version of `ItemAdded`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "ItemAdded", version = 1)]
pub struct ItemAddedV1 {
    pub sku: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "ItemAdded", version = 2, previous = ItemAddedV1)]
pub struct ItemAdded {
    pub sku: String,
    pub qty: u32,
}

impl Upcast<ItemAddedV1> for ItemAdded {
    fn upcast(old: ItemAddedV1) -> Self {
        ItemAdded {
            sku: old.sku,
            qty: 1,
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "ItemRemoved")]
pub struct ItemRemoved {
    pub sku: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
#[event(name = "OrderShipped")]
pub struct Shipped;

/// Another type of the same store, in none of the sets.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Audit {
    pub note: String,
}

/// The set as the first release has it.
#[derive(EventSet, Debug, PartialEq)]
pub enum OrderEvent {
    Created(Created),
    ItemAdded(ItemAdded),
    Shipped(Shipped),
}

/// A later release: a member inserted in the middle.
#[derive(EventSet, Debug, PartialEq)]
pub enum OrderEventNext {
    Created(Created),
    ItemRemoved(ItemRemoved),
    ItemAdded(ItemAdded),
    Shipped(Shipped),
}

fn open(dir: &std::path::Path, encrypted: bool) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        map_size: 4 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([9; 32]),
        ..Default::default()
    })
    .unwrap()
}

/// Order 1: created, an item of version 1 (upcast on read), an item of version 2, shipped;
/// an audit event between them (seq 3); order 2: created, item. Returns the events of the set,
/// by sequence.
fn fill(storage: &Storage) -> Vec<(u64, OrderEvent)> {
    Writer::<Created>::new(storage.clone())
        .append(
            1u64,
            1,
            Created {
                customer: "ada".into(),
            },
        )
        .unwrap();
    Writer::<ItemAddedV1>::new(storage.clone())
        .append(1u64, 2, ItemAddedV1 { sku: "a".into() })
        .unwrap();
    Writer::<Audit>::new(storage.clone())
        .append(9u64, 1, Audit { note: "x".into() })
        .unwrap();
    Writer::<ItemAdded>::new(storage.clone())
        .append(
            1u64,
            3,
            ItemAdded {
                sku: "b".into(),
                qty: 4,
            },
        )
        .unwrap();
    Writer::<Shipped>::new(storage.clone())
        .append(1u64, 4, Shipped)
        .unwrap();
    Writer::<Created>::new(storage.clone())
        .append(
            2u64,
            1,
            Created {
                customer: "bob".into(),
            },
        )
        .unwrap();
    Writer::<ItemAdded>::new(storage.clone())
        .append(
            2u64,
            2,
            ItemAdded {
                sku: "c".into(),
                qty: 2,
            },
        )
        .unwrap();
    let item = |sku: &str, qty| {
        OrderEvent::ItemAdded(ItemAdded {
            sku: sku.into(),
            qty,
        })
    };
    vec![
        (
            1,
            OrderEvent::Created(Created {
                customer: "ada".into(),
            }),
        ),
        (2, item("a", 1)),
        (4, item("b", 4)),
        (5, OrderEvent::Shipped(Shipped)),
        (
            6,
            OrderEvent::Created(Created {
                customer: "bob".into(),
            }),
        ),
        (7, item("c", 2)),
    ]
}

/// A name for what a handler gets, to compare across paths.
fn describe(event: OrderEventRef<'_>) -> String {
    match event {
        OrderEventRef::Created(c) => format!("created {}", c.customer),
        OrderEventRef::ItemAdded(i) => format!("item {} x{}", i.sku, i.qty),
        OrderEventRef::Shipped(_) => "shipped".into(),
    }
}

fn every_path_reads_the_set(storage: &Storage, want: &[(u64, OrderEvent)]) {
    let reader = Reader::<OrderEvent>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for (seq, value) in want {
        let e = reader.get(&txn, *seq).unwrap().unwrap();
        assert_eq!(&e.deserialize().unwrap(), value, "get({seq})");
        assert_eq!(e.seq(), *seq);
        assert_eq!(e.is_upcast(), *seq == 2);
    }
    // A type outside the set, asked for by position, is the caller's mistake.
    assert!(matches!(
        reader.get(&txn, 3),
        Err(Error::WrongEventType { seq: 3, ref found, .. }) if found == "Audit"
    ));
    let e = reader.get(&txn, 2).unwrap().unwrap();
    assert_eq!(
        (e.envelope().event_type, e.envelope().schema_version),
        ("ItemAdded", 1)
    );
    assert!(matches!(e, OrderEventView::ItemAdded(ref i) if i.qty == 1));
    let last = reader.last_in_stream(&txn, 1u64).unwrap().unwrap();
    assert_eq!(last.deserialize().unwrap(), OrderEvent::Shipped(Shipped));

    let expected: Vec<(u64, String)> = want
        .iter()
        .map(|(seq, _)| {
            let e = reader.get(&txn, *seq).unwrap().unwrap();
            (*seq, describe(e.event()))
        })
        .collect();
    assert_eq!(expected[1].1, "item a x1");
    let log: Vec<(u64, String)> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), describe(e.event()))
        })
        .collect();
    assert_eq!(log, expected);
    let backward: Vec<u64> = reader
        .read_log(&txn, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(backward, [7, 6, 5, 4, 2, 1]);
    let order1: Vec<u64> = reader
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(order1, [1, 2, 3, 4]);
    drop(txn);

    let mut walked = Vec::new();
    reader
        .for_each_in_log(1, Direction::Forward, |e| {
            walked.push((e.seq(), describe(e.event())));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(walked, expected);
    let mut in_stream = Vec::new();
    reader
        .for_each_in_stream(2u64, u64::MAX, Direction::Backward, |e| {
            in_stream.push(describe(e.event()));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(in_stream, ["item c x2", "created bob"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap();
    let delivered = rt.block_on(async {
        let mut out = Vec::new();
        loop {
            match sub.next().await.unwrap().unwrap() {
                SubscriptionItem::Event(e) => out.push((e.seq(), e.deserialize().unwrap())),
                SubscriptionItem::CaughtUp => return out,
            }
        }
    });
    let owned: Vec<(u64, OrderEvent)> = want.iter().map(|(s, v)| (*s, copy(v))).collect();
    assert_eq!(delivered, owned);
    // A filter on a member's name narrows the set.
    let mut items = reader
        .subscribe(
            StartFrom::Start,
            Filter::default().event_type("ItemAdded").stream(1u64),
        )
        .unwrap();
    let seqs = rt.block_on(async {
        let mut out = Vec::new();
        while let SubscriptionItem::Event(e) = items.next().await.unwrap().unwrap() {
            out.push((e.seq(), describe(e.event())));
        }
        out
    });
    assert_eq!(
        seqs,
        [(2, "item a x1".to_string()), (4, "item b x4".to_string())]
    );

    struct Collect(Vec<(u64, String)>);
    impl EventHandler<OrderEvent> for Collect {
        fn handle(&mut self, _: OrderEventRef<'_>) -> varvedb::Result<()> {
            unreachable!("handle_envelope is implemented")
        }
        fn handle_envelope(
            &mut self,
            envelope: &varvedb::Envelope<'_>,
            event: OrderEventRef<'_>,
        ) -> varvedb::Result<()> {
            self.0.push((envelope.seq, describe(event)));
            Ok(())
        }
    }
    let mut processor = Processor::new(
        reader.clone(),
        Collect(Vec::new()),
        "orders",
        storage.subscribe(),
    );
    // Every record up to the head is visited, the audit event passed over.
    assert_eq!(rt.block_on(processor.run_until_caught_up()).unwrap(), 7);
    assert_eq!(processor.handler().0, expected);

    struct Count(heed::Database<'static, heed::types::Bytes, heed::types::Bytes>);
    impl Projection<OrderEvent> for Count {
        fn apply(
            &mut self,
            txn: &mut heed::RwTxn<'_>,
            envelope: &varvedb::Envelope<'_>,
            event: OrderEventRef<'_>,
        ) -> varvedb::Result<()> {
            let key = envelope.seq.to_be_bytes();
            self.0.put(txn, &key, describe(event).as_bytes())?;
            Ok(())
        }
    }
    let db = storage.projection_database("orders").unwrap();
    let mut projector = Projector::new(reader, Count(db), "orders-view", storage.subscribe());
    rt.block_on(projector.run_until_caught_up()).unwrap();
    let txn = storage.read_txn().unwrap();
    let projected: Vec<(u64, String)> = db
        .iter(txn.heed())
        .unwrap()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (
                u64::from_be_bytes(k.try_into().unwrap()),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(projected, expected);
}

use varvedb::heed;

fn copy(v: &OrderEvent) -> OrderEvent {
    match v {
        OrderEvent::Created(c) => OrderEvent::Created(Created {
            customer: c.customer.clone(),
        }),
        OrderEvent::ItemAdded(i) => OrderEvent::ItemAdded(ItemAdded {
            sku: i.sku.clone(),
            qty: i.qty,
        }),
        OrderEvent::Shipped(_) => OrderEvent::Shipped(Shipped),
    }
}

#[test]
fn one_reader_reads_a_set_of_types_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    let want = fill(&storage);
    every_path_reads_the_set(&storage, &want);
}

#[test]
fn sets_read_an_encrypted_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), true);
    let want = fill(&storage);
    every_path_reads_the_set(&storage, &want);
}

/// A member inserted in the middle of the enum changes nothing for the records already stored:
/// each is read by its own member, whatever the member's place.
#[test]
fn a_new_member_anywhere_reads_old_records_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    fill(&storage);
    Writer::<ItemRemoved>::new(storage.clone())
        .append(1u64, 5, ItemRemoved { sku: "a".into() })
        .unwrap();
    let old = Reader::<OrderEvent>::new(storage.clone());
    let next = Reader::<OrderEventNext>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let old_read: Vec<(u64, String)> = old
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), format!("{:?}", e.deserialize().unwrap()))
        })
        .collect();
    let next_read: Vec<(u64, String)> = next
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), format!("{:?}", e.deserialize().unwrap()))
        })
        .collect();
    // The old set passes over the new member's event, as over any type it does not know.
    assert_eq!(old_read.len(), 6);
    assert_eq!(next_read.len(), 7);
    assert_eq!(&next_read[..6], &old_read[..]);
    assert_eq!(
        next_read[6],
        (
            8,
            format!(
                "{:?}",
                OrderEventNext::ItemRemoved(ItemRemoved { sku: "a".into() })
            )
        )
    );
    assert!(matches!(
        old.get(&txn, 8),
        Err(Error::WrongEventType { seq: 8, .. })
    ));
}

mod edited {
    /// `ItemAdded` v2 with its fields swapped and no version bump.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded", version = 2)]
    pub struct ItemAdded {
        pub qty: u32,
        pub sku: String,
    }

    #[derive(varvedb::EventSet, Debug)]
    #[allow(dead_code)]
    pub enum OrderEvent {
        Created(super::Created),
        ItemAdded(ItemAdded),
    }
}

/// A member whose layout changed is an error on the records of that member, and only those;
/// a processor of the set stops there, its checkpoint before the record.
#[test]
fn a_changed_member_is_an_error_for_its_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    fill(&storage);
    let reader = Reader::<edited::OrderEvent>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 1),
        Ok(Some(edited::OrderEventView::Created(_)))
    ));
    assert!(matches!(
        reader.get(&txn, 4),
        Err(Error::LayoutChanged { version: 2, .. })
    ));
    // Version 1 of the edited member has no upcast: an unknown version, never a misread.
    assert!(matches!(
        reader.get(&txn, 2),
        Err(Error::UnknownSchemaVersion {
            stored: 1,
            current: 2,
            ..
        })
    ));
    // In a scan, one member's verified layout says nothing of another's: every record of the
    // changed member is an error, between the readable records of the other.
    let scanned: Vec<std::result::Result<u64, (u64, &str)>> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| match e {
            Ok(e) => Ok(e.seq()),
            Err(Error::LayoutChanged { seq: Some(seq), .. }) => Err((seq, "layout")),
            Err(Error::UnknownSchemaVersion { seq, .. }) => Err((seq, "version")),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        scanned,
        [
            Ok(1),
            Err((2, "version")),
            Err((4, "layout")),
            Ok(6),
            Err((7, "layout"))
        ]
    );
    drop(txn);

    struct Nothing;
    impl EventHandler<edited::OrderEvent> for Nothing {
        fn handle(&mut self, _: edited::OrderEventRef<'_>) -> varvedb::Result<()> {
            Ok(())
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut processor = Processor::new(reader, Nothing, "edited", storage.subscribe())
        .with_error_policy(varvedb::ErrorPolicy::Skip);
    let result = rt.block_on(processor.run_until_caught_up());
    assert!(
        matches!(result, Err(Error::UnknownSchemaVersion { seq: 2, .. })),
        "{result:?}"
    );
    assert_eq!(processor.checkpoint().unwrap(), 1);
    assert_eq!(storage.processors().unwrap(), [("edited".to_string(), 1)]);
}
