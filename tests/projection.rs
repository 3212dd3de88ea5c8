//! Exactly-once projections: the read model and the checkpoint commit together, so a process
//! killed while it projects never applies an event twice or loses one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use heed::types::Bytes;
use varvedb::error::{Error, Result};
use varvedb::{Direction, Envelope, ExpectedVersion};
use varvedb::{Projection, Projector};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Deposit {
    pub cents: u64,
}

const CHILD_DIR: &str = "VARVE_PROJECTION_CHILD_DIR";

/// Balance per stream: read-modify-write, so applying an event twice shows.
struct Balances {
    db: heed::Database<'static, Bytes, Bytes>,
    fail_at: Option<u64>,
}

impl Projection<Deposit> for Balances {
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: &ArchivedDeposit,
    ) -> Result<()> {
        if self.fail_at == Some(envelope.seq) {
            return Err(Error::InvalidConfig {
                reason: "refused".into(),
            });
        }
        let key = envelope.stream.as_u128().to_be_bytes();
        let old = self
            .db
            .get(txn, &key)?
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        let new = old + event.cents.to_native();
        self.db.put(txn, &key, &new.to_le_bytes())?;
        Ok(())
    }
}

fn open(path: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

/// The projection's contents and the balances computed from scratch from events 1..=checkpoint.
fn compare(storage: &Storage) -> (BTreeMap<u128, u64>, BTreeMap<u128, u64>, u64) {
    let db = storage.projection_database("balances").unwrap();
    let checkpoint = storage
        .processors()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "balances")
        .map_or(0, |(_, s)| s);
    let txn = storage.env.read_txn().unwrap();
    let mut projected = BTreeMap::new();
    for entry in db.iter(txn.heed()).unwrap() {
        let (k, v) = entry.unwrap();
        projected.insert(
            u128::from_be_bytes(k.try_into().unwrap()),
            u64::from_le_bytes(v.try_into().unwrap()),
        );
    }
    let mut scratch = BTreeMap::new();
    let reader = Reader::<Deposit>::new(storage.clone());
    for e in reader.read_log(&txn, 1, Direction::Forward).unwrap() {
        let e = e.unwrap();
        if e.seq() > checkpoint {
            break;
        }
        *scratch.entry(e.envelope().stream.as_u128()).or_insert(0) += e.cents.to_native();
    }
    (projected, scratch, checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_everything_and_a_failing_batch_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<Deposit>::new(storage.clone());
    for i in 1..=100u64 {
        writer
            .append_batch(i % 7, ExpectedVersion::Any, [Deposit { cents: i }])
            .unwrap();
    }
    let db = storage.projection_database("balances").unwrap();
    // A projection that fails at 55, in batches of 10: batches up to 50 commit, 51..60 does not.
    let mut failing = Projector::new(
        Reader::<Deposit>::new(storage.clone()),
        Balances {
            db,
            fail_at: Some(55),
        },
        "balances",
        storage.subscribe(),
    )
    .with_batch(10);
    match failing.run().await {
        Err(Error::Handler { seq, .. }) => assert_eq!(seq, 55),
        other => panic!("expected the projection's error, got {other:?}"),
    }
    let (projected, scratch, checkpoint) = compare(&storage);
    assert_eq!(checkpoint, 50);
    assert_eq!(projected, scratch);

    let mut projector = Projector::new(
        Reader::<Deposit>::new(storage.clone()),
        Balances { db, fail_at: None },
        "balances",
        storage.subscribe(),
    );
    let stop = projector.stop_handle();
    let task = tokio::spawn(async move { projector.run().await });
    writer
        .append_batch(3, ExpectedVersion::Any, [Deposit { cents: 1_000 }])
        .unwrap();
    for _ in 0..2_000 {
        if compare(&storage).2 == 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    task.await.unwrap().unwrap();
    let (projected, scratch, checkpoint) = compare(&storage);
    assert_eq!(checkpoint, 101);
    assert_eq!(projected, scratch);
}

/// `run_until_caught_up` applies every committed event and returns the checkpoint; with
/// nothing new it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_caught_up_projects_every_committed_event_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut writer = Writer::<Deposit>::new(storage.clone());
    for i in 1..=250u64 {
        writer
            .append_batch(i % 5, ExpectedVersion::Any, [Deposit { cents: i }])
            .unwrap();
    }
    let db = storage.projection_database("balances").unwrap();
    let mut projector = Projector::new(
        Reader::<Deposit>::new(storage.clone()),
        Balances { db, fail_at: None },
        "balances",
        storage.subscribe(),
    )
    .with_batch(100);
    assert_eq!(projector.run_until_caught_up().await.unwrap(), 250);
    let (projected, scratch, checkpoint) = compare(&storage);
    assert_eq!(checkpoint, 250);
    assert_eq!(projected, scratch);
    assert_eq!(projector.run_until_caught_up().await.unwrap(), 250);
    writer
        .append_batch(9, ExpectedVersion::Any, [Deposit { cents: 7 }])
        .unwrap();
    assert_eq!(projector.run_until_caught_up().await.unwrap(), 251);
    let (projected, scratch, _) = compare(&storage);
    assert_eq!(projected, scratch);
    assert_eq!(projected.get(&9), Some(&7));
}

/// Kills a child that appends and projects at the same time, 20 times, and checks after each
/// kill that the read model is exactly the one built from scratch up to the checkpoint.
#[test]
fn a_killed_projector_never_applies_an_event_twice_or_loses_one() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut last_checkpoint = 0;
    for round in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "projector_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.map(|l| l.ends_with("PROJECTING")).unwrap_or(false)));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        let storage = open(dir.path());
        let (projected, scratch, checkpoint) = compare(&storage);
        assert_eq!(
            projected, scratch,
            "round {round}: read model differs at checkpoint {checkpoint}"
        );
        assert!(
            checkpoint >= last_checkpoint,
            "round {round}: the checkpoint went back"
        );
        last_checkpoint = checkpoint;
    }
    assert!(last_checkpoint > 0, "the projector never committed");
}

/// Child: appends deposits and projects them concurrently until killed.
#[test]
fn projector_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let storage = open(std::path::Path::new(&dir));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = storage.projection_database("balances").unwrap();
        let mut projector = Projector::new(
            Reader::<Deposit>::new(storage.clone()),
            Balances { db, fail_at: None },
            "balances",
            storage.subscribe(),
        )
        .with_batch(7);
        tokio::spawn(async move { projector.run().await.unwrap() });
        println!("PROJECTING");
        let mut writer = Writer::<Deposit>::new(storage.clone());
        let mut i = storage.head();
        loop {
            i += 1;
            writer
                .append_batch_async(i % 11, ExpectedVersion::Any, [Deposit { cents: i }])
                .await
                .unwrap();
        }
    });
}

/// LMDB's limit of named databases refuses one more projection database with an error, and the
/// store goes on: a refusal is not an I/O failure, and poisons nothing.
#[test]
fn too_many_projection_databases_is_an_error_not_a_poisoned_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let mut created = 0;
    let refused = loop {
        match storage.projection_database(&format!("p{created}")) {
            Ok(_) => created += 1,
            Err(e) => break e,
        }
        assert!(created < 1_000, "LMDB never refused a database");
    };
    assert!(
        matches!(
            refused,
            Error::Lmdb(varvedb::heed::Error::Mdb(varvedb::heed::MdbError::DbsFull))
        ),
        "{refused:?}"
    );
    assert!(created > 100, "only {created} databases");
    let mut writer = Writer::<Deposit>::new(storage.clone());
    writer
        .append_batch(1, ExpectedVersion::Any, [Deposit { cents: 1 }])
        .unwrap();
    // Existing ones still open.
    storage.projection_database("p0").unwrap();
}
