//! Processors: resume after their checkpoint, see every committed event in order under
//! concurrent writers, follow their error policy, stop gracefully, rebuild from a position.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use varvedb::error::{Error, Result};
use varvedb::Envelope;
use varvedb::{ErrorPolicy, EventHandler, Processor, Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[rkyv(derive(Debug))]
pub struct MyEvent {
    pub id: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Other {
    pub x: u8,
}

/// One delivery: sequence, stream, version, event id.
type Delivery = (u64, u128, u64, u32);

/// Records every delivery, optionally failing on some ids.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Delivery>>>,
    fail_on: Arc<Mutex<Vec<u32>>>,
}

impl EventHandler<MyEvent> for Recorder {
    fn handle(&mut self, _event: &ArchivedMyEvent) -> Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(&mut self, envelope: &Envelope<'_>, event: &ArchivedMyEvent) -> Result<()> {
        let id = event.id.to_native();
        let mut fail_on = self.fail_on.lock().unwrap();
        if let Some(i) = fail_on.iter().position(|f| *f == id) {
            fail_on.remove(i);
            return Err(Error::InvalidConfig {
                reason: format!("handler refuses {id}"),
            });
        }
        self.seen.lock().unwrap().push((
            envelope.seq,
            envelope.stream.as_u128(),
            envelope.version,
            id,
        ));
        Ok(())
    }
}

impl Recorder {
    fn seqs(&self) -> Vec<u64> {
        self.seen.lock().unwrap().iter().map(|s| s.0).collect()
    }
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

async fn wait_for(storage: &Storage, name: &str, seq: u64) {
    for _ in 0..2_000 {
        let done = storage
            .processors()
            .unwrap()
            .iter()
            .any(|(n, s)| n == name && *s >= seq);
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("processor {name} never reached {seq}");
}

/// The seed README's example, plus what it implies: a processor started on a store that
/// already holds events handles them at once, without any new append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_handles_history_without_a_new_write() {
    struct MyHandler(Arc<Mutex<Vec<u32>>>);
    impl EventHandler<MyEvent> for MyHandler {
        fn handle(&mut self, event: &ArchivedMyEvent) -> varvedb::error::Result<()> {
            println!("Processing: {:?}", event);
            self.0.lock().unwrap().push(event.id.to_native());
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    for id in 1..=50 {
        writer.append(1, u64::from(id), MyEvent { id }).unwrap();
    }
    let reader = Reader::<MyEvent>::new(storage.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rx = writer.subscribe();
    let mut processor = Processor::new(reader, MyHandler(seen.clone()), "consumer_group_1", rx);
    let stop = processor.stop_handle();
    let task = tokio::spawn(async move { processor.run().await });
    wait_for(&storage, "consumer_group_1", 50).await;
    stop.stop();
    task.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), (1..=50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_several_processors_see_exactly_1_to_n() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writers = 4u32;
    let per_writer = 200u32;
    let recorders: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut tasks = Vec::new();
    let mut stops = Vec::new();
    for (i, rec) in recorders.iter().enumerate() {
        let mut p = Processor::new(
            Reader::<MyEvent>::new(storage.clone()),
            rec.clone(),
            format!("p{i}"),
            storage.subscribe(),
        )
        .with_checkpoint_every(1 + 37 * i as u64);
        stops.push(p.stop_handle());
        tasks.push(tokio::spawn(async move { p.run().await }));
    }
    let write_tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut writer = Writer::<MyEvent>::new(storage.clone());
            tokio::spawn(async move {
                for n in 1..=per_writer {
                    // Many streams per writer, so appends interleave across streams.
                    let stream = u64::from(w * 10 + n % 10);
                    writer
                        .append_batch_async(
                            stream,
                            varvedb::ExpectedVersion::Any,
                            [MyEvent { id: n }],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in write_tasks {
        t.await.unwrap();
    }
    let total = u64::from(writers * per_writer);
    for i in 0..3 {
        wait_for(&storage, &format!("p{i}"), total).await;
    }
    for s in &stops {
        s.stop();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for rec in &recorders {
        assert_eq!(rec.seqs(), (1..=total).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_processor_resumes_after_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    for id in 1..=30 {
        writer.append(7, u64::from(id), MyEvent { id }).unwrap();
    }
    let rec = Recorder::default();
    for round in 0..3u64 {
        let mut p = Processor::new(
            Reader::<MyEvent>::new(storage.clone()),
            rec.clone(),
            "resumer",
            storage.subscribe(),
        );
        let stop = p.stop_handle();
        let task = tokio::spawn(async move { p.run().await.map(|()| p) });
        wait_for(&storage, "resumer", 30 + round * 10).await;
        stop.stop();
        let p = task.await.unwrap().unwrap();
        assert_eq!(p.checkpoint().unwrap(), 30 + round * 10);
        for id in 1..=10 {
            let v = storage.stream_version(7).unwrap() + 1;
            writer.append(7, v, MyEvent { id: 100 + id }).unwrap();
        }
    }
    // A graceful stop commits everything handled: no event twice, none lost.
    assert_eq!(rec.seqs(), (1..=50).collect::<Vec<_>>());
    let p = Processor::new(
        Reader::<MyEvent>::new(storage.clone()),
        rec.clone(),
        "resumer",
        storage.subscribe(),
    );
    assert_eq!(p.checkpoint().unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_policies() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    for id in 1..=10 {
        writer.append(1, u64::from(id), MyEvent { id }).unwrap();
    }
    let make = |rec: &Recorder, name: &str, policy| {
        Processor::new(
            Reader::<MyEvent>::new(storage.clone()),
            rec.clone(),
            name.to_string(),
            storage.subscribe(),
        )
        .with_error_policy(policy)
    };

    // Stop: the error names the event; the checkpoint is just before it; a new run retries it.
    let rec = Recorder::default();
    rec.fail_on.lock().unwrap().push(4);
    let mut p = make(&rec, "stopper", ErrorPolicy::Stop);
    match p.run().await {
        Err(Error::Handler { processor, seq, .. }) => {
            assert_eq!(processor, "stopper");
            assert_eq!(seq, 4);
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(p.checkpoint().unwrap(), 3);
    let stop = p.stop_handle();
    let task = tokio::spawn(async move { p.run().await });
    wait_for(&storage, "stopper", 10).await;
    stop.stop();
    task.await.unwrap().unwrap();
    assert_eq!(rec.seqs(), (1..=10).collect::<Vec<_>>());

    // Retry: two transient failures are retried away.
    let rec = Recorder::default();
    rec.fail_on.lock().unwrap().extend([6, 6]);
    let mut p = make(
        &rec,
        "retrier",
        ErrorPolicy::Retry {
            attempts: 2,
            backoff: Duration::from_millis(1),
        },
    );
    let stop = p.stop_handle();
    let task = tokio::spawn(async move { p.run().await });
    wait_for(&storage, "retrier", 10).await;
    stop.stop();
    task.await.unwrap().unwrap();
    assert_eq!(rec.seqs(), (1..=10).collect::<Vec<_>>());

    // Skip: the failing event is recorded and passed over.
    let rec = Recorder::default();
    rec.fail_on.lock().unwrap().push(2);
    let mut p = make(&rec, "skipper", ErrorPolicy::Skip);
    let stop = p.stop_handle();
    let task = tokio::spawn(async move { p.run().await.map(|()| p) });
    wait_for(&storage, "skipper", 10).await;
    stop.stop();
    let p = task.await.unwrap().unwrap();
    assert_eq!(rec.seqs(), [1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(p.skipped().len(), 1);
    assert_eq!(p.skipped()[0].0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_rebuilds_and_other_event_types_are_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    let mut other = Writer::<Other>::new(storage.clone());
    for id in 1..=5 {
        writer.append(1, u64::from(id), MyEvent { id }).unwrap();
        other.append(2, u64::from(id), Other { x: 1 }).unwrap();
    }
    let rec = Recorder::default();
    let run_to_end = |rec: Recorder| {
        let storage = storage.clone();
        async move {
            let mut p = Processor::new(
                Reader::<MyEvent>::new(storage.clone()),
                rec,
                "projection",
                storage.subscribe(),
            );
            let stop = p.stop_handle();
            let task = tokio::spawn(async move { p.run().await });
            wait_for(&storage, "projection", 10).await;
            stop.stop();
            task.await.unwrap().unwrap();
        }
    };
    run_to_end(rec.clone()).await;
    assert_eq!(rec.seqs(), [1, 3, 5, 7, 9]);
    storage.reset_processor("projection", 4).unwrap();
    assert_eq!(
        storage.processors().unwrap(),
        [("projection".to_string(), 4)]
    );
    run_to_end(rec.clone()).await;
    assert_eq!(rec.seqs(), [1, 3, 5, 7, 9, 5, 7, 9]);
    assert!(matches!(
        storage.reset_processor("", 0),
        Err(Error::InvalidProcessorName { .. })
    ));
}

/// A handler that blocks runs on the blocking pool: on a single-threaded runtime, the handler
/// waits for a message that only another task of the same runtime can send. Were the handler
/// run on the runtime's thread, that task could never run and the handler would time out.
#[tokio::test(flavor = "current_thread")]
async fn blocking_handlers_do_not_block_the_runtime() {
    struct Blocking {
        started: Arc<std::sync::atomic::AtomicBool>,
        release: std::sync::mpsc::Receiver<()>,
    }
    impl EventHandler<MyEvent> for Blocking {
        fn handle(&mut self, _event: &ArchivedMyEvent) -> Result<()> {
            self.started
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.release
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| Error::InvalidConfig {
                    reason: "the runtime was blocked".into(),
                })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    Writer::<MyEvent>::new(storage.clone())
        .append(1, 1, MyEvent { id: 1 })
        .unwrap();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (release, rx) = std::sync::mpsc::channel();
    let mut p = Processor::new(
        Reader::<MyEvent>::new(storage.clone()),
        Blocking {
            started: started.clone(),
            release: rx,
        },
        "blocking",
        storage.subscribe(),
    );
    let stop = p.stop_handle();
    let task = tokio::spawn(async move { p.run().await });
    while !started.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    release.send(()).unwrap();
    wait_for(&storage, "blocking", 1).await;
    stop.stop();
    task.await.unwrap().unwrap();
}

/// `run_until_caught_up` handles everything committed and returns the committed checkpoint; a
/// later call goes on from it, and one with nothing new returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_caught_up_handles_every_committed_event_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    let mut other = Writer::<Other>::new(storage.clone());
    for id in 1..=300 {
        writer.append(1, u64::from(id), MyEvent { id }).unwrap();
    }
    other.append(2, 1, Other { x: 1 }).unwrap();
    let processor = |rec: &Recorder| {
        Processor::new(
            Reader::<MyEvent>::new(storage.clone()),
            rec.clone(),
            "batch-job",
            storage.subscribe(),
        )
        .with_checkpoint_every(64)
    };
    let rec = Recorder::default();
    // The last event is of another type: passed over, and the checkpoint still reaches it.
    assert_eq!(processor(&rec).run_until_caught_up().await.unwrap(), 301);
    assert_eq!(rec.seqs(), (1..=300).collect::<Vec<_>>());
    assert_eq!(
        storage.processors().unwrap(),
        [("batch-job".to_string(), 301)]
    );

    for id in 301..=310 {
        writer.append(1, u64::from(id), MyEvent { id }).unwrap();
    }
    let more = Recorder::default();
    let mut second = processor(&more);
    assert_eq!(second.run_until_caught_up().await.unwrap(), 311);
    assert_eq!(more.seqs(), (302..=311).collect::<Vec<_>>());
    assert_eq!(second.run_until_caught_up().await.unwrap(), 311);
    assert_eq!(more.seqs().len(), 10);

    // Stopped before it starts, it handles nothing and reports its checkpoint.
    writer.append(1, 311, MyEvent { id: 311 }).unwrap();
    let idle = Recorder::default();
    let mut stopped = processor(&idle);
    stopped.stop_handle().stop();
    assert_eq!(stopped.run_until_caught_up().await.unwrap(), 311);
    assert!(idle.seqs().is_empty());

    // A handler failure is the error, with the checkpoint just before the failing event.
    let failing = Recorder::default();
    failing.fail_on.lock().unwrap().push(311);
    assert!(matches!(
        processor(&failing).run_until_caught_up().await,
        Err(Error::Handler { seq: 312, .. })
    ));
    assert_eq!(
        storage.processors().unwrap(),
        [("batch-job".to_string(), 311)]
    );
}
