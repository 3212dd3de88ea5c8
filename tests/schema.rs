//! Event types that change: every change to a type's archived layout under the same name and
//! schema version is an error naming the type and version, on write and on every read path,
//! never a misread archive; events of another schema version are named, never read as the
//! reader's version and never passed over.
//!
//! Each module below is one build of an application's event type: same name and version,
//! another layout.

use varvedb::{
    Direction, Error, ErrorPolicy, EventHandler, Filter, Layout, Processor, Reader, StartFrom,
    Storage, StorageConfig, SubscriptionItem, Writer,
};

mod before {
    /// The event as first deployed.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded")]
    pub struct ItemAdded {
        pub sku: String,
        pub qty: u32,
    }

    /// An enum of order events as first deployed.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "OrderEvent")]
    pub enum OrderEvent {
        Created { customer: String },
        ItemAdded { sku: String, qty: u32 },
        Shipped,
    }
}

mod swapped {
    /// Two fields swapped.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded")]
    pub struct ItemAdded {
        pub qty: u32,
        pub sku: String,
    }
}

mod added {
    /// One field added, no version bump.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded")]
    pub struct ItemAdded {
        pub sku: String,
        pub qty: u32,
        pub note: Option<String>,
    }
}

mod renamed_field {
    /// A field renamed: same bytes, another meaning.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded")]
    pub struct ItemAdded {
        pub sku: String,
        pub count: u32,
    }
}

mod inserted {
    /// A variant inserted in the middle of the enum.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "OrderEvent")]
    pub enum OrderEvent {
        Created { customer: String },
        ItemRemoved { sku: String, qty: u32 },
        ItemAdded { sku: String, qty: u32 },
        Shipped,
    }
}

mod payments {
    /// Another module's type whose Rust name and default event name are `Created`.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    pub struct Created {
        pub amount_cents: u64,
        pub account: u64,
    }
}

mod orders {
    /// `Created` of the orders module: the same default name as `payments::Created`.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    pub struct Created {
        pub order_no: u64,
        pub customer_id: u64,
    }
}

mod renamed_type {
    /// `before::ItemAdded` under a new Rust name, keeping its event name: same layout.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded")]
    pub struct LineAdded {
        pub sku: String,
        pub qty: u32,
    }
}

mod next_version {
    /// `ItemAdded` at schema version 2: a new field, and a version bump.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded", version = 2)]
    pub struct ItemAdded {
        pub sku: String,
        pub qty: u32,
        pub note: Option<String>,
    }
}

fn store(dir: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        map_size: 4 << 20,
        ..Default::default()
    })
    .unwrap()
}

/// A store with three `before::ItemAdded` events in stream 1.
fn three_items(dir: &std::path::Path) -> Storage {
    let storage = store(dir);
    let mut writer = Writer::<before::ItemAdded>::new(storage.clone());
    for n in 1..=3u32 {
        writer
            .append(
                1u64,
                u64::from(n),
                before::ItemAdded {
                    sku: format!("sku-{n}"),
                    qty: n,
                },
            )
            .unwrap();
    }
    storage
}

/// Whether `e` is the layout error of `ItemAdded` v1 (at `seq`, for a read).
fn layout_changed(e: &Error, seq: Option<u64>) -> bool {
    matches!(e, Error::LayoutChanged { event_type, version: 1, seq: s, .. }
        if event_type == "ItemAdded" && *s == seq)
}

/// Every read path of a type whose layout differs from the recorded one fails with
/// `LayoutChanged` naming the event: point reads, stream and log reads, `for_each_*`.
fn every_read_fails<E>(storage: &Storage)
where
    E: varvedb::Event,
    E::Archived: for<'a> rkyv::bytecheck::CheckBytes<
        rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
    >,
{
    let reader = Reader::<E>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for seq in 1..=3 {
        let got = reader.get(&txn, seq).map(|e| e.is_some());
        assert!(
            matches!(&got, Err(e) if layout_changed(e, Some(seq))),
            "{got:?}"
        );
    }
    let last = reader.last_in_stream(&txn, 1u64).map(|e| e.is_some());
    assert!(
        matches!(&last, Err(e) if layout_changed(e, Some(3))),
        "{last:?}"
    );
    for items in [
        reader
            .read_stream(&txn, 1u64, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.map(|_| ()))
            .collect::<Vec<_>>(),
        reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.map(|_| ()))
            .collect(),
    ] {
        assert_eq!(items.len(), 3);
        for (i, item) in items.iter().enumerate() {
            assert!(
                matches!(item, Err(e) if layout_changed(e, Some(i as u64 + 1))),
                "{item:?}"
            );
        }
    }
    let mut seen = 0;
    let walked = reader.for_each_in_log(1, Direction::Forward, |_| {
        seen += 1;
        std::ops::ControlFlow::Continue(())
    });
    assert!(
        matches!(&walked, Err(e) if layout_changed(e, Some(1))),
        "{walked:?}"
    );
    assert_eq!(seen, 0);
}

/// Appending with a changed type is refused before anything is written.
fn writes_are_refused<E>(storage: &Storage, event: E)
where
    E: varvedb::Event + for<'a> rkyv::Serialize<varvedb::EventSerializer<'a>>,
{
    let mut writer = Writer::<E>::new(storage.clone());
    let refused = writer.append(2u64, 1, event);
    assert!(
        matches!(&refused, Err(e) if layout_changed(e, None)),
        "{refused:?}"
    );
    assert_eq!(storage.head(), 3);
    assert_eq!(storage.stream_version(2u64).unwrap(), 0);
}

#[test]
fn swapped_fields_are_an_error_on_write_and_on_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    every_read_fails::<swapped::ItemAdded>(&storage);
    writes_are_refused(
        &storage,
        swapped::ItemAdded {
            qty: 1,
            sku: "x".into(),
        },
    );
    // The message says what happened and what to do.
    let reader = Reader::<swapped::ItemAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let message = reader.get(&txn, 1).err().unwrap().to_string();
    assert!(
        message.contains("ItemAdded v1 changed layout")
            && message.contains("frozen type")
            && message.contains("bump to v2"),
        "{message}"
    );
}

#[test]
fn an_added_field_without_a_version_bump_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    every_read_fails::<added::ItemAdded>(&storage);
    writes_are_refused(
        &storage,
        added::ItemAdded {
            sku: "x".into(),
            qty: 1,
            note: None,
        },
    );
}

#[test]
fn a_renamed_field_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    every_read_fails::<renamed_field::ItemAdded>(&storage);
}

#[test]
fn a_variant_inserted_in_an_enum_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    let mut writer = Writer::<before::OrderEvent>::new(storage.clone());
    writer
        .append(
            1u64,
            1,
            before::OrderEvent::Created {
                customer: "c".into(),
            },
        )
        .unwrap();
    writer.append(1u64, 2, before::OrderEvent::Shipped).unwrap();
    let reader = Reader::<inserted::OrderEvent>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 2),
        Err(Error::LayoutChanged { seq: Some(2), .. })
    ));
    let mut writer = Writer::<inserted::OrderEvent>::new(storage.clone());
    assert!(matches!(
        writer.append(1u64, 3, inserted::OrderEvent::Shipped),
        Err(Error::LayoutChanged { seq: None, .. })
    ));
    assert_ne!(
        <before::OrderEvent as Layout>::LAYOUT,
        <inserted::OrderEvent as Layout>::LAYOUT
    );
}

#[test]
fn two_types_with_the_same_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = store(dir.path());
    Writer::<orders::Created>::new(storage.clone())
        .append(
            1u64,
            1,
            orders::Created {
                order_no: 123,
                customer_id: 42,
            },
        )
        .unwrap();
    let payments = Reader::<payments::Created>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        payments.get(&txn, 1),
        Err(Error::LayoutChanged { ref event_type, seq: Some(1), .. }) if event_type == "Created"
    ));
    assert!(matches!(
        Writer::<payments::Created>::new(storage.clone()).append(
            2u64,
            1,
            payments::Created {
                amount_cents: 1,
                account: 2
            }
        ),
        Err(Error::LayoutChanged { seq: None, .. })
    ));
}

#[test]
fn a_renamed_rust_type_that_keeps_its_event_name_reads_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    let reader = Reader::<renamed_type::LineAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let read: Vec<(String, u32)> = reader
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.sku.to_string(), e.qty.to_native())
        })
        .collect();
    assert_eq!(read[2], ("sku-3".to_string(), 3));
    drop(txn);
    Writer::<renamed_type::LineAdded>::new(storage.clone())
        .append(
            1u64,
            4,
            renamed_type::LineAdded {
                sku: "sku-4".into(),
                qty: 4,
            },
        )
        .unwrap();
}

#[test]
fn an_older_build_meeting_a_newer_version_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    Writer::<next_version::ItemAdded>::new(storage.clone())
        .append(
            1u64,
            4,
            next_version::ItemAdded {
                sku: "sku-4".into(),
                qty: 4,
                note: Some("gift".into()),
            },
        )
        .unwrap();
    // The version-1 build reads its own events and names the newer one, on every path.
    let old = Reader::<before::ItemAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(old.get(&txn, 3).unwrap().unwrap().qty, 3);
    let unknown = |e: &Error| {
        matches!(e, Error::UnknownSchemaVersion { seq: 4, stored: 2, current: 1, event_type }
            if event_type == "ItemAdded")
    };
    assert!(matches!(old.get(&txn, 4), Err(ref e) if unknown(e)));
    let items: Vec<_> = old
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(items.len(), 4);
    assert!(matches!(items[3], Err(ref e) if unknown(e)));
    // The version-2 build reads the version-2 event, and names the version-1 ones: no upcast.
    let new = Reader::<next_version::ItemAdded>::new(storage.clone());
    let e = new.get(&txn, 4).unwrap().unwrap();
    assert_eq!(e.note.as_deref(), Some("gift"));
    assert!(matches!(
        new.get(&txn, 1),
        Err(Error::UnknownSchemaVersion {
            stored: 1,
            current: 2,
            ..
        })
    ));
    let message = new.get(&txn, 1).err().unwrap().to_string();
    assert!(message.contains("ItemAdded v1"), "{message}");
}

struct Count(u64);

impl EventHandler<swapped::ItemAdded> for Count {
    fn handle(&mut self, _event: &swapped::ArchivedItemAdded) -> varvedb::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

/// A processor that meets events its type cannot read stops with the error, whatever its error
/// policy, and its checkpoint does not move past them.
#[test]
fn a_processor_stops_at_a_changed_layout_even_when_told_to_skip() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for policy in [ErrorPolicy::Stop, ErrorPolicy::Skip] {
        let mut processor = Processor::new(
            Reader::<swapped::ItemAdded>::new(storage.clone()),
            Count(0),
            "counter",
            storage.subscribe(),
        )
        .with_error_policy(policy);
        let run = rt.block_on(processor.run_until_caught_up());
        assert!(
            matches!(&run, Err(e) if layout_changed(e, Some(1))),
            "{policy:?}: {run:?}"
        );
        assert!(processor.skipped().is_empty());
        assert_eq!(processor.handler().0, 0);
        assert_eq!(storage.processors().unwrap(), []);
    }
}

/// A subscription hands over the error for each event its type cannot read: never a silent
/// skip, never a value.
#[test]
fn a_subscription_reports_each_event_of_a_changed_layout() {
    let dir = tempfile::tempdir().unwrap();
    let storage = three_items(dir.path());
    let reader = Reader::<swapped::ItemAdded>::new(storage.clone());
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let items = rt.block_on(async {
        let mut items = Vec::new();
        loop {
            match sub.next().await.unwrap() {
                Ok(SubscriptionItem::CaughtUp) => return items,
                Ok(SubscriptionItem::Event(e)) => items.push(Ok(e.seq())),
                Err(e) => items.push(Err(e)),
            }
        }
    });
    assert_eq!(items.len(), 3);
    for (i, item) in items.iter().enumerate() {
        assert!(
            matches!(item, Err(e) if layout_changed(e, Some(i as u64 + 1))),
            "{item:?}"
        );
    }
}

mod plain {
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    pub struct Note {
        pub text: String,
        pub at: u64,
    }
}

mod with_derives {
    /// `plain::Note` with derives on its archived type: the bytes are the same.
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event, Debug, PartialEq)]
    #[rkyv(derive(Debug), compare(PartialEq))]
    pub struct Note {
        pub text: String,
        pub at: u64,
    }
}

mod boxed {
    /// `plain::Note` with its text archived through a wrapper: other bytes.
    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    pub struct Note {
        #[rkyv(with = rkyv::with::AsBox)]
        pub text: String,
        pub at: u64,
    }
}

#[test]
fn fingerprints_follow_the_archived_bytes_not_the_source() {
    let plain = <plain::Note as Layout>::LAYOUT;
    assert_eq!(plain, <with_derives::Note as Layout>::LAYOUT);
    assert_ne!(plain, <boxed::Note as Layout>::LAYOUT);
    // A Rust type renamed with its event name kept is the same layout.
    assert_eq!(
        <before::ItemAdded as Layout>::LAYOUT,
        <renamed_type::LineAdded as Layout>::LAYOUT
    );
    assert_ne!(
        <before::ItemAdded as Layout>::LAYOUT,
        <renamed_field::ItemAdded as Layout>::LAYOUT
    );
}
