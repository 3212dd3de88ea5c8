//! Catch-up subscriptions: history then live with no gap or duplicate at the switch, filters,
//! and exact delivery of 1..N under concurrent writers.

use std::time::Duration;

use varvedb::{ExpectedVersion, NewEvent};
use varvedb::{Filter, StartFrom, Subscription, SubscriptionItem};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[rkyv(derive(Debug))]
pub struct Tick {
    pub n: u32,
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap()
}

/// Collects the sequences of the next `n` events, noting where the caught-up marker fell.
async fn take(sub: &mut Subscription<Tick>, n: usize) -> (Vec<u64>, Option<usize>) {
    let mut seqs = Vec::new();
    let mut caught_up_at = None;
    while seqs.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the subscription stalled")
            .expect("the store is open")
            .unwrap();
        match item {
            SubscriptionItem::Event(e) => seqs.push(e.seq()),
            SubscriptionItem::CaughtUp => {
                assert!(caught_up_at.is_none(), "caught up twice");
                caught_up_at = Some(seqs.len());
            }
        }
    }
    (seqs, caught_up_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Tick>::new(storage.clone());
    for n in 1..=700 {
        writer.append(1, u64::from(n), Tick { n }).unwrap();
    }
    let reader = Reader::<Tick>::new(storage.clone());
    // A small batch makes the history span several read transactions.
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap()
        .with_batch(64);
    let live = tokio::spawn(async move {
        for n in 701..=1000 {
            writer.append(1, u64::from(n), Tick { n }).unwrap();
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let (seqs, caught_up) = take(&mut sub, 1000).await;
    live.await.unwrap();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert!(caught_up.is_some(), "the switch to live was marked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Tick>::new(storage.clone());
    for n in 1..=30u32 {
        let stream = u64::from(n % 3);
        writer
            .append_batch(
                stream,
                ExpectedVersion::Any,
                [NewEvent::new(Tick { n }).with_event_type(if n % 2 == 0 {
                    "even"
                } else {
                    "odd"
                })],
            )
            .unwrap();
    }
    let reader = Reader::<Tick>::new(storage.clone()).accept_event_types(["even", "odd"]);

    let mut from_seq = reader
        .subscribe(StartFrom::Seq(25), Filter::default())
        .unwrap();
    assert_eq!(take(&mut from_seq, 6).await, ((25..=30).collect(), None));

    let mut streams = reader
        .subscribe(StartFrom::Start, Filter::default().stream(1).stream(2u64))
        .unwrap();
    let (seqs, _) = take(&mut streams, 20).await;
    assert!(seqs.iter().all(|s| s % 3 != 0));
    assert_eq!(seqs.len(), 20);

    let mut both = reader
        .subscribe(
            StartFrom::Start,
            Filter::default().stream(1u64).event_type("even"),
        )
        .unwrap();
    let (seqs, caught_up) = take(&mut both, 5).await;
    assert_eq!(seqs, [4, 10, 16, 22, 28]);
    assert_eq!(caught_up, None);
    assert!(matches!(
        both.next().await,
        Some(Ok(SubscriptionItem::CaughtUp))
    ));

    // From the end: only what is appended afterwards.
    let mut end = reader.subscribe(StartFrom::End, Filter::default()).unwrap();
    assert!(matches!(
        end.next().await,
        Some(Ok(SubscriptionItem::CaughtUp))
    ));
    writer.append(9, 1, Tick { n: 99 }).unwrap();
    match end.next().await {
        Some(Ok(SubscriptionItem::Event(e))) => {
            assert_eq!(e.seq(), 31);
            assert_eq!(e.n, 99);
            assert_eq!(e.envelope().stream.as_u128(), 9);
        }
        other => panic!("expected event 31, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_many_subscribers_see_exactly_1_to_n() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let reader = Reader::<Tick>::new(storage.clone());
    let subscribers: Vec<_> = (0..4)
        .map(|i| {
            let mut sub = reader
                .subscribe(StartFrom::Start, Filter::default())
                .unwrap()
                .with_batch(1 + i * 50);
            tokio::spawn(async move { take(&mut sub, 2_000).await.0 })
        })
        .collect();
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let mut writer = Writer::<Tick>::new(storage.clone());
            tokio::spawn(async move {
                for n in 0..250u32 {
                    writer
                        .append_batch_async(
                            u64::from(w * 100 + n % 7),
                            ExpectedVersion::Any,
                            [Tick { n }],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for s in subscribers {
        assert_eq!(s.await.unwrap(), (1..=2_000).collect::<Vec<_>>());
    }
}

/// A stream filter takes stream ids as every other call does: a bare literal works, and a
/// negative one is refused when the subscription is made, never turned into another stream.
#[tokio::test(flavor = "current_thread")]
async fn filters_take_stream_ids_as_appends_do() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let mut writer = Writer::<Tick>::new(storage.clone());
    writer.append(3, 1, Tick { n: 1 }).unwrap();
    writer.append(4, 1, Tick { n: 2 }).unwrap();
    let reader = Reader::<Tick>::new(storage.clone());
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default().stream(3))
        .unwrap();
    assert_eq!(take(&mut sub, 1).await, (vec![1], None));
    assert!(matches!(
        sub.next().await,
        Some(Ok(SubscriptionItem::CaughtUp))
    ));
    let refused = reader.subscribe(StartFrom::Start, Filter::default().stream(3).stream(-4));
    assert!(matches!(
        refused,
        Err(varvedb::error::Error::InvalidStreamId { value: -4 })
    ));
}

/// A subscription to a few of many streams walks their entries of the stream index instead of
/// the log. It must deliver exactly what a filter over the whole log delivers, in global order:
/// from the start and from a position, across the index on disk and the unindexed tail, and
/// live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_streams_of_many_deliver_what_the_whole_log_holds_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().to_path_buf(),
        index_interval: 1_000,
        ..Default::default()
    })
    .unwrap();
    let mut writer = Writer::<Tick>::new(storage.clone());
    let streams = 1_000u64;
    let mut n = 0u32;
    // 3,000 events: the index on disk holds most, the tail the rest.
    for round in 0..3u64 {
        let mut tx = writer.transaction();
        for s in 0..streams {
            n += 1;
            tx.append_batch(
                (s * 7 + round) % streams,
                ExpectedVersion::Any,
                [Tick { n }],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // The write path asks for the flush of the index as the tail passes the interval; the
    // flush itself runs after the commit returns.
    let asked = std::time::Instant::now();
    while storage.stats().indexed_through == 0 {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(60),
            "part of the log is indexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        storage.stats().indexed_through < storage.head(),
        "part is in the tail"
    );
    let wanted: Vec<u64> = vec![3, 500, 999, 42, 4242];
    let filter = wanted.iter().fold(Filter::default(), |f, s| f.stream(*s));
    let reader = Reader::<Tick>::new(storage.clone());
    let expected = |from: u64| -> Vec<u64> {
        let txn = storage.read_txn().unwrap();
        reader
            .read_log(&txn, from, varvedb::Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| wanted.contains(&e.stream().as_u128().try_into().unwrap()))
            .map(|e| e.seq())
            .collect()
    };
    for from in [1, 2, 1_500, 2_001, 2_999, 3_001] {
        let mut sub = reader
            .subscribe(StartFrom::Seq(from), filter.clone())
            .unwrap()
            .with_batch(2);
        let want = expected(from);
        assert_eq!(
            take(&mut sub, want.len()).await,
            (want, None),
            "from {from}"
        );
        assert!(
            matches!(sub.next().await, Some(Ok(SubscriptionItem::CaughtUp))),
            "from {from}: caught up after history"
        );
    }
    // Live: an event of a wanted stream arrives, one of another stream does not.
    let mut sub = reader.subscribe(StartFrom::End, filter).unwrap();
    assert!(matches!(
        sub.next().await,
        Some(Ok(SubscriptionItem::CaughtUp))
    ));
    writer
        .append_batch(7, ExpectedVersion::Any, [Tick { n: 0 }])
        .unwrap();
    let live = writer
        .append_batch(500, ExpectedVersion::Any, [Tick { n: 1 }])
        .unwrap();
    assert_eq!(take(&mut sub, 1).await, (vec![live.first().seq], None));
}

/// A subscription reads the announced head and the store's while commits publish new heads
/// without pause: both are one watch's lock, and reading them must never wait for a commit that
/// waits for the reader (it deadlocked when the two borrows overlapped).
#[test]
fn reading_the_head_while_commits_publish_never_deadlocks() {
    use std::sync::mpsc;
    let dir = tempfile::tempdir().unwrap();
    let storage = varvedb::Storage::open(varvedb::StorageConfig {
        path: dir.path().to_path_buf(),
        durability: varvedb::Durability::Relaxed {
            sync_interval: None,
        },
        ..Default::default()
    })
    .unwrap();
    const EVENTS: u64 = 100_000;
    let writer = {
        let mut writer = Writer::<u64>::new(storage.clone());
        std::thread::spawn(move || {
            for n in 1..=EVENTS {
                writer.append(n % 7, n.div_ceil(7), n).unwrap();
            }
        })
    };
    let (done, finished) = mpsc::channel();
    let reader = Reader::<u64>::new(storage.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut sub = reader
            .subscribe(StartFrom::Start, Filter::default())
            .unwrap()
            .with_batch(1);
        let mut last = 0;
        while last < EVENTS {
            if let Ok(SubscriptionItem::Event(e)) = runtime.block_on(sub.next()).unwrap() {
                last = e.seq();
            }
        }
        done.send(last).unwrap();
    });
    // Generous: a slow machine is slow; a deadlock never ends.
    let last = finished
        .recv_timeout(Duration::from_secs(300))
        .expect("the subscription stopped: reading the head deadlocked with a commit");
    assert_eq!(last, EVENTS);
    writer.join().unwrap();
}
