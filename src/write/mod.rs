//! The write path: every write of the log goes through here.
//!
//! - [`LogTxn`] is what one write transaction of the log does: version checks, idempotent
//!   retries, sequencing, sealing, and the writes of records and event ids, in one place.
//! - The [`WritePath`] runs those transactions, one at a time, for appends grouped from many
//!   callers ([`committer`]), for multi-stream transactions and for imports; it publishes the
//!   committed head, feeds the stream index's tail and asks for its flushes, and lets
//!   [`Rider`]s (processor checkpoints) ride along with each commit.
//!
//! Poisoning and map growth are not here: the environment's write runner enforces them around
//! every write transaction of the store (`crate::env`).

mod committer;
mod replicate;
mod request;
mod retry;
mod rider;
mod txn;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use committer::Committer;
pub(crate) use committer::Done;
pub use committer::GroupCommit;
#[cfg(feature = "cluster")]
pub(crate) use replicate::{Apply, Outcome, ReplicatedBatch};
pub(crate) use request::{Request, Staged};
#[cfg(feature = "cluster")]
pub(crate) use retry::{retry_of, RetryOf};
pub(crate) use rider::{Receipt, Rider};
pub(crate) use txn::LogTxn;

use crate::cipher::StreamKey;
use crate::env::{Commit, WriteKind};
use crate::error::{Error, Result};
use crate::index::StreamIndex;
use crate::log::Log;
use crate::metrics::handles::{GroupCounts, StoreMetrics};
use crate::types::{Appended, StreamId};

/// The write path of one open store (see the module documentation). The store owns it; its
/// commit thread holds it only weakly.
pub(crate) struct WritePath {
    pub(crate) log: Arc<Log>,
    pub(crate) index: Arc<StreamIndex>,
    /// Shared with the commit thread, which waits on it without holding the write path.
    committer: Arc<Committer>,
    /// This write path, for the commit thread it starts.
    me: std::sync::Weak<WritePath>,
    /// The committed head, watched by subscriptions and processors.
    head: watch::Sender<u64>,
    riders: Mutex<Vec<Arc<dyn Rider>>>,
    /// Write transactions committed for appends and transactions.
    commits: AtomicU64,
    /// Batches those transactions carried.
    committed_batches: AtomicU64,
    /// Whether the store replicates a cluster's log (see `replicate`), and which stream.
    is_replica: std::sync::atomic::AtomicBool,
    replica_of: Mutex<Option<String>>,
}

/// Where appends go in a store that does not order its own log: a replica of a cluster's log,
/// whose appends go through the cluster and return once the replica applied them (feature
/// `cluster`).
pub(crate) trait Sequencer: Send + Sync {
    /// Appends the parts of one commit atomically (a single part: one batch): every part is
    /// checked against its expectation and placed, or none is; parts that are exact retries of
    /// stored events report their positions, as [`WritePath::commit_atomic`] does.
    fn commit(&self, parts: &mut [Request]) -> Result<Vec<Appended>>;

    /// Shreds `stream` wherever the log is kept, as [`crate::Storage::shred_stream`] does on
    /// one store: `false` when it was shredded already.
    fn shred(&self, stream: StreamId) -> Result<bool>;

    /// Rotates the master key wherever the log is kept, as
    /// [`crate::Storage::rotate_master_key`] does on one store.
    fn rotate_master_key(&self, new_key: &[u8; 32]) -> Result<u64>;
}

/// Counters of the write path.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteStats {
    pub commits: u64,
    pub committed_batches: u64,
}

impl WritePath {
    /// The write path of a store whose log ends at `head`.
    pub(crate) fn new(
        log: Arc<Log>,
        index: Arc<StreamIndex>,
        head: u64,
        limits: GroupCommit,
    ) -> Arc<WritePath> {
        Arc::new_cyclic(|me| WritePath {
            log,
            index,
            committer: Arc::new(Committer::new(limits)),
            me: me.clone(),
            head: watch::channel(head).0,
            riders: Mutex::new(Vec::new()),
            commits: AtomicU64::new(0),
            committed_batches: AtomicU64::new(0),
            is_replica: std::sync::atomic::AtomicBool::new(false),
            replica_of: Mutex::new(None),
        })
    }

    /// Adds work that rides along with every commit from now on.
    pub(crate) fn add_rider(&self, rider: Arc<dyn Rider>) {
        self.riders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rider);
    }

    fn riders(&self) -> Vec<Arc<dyn Rider>> {
        self.riders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A weak handle on this write path, for the commit thread.
    fn me(&self) -> std::sync::Weak<WritePath> {
        self.me.clone()
    }

    /// The store's metric handles.
    fn metrics(&self) -> &StoreMetrics {
        self.log.env.metrics()
    }

    /// The global sequence of the last committed event.
    pub(crate) fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver of the committed head.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Counters.
    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            committed_batches: self.committed_batches.load(Ordering::Relaxed),
        }
    }

    /// Publishes a new committed head. Commits are serialised, so a sequence is published only
    /// after every lower one is committed.
    fn publish(&self, last_seq: u64) {
        self.head.send_if_modified(|head| {
            if last_seq > *head {
                *head = last_seq;
                true
            } else {
                false
            }
        });
    }

    /// The transaction runner: one write transaction of the log, in which `body` places events
    /// through a [`LogTxn`]; when it commits, the riders' work goes along. Afterwards the events
    /// join the index's tail (and a flush is asked for when one is due), the head is published,
    /// and each rider learns what was committed. The caller holds the commit lock.
    fn run<T>(
        &self,
        kind: WriteKind,
        mut body: impl FnMut(&mut LogTxn<'_, '_>) -> Result<Commit<T>>,
    ) -> Result<T> {
        if let Some(e) = self.refuse_on_replica(kind) {
            return Err(e);
        }
        let riders = self.riders();
        let (value, written, receipts) = self.log.env.write(kind, |wtxn| {
            let mut txn = LogTxn::begin(&self.log, &self.index, wtxn)?;
            match body(&mut txn)? {
                Commit::Abort(value) => Ok(Commit::Abort((value, None, Vec::new()))),
                Commit::Commit(value) => {
                    let written = txn.finish();
                    let mut receipts = Vec::new();
                    for rider in &riders {
                        if let Some(receipt) = rider.write(wtxn)? {
                            receipts.push((Arc::clone(rider), receipt));
                        }
                    }
                    Ok(Commit::Commit((value, Some(written), receipts)))
                }
            }
        })?;
        if let Some(mut written) = written {
            self.log
                .schemas
                .remember(std::mem::take(&mut written.schemas));
            self.log.named.remember(&written.named);
            if self.index.committed(&written.entries) {
                self.committer.request_flush(self);
            }
            if let Some(last) = written.last_seq() {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.publish(last);
            }
        }
        for (rider, receipt) in receipts {
            rider.committed(receipt);
        }
        Ok(value)
    }

    /// The keys of `streams` for appending, in an encrypted store (`None` each in a plain one):
    /// created and made durable in the keystore before the log transaction that first uses them.
    fn keys_for(&self, streams: &[StreamId]) -> Result<Vec<Option<Result<Arc<StreamKey>>>>> {
        Ok(match &self.log.crypto {
            None => streams.iter().map(|_| None).collect(),
            Some(crypto) => crypto
                .keys_for_append(streams)?
                .into_iter()
                .map(Some)
                .collect(),
        })
    }

    /// Appends a group of batches in one write transaction and one fsync. Each batch is checked
    /// on its own, in order, seeing the batches before it: a conflict fails only its own batch.
    /// Returns one result per request; every `Ok` is durable. The caller holds the commit lock.
    pub(super) fn commit_group(&self, group: &mut [Request]) -> Vec<Result<Appended>> {
        let started = Instant::now();
        let streams: Vec<StreamId> = group.iter().map(|r| r.stream).collect();
        let keys = match self.keys_for(&streams) {
            Ok(keys) => keys,
            Err(e) => return failed_all(group, e),
        };
        let outcome = self.run(WriteKind::Append, |txn| {
            let mut results = Vec::with_capacity(group.len());
            let mut wrote = false;
            for (req, key) in group.iter_mut().zip(&keys) {
                let key = match key {
                    None => None,
                    Some(Ok(key)) => Some(&**key),
                    Some(Err(e)) => {
                        results.push(Err(e.duplicate()));
                        continue;
                    }
                };
                let result = txn.append(req, key)?;
                wrote |= matches!(&result, Ok(a) if !a.deduplicated);
                results.push(result);
            }
            Ok(if wrote {
                Commit::Commit(results)
            } else {
                Commit::Abort(results)
            })
        });
        match outcome {
            Ok(results) => {
                self.committed_batches(group, &results, started);
                results
            }
            Err(e) => failed_all(group, e),
        }
    }

    /// Appends the parts of one multi-stream transaction atomically, in one write transaction
    /// and one fsync: each part is checked as [`WritePath::commit_group`] checks a batch, seeing
    /// the parts before it, but the first part that fails aborts the transaction and its error
    /// is the result. Parts that are exact retries of stored events write nothing and report
    /// their original positions. The caller holds the commit lock.
    fn commit_atomic_locked(&self, parts: &mut [Request]) -> Result<Vec<Appended>> {
        let started = Instant::now();
        let streams: Vec<StreamId> = parts.iter().map(|r| r.stream).collect();
        let keys = self.keys_for(&streams)?;
        let appended = self.run(WriteKind::Transaction, |txn| {
            let mut appended = Vec::with_capacity(parts.len());
            let mut wrote = false;
            for (req, key) in parts.iter_mut().zip(&keys) {
                // A part whose stream has no key (shredded) fails at its turn, like any other.
                let key = match key {
                    None => None,
                    Some(Ok(key)) => Some(&**key),
                    Some(Err(e)) => return Ok(Commit::Abort(Err(e.duplicate()))),
                };
                match txn.append(req, key)? {
                    Ok(a) => {
                        wrote |= !a.deduplicated;
                        appended.push(a);
                    }
                    Err(e) => return Ok(Commit::Abort(Err(e))),
                }
            }
            Ok(if wrote {
                Commit::Commit(Ok(appended))
            } else {
                Commit::Abort(Ok(appended))
            })
        })??;
        let results: Vec<Result<Appended>> = appended.into_iter().map(Ok).collect();
        self.committed_batches(parts, &results, started);
        Ok(results.into_iter().flatten().collect())
    }

    /// Counts and records the batches of a committed (or, when it wrote nothing, aborted)
    /// transaction.
    fn committed_batches(
        &self,
        batches: &[Request],
        results: &[Result<Appended>],
        started: Instant,
    ) {
        let mut counts = GroupCounts::default();
        for (request, result) in batches.iter().zip(results) {
            match result {
                Ok(a) if a.deduplicated => counts.deduplicated += 1,
                Ok(a) => {
                    counts.batches += 1;
                    counts.events += a.positions.len() as u64;
                    counts.bytes += request.buf.len() as u64;
                }
                Err(_) => {}
            }
        }
        self.committed_batches
            .fetch_add(counts.batches, Ordering::Relaxed);
        crate::metrics::handles::group_done(self.metrics(), self.head(), counts, started);
    }

    /// Runs one log transaction of events placed by `body` itself (an import), between commit
    /// groups, with the keys of `streams` ready (see [`WritePath::keys_for`]).
    pub(crate) fn run_exclusive<T>(
        &self,
        kind: WriteKind,
        body: impl FnMut(&mut LogTxn<'_, '_>) -> Result<Commit<T>>,
    ) -> Result<T> {
        let guard = self.committer.lock_commits();
        let result = self.run(kind, body);
        drop(guard);
        self.committer.wake_if_queued();
        result
    }

    /// Commits `request` and returns once it is durable (or failed), blocking the thread.
    pub(crate) fn submit_sync(self: &Arc<Self>, request: Request) -> Done {
        Committer::submit_sync(self, request)
    }

    /// Queues `request` for the commit thread; the receiver yields once it is durable.
    pub(crate) fn submit_async(
        self: &Arc<Self>,
        request: Request,
    ) -> tokio::sync::oneshot::Receiver<Done> {
        Committer::submit_async(self, request)
    }

    /// Commits the parts of one multi-stream transaction atomically, blocking the thread until
    /// they are durable (or failed). Runs between groups: it waits for a running group to end,
    /// and groups queued meanwhile run after it.
    pub(crate) fn commit_atomic(&self, parts: &mut [Request]) -> Result<Vec<Appended>> {
        let guard = self.committer.lock_commits();
        let result = self.commit_atomic_locked(parts);
        drop(guard);
        self.committer.wake_if_queued();
        result
    }

    /// [`WritePath::commit_atomic`] off the async runtime's threads: on tokio's blocking pool
    /// when called inside a runtime, else on a thread of its own. The transaction commits even
    /// if the caller stops waiting.
    pub(crate) async fn commit_atomic_async(
        self: Arc<Self>,
        mut parts: Vec<Request>,
    ) -> Result<Vec<Appended>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work = move || {
            let result = self.commit_atomic(&mut parts);
            drop(self);
            drop(tx.send(result));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(work)),
            Err(_) => {
                std::thread::Builder::new()
                    .name("varvedb-transaction".into())
                    .spawn(work)
                    .map_err(Error::Io)?;
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(
                "the thread committing this transaction stopped before it finished",
            )))
        })
    }

    /// Wakes the commit thread for the riders' work (it commits it when it is due).
    pub(crate) fn riders_changed(&self) {
        self.committer.riders_changed(self);
    }

    /// Commits the riders' pending work by itself, between commit groups.
    pub(crate) fn commit_riders(&self) -> Result<()> {
        let _guard = self.committer.lock_commits();
        self.commit_riders_locked()
    }

    fn commit_riders_locked(&self) -> Result<()> {
        for rider in self.riders() {
            let receipt = self.log.env.write(rider.kind(), |wtxn| {
                Ok(match rider.write(wtxn)? {
                    Some(receipt) => Commit::Commit(Some(receipt)),
                    None => Commit::Abort(None),
                })
            });
            match receipt {
                Ok(Some(receipt)) => rider.committed(receipt),
                Ok(None) => {}
                Err(e) => {
                    // Try again an interval later, not at once.
                    rider.postpone();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The earliest time a rider's pending work is due; `None` on a poisoned store, which
    /// writes nothing more.
    pub(super) fn riders_due(&self) -> Option<Instant> {
        if self.log.env.guard().poison.is_set() {
            return None;
        }
        self.riders().iter().filter_map(|r| r.due()).min()
    }

    /// Writes the deferred stream index now, between commit groups, and returns the sequence it
    /// reaches (`None` when it was up to date).
    pub(crate) fn flush_index(&self) -> Result<Option<u64>> {
        let _guard = self.committer.lock_commits();
        self.index
            .flush(&self.log.env, &self.log.dbs, &self.log.named)
    }

    /// Stops the commit thread once its queue is empty, and indexes what the tail holds, so
    /// that the next open has nothing to read back (best effort: the next open recovers the
    /// tail from the log anyway).
    pub(crate) fn close(&self) {
        self.committer.close();
        if self.log.env.guard().poison.is_set() {
            return;
        }
        // Riders' work posted since the last commit (a processor's checkpoint) is committed now
        // rather than lost with the process.
        if let Err(e) = self.commit_riders() {
            tracing::warn!(path = %self.log.env.path().display(), error = %e, "committing riders' work at close failed");
        }
        if let Err(e) = self.flush_index() {
            tracing::warn!(path = %self.log.env.path().display(), error = %e, "indexing the tail at close failed; the next open reads it back");
        }
    }
}

/// The results of a group that failed as a whole: the error for the first batch, copies of it
/// for the others.
fn failed_all(group: &[Request], e: Error) -> Vec<Result<Appended>> {
    let mut results: Vec<Result<Appended>> =
        group.iter().skip(1).map(|_| Err(e.duplicate())).collect();
    results.insert(0, Err(e));
    results
}

#[cfg(test)]
mod tests;
