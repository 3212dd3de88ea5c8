//! Stream names and categories: appends by name record the name with the stream's first event,
//! reads by name, collisions refused, and reads of categories and event types from the label
//! index, in both directions and from a position, across reopens.

mod common;

use varvedb::{
    Direction, Error, EventHandler, ExpectedVersion, Filter, Processor, Reader, Storage,
    StorageConfig, StreamName, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Placed {
    pub n: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Shipped {
    pub n: u64,
}

/// Both types, as one reader reads them.
#[derive(varvedb::EventSet)]
pub enum Any {
    Placed(Placed),
    Shipped(Shipped),
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

/// The `n` of every event a read of `filter` yields, with its sequence.
fn read(storage: &Storage, filter: &Filter, from: u64, direction: Direction) -> Vec<(u64, u64)> {
    let reader = Reader::<Any>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    reader
        .read_filtered(&txn, filter, from, direction)
        .unwrap()
        .map(|view| {
            let view = view.unwrap();
            let n = match &view {
                AnyView::Placed(v) => v.n.to_native(),
                AnyView::Shipped(v) => v.n.to_native(),
            };
            (view.envelope().seq, n)
        })
        .collect()
}

/// What the store holds, written in this order (sequences 1 to 9):
/// order-1: P1 S2 P6 · invoice-1: P3 · order-2: P4 S7 · 5 (by id): P5 · account:command-1: P8
/// · order-1: S9
///
/// `flush_after`: flush the index (the stream and label indexes, written behind the log) after
/// that many events, so that reads meet the events partly in the label index, partly only in
/// the log.
fn fill_flushed(storage: &Storage, flush_after: Option<u64>) {
    fill_with(storage, &mut |written| {
        if Some(written) == flush_after {
            storage.flush_index().unwrap();
        }
    });
}

fn fill(storage: &Storage) {
    fill_with(storage, &mut |_| {});
}

/// The stores of every flush mode: none, after event 5, after every event.
fn filled() -> Vec<(tempfile::TempDir, Storage)> {
    [None, Some(5), Some(9)]
        .into_iter()
        .map(|flush_after| {
            let dir = tempfile::tempdir().unwrap();
            let storage = open(&dir);
            fill_flushed(&storage, flush_after);
            (dir, storage)
        })
        .collect()
}

fn fill_with(storage: &Storage, after: &mut dyn FnMut(u64)) {
    let mut placed = Writer::<Placed>::new(storage.clone());
    let mut shipped = Writer::<Shipped>::new(storage.clone());
    placed.append("order-1", 1, Placed { n: 1 }).unwrap();
    after(1);
    shipped.append("order-1", 2, Shipped { n: 2 }).unwrap();
    after(2);
    placed
        .append(String::from("invoice-1"), 1, Placed { n: 3 })
        .unwrap();
    after(3);
    placed
        .append(StreamName::new("order-2").unwrap(), 1, Placed { n: 4 })
        .unwrap();
    after(4);
    placed.append(5u64, 1, Placed { n: 5 }).unwrap();
    after(5);
    placed.append("order-1", 3, Placed { n: 6 }).unwrap();
    after(6);
    shipped.append("order-2", 2, Shipped { n: 7 }).unwrap();
    after(7);
    placed
        .append_batch(
            "account:command-1",
            ExpectedVersion::NoStream,
            [Placed { n: 8 }],
        )
        .unwrap();
    after(8);
    // An append by id to a named stream still lists the event in its category.
    let order_1 = StreamName::new("order-1").unwrap().stream_id();
    shipped.append(order_1, 4, Shipped { n: 9 }).unwrap();
    after(9);
}

#[test]
fn appends_by_name_record_the_name_and_reads_find_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    fill(&storage);
    let reader = Reader::<Placed>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let order_1: Vec<u64> = reader
        .read_stream(&txn, "order-1", 1, Direction::Forward)
        .unwrap()
        .filter_map(|v| v.ok().map(|v| v.n.to_native()))
        .collect();
    assert_eq!(order_1, [1, 6]);
    let name = reader.stream_name(&txn, "order-1").unwrap().unwrap();
    assert_eq!(name.as_str(), "order-1");
    assert_eq!(name.category(), "order");
    let name = reader
        .stream_name(
            &txn,
            StreamName::new("account:command-1").unwrap().stream_id(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(name.entity(), "account");
    assert_eq!(name.category_types().collect::<Vec<_>>(), ["command"]);
    // A stream created by id has no name; one without events neither.
    assert_eq!(reader.stream_name(&txn, 5u64).unwrap(), None);
    assert_eq!(reader.stream_name(&txn, "order-404").unwrap(), None);
    // The event's envelope names the stream by its id.
    let view = reader.get(&txn, 1).unwrap().unwrap();
    assert_eq!(
        view.stream(),
        StreamName::new("order-1").unwrap().stream_id()
    );
}

#[test]
fn categories_read_in_global_order_both_ways_and_from_a_position() {
    for (_dir, storage) in filled() {
        categories_of(&storage);
    }
}

fn categories_of(storage: &Storage) {
    let storage = storage.clone();
    let orders = Filter::default().category("order");
    assert_eq!(
        read(&storage, &orders, 1, Direction::Forward),
        [(1, 1), (2, 2), (4, 4), (6, 6), (7, 7), (9, 9)]
    );
    assert_eq!(
        read(&storage, &orders, 5, Direction::Forward),
        [(6, 6), (7, 7), (9, 9)]
    );
    assert_eq!(
        read(&storage, &orders, u64::MAX, Direction::Backward),
        [(9, 9), (7, 7), (6, 6), (4, 4), (2, 2), (1, 1)]
    );
    assert_eq!(
        read(&storage, &orders, 5, Direction::Backward),
        [(4, 4), (2, 2), (1, 1)]
    );
    // A category with types is its own category.
    let commands = Filter::default().category("account:command");
    assert_eq!(read(&storage, &commands, 1, Direction::Forward), [(8, 8)]);
    assert!(read(
        &storage,
        &Filter::default().category("account"),
        1,
        Direction::Forward
    )
    .is_empty());
    // Categories together, and with a stream: (categories ∪ streams).
    let two = Filter::default().category("order").category("invoice");
    assert_eq!(
        read(&storage, &two, 1, Direction::Forward)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 6, 7, 9]
    );
    let with_stream = Filter::default().category("invoice").stream(5u64);
    assert_eq!(
        read(&storage, &with_stream, 1, Direction::Forward),
        [(3, 3), (5, 5)]
    );
    let backward = read(&storage, &with_stream, u64::MAX, Direction::Backward);
    assert_eq!(backward, [(5, 5), (3, 3)]);
    // AND event types.
    let shipped_orders = Filter::default().category("order").event_type("Shipped");
    assert_eq!(
        read(&storage, &shipped_orders, 1, Direction::Forward),
        [(2, 2), (7, 7), (9, 9)]
    );
    // A category nobody wrote to is empty, not an error.
    assert!(read(
        &storage,
        &Filter::default().category("nobody"),
        1,
        Direction::Forward
    )
    .is_empty());
    // The typed reader's own read of one category.
    let reader = Reader::<Shipped>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let ns: Vec<u64> = reader
        .read_category(&txn, "order", 1, Direction::Forward)
        .unwrap()
        .map(|v| v.unwrap().n.to_native())
        .collect();
    assert_eq!(ns, [2, 7, 9]);
}

#[test]
fn event_types_read_from_the_label_index() {
    for (_dir, storage) in filled() {
        event_types_of(&storage);
    }
}

fn event_types_of(storage: &Storage) {
    let storage = storage.clone();
    let shipped = Filter::default().event_type("Shipped");
    assert_eq!(
        read(&storage, &shipped, 1, Direction::Forward),
        [(2, 2), (7, 7), (9, 9)]
    );
    assert_eq!(
        read(&storage, &shipped, 8, Direction::Backward),
        [(7, 7), (2, 2)]
    );
    let placed = Filter::default().event_type("Placed");
    assert_eq!(
        read(&storage, &placed, 4, Direction::Forward)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        [4, 5, 6, 8]
    );
}

#[test]
fn names_and_labels_survive_a_reopen_and_keep_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        fill(&storage);
    }
    let storage = open(&dir);
    // More events after the reopen go into the same categories.
    let mut placed = Writer::<Placed>::new(storage.clone());
    placed.append("order-3", 1, Placed { n: 10 }).unwrap();
    placed.append("invoice-1", 2, Placed { n: 11 }).unwrap();
    let orders = Filter::default().category("order").event_type("Placed");
    assert_eq!(
        read(&storage, &orders, 1, Direction::Forward)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        [1, 4, 6, 10]
    );
    let invoices = Filter::default().category("invoice");
    assert_eq!(
        read(&storage, &invoices, 1, Direction::Forward),
        [(3, 3), (11, 11)]
    );
}

#[test]
fn a_name_that_maps_to_a_stream_created_by_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Placed>::new(storage.clone());
    let id = StreamName::new("order-1").unwrap().stream_id();
    writer.append(id, 1, Placed { n: 1 }).unwrap();
    let e = writer.append("order-1", 2, Placed { n: 2 }).unwrap_err();
    match e {
        Error::StreamNameConflict {
            stream,
            name,
            existing,
        } => {
            assert_eq!(stream, id);
            assert_eq!(name, "order-1");
            assert_eq!(existing, None);
        }
        other => panic!("expected a name conflict, got {other}"),
    }
    // Nothing was written, and the stream goes on by id.
    let reader = Reader::<Placed>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .count(),
        1
    );
    assert_eq!(reader.stream_name(&txn, id).unwrap(), None);
    drop(txn);
    writer.append(id, 2, Placed { n: 2 }).unwrap();
    // The same in a multi-stream transaction: the whole transaction fails.
    let mut txn = writer.transaction();
    txn.append("order-9", 1, Placed { n: 3 }).unwrap();
    txn.append("order-1", 3, Placed { n: 4 }).unwrap();
    assert!(matches!(
        txn.commit(),
        Err(Error::StreamNameConflict { .. })
    ));
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .count(),
        2
    );
    assert_eq!(reader.stream_name(&txn, "order-9").unwrap(), None);
}

#[test]
fn names_that_do_not_parse_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Placed>::new(storage.clone());
    for bad in ["", "-1", "order-", "a\nb-1"] {
        assert!(
            matches!(
                writer.append(bad, 1, Placed { n: 1 }),
                Err(Error::InvalidStreamName { .. })
            ),
            "{bad:?}"
        );
    }
    let reader = Reader::<Any>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for filter in [
        Filter::default().stream("-1"),
        Filter::default().category(""),
        Filter::default().category("order-1"),
    ] {
        assert!(matches!(
            reader.read_filtered(&txn, &filter, 1, Direction::Forward),
            Err(Error::InvalidStreamName { .. })
        ));
    }
    assert_eq!(
        reader
            .read_log(&txn, 1, Direction::Forward)
            .unwrap()
            .count(),
        0
    );
}

/// Counts what it handles, by `n`.
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl EventHandler<Placed> for Seen {
    fn handle(&mut self, event: &ArchivedPlaced) -> varvedb::Result<()> {
        self.0.lock().unwrap().push(event.n.to_native());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_and_a_subscription_of_one_category() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    fill(&storage);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut processor = Processor::new(
        Reader::<Placed>::new(storage.clone()),
        Seen(seen.clone()),
        "orders",
        storage.subscribe(),
    )
    .with_filter(Filter::default().category("order"));
    let stop = processor.stop_handle();
    let task = tokio::spawn(async move { processor.run().await });
    // Written while it runs.
    let mut placed = Writer::<Placed>::new(storage.clone());
    placed.append("order-5", 1, Placed { n: 12 }).unwrap();
    placed.append("invoice-5", 1, Placed { n: 13 }).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.stop();
    task.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 4, 6, 12]);
    // The checkpoint is a global position.
    let reader = Reader::<Placed>::new(storage.clone());
    let mut sub = reader
        .subscribe(
            varvedb::StartFrom::Start,
            Filter::default().category("invoice"),
        )
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match sub.next().await.unwrap().unwrap() {
            varvedb::SubscriptionItem::Event(e) => got.push(e.n.to_native()),
            varvedb::SubscriptionItem::CaughtUp => {}
        }
    }
    assert_eq!(got, [3, 13]);
}

#[test]
fn verify_checks_names_and_the_label_index() {
    for (_dir, storage) in filled() {
        let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.named_streams, 4);
        // Labels: categories order, invoice, account:command; types Placed, Shipped (once the
        // flush listed them).
        assert!(report.labels >= 3, "{}", report.labels);
    }
    let (_dir, storage) = filled().pop().unwrap();
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    // All nine events under their type, and the eight of named streams under their category.
    assert_eq!((report.labels, report.label_entries), (5, 17));
}

/// Lists the event at `seq` under the label `label_of` (its `labels` key) in the `label_index`
/// of the closed store at `dir`, with raw heed: the label's runs are rewritten as one, `seq` in
/// its place among the others, checksummed as the store would (`docs/format.md`).
fn put_label_entry(dir: &std::path::Path, label_of: &[u8], seq: u64) {
    // SAFETY: the store is closed in this process and no other process has it open.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(16).open(dir) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let (labels, index) = env
        .open_databases_and_commit(rtxn, |opener, rtxn| -> heed::Result<_> {
            use heed::types::Bytes;
            let labels = opener.open_database::<Bytes, Bytes>(rtxn, Some("labels"))?;
            let index = opener.open_database::<Bytes, Bytes>(rtxn, Some("label_index"))?;
            Ok(heed::CommitOrAbort::<_, ()>::Commit((labels, index)))
        })
        .unwrap()
        .unwrap_commit();
    let (labels, index) = (labels.unwrap(), index.unwrap());
    let mut wtxn = env.write_txn().unwrap();
    let id = labels.get(&wtxn, label_of).unwrap().unwrap()[..4].to_vec();
    let id = u32::from_le_bytes(id.try_into().unwrap());
    let key_of = |seq: u64| {
        let mut key = id.to_be_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        key
    };
    let (lo, hi) = (key_of(0), key_of(u64::MAX));
    let mut keys = Vec::new();
    let mut seqs = vec![seq];
    let bounds = (
        std::ops::Bound::Included(&lo[..]),
        std::ops::Bound::Included(&hi[..]),
    );
    for entry in index.range(&wtxn, &bounds).unwrap() {
        let (key, value) = entry.unwrap();
        keys.push(key.to_vec());
        let listed = &value[..value.len() - 4];
        seqs.extend(
            listed
                .chunks(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap())),
        );
    }
    seqs.sort_unstable();
    for key in keys {
        index.delete(&mut wtxn, &key).unwrap();
    }
    let key = key_of(seqs[0]);
    let mut value: Vec<u8> = seqs.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut checked = key.clone();
    checked.extend_from_slice(&value);
    value.extend_from_slice(&common::crc32c(&checked).to_le_bytes());
    index.put(&mut wtxn, &key, &value).unwrap();
    wtxn.commit().unwrap();
}

#[test]
fn a_label_entry_that_lists_another_event_is_an_error_never_that_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        fill_flushed(&storage, Some(9));
    }
    // Sequence 2 is a Shipped of order-1; list it under Placed, and under category invoice.
    put_label_entry(dir.path(), b"tPlaced", 2);
    put_label_entry(dir.path(), b"cinvoice", 2);
    let storage = open(&dir);
    let reader = Reader::<Any>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for filter in [
        Filter::default().event_type("Placed"),
        Filter::default().category("invoice"),
    ] {
        let items: Vec<_> = reader
            .read_filtered(&txn, &filter, 1, Direction::Forward)
            .unwrap()
            .collect();
        let failed: Vec<u64> = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|e| {
                assert!(e.is_corruption(), "{e}");
                e.seq().unwrap()
            })
            .collect();
        assert_eq!(failed, [2], "{filter:?}");
        // Nothing of another type or category came out.
        for item in items.iter().flatten() {
            assert_ne!(item.envelope().seq, 2);
        }
    }
    drop(txn);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    let labels: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == varvedb::admin::ProblemKind::Labels)
        .map(|p| p.seq)
        .collect();
    assert_eq!(labels, [Some(2), Some(2)], "{:?}", report.problems);
}

/// A processor's checkpoint interval counts the events handed to its handler: one whose filter
/// takes one category of ten commits as often per handled event as one that takes everything,
/// not once per `checkpoint_every` events of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_processor_checkpoints_by_the_events_it_handles() {
    /// Records, for each event, the checkpoint committed when it was handled.
    struct Watch {
        storage: Storage,
        seen: Vec<(u64, u64)>,
    }
    impl EventHandler<Placed> for Watch {
        fn handle(&mut self, _event: &ArchivedPlaced) -> varvedb::Result<()> {
            unreachable!("handle_envelope is implemented")
        }
        fn handle_envelope(
            &mut self,
            envelope: &varvedb::Envelope<'_>,
            _event: &ArchivedPlaced,
        ) -> varvedb::Result<()> {
            let checkpoint = self
                .storage
                .processors()?
                .into_iter()
                .find(|(name, _)| name == "one-category")
                .map_or(0, |(_, c)| c);
            self.seen.push((envelope.seq, checkpoint));
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Placed>::new(storage.clone());
    for n in 0..1_000u64 {
        let stream = format!("cat{}-{}", n % 10, n % 70);
        writer
            .append(stream.as_str(), n / 70 + 1, Placed { n })
            .unwrap();
    }
    let mut processor = Processor::new(
        Reader::<Placed>::new(storage.clone()),
        Watch {
            storage: storage.clone(),
            seen: Vec::new(),
        },
        "one-category",
        storage.subscribe(),
    )
    .with_filter(Filter::default().category("cat3"))
    .with_checkpoint_every(10)
    .with_checkpoint_interval(std::time::Duration::from_secs(3600));
    processor.run_until_caught_up().await.unwrap();
    let seen = &processor.handler().seen;
    assert_eq!(seen.len(), 100, "one event in ten is of cat3");
    // The checkpoint moves after every tenth handled event, to that event.
    for (i, &(_, checkpoint)) in seen.iter().enumerate() {
        let want = if i < 10 { 0 } else { seen[i / 10 * 10 - 1].0 };
        assert_eq!(checkpoint, want, "checkpoint when handling the {i}th event");
    }
}
