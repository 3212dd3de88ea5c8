//! The VarveDB side: everything through the public API, as an application would call it.

use std::cell::Cell;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

use crate::common::{
    run_threads, timed, Appender, BenchEvent, Burst, Contention, Rate, Res, Tally, RENEW_EVERY,
};

/// A fresh VarveDB store in a temporary directory, deleted on drop.
pub struct VarveStore {
    storage: Storage,
    typed_reads: Cell<u64>,
    _dir: TempDir,
}

impl VarveStore {
    /// Opens a new, empty store with the default configuration.
    pub fn open() -> Res<Self> {
        let dir = tempfile::Builder::new()
            .prefix("varvedb-bench-")
            .tempdir()?;
        let storage = Storage::open(StorageConfig {
            path: dir.path().join("store"),
            ..Default::default()
        })?;
        Ok(VarveStore {
            storage,
            typed_reads: Cell::new(0),
            _dir: dir,
        })
    }

    /// A typed reader of the store.
    pub fn reader(&self) -> Reader<BenchEvent> {
        Reader::new(self.storage.clone())
    }

    /// The store itself, for the processor rows.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Counts the typed reads of a finished read workload.
    fn counted(&self, rate: Res<Rate>) -> Res<Rate> {
        if let Ok(r) = &rate {
            self.typed_reads.set(self.typed_reads.get() + r.events);
        }
        rate
    }

    /// Typed views made by the read workloads so far.
    pub fn typed_reads(&self) -> u64 {
        self.typed_reads.get()
    }

    /// An appender that calls `append_batch(stream, ExpectedVersion::Any, events)` once per
    /// transaction, whose events must all go to one stream.
    pub fn batch_appender(&self) -> BatchAppender {
        BatchAppender {
            writer: Writer::new(self.storage.clone()),
            n: 0,
        }
    }

    /// An appender that commits each transaction of a plan as one multi-stream transaction,
    /// whatever its streams.
    pub fn transaction_appender(&self) -> TransactionAppender {
        TransactionAppender {
            writer: Writer::new(self.storage.clone()),
            n: 0,
        }
    }

    /// An appender that calls `append(stream, current + 1, event)` once per event.
    pub fn single_appender(&self) -> SingleAppender {
        SingleAppender {
            writer: Writer::new(self.storage.clone()),
            versions: Vec::new(),
            n: 0,
        }
    }

    /// Typed, validated `reader.get` of each sequence, touching `amount`.
    pub fn point_reads(&self, seqs: &[u64]) -> Res<Rate> {
        let reader = self.reader();
        self.counted(timed(|| {
            let mut sum = 0i64;
            for chunk in seqs.chunks(RENEW_EVERY as usize) {
                let txn = self.storage.env.read_txn()?;
                for &seq in chunk {
                    let view = reader.get(&txn, seq)?.ok_or("missing event")?;
                    sum = sum.wrapping_add(view.amount.to_native());
                }
            }
            black_box(sum);
            Ok(seqs.len() as u64)
        }))
    }

    /// `read_stream(stream, 1, Forward)` of each stream, whole, touching `amount` of each event.
    /// The read transaction is renewed between streams once it has read [`RENEW_EVERY`] events.
    pub fn stream_reads(&self, streams: &[u64]) -> Res<Rate> {
        let reader = self.reader();
        self.counted(timed(|| {
            let mut sum = 0i64;
            let mut events = 0u64;
            let mut txn = self.storage.env.read_txn()?;
            let mut renewed_at = 0u64;
            for &stream in streams {
                if events - renewed_at >= RENEW_EVERY {
                    drop(txn);
                    txn = self.storage.env.read_txn()?;
                    renewed_at = events;
                }
                for view in reader.read_stream(&txn, stream, 1, Direction::Forward)? {
                    sum = sum.wrapping_add(view?.amount.to_native());
                    events += 1;
                }
            }
            black_box(sum);
            Ok(events)
        }))
    }

    /// `read_log(1, Forward)` over the whole log in one read transaction, touching `amount`.
    pub fn scan(&self) -> Res<Rate> {
        let reader = self.reader();
        self.counted(timed(|| {
            let txn = self.storage.env.read_txn()?;
            let mut sum = 0i64;
            let mut events = 0u64;
            for view in reader.read_log(&txn, 1, Direction::Forward)? {
                sum = sum.wrapping_add(view?.amount.to_native());
                events += 1;
            }
            black_box(sum);
            Ok(events)
        }))
    }

    /// `for_each_in_log(1, Forward, ..)`: the same scan in read transactions renewed every
    /// 100 ms, touching `amount`.
    pub fn scan_for_each(&self) -> Res<Rate> {
        let reader = self.reader();
        self.counted(timed(|| {
            let mut sum = 0i64;
            let events = reader.for_each_in_log(1, Direction::Forward, |view| {
                sum = sum.wrapping_add(view.amount.to_native());
                ControlFlow::Continue(())
            })?;
            black_box(sum);
            Ok(events)
        }))
    }

    /// Global sequence of the last event.
    pub fn head(&self) -> u64 {
        self.storage.head()
    }

    /// Payloads copied so far because they were misaligned in the map.
    pub fn unaligned_copies(&self) -> u64 {
        self.storage.stats().unaligned_copies
    }

    /// Bytes of the map in use.
    pub fn used_bytes(&self) -> u64 {
        self.storage.stats().used_bytes
    }

    /// `(commits, committed_batches)` from `Storage::stats`.
    fn group_counters(&self) -> (u64, u64) {
        let stats = self.storage.stats();
        (stats.commits, stats.committed_batches)
    }

    /// Each writer's stream and its current version, read before the run starts.
    fn starting_points(&self, writers: usize, contention: Contention) -> Res<Vec<(u64, u64)>> {
        let reader = self.reader();
        let txn = self.storage.env.read_txn()?;
        (0..writers)
            .map(|i| {
                let stream = contention.stream(i);
                Ok((stream, reader.stream_version(&txn, stream)?))
            })
            .collect()
    }

    /// `writers` threads, each with its own `Writer` clone, calling `append(stream, known + 1,
    /// event)` for `duration`; on `ConcurrencyConflict` a writer retries at `actual + 1`.
    /// Concurrent calls are grouped by VarveDB into shared transactions.
    pub fn concurrent_threads(
        &self,
        writers: usize,
        contention: Contention,
        duration: Duration,
    ) -> Res<Burst> {
        let writer = Writer::<BenchEvent>::new(self.storage.clone());
        let jobs = self
            .starting_points(writers, contention)?
            .into_iter()
            .map(|(stream, mut known)| {
                let mut writer = writer.clone();
                move || -> Res<u64> {
                    let mut conflicts = 0;
                    loop {
                        let event = BenchEvent::new(known + 1);
                        match writer.append(stream, known + 1, event) {
                            Ok(_) => {
                                known += 1;
                                return Ok(conflicts);
                            }
                            Err(Error::ConcurrencyConflict { actual, .. }) => {
                                conflicts += 1;
                                known = actual;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            })
            .collect();
        self.counted_groups(|| run_threads(jobs, duration))
    }

    /// The same as [`concurrent_threads`](Self::concurrent_threads) from `tasks` tokio tasks on
    /// `runtime`, each calling `append_async`.
    pub fn concurrent_tasks(
        &self,
        runtime: &tokio::runtime::Runtime,
        tasks: usize,
        contention: Contention,
        duration: Duration,
    ) -> Res<Burst> {
        let writer = Writer::<BenchEvent>::new(self.storage.clone());
        let starts = self.starting_points(tasks, contention)?;
        self.counted_groups(|| {
            runtime.block_on(async {
                let started = Instant::now();
                let deadline = started + duration;
                let handles: Vec<_> = starts
                    .into_iter()
                    .map(|(stream, mut known)| {
                        let mut writer = writer.clone();
                        tokio::spawn(async move {
                            let mut tally = Tally::default();
                            while Instant::now() < deadline {
                                let t = Instant::now();
                                let mut conflicts = 0;
                                loop {
                                    let event = BenchEvent::new(known + 1);
                                    match writer.append_async(stream, known + 1, event).await {
                                        Ok(_) => break,
                                        Err(Error::ConcurrencyConflict { actual, .. }) => {
                                            conflicts += 1;
                                            known = actual;
                                        }
                                        Err(e) => return Err(e.to_string()),
                                    }
                                }
                                known += 1;
                                tally.record(t, conflicts);
                            }
                            Ok(tally)
                        })
                    })
                    .collect();
                let mut tallies = Vec::with_capacity(handles.len());
                for handle in handles {
                    tallies.push(handle.await.map_err(|e| e.to_string())??);
                }
                Ok(Burst::new(tallies, started.elapsed()))
            })
        })
    }

    /// Runs `f` and adds the commits and batches it caused to its burst.
    fn counted_groups(&self, f: impl FnOnce() -> Res<Burst>) -> Res<Burst> {
        let (commits, batches) = self.group_counters();
        let mut burst = f()?;
        let (commits_after, batches_after) = self.group_counters();
        burst.commits = commits_after - commits;
        burst.batches = batches_after - batches;
        Ok(burst)
    }
}

/// Appends each transaction of a plan as one `append_batch` to one stream.
pub struct BatchAppender {
    writer: Writer<BenchEvent>,
    n: u64,
}

impl Appender for BatchAppender {
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        let stream = streams[0];
        if streams.iter().any(|&s| s != stream) {
            return Err("VarveDB batches append to one stream".into());
        }
        let events: Vec<BenchEvent> = streams
            .iter()
            .map(|_| {
                self.n += 1;
                BenchEvent::new(self.n)
            })
            .collect();
        self.writer
            .append_batch(stream, ExpectedVersion::Any, events)?;
        Ok(())
    }
}

/// Appends each transaction of a plan with one multi-stream [`Transaction`](varvedb::Transaction):
/// one part per event, `ExpectedVersion::Any`, committed atomically.
pub struct TransactionAppender {
    writer: Writer<BenchEvent>,
    n: u64,
}

impl Appender for TransactionAppender {
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        let mut tx = self.writer.transaction();
        for &stream in streams {
            self.n += 1;
            tx.append_batch(stream, ExpectedVersion::Any, [BenchEvent::new(self.n)])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Appends every event with its own `append(stream, version, event)`: one durable commit each.
pub struct SingleAppender {
    writer: Writer<BenchEvent>,
    versions: Vec<u64>,
    n: u64,
}

impl Appender for SingleAppender {
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        for &stream in streams {
            let slot = stream as usize;
            if self.versions.len() <= slot {
                self.versions.resize(slot + 1, 0);
            }
            self.versions[slot] += 1;
            self.n += 1;
            self.writer
                .append(stream, self.versions[slot], BenchEvent::new(self.n))?;
        }
        Ok(())
    }
}
