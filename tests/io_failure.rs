//! After a write fails at the I/O level, the store refuses every write until it is reopened,
//! shows nothing of the failed write, and a reopen finds everything that was acknowledged.
//!
//! Each test makes one kind of write transaction fail at its commit as a failing disk would
//! (`varvedb::failpoints`: LMDB's `EIO`, the transaction aborted), then checks every kind of
//! write, the reads, and a reopen. `tests/disk_full.rs` shows the same with a real full disk.
#![cfg(feature = "failpoints")]

use std::collections::BTreeMap;

use varvedb::admin::{ImportEvent, Importer};
use varvedb::failpoints::{fail_next_commit, WriteKind};
use varvedb::heed::types::Bytes;
use varvedb::heed::RwTxn;
use varvedb::{
    Direction, Envelope, Error, EventHandler, ExpectedVersion, Processor, Projection, Projector,
    Reader, Storage, StorageConfig, StreamId, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Ev {
    pub n: u64,
}

const MASTER: [u8; 32] = [3; 32];
const NEW_MASTER: [u8; 32] = [4; 32];

fn config(dir: &std::path::Path, encrypted: bool, master: [u8; 32]) -> StorageConfig {
    StorageConfig {
        path: dir.to_path_buf(),
        map_size: 1 << 20,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some(master),
        ..Default::default()
    }
}

/// What the test acknowledged: stream → the `n` of its events, in version order.
type Acked = BTreeMap<u128, Vec<u64>>;

/// A store with 12 acknowledged events in streams 1..=3 (and their keys, when encrypted).
fn seeded(dir: &std::path::Path, encrypted: bool) -> (Storage, Acked) {
    let storage = Storage::open(config(dir, encrypted, MASTER)).unwrap();
    let mut writer = Writer::<Ev>::new(storage.clone());
    let mut acked = Acked::new();
    for n in 1..=12u64 {
        let stream = u128::from(n % 3 + 1);
        writer
            .append_batch(stream, ExpectedVersion::Any, [Ev { n }])
            .unwrap();
        acked.entry(stream).or_default().push(n);
    }
    (storage, acked)
}

/// The error of a write that failed at the I/O level: LMDB's `EIO`, as heed reports it.
fn is_io_failure(e: &Error) -> bool {
    matches!(e, Error::Lmdb(varvedb::heed::Error::Io(io)) if io.raw_os_error() == Some(5))
}

/// Asserts that `result` is the injected failure.
fn failed_at_io<T>(what: &str, result: Result<T, Error>) {
    match result {
        Err(e) if is_io_failure(&e) => {}
        Err(e) => panic!("{what}: expected the injected I/O failure, got {e:?}"),
        Ok(_) => panic!("{what}: succeeded although its commit was made to fail"),
    }
}

fn poisoned<T>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Poisoned) => {}
        Err(e) => panic!("{what}: expected Error::Poisoned, got {e:?}"),
        Ok(_) => panic!("{what}: a poisoned store took a write"),
    }
}

struct Count(u64);
impl EventHandler<Ev> for Count {
    fn handle(&mut self, _event: &ArchivedEv) -> varvedb::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

/// A projection that counts events per stream in its own database.
struct PerStream(varvedb::heed::Database<'static, Bytes, Bytes>);
impl Projection<Ev> for PerStream {
    fn apply(
        &mut self,
        txn: &mut RwTxn<'_>,
        envelope: &Envelope<'_>,
        _event: &ArchivedEv,
    ) -> varvedb::Result<()> {
        let key = envelope.stream.as_u128().to_be_bytes();
        let old = self
            .0
            .get(txn, &key)?
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        self.0.put(txn, &key, &(old + 1).to_le_bytes())?;
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every kind of write the store offers is refused with `Error::Poisoned`.
fn refuses_every_write(storage: &Storage, encrypted: bool) {
    let mut writer = Writer::<Ev>::new(storage.clone());
    poisoned("append", writer.append(1, 99, Ev { n: 0 }));
    poisoned(
        "append_batch",
        writer.append_batch(7, ExpectedVersion::Any, [Ev { n: 0 }]),
    );
    let rt = runtime();
    poisoned(
        "append_async",
        rt.block_on(writer.append_batch_async(7, ExpectedVersion::Any, [Ev { n: 0 }])),
    );
    let mut tx = writer.transaction();
    tx.append_batch(1, ExpectedVersion::Any, [Ev { n: 0 }])
        .unwrap();
    tx.append_batch(2, ExpectedVersion::Any, [Ev { n: 0 }])
        .unwrap();
    poisoned("transaction", tx.commit());
    poisoned("flush_index", storage.flush_index());
    poisoned("reset_processor", storage.reset_processor("counter", 0));
    poisoned(
        "projection_database",
        storage.projection_database("elsewhere"),
    );
    if storage.head() > 0 {
        // A processor with events to handle must commit a checkpoint.
        let mut processor = Processor::new(
            Reader::<Ev>::new(storage.clone()),
            Count(0),
            "poisoned-counter",
            storage.subscribe(),
        );
        poisoned(
            "processor checkpoint",
            rt.block_on(processor.run_until_caught_up()),
        );
    }
    if encrypted {
        poisoned("shred", storage.shred_stream(2));
        poisoned("rotate", storage.rotate_master_key(NEW_MASTER));
    }
}

/// The log holds exactly what was acknowledged, in every stream.
fn holds_exactly(storage: &Storage, acked: &Acked) {
    let reader = Reader::<Ev>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let mut found = Acked::new();
    for event in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        let event = event.unwrap();
        found
            .entry(event.stream().as_u128())
            .or_default()
            .push(event.n.to_native());
    }
    assert_eq!(
        &found, acked,
        "the log holds what was acknowledged, nothing more"
    );
    for (stream, ns) in acked {
        assert_eq!(
            reader.stream_version(&txn, *stream).unwrap(),
            ns.len() as u64
        );
        let by_stream: Vec<u64> = reader
            .read_stream(&txn, *stream, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().n.to_native())
            .collect();
        assert_eq!(&by_stream, ns);
    }
}

/// Reopens the store (with `master`) and checks it holds what was acknowledged, verifies clean
/// and takes writes again.
fn reopens_whole(dir: &std::path::Path, encrypted: bool, master: [u8; 32], acked: &mut Acked) {
    let storage = Storage::open(config(dir, encrypted, master)).unwrap();
    holds_exactly(&storage, acked);
    let report = varvedb::admin::verify(&storage, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "verify after reopen: {:?}", report.problems);
    let mut writer = Writer::<Ev>::new(storage.clone());
    writer
        .append_batch(1, ExpectedVersion::Any, [Ev { n: 1000 }])
        .unwrap();
    acked.entry(1).or_default().push(1000);
    holds_exactly(&storage, acked);
}

/// One kind of failure, end to end: `fail` makes the write of `kind` that fails.
fn failure_poisons_until_reopen(
    kind: WriteKind,
    encrypted: bool,
    fail: impl FnOnce(&Storage, &mut Acked),
) {
    let dir = tempfile::tempdir().unwrap();
    let (storage, mut acked) = seeded(dir.path(), encrypted);
    fail_next_commit(&storage, kind);
    fail(&storage, &mut acked);
    refuses_every_write(&storage, encrypted);
    holds_exactly(&storage, &acked);
    drop(storage);
    reopens_whole(dir.path(), encrypted, MASTER, &mut acked);
}

#[test]
fn a_failed_append_poisons_the_store() {
    for encrypted in [false, true] {
        failure_poisons_until_reopen(WriteKind::Append, encrypted, |storage, _| {
            let mut writer = Writer::<Ev>::new(storage.clone());
            failed_at_io(
                "append",
                writer.append_batch(1, ExpectedVersion::Exact(4), [Ev { n: 50 }, Ev { n: 51 }]),
            );
        });
    }
}

#[test]
fn a_failed_async_append_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::Append, false, |storage, _| {
        let mut writer = Writer::<Ev>::new(storage.clone());
        failed_at_io(
            "append_async",
            runtime().block_on(writer.append_async(2, 5, Ev { n: 50 })),
        );
    });
}

#[test]
fn a_failed_transaction_poisons_the_store() {
    for encrypted in [false, true] {
        failure_poisons_until_reopen(WriteKind::Transaction, encrypted, |storage, _| {
            let mut writer = Writer::<Ev>::new(storage.clone());
            let mut tx = writer.transaction();
            tx.append_batch(1, ExpectedVersion::Exact(4), [Ev { n: 50 }])
                .unwrap();
            tx.append_batch(9, ExpectedVersion::NoStream, [Ev { n: 51 }])
                .unwrap();
            failed_at_io("transaction", tx.commit());
        });
    }
}

#[test]
fn a_failed_index_flush_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::IndexFlush, false, |storage, _| {
        failed_at_io("flush_index", storage.flush_index());
        assert_eq!(storage.stats().indexed_through, 0, "nothing was indexed");
    });
}

#[test]
fn a_failed_checkpoint_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::Checkpoint, false, |storage, _| {
        let mut processor = Processor::new(
            Reader::<Ev>::new(storage.clone()),
            Count(0),
            "counter",
            storage.subscribe(),
        );
        failed_at_io(
            "processor checkpoint",
            runtime().block_on(processor.run_until_caught_up()),
        );
        assert_eq!(processor.handler().0, 12, "the handler saw every event");
        assert_eq!(
            storage.processors().unwrap(),
            [],
            "no checkpoint was committed"
        );
    });
}

#[test]
fn a_failed_projection_batch_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::Projection, false, |storage, _| {
        let db = storage.projection_database("per-stream").unwrap();
        let mut projector = Projector::new(
            Reader::<Ev>::new(storage.clone()),
            PerStream(db),
            "per-stream",
            storage.subscribe(),
        );
        failed_at_io(
            "projection",
            runtime().block_on(projector.run_until_caught_up()),
        );
        let txn = storage.read_txn().unwrap();
        assert!(
            db.is_empty(txn.heed()).unwrap(),
            "nothing of the batch is visible"
        );
        assert_eq!(
            storage.processors().unwrap(),
            [],
            "the checkpoint did not move"
        );
    });
}

#[test]
fn a_failed_import_batch_poisons_the_store() {
    let source = tempfile::tempdir().unwrap();
    let (source, acked) = seeded(source.path(), false);
    let target_dir = tempfile::tempdir().unwrap();
    let target = Storage::open(config(target_dir.path(), false, MASTER)).unwrap();
    let events: Vec<ImportEvent> = {
        let txn = source.read_txn().unwrap();
        varvedb::admin::log(&source, &txn, 1, Direction::Forward)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let env = e.envelope;
                let mut event = ImportEvent::new(env.seq, env.stream, env.version, env.event_type);
                event.prev_seq = env.prev_seq;
                event.timestamp_ns = env.timestamp_ns;
                event.event_id = env.event_id;
                event.payload = e.payload.unwrap().to_vec();
                event
            })
            .collect()
    };
    fail_next_commit(&target, WriteKind::Import);
    let mut importer = Importer::new(&target).unwrap();
    for event in events.clone() {
        importer.push(event).unwrap();
    }
    match importer.finish() {
        Err(varvedb::admin::ImportError::Store(e)) if is_io_failure(&e) => {}
        other => panic!("expected the injected I/O failure, got {other:?}"),
    }
    refuses_every_write(&target, false);
    let mut importer = Importer::new(&target).unwrap();
    importer.push(events[0].clone()).unwrap();
    assert!(matches!(
        importer.finish(),
        Err(varvedb::admin::ImportError::Store(Error::Poisoned))
    ));
    holds_exactly(&target, &Acked::new());
    drop(target);
    // Reopened, the target is empty (nothing of the failed batch), and the import succeeds.
    let target = Storage::open(config(target_dir.path(), false, MASTER)).unwrap();
    holds_exactly(&target, &Acked::new());
    let mut importer = Importer::new(&target).unwrap();
    for event in events {
        importer.push(event).unwrap();
    }
    assert_eq!(importer.finish().unwrap(), 12);
    holds_exactly(&target, &acked);
}

#[test]
fn a_failed_key_creation_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::KeyCreation, true, |storage, _| {
        let mut writer = Writer::<Ev>::new(storage.clone());
        failed_at_io(
            "append to a new stream",
            writer.append(StreamId(77), 1, Ev { n: 50 }),
        );
    });
}

#[test]
fn a_failed_shred_poisons_the_store() {
    failure_poisons_until_reopen(WriteKind::Shred, true, |storage, _| {
        failed_at_io("shred", storage.shred_stream(2));
        // The stream is not shredded: its events still read.
        let txn = storage.read_txn().unwrap();
        let reader = Reader::<Ev>::new(storage.clone());
        assert!(reader.last_in_stream(&txn, 2).unwrap().is_some());
    });
}

#[test]
fn a_failed_master_key_rotation_poisons_the_store_and_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, mut acked) = seeded(dir.path(), true);
    fail_next_commit(&storage, WriteKind::KeyRotation);
    failed_at_io("rotate", storage.rotate_master_key(NEW_MASTER));
    assert_eq!(storage.master_key_version(), Some(1));
    refuses_every_write(&storage, true);
    holds_exactly(&storage, &acked);
    drop(storage);
    assert!(matches!(
        Storage::open(config(dir.path(), true, NEW_MASTER)),
        Err(Error::WrongMasterKey { .. })
    ));
    reopens_whole(dir.path(), true, MASTER, &mut acked);
}

/// A failure of one kind does not leak into the next open: a store reopened after a failure
/// of its own writes normally, and injected failures of a kind that never runs stay armed
/// harmlessly.
#[test]
fn an_unused_failpoint_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, mut acked) = seeded(dir.path(), false);
    fail_next_commit(&storage, WriteKind::Shred);
    let mut writer = Writer::<Ev>::new(storage.clone());
    writer.append(1, 5, Ev { n: 13 }).unwrap();
    acked.entry(1).or_default().push(13);
    holds_exactly(&storage, &acked);
    storage.flush_index().unwrap();
    drop(storage);
    reopens_whole(dir.path(), false, MASTER, &mut acked);
}
