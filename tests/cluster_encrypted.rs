//! An encrypted replicated store: stream keys in the cluster's key bucket, records sealed by
//! the node that writes them (JetStream holds only ciphertext), every replica reading them, and
//! shredding on one node seen on every other (real servers on loopback, TLS and passwords).
#![cfg(feature = "cluster")]

mod common_cluster;

use common_cluster::wait_head;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natscluster::Cluster;
use varvedb::cluster::{ClusterConfig, ClusterError};
use varvedb::{
    Envelope, Error, EventHandler, ExpectedVersion, NewEvent, Processor, Reader, Storage,
    StorageConfig, Uuid, Writer,
};

const START: Duration = Duration::from_secs(60);
const MASTER: [u8; 32] = [0x5A; 32];

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq)]
pub struct Profile {
    pub n: u64,
    pub email: String,
}

fn profile(n: u64) -> Profile {
    Profile {
        n,
        email: format!("person-{n}@example.com"),
    }
}

fn open(dir: &Path, cluster: &ClusterConfig, master: Option<[u8; 32]>) -> varvedb::Result<Storage> {
    Storage::open_replicated(
        StorageConfig {
            path: dir.to_path_buf(),
            encryption_enabled: master.is_some(),
            master_key: master,
            ..Default::default()
        },
        cluster.clone(),
    )
}

fn node(dir: &Path, cluster: &ClusterConfig) -> Storage {
    open(dir, cluster, Some(MASTER)).unwrap()
}

/// Every event of the log as (seq, stream, version, event id, n, email), or the error its read
/// gave, by sequence.
type Row = (u64, Result<(u128, u64, Uuid, u64, String), String>);

fn log_of(storage: &Storage) -> Vec<Row> {
    let reader = Reader::<Profile>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    (1..=storage.head())
        .map(|seq| {
            let read = match reader.get(&txn, seq) {
                Ok(Some(v)) => {
                    let env = v.envelope();
                    Ok((
                        env.stream.0,
                        env.version,
                        env.event_id,
                        v.n.to_native(),
                        v.email.to_string(),
                    ))
                }
                Ok(None) => Err("missing".to_owned()),
                Err(Error::Shredded { .. }) => Err("shredded".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            (seq, read)
        })
        .collect()
}

/// Every message payload of the log's JetStream stream.
fn jetstream_payloads(cluster: &Cluster, stream: &str) -> Vec<Vec<u8>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = natscluster::client(cluster).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let s = js.get_stream(stream).await.unwrap();
        let last = s.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            out.push(s.get_raw_message(seq).await.unwrap().payload.to_vec());
        }
        out
    })
}

/// What the key bucket holds for a stream: `Some(value)`, `None` when it holds nothing or a
/// purge marker.
fn bucket_key(cluster: &Cluster, stream: &str, id: u128) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = natscluster::client(cluster).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value(format!("{stream}-keys")).await.unwrap();
        kv.get(format!("s.{id:032x}"))
            .await
            .unwrap()
            .map(|b| b.to_vec())
    })
}

#[test]
fn an_encrypted_log_is_ciphertext_in_jetstream_and_reads_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let mut config = common_cluster::cluster_member(&cluster, "SEALED");
    // A short deduplication window, for the retry beyond it below.
    config.duplicate_window = Duration::from_secs(1);
    let a = node(&dir.path().join("a"), &config);
    let b = node(&dir.path().join("b"), &config);
    assert_eq!(a.store_id(), b.store_id(), "replicas of a log share its id");
    let mut wa = Writer::<Profile>::new(a.clone());
    let mut wb = Writer::<Profile>::new(b.clone());

    wa.append("profile-1", 1, profile(1)).unwrap();
    wb.append_batch(
        "profile-2",
        ExpectedVersion::NoStream,
        [profile(2), profile(3)],
    )
    .unwrap();
    // B appends to the stream A created: the key A put in the bucket.
    wb.append("profile-1", 2, profile(4)).unwrap();
    let mut tx = wa.transaction();
    tx.append("profile-1", 3, profile(5)).unwrap();
    tx.append("profile-3", 1, profile(6)).unwrap();
    tx.commit().unwrap();
    wait_head(&a, 6);
    wait_head(&b, 6);
    let log = log_of(&a);
    assert_eq!(log, log_of(&b));
    let ns: Vec<u64> = log.iter().map(|(_, r)| r.as_ref().unwrap().3).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 6]);
    assert_eq!(log[3].1.as_ref().unwrap().4, "person-4@example.com");

    // JetStream holds no plaintext: no email, in any message.
    let payloads = jetstream_payloads(&cluster, "SEALED");
    assert!(!payloads.is_empty());
    for p in &payloads {
        assert!(
            !p.windows(7).any(|w| w == b"example"),
            "a message of the log holds plaintext"
        );
    }
    // The bucket holds each stream's key, wrapped (68 bytes), never a raw 32-byte key.
    let id = varvedb::StreamName::new("profile-1").unwrap().stream_id().0;
    assert_eq!(
        bucket_key(&cluster, "SEALED", id).map(|v| v.len()),
        Some(68)
    );

    // A retry with the same ids is recognised as stored, sealed or not.
    let ids = || {
        (7..=8u64)
            .map(|n| NewEvent::new(profile(n)).with_id(Uuid::from_u128(0xE0 + n as u128)))
            .collect::<Vec<_>>()
    };
    let first = wa
        .append_batch("profile-4", ExpectedVersion::Any, ids())
        .unwrap();
    let again = wb
        .append_batch("profile-4", ExpectedVersion::Any, ids())
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.positions, first.positions);
    // Beyond JetStream's window the retry is stored in the log again; every replica finds its
    // sealed records the same bytes as the stored ones, without a key, and writes nothing.
    let head = a.head();
    std::thread::sleep(Duration::from_millis(1500));
    let late = wb
        .append_batch("profile-4", ExpectedVersion::Any, ids())
        .unwrap();
    assert!(late.deduplicated);
    assert_eq!(late.positions, first.positions);
    wa.append("profile-5", 1, profile(10)).unwrap();
    wait_head(&b, head + 1);
    assert_eq!(a.head(), head + 1, "the late retry wrote nothing");
    assert_eq!(b.head(), head + 1);
    // Other bytes under a stored id are refused, on every node alike.
    let other = [NewEvent::new(profile(99)).with_id(Uuid::from_u128(0xE7))];
    assert!(matches!(
        wb.append_batch("profile-4", ExpectedVersion::Any, other),
        Err(Error::EventIdConflict { .. })
    ));

    // A node without encryption, or with another master key, is refused.
    match open(&dir.path().join("plain"), &config, None) {
        Err(Error::Cluster(ClusterError::EncryptionMismatch { .. })) => {}
        other => panic!("a plain node of an encrypted log: {:?}", other.map(|_| ())),
    }
    match open(&dir.path().join("wrong"), &config, Some([0x11; 32])) {
        Err(Error::WrongMasterKey { .. }) => {}
        other => panic!("a node with another master key: {:?}", other.map(|_| ())),
    }
    // An encrypted node of a plain log is refused too.
    let plain = common_cluster::cluster_member(&cluster, "PLAIN");
    let p = open(&dir.path().join("p"), &plain, None).unwrap();
    Writer::<Profile>::new(p.clone())
        .append("x-1", 1, profile(1))
        .unwrap();
    match open(&dir.path().join("p2"), &plain, Some(MASTER)) {
        Err(Error::Cluster(ClusterError::EncryptionMismatch { .. })) => {}
        other => panic!("an encrypted node of a plain log: {:?}", other.map(|_| ())),
    }

    // A node that starts empty catches up and reads every event.
    let c = node(&dir.path().join("c"), &config);
    wait_head(&c, 9);
    assert_eq!(log_of(&c), log_of(&a));
    let report = varvedb::admin::verify(&c, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Records (n, email) of every event handled.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u64, String)>>>);

impl EventHandler<Profile> for Seen {
    fn handle(&mut self, _: &ArchivedProfile) -> varvedb::Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(
        &mut self,
        _: &Envelope<'_>,
        event: &ArchivedProfile,
    ) -> varvedb::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push((event.n.to_native(), event.email.to_string()));
        Ok(())
    }
}

impl Seen {
    fn ns(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().map(|s| s.0).collect()
    }
}

#[test]
fn shredding_on_one_node_is_seen_by_a_processor_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "SHRED");
    let a = node(&dir.path().join("a"), &config);
    let b = node(&dir.path().join("b"), &config);
    let mut wa = Writer::<Profile>::new(a.clone());
    let mut wb = Writer::<Profile>::new(b.clone());
    wa.append_batch(
        "user-1",
        ExpectedVersion::NoStream,
        [profile(1), profile(2)],
    )
    .unwrap();
    wa.append("user-2", 1, profile(3)).unwrap();
    wait_head(&b, 3);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let early = Seen::default();
    let mut processor = Processor::new(
        Reader::<Profile>::new(b.clone()),
        early.clone(),
        "early",
        wb.subscribe(),
    );
    runtime.block_on(processor.run_until_caught_up()).unwrap();
    assert_eq!(early.ns(), [1, 2, 3]);
    assert_eq!(early.0.lock().unwrap()[0].1, "person-1@example.com");

    // Shredded on A: gone from the bucket, and A reads it as shredded at once.
    assert!(a.shred_stream("user-1").unwrap());
    let user1 = varvedb::StreamName::new("user-1").unwrap().stream_id().0;
    assert_eq!(bucket_key(&cluster, "SHRED", user1), None);
    let read_a = Reader::<Profile>::new(a.clone());
    let txn = a.read_txn().unwrap();
    assert!(matches!(
        read_a.get(&txn, 1),
        Err(Error::Shredded { seq: 1, .. })
    ));
    drop((txn, read_a));

    // B applies the marker in the log's order: by the next event it is shredded there too.
    wa.append("user-2", 2, profile(4)).unwrap();
    wait_head(&b, 4);
    let rows = log_of(&b);
    assert_eq!(rows[0].1, Err("shredded".to_owned()));
    assert_eq!(rows[1].1, Err("shredded".to_owned()));
    assert_eq!(rows[3].1.as_ref().unwrap().3, 4);
    runtime.block_on(processor.run_until_caught_up()).unwrap();
    assert_eq!(early.ns(), [1, 2, 3, 4]);
    // A processor that starts on B now never sees the shredded events.
    let late = Seen::default();
    let mut processor = Processor::new(
        Reader::<Profile>::new(b.clone()),
        late.clone(),
        "late",
        wb.subscribe(),
    );
    runtime.block_on(processor.run_until_caught_up()).unwrap();
    assert_eq!(late.ns(), [3, 4]);

    // The stream takes no more events, on any node; shredding it again says so.
    assert!(matches!(
        wb.append("user-1", 3, profile(5)),
        Err(Error::StreamShredded { .. })
    ));
    assert!(matches!(
        wa.append("user-1", 3, profile(5)),
        Err(Error::StreamShredded { .. })
    ));
    assert!(!b.shred_stream("user-1").unwrap());
    assert!(!a.shred_stream("user-1").unwrap());

    // A node that starts empty after the shredding learns it from the log and the bucket.
    let c = node(&dir.path().join("c"), &config);
    wait_head(&c, 4);
    assert_eq!(log_of(&c), log_of(&b));
    // And from a node's store alone, the events stay shredded.
    drop((a, wa));
    let reopened = Storage::open(StorageConfig {
        path: dir.path().join("a"),
        encryption_enabled: true,
        master_key: Some(MASTER),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(log_of(&reopened), log_of(&b));
    // Opened on its own, a replica shreds and rotates nothing: that goes through the cluster.
    assert!(matches!(
        reopened.shred_stream("user-2"),
        Err(Error::ReplicaNotWritable { .. })
    ));
    assert!(matches!(
        reopened.rotate_master_key([0x77; 32]),
        Err(Error::ReplicaNotWritable { .. })
    ));
    // A replica's store verifies clean: every record opens under its key, or is shredded.
    let report = varvedb::admin::verify(&reopened, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn the_master_key_rotates_on_every_node() {
    const NEW: [u8; 32] = [0xA5; 32];
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = common_cluster::cluster_member(&cluster, "ROTATE");
    let a = node(&dir.path().join("a"), &config);
    let b = node(&dir.path().join("b"), &config);
    let mut wa = Writer::<Profile>::new(a.clone());
    let mut wb = Writer::<Profile>::new(b.clone());
    wa.append("acct-1", 1, profile(1)).unwrap();
    wb.append("acct-2", 1, profile(2)).unwrap();
    wait_head(&a, 2);
    wait_head(&b, 2);

    // A rotates: the bucket's keys and its own keystore are under the new key.
    assert_eq!(a.rotate_master_key(NEW).unwrap(), 2);
    assert_eq!(a.master_key_version(), Some(2));
    wa.append("acct-3", 1, profile(3)).unwrap();
    wait_head(&b, 3);
    // B still holds the old key: it reads what it knew, and a key made under the new master
    // key is an error, never wrong data; it makes no key until it rotates.
    let rows = log_of(&b);
    assert_eq!(rows[0].1.as_ref().unwrap().3, 1);
    assert_eq!(rows[1].1.as_ref().unwrap().3, 2);
    assert!(
        rows[2]
            .1
            .as_ref()
            .unwrap_err()
            .contains("master key version 2"),
        "{rows:?}"
    );
    assert!(matches!(
        wb.append("acct-4", 1, profile(4)),
        Err(Error::Cluster(ClusterError::EncryptionMismatch { .. }))
    ));
    // Appends to streams it has the key of go on.
    wb.append("acct-2", 2, profile(5)).unwrap();
    // B rotates to the same key, and reads and writes everything.
    b.rotate_master_key(NEW).unwrap();
    assert_eq!(b.master_key_version(), Some(2));
    wb.append("acct-4", 1, profile(4)).unwrap();
    wait_head(&a, 5);
    wait_head(&b, 5);
    let log = log_of(&b);
    assert!(log.iter().all(|(_, r)| r.is_ok()), "{log:?}");
    assert_eq!(log, log_of(&a));

    // A new node opens with the key in force, not the old one.
    match open(&dir.path().join("old"), &config, Some(MASTER)) {
        Err(Error::WrongMasterKey {
            master_version: 2, ..
        }) => {}
        other => panic!("a new node with the old key: {:?}", other.map(|_| ())),
    }
    let c = open(&dir.path().join("c"), &config, Some(NEW)).unwrap();
    assert_eq!(c.master_key_version(), Some(2));
    wait_head(&c, 5);
    assert_eq!(log_of(&c), log);
    Writer::<Profile>::new(c.clone())
        .append("acct-5", 1, profile(6))
        .unwrap();
    wait_head(&a, 6);
    assert_eq!(log_of(&a), log_of(&c));
}
