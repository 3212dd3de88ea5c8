//! `admin::Migration`: a store rewritten into a new one with every older event upcast to its
//! current type, everything else kept; stopped at any point, it leaves the source as it was and
//! nothing at the target.

use std::path::{Path, PathBuf};

use varvedb::admin::{self, MigrateError, Migration, MigrationReport, UpcastCount};
use varvedb::heed;
use varvedb::{
    Direction, Envelope, Error, ExpectedVersion, NewEvent, Projection, Projector, Reader, Storage,
    StorageConfig, Uuid, Writer,
};

mod items;

use items::{ArchivedLineAdded, ItemAddedV1, ItemAddedV2, LineAdded};

const SOURCE_KEY: [u8; 32] = [5; 32];
const TARGET_KEY: [u8; 32] = [9; 32];

fn config(path: &Path, key: Option<[u8; 32]>) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        map_size: 8 << 20,
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0xABCD_0000 + n)
}

/// Three streams of every version of the item type, with metadata and correlation ids, and
/// events of another type (`u32`) between them. Event ids are `id(seq)`.
fn fill(storage: &Storage) {
    let mut v1 = Writer::<ItemAddedV1>::new(storage.clone());
    let mut v2 = Writer::<ItemAddedV2>::new(storage.clone());
    let mut v3 = Writer::<LineAdded>::new(storage.clone());
    let mut ints = Writer::<u32>::new(storage.clone());
    let mut seq = 0u128;
    let mut next = || {
        seq += 1;
        id(seq)
    };
    for stream in 1u64..=3 {
        let sku = |n: u32| format!("s{stream}-{n}");
        v1.append_batch(
            stream,
            ExpectedVersion::Exact(0),
            [
                NewEvent::new(ItemAddedV1 {
                    sku: sku(1),
                    qty: 1,
                })
                .with_id(next())
                .with_metadata(format!("meta {stream}").into_bytes()),
                NewEvent::new(ItemAddedV1 {
                    sku: sku(2),
                    qty: 2,
                })
                .with_id(next())
                .with_correlation_id(Uuid::from_u128(77))
                .with_causation_id(Uuid::from_u128(78)),
            ],
        )
        .unwrap();
        ints.append_batch(
            100 + stream,
            ExpectedVersion::Any,
            [NewEvent::new(stream as u32).with_id(next())],
        )
        .unwrap();
        v2.append_batch(
            stream,
            ExpectedVersion::Exact(2),
            [NewEvent::new(ItemAddedV2 {
                sku: sku(3),
                qty: 3,
                note: Some("gift".into()),
            })
            .with_id(next())],
        )
        .unwrap();
        v3.append_batch(
            stream,
            ExpectedVersion::Exact(3),
            [NewEvent::new(line(&sku(4), 4)).with_id(next())],
        )
        .unwrap();
    }
}

fn line(sku: &str, quantity: u64) -> LineAdded {
    LineAdded {
        sku: sku.into(),
        quantity,
        note: "new".into(),
    }
}

/// Everything of every event besides its type, version and payload, in log order; metadata
/// decrypted (`None` for a shredded event's).
type Kept = (
    u64,
    u128,
    u64,
    Option<u64>,
    u64,
    Uuid,
    Option<Uuid>,
    Option<Uuid>,
    Option<Vec<u8>>,
);

fn kept(storage: &Storage) -> Vec<Kept> {
    let txn = storage.read_txn().unwrap();
    admin::log(storage, &txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let v = &e.envelope;
            let metadata = match admin::contents(storage, &e) {
                Ok(c) => c.metadata().map(<[u8]>::to_vec),
                Err(Error::Shredded { .. }) => None,
                Err(other) => panic!("{other}"),
            };
            (
                v.seq,
                v.stream.0,
                v.version,
                v.prev_seq,
                v.timestamp_ns,
                v.event_id,
                v.correlation_id,
                v.causation_id,
                metadata,
            )
        })
        .collect()
}

/// What a reader of the newest types reads, in log order: each event as `LineAdded` or `u32`,
/// `None` for a shredded one; and whether any was upcast.
type Typed = (Vec<(u64, Option<LineAdded>)>, Vec<(u64, u32)>, bool);

fn typed(storage: &Storage) -> Typed {
    let txn = storage.read_txn().unwrap();
    let mut upcast = false;
    let lines = Reader::<LineAdded>::new(storage.clone())
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| match e {
            Ok(e) => {
                upcast |= e.is_upcast();
                (e.seq(), Some(e.deserialize().unwrap()))
            }
            Err(Error::Shredded { seq, .. }) => (seq, None),
            Err(other) => panic!("{other}"),
        })
        .collect();
    let ints = Reader::<u32>::new(storage.clone())
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .filter_map(|e| match e {
            Ok(e) => Some((e.seq(), e.to_native())),
            Err(Error::Shredded { .. }) => None,
            Err(other) => panic!("{other}"),
        })
        .collect();
    (lines, ints, upcast)
}

fn data_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("data.mdb")).unwrap()
}

fn partial(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_string_lossy();
    target.with_file_name(format!(".{name}.migrating"))
}

fn upcasts(report: &MigrationReport) -> Vec<(String, u16, u64)> {
    report
        .upcast
        .iter()
        .map(|u: &UpcastCount| {
            assert_eq!((u.to_type.as_str(), u.to_version), ("LineAdded", 3));
            (u.from_type.clone(), u.from_version, u.events)
        })
        .collect()
}

/// A projection of the quantity of each item event, by sequence.
struct Totals(heed::Database<'static, heed::types::Bytes, heed::types::Bytes>);

impl Projection<LineAdded> for Totals {
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: &ArchivedLineAdded,
    ) -> varvedb::Result<()> {
        self.0.put(
            txn,
            &envelope.seq.to_be_bytes(),
            &event.quantity.to_native().to_le_bytes(),
        )?;
        Ok(())
    }
}

fn projection_entries(
    storage: &Storage,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let txn = storage.read_txn().unwrap();
    db.iter(txn.heed())
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// A migrated store holds every event at its place with everything but its type kept, reads
/// with the newest types without an upcast, passes verification, keeps its checkpoints and
/// projections, and still deduplicates retried appends.
#[test]
fn a_plain_store_is_rewritten_with_every_event_current() {
    let dir = tempfile::tempdir().unwrap();
    let source = Storage::open(config(&dir.path().join("source"), None)).unwrap();
    fill(&source);
    source.reset_processor("billing", 7).unwrap();
    let db = source.projection_database("totals").unwrap();
    let mut projector = Projector::new(
        Reader::<LineAdded>::new(source.clone()),
        Totals(db),
        "totals",
        source.subscribe(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(projector.run_until_caught_up()).unwrap(), 15);
    drop(projector);
    source.flush_index().unwrap();
    let before = data_file(source.path());
    let (want_lines, want_ints, was_upcast) = typed(&source);
    assert!(was_upcast);

    let target_path = dir.path().join("target");
    let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&progress);
    let report = Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .verify(true)
        .on_progress(move |p| {
            seen.lock().unwrap().push((p.events, p.total));
            std::ops::ControlFlow::Continue(())
        })
        .run()
        .unwrap();
    assert_eq!(report.events, 15);
    assert_eq!(report.target, target_path);
    assert_eq!(
        upcasts(&report),
        [("ItemAdded".into(), 1, 6), ("ItemAdded".into(), 2, 3)]
    );
    let copied: Vec<(String, u16, u64)> = report
        .copied
        .iter()
        .map(|c| (c.event_type.clone(), c.version, c.events))
        .collect();
    assert_eq!(copied, [("LineAdded".into(), 3, 3), ("u32".into(), 1, 3)]);
    assert_eq!((report.processors, report.projections), (2, 1));
    assert_eq!(*progress.lock().unwrap(), [(15, 15)]);
    assert!(!partial(&target_path).exists());

    // The source is as it was.
    assert_eq!(data_file(source.path()), before);

    let target = Storage::open(config(&target_path, None)).unwrap();
    assert_eq!(kept(&target), kept(&source));
    let (lines, ints, upcast) = typed(&target);
    assert_eq!((lines, ints), (want_lines, want_ints));
    assert!(!upcast, "a migrated store reads without upcasts");
    let txn = target.read_txn().unwrap();
    let e = Reader::<LineAdded>::new(target.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    let env = e.envelope();
    assert_eq!((env.event_type, env.schema_version), ("LineAdded", 3));
    drop(txn);

    let verified = admin::verify(&target, &mut |_| {}).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    // Every type the target holds has its layout recorded, and the rename is kept.
    assert_eq!(
        (
            verified.schemas,
            verified.schemas_unknown,
            verified.schemas_renamed
        ),
        (2, 0, 1)
    );
    for stream in 1u64..=3 {
        assert_eq!(target.stream_version(stream).unwrap(), 4);
    }
    assert_eq!(target.processors().unwrap(), source.processors().unwrap());
    let copied_projection = target.projection_database("totals").unwrap();
    let txn = target.read_txn().unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = copied_projection
        .iter(txn.heed())
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    assert_eq!(entries, projection_entries(&source, db));
    assert_eq!(entries.len(), 12);
    drop(txn);

    // Idempotency: the exact retry of a copied append is recognised, and the retry of an
    // append whose event was upcast is refused; neither writes anything.
    let retried = Writer::<LineAdded>::new(target.clone())
        .append_batch(
            1u64,
            ExpectedVersion::Exact(3),
            [NewEvent::new(line("s1-4", 4)).with_id(id(5))],
        )
        .unwrap();
    assert!(retried.deduplicated);
    assert_eq!(retried.positions[0].seq, 5);
    let old = Writer::<ItemAddedV1>::new(target.clone()).append_batch(
        2u64,
        ExpectedVersion::Exact(0),
        [
            NewEvent::new(ItemAddedV1 {
                sku: "s2-1".into(),
                qty: 1,
            })
            .with_id(id(6))
            .with_metadata(b"meta 2".to_vec()),
            NewEvent::new(ItemAddedV1 {
                sku: "s2-2".into(),
                qty: 2,
            })
            .with_id(id(7))
            .with_correlation_id(Uuid::from_u128(77))
            .with_causation_id(Uuid::from_u128(78)),
        ],
    );
    assert!(old.is_err(), "{old:?}");
    assert_eq!(admin::info(&target).unwrap().head, 15);
}

/// In an encrypted store, a shredded stream stays shredded (its events copied as such, whatever
/// their version) and every other stream gets a key of its own in the target.
#[test]
fn an_encrypted_store_keeps_shredded_streams_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let source = Storage::open(config(&dir.path().join("source"), Some(SOURCE_KEY))).unwrap();
    fill(&source);
    assert!(source.shred_stream(2u64).unwrap());
    source.flush_index().unwrap();
    let before = data_file(source.path());
    let (want_lines, want_ints, _) = typed(&source);
    assert_eq!(want_lines.iter().filter(|(_, l)| l.is_none()).count(), 4);

    // Not into a store without encryption: its events would be in the clear.
    let plain = dir.path().join("plain");
    let refused = Migration::new(&source, config(&plain, None))
        .upcast::<LineAdded>()
        .run();
    assert!(
        matches!(refused, Err(MigrateError::Invalid { .. })),
        "{refused:?}"
    );
    assert!(!plain.exists() && !partial(&plain).exists());

    let target_path = dir.path().join("target");
    let report = Migration::new(&source, config(&target_path, Some(TARGET_KEY)))
        .upcast::<LineAdded>()
        .verify(true)
        .run()
        .unwrap();
    assert_eq!(report.events, 15);
    assert_eq!((report.shredded_events, report.shredded_streams), (4, 1));
    // Stream 2's old events are copied as shredded, not upcast.
    assert_eq!(
        upcasts(&report),
        [("ItemAdded".into(), 1, 4), ("ItemAdded".into(), 2, 2)]
    );
    assert_eq!(data_file(source.path()), before);

    let target = Storage::open(config(&target_path, Some(TARGET_KEY))).unwrap();
    assert_eq!(kept(&target), kept(&source));
    let (lines, ints, upcast) = typed(&target);
    assert_eq!((lines, ints), (want_lines, want_ints));
    assert!(!upcast);
    let verified = admin::verify(&target, &mut |_| {}).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    // Streams 1, 3, 101, 102, 103 have keys of their own; stream 2 has a tombstone.
    assert_eq!((verified.keys, verified.shredded_streams), (5, 1));
    assert_eq!(verified.shredded_events, 4);
    assert!(matches!(
        Writer::<LineAdded>::new(target.clone()).append(2u64, 5, line("x", 1)),
        Err(Error::StreamShredded { .. })
    ));
}

/// A store of `n` events of version 1 and the current version, alternating.
fn many(storage: &Storage, n: u64) {
    let mut v1 = Writer::<ItemAddedV1>::new(storage.clone());
    let mut v3 = Writer::<LineAdded>::new(storage.clone());
    for i in 0..n / 2 {
        let stream = i % 7 + 1;
        v1.append_batch(
            stream,
            ExpectedVersion::Any,
            [ItemAddedV1 {
                sku: format!("{i}"),
                qty: i as u32,
            }],
        )
        .unwrap();
        v3.append_batch(stream, ExpectedVersion::Any, [line(&format!("{i}"), i)])
            .unwrap();
    }
    storage.flush_index().unwrap();
}

/// Stopped by its progress callback, or refused a target that holds something, a migration
/// leaves the source as it was and nothing at the target.
#[test]
fn a_stopped_migration_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = Storage::open(config(&dir.path().join("source"), None)).unwrap();
    many(&source, 3000);
    let before = data_file(source.path());
    let target_path = dir.path().join("target");
    let stopped = Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .on_progress(|p| {
            if p.events >= 2048 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .run();
    assert!(
        matches!(stopped, Err(MigrateError::Cancelled { events: 2048 })),
        "{stopped:?}"
    );
    assert!(!target_path.exists() && !partial(&target_path).exists());
    assert_eq!(data_file(source.path()), before);

    std::fs::create_dir(&target_path).unwrap();
    std::fs::write(target_path.join("keep"), b"mine").unwrap();
    let refused = Migration::new(&source, config(&target_path, None)).run();
    assert!(
        matches!(refused, Err(MigrateError::TargetNotEmpty { ref path }) if *path == target_path),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(target_path.join("keep")).unwrap(), b"mine");

    // Two registered types that both read version 1 of the item type.
    let other = dir.path().join("other");
    let conflict = Migration::new(&source, config(&other, None))
        .upcast::<LineAdded>()
        .upcast::<ItemAddedV2>()
        .run();
    assert!(
        matches!(conflict, Err(MigrateError::Conflict { version: 1, .. })),
        "{conflict:?}"
    );
    assert!(!other.exists() && !partial(&other).exists());

    // A registered type that is not the one the store recorded for its own name and version.
    let changed = Migration::new(&source, config(&other, None))
        .upcast::<LineAddedEdited>()
        .run();
    assert!(
        matches!(
            changed,
            Err(MigrateError::Store(Error::LayoutChanged { version: 3, .. }))
        ),
        "{changed:?}"
    );
    assert!(!other.exists() && !partial(&other).exists());
    assert_eq!(data_file(source.path()), before);
}

/// `LineAdded` v3 edited after its events were stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(name = "LineAdded", version = 3)]
pub struct LineAddedEdited {
    pub sku: String,
}

/// A write of the target that fails at the I/O level part way fails the migration, removes the
/// partial target, and leaves the source as it was; the next migration succeeds.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_write_part_way_leaves_the_source_and_no_target() {
    let dir = tempfile::tempdir().unwrap();
    let source = Storage::open(config(&dir.path().join("source"), None)).unwrap();
    many(&source, 10_000);
    let before = data_file(source.path());
    let target_path = dir.path().join("target");
    let partial_path = partial(&target_path);
    let failing = partial_path.clone();
    let failed = Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .on_progress(move |p| {
            if p.events == 5120 {
                // The partial target, open in this process: the registry hands out its store.
                let target = Storage::open(config(&failing, None)).unwrap();
                varvedb::failpoints::fail_next_commit(
                    &target,
                    varvedb::failpoints::WriteKind::Import,
                );
            }
            std::ops::ControlFlow::Continue(())
        })
        .run();
    assert!(matches!(failed, Err(MigrateError::Import(_))), "{failed:?}");
    assert!(!target_path.exists() && !partial_path.exists());
    assert_eq!(data_file(source.path()), before);
    assert!(admin::verify(&source, &mut |_| {}).unwrap().is_ok());

    let report = Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .run()
        .unwrap();
    assert_eq!(report.events, 10_000);
    assert_eq!(upcasts(&report), [("ItemAdded".into(), 1, 5000)]);
}

const CHILD_VAR: &str = "VARVEDB_MIGRATE_CHILD";

/// The child of [`a_killed_migration_leaves_the_source_and_no_target`]: migrates the store its
/// variable names, and aborts the process part way.
#[test]
#[ignore = "run by a_killed_migration_leaves_the_source_and_no_target"]
fn killed_migration_child() {
    let Ok(dir) = std::env::var(CHILD_VAR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let source = Storage::open(config(&dir.join("source"), None)).unwrap();
    let _ = Migration::new(&source, config(&dir.join("target"), None))
        .upcast::<LineAdded>()
        .on_progress(|p| {
            if p.events >= 2048 {
                std::process::abort();
            }
            std::ops::ControlFlow::Continue(())
        })
        .run();
    unreachable!("the migration was to abort the process");
}

/// A process killed during a migration leaves the source as it was and nothing at the target's
/// path; the next migration removes its partial target and succeeds.
#[test]
fn a_killed_migration_leaves_the_source_and_no_target() {
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("source");
    let source = Storage::open(config(&source_path, None)).unwrap();
    many(&source, 4000);
    let before = data_file(&source_path);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_migration_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    let target_path = dir.path().join("target");
    assert!(!target_path.exists());
    assert!(
        partial(&target_path).join("MIGRATING").is_file(),
        "the child got part way"
    );
    assert_eq!(data_file(&source_path), before);
    assert!(admin::verify(&source, &mut |_| {}).unwrap().is_ok());

    let report = Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .run()
        .unwrap();
    assert_eq!(report.events, 4000);
    assert!(!partial(&target_path).exists());
    let target = Storage::open(config(&target_path, None)).unwrap();
    assert_eq!(kept(&target), kept(&source));
}

/// A store that never held the renamed type, migrated to it: the target records the rename, so
/// a build that knows only the old name meets every migrated event as a renamed one, on scans
/// too, instead of passing over them as a type it does not know.
#[test]
fn a_migration_to_a_renamed_type_records_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let source = Storage::open(config(&dir.path().join("source"), None)).unwrap();
    Writer::<ItemAddedV1>::new(source.clone())
        .append(
            1u64,
            1,
            ItemAddedV1 {
                sku: "a".into(),
                qty: 1,
            },
        )
        .unwrap();
    Writer::<ItemAddedV2>::new(source.clone())
        .append(
            1u64,
            2,
            ItemAddedV2 {
                sku: "b".into(),
                qty: 2,
                note: None,
            },
        )
        .unwrap();
    let target_path = dir.path().join("target");
    Migration::new(&source, config(&target_path, None))
        .upcast::<LineAdded>()
        .verify(true)
        .run()
        .unwrap();
    let target = Storage::open(config(&target_path, None)).unwrap();
    let old = Reader::<ItemAddedV2>::new(target.clone());
    let txn = target.read_txn().unwrap();
    let read: Vec<_> = old
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.map(|e| e.seq()))
        .collect();
    assert_eq!(read.len(), 2);
    for (i, item) in read.iter().enumerate() {
        assert!(
            matches!(item, Err(Error::RenamedEventType { event_type, version: 3, seq: Some(s) })
                if event_type == "LineAdded" && *s == i as u64 + 1),
            "{item:?}"
        );
    }
    let current = Reader::<LineAdded>::new(target.clone());
    assert_eq!(current.get(&txn, 1).unwrap().unwrap().quantity, 1);
}
