//! Typed upcasting: a reader of the newest version of an event type reads every older version
//! through the steps between frozen types, on every read path, zero-copy for the newest version
//! only; a frozen type that changed is an error, never wrong data.

use std::ops::ControlFlow;

use varvedb::{
    Direction, Error, EventHandler, Filter, NewEvent, Processor, Reader, StartFrom, Storage,
    StorageConfig, SubscriptionItem, Writer,
};

mod items;

use items::{ArchivedItemAddedV2, ArchivedLineAdded, ItemAddedV1, ItemAddedV2, LineAdded};

fn open(dir: &std::path::Path, encrypted: bool) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        map_size: 4 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([5; 32]),
        ..Default::default()
    })
    .unwrap()
}

/// Stream 1: two events of version 1, one of version 2, one of version 3; stream 2: one of
/// each, newest first. Returns what a reader of version 3 must see, in log order.
fn fill(storage: &Storage) -> Vec<(u64, LineAdded, bool)> {
    let mut v1 = Writer::<ItemAddedV1>::new(storage.clone());
    let mut v2 = Writer::<ItemAddedV2>::new(storage.clone());
    let mut v3 = Writer::<LineAdded>::new(storage.clone());
    let line = |sku: &str, quantity: u64, note: &str| LineAdded {
        sku: sku.into(),
        quantity,
        note: note.into(),
    };
    v1.append(
        1u64,
        1,
        ItemAddedV1 {
            sku: "a".into(),
            qty: 1,
        },
    )
    .unwrap();
    v1.append_batch(
        1u64,
        varvedb::ExpectedVersion::Exact(1),
        [NewEvent::new(ItemAddedV1 {
            sku: "b".into(),
            qty: 2,
        })
        .with_metadata(b"m".to_vec())],
    )
    .unwrap();
    v2.append(
        1u64,
        3,
        ItemAddedV2 {
            sku: "c".into(),
            qty: 3,
            note: Some("gift".into()),
        },
    )
    .unwrap();
    v3.append(1u64, 4, line("d", 4, "new")).unwrap();
    v3.append(2u64, 1, line("e", 5, "new")).unwrap();
    v2.append(
        2u64,
        2,
        ItemAddedV2 {
            sku: "f".into(),
            qty: 6,
            note: None,
        },
    )
    .unwrap();
    v1.append(
        2u64,
        3,
        ItemAddedV1 {
            sku: "g".into(),
            qty: 7,
        },
    )
    .unwrap();
    vec![
        (1, line("a", 1, "-"), true),
        (2, line("b", 2, "-"), true),
        (3, line("c", 3, "gift"), true),
        (4, line("d", 4, "new"), false),
        (5, line("e", 5, "new"), false),
        (6, line("f", 6, "-"), true),
        (7, line("g", 7, "-"), true),
    ]
}

fn owned(e: &varvedb::EventView<'_, LineAdded>) -> LineAdded {
    e.deserialize().unwrap()
}

/// Every read path of the newest type reads every version, upcast.
fn every_path_reads_every_version(storage: &Storage, want: &[(u64, LineAdded, bool)]) {
    let reader = Reader::<LineAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for (seq, value, upcast) in want {
        let e = reader.get(&txn, *seq).unwrap().unwrap();
        assert_eq!(&owned(&e), value, "get({seq})");
        assert_eq!(e.is_upcast(), *upcast);
        assert!(!e.is_copied());
    }
    // The envelope keeps what was stored: the old name and version, and the metadata.
    let e = reader.get(&txn, 2).unwrap().unwrap();
    let env = e.envelope();
    assert_eq!((env.event_type, env.schema_version), ("ItemAdded", 1));
    assert_eq!(env.metadata, Some(&b"m"[..]));
    assert_eq!(
        owned(&reader.last_in_stream(&txn, 2u64).unwrap().unwrap()),
        want[6].1
    );
    let log: Vec<(u64, LineAdded)> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.seq(), owned(&e))
        })
        .collect();
    let expected: Vec<(u64, LineAdded)> = want.iter().map(|(s, v, _)| (*s, deep(v))).collect();
    assert_eq!(log, expected);
    let stream2: Vec<u64> = reader
        .read_stream(&txn, 2u64, u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().quantity.to_native())
        .collect();
    assert_eq!(stream2, [7, 6, 5]);
    drop(txn);
    let mut walked = Vec::new();
    reader
        .for_each_in_log(1, Direction::Forward, |e| {
            walked.push((e.seq(), owned(&e)));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(walked, expected);

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
    assert_eq!(delivered, expected);
    // A filter on the type's name stands for the type: its older versions, under the name
    // they had, are delivered too.
    let mut named = reader
        .subscribe(StartFrom::Start, Filter::default().event_type("LineAdded"))
        .unwrap();
    let seqs = rt.block_on(async {
        let mut out = Vec::new();
        while let SubscriptionItem::Event(e) = named.next().await.unwrap().unwrap() {
            out.push(e.seq());
        }
        out
    });
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);

    struct Collect(Vec<u64>);
    impl EventHandler<LineAdded> for Collect {
        fn handle(&mut self, e: &ArchivedLineAdded) -> varvedb::Result<()> {
            self.0.push(e.quantity.to_native());
            Ok(())
        }
    }
    let mut processor = Processor::new(
        reader.clone(),
        Collect(Vec::new()),
        "lines",
        storage.subscribe(),
    );
    assert_eq!(rt.block_on(processor.run_until_caught_up()).unwrap(), 7);
    assert_eq!(processor.handler().0, [1, 2, 3, 4, 5, 6, 7]);
}

fn deep(v: &LineAdded) -> LineAdded {
    LineAdded {
        sku: v.sku.clone(),
        quantity: v.quantity,
        note: v.note.clone(),
    }
}

#[test]
fn the_newest_type_reads_every_older_version_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    let want = fill(&storage);
    every_path_reads_every_version(&storage, &want);
}

#[test]
fn upcasting_works_in_an_encrypted_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), true);
    let want = fill(&storage);
    every_path_reads_every_version(&storage, &want);
}

/// A reader of a middle version reads the versions up to its own; the newer version, stored
/// under a new name, is an error to it on every path (the store recorded the rename), never a
/// type it passes over.
#[test]
fn a_middle_version_reads_up_to_itself_and_meets_the_renamed_version_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    // Made before the renamed type was ever written: scans follow renames as the store has
    // them when they read.
    let reader = Reader::<ItemAddedV2>::new(storage.clone());
    fill(&storage);
    let txn = storage.read_txn().unwrap();
    let renamed = |e: &Error, at: u64| {
        matches!(e, Error::RenamedEventType { event_type, version: 3, seq: Some(seq) }
            if event_type == "LineAdded" && *seq == at)
    };
    let read: Vec<Result<(u64, u32), Error>> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.map(|e| (e.seq(), e.qty.to_native())))
        .collect();
    assert_eq!(read.len(), 7);
    assert!(
        renamed(read[3].as_ref().unwrap_err(), 4),
        "{:?}",
        read[3].as_ref().err()
    );
    assert!(renamed(read[4].as_ref().unwrap_err(), 5));
    let ok: Vec<(u64, u32)> = read.into_iter().filter_map(Result::ok).collect();
    assert_eq!(ok, [(1, 1), (2, 2), (3, 3), (6, 6), (7, 7)]);
    assert!(renamed(&reader.get(&txn, 4).err().unwrap(), 4));
    let stream1: Vec<Result<u64, Error>> = reader
        .read_stream(&txn, 1u64, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.map(|e| e.version()))
        .collect();
    assert_eq!(stream1.len(), 4);
    assert!(renamed(stream1[3].as_ref().unwrap_err(), 4));
    drop(txn);
    let walked = reader.for_each_in_log(1, Direction::Forward, |_| ControlFlow::Continue(()));
    assert!(renamed(&walked.unwrap_err(), 4));

    // A processor stops there whatever its policy, its checkpoint before the event.
    struct Nothing;
    impl EventHandler<ItemAddedV2> for Nothing {
        fn handle(&mut self, _: &ArchivedItemAddedV2) -> varvedb::Result<()> {
            Ok(())
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut processor = Processor::new(reader.clone(), Nothing, "old", storage.subscribe())
        .with_error_policy(varvedb::ErrorPolicy::Skip);
    let stopped = rt.block_on(processor.run_until_caught_up()).unwrap_err();
    assert!(renamed(&stopped, 4), "{stopped}");
    assert_eq!(processor.checkpoint().unwrap(), 3);
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap();
    let items = rt.block_on(async {
        let mut out = Vec::new();
        loop {
            match sub.next().await.unwrap() {
                Ok(SubscriptionItem::Event(e)) => out.push(Ok(e.seq())),
                Ok(SubscriptionItem::CaughtUp) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    });
    assert_eq!(items.len(), 7);
    assert!(renamed(items[3].as_ref().unwrap_err(), 4));

    // The oldest type names the newer versions of its own name, and never reads them.
    let oldest = Reader::<ItemAddedV1>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        oldest.get(&txn, 3),
        Err(Error::UnknownSchemaVersion {
            seq: 3,
            stored: 2,
            current: 1,
            ..
        })
    ));
    assert!(renamed(&oldest.get(&txn, 5).err().unwrap(), 5));
}

mod other_branch {
    /// A version 3 of `ItemAdded` of another build, which never renamed it.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded", version = 3)]
    pub struct ItemAdded {
        pub sku: String,
    }
}

/// Once the store keeps version 3 of the type under its new name, version 3 under the old name
/// is refused to writers: it would be another event of the same version.
#[test]
fn a_version_the_store_keeps_under_a_new_name_is_refused_to_writers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    fill(&storage);
    let refused = Writer::<other_branch::ItemAdded>::new(storage.clone()).append(
        3u64,
        1,
        other_branch::ItemAdded { sku: "x".into() },
    );
    assert!(
        matches!(
            &refused,
            Err(Error::RenamedEventType { event_type, version: 3, seq: None }) if event_type == "ItemAdded"
        ),
        "{refused:?}"
    );
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

mod edited {
    /// Version 1 "frozen" type, edited after its events were stored: a field swapped.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded", version = 1)]
    pub struct ItemAddedV1 {
        pub qty: u32,
        pub sku: String,
    }

    /// The current version, upcasting from the edited type.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    #[event(name = "ItemAdded", version = 2, previous = ItemAddedV1)]
    pub struct ItemAdded {
        pub sku: String,
        pub qty: u32,
        pub note: Option<String>,
    }

    impl varvedb::Upcast<ItemAddedV1> for ItemAdded {
        fn upcast(old: ItemAddedV1) -> Self {
            ItemAdded {
                sku: old.sku,
                qty: old.qty,
                note: None,
            }
        }
    }
}

/// An upcaster from a frozen type that was edited reads nothing with it: the store recorded
/// the layout the old events were written with.
#[test]
fn an_edited_frozen_type_is_an_error_not_an_upcast() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), false);
    fill(&storage);
    let reader = Reader::<edited::ItemAdded>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 1),
        Err(Error::LayoutChanged {
            version: 1,
            seq: Some(1),
            ..
        })
    ));
    // Version 2 events are its own, of the layout it has: read as they are.
    assert_eq!(reader.get(&txn, 3).unwrap().unwrap().qty, 3);
    assert!(!reader.get(&txn, 3).unwrap().unwrap().is_upcast());
}
