//! Group commit: many callers' batches in one write transaction and one fsync.
//!
//! Whoever finds no commit running commits, so a lone synchronous append pays no hand-off and no
//! wait: it takes the commit lock, takes whatever else is queued along with its own batch, and
//! commits. Callers that find a commit running queue their batch and wait; when the running
//! commit ends, the next one takes everything queued (up to the group limits) in one
//! transaction. A background thread per store runs the groups that no synchronous caller is
//! running: those of async callers, and those queued while a caller was committing.
//!
//! Every caller gets its own result, and only after the transaction holding its batch was
//! committed and synced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;
use crate::error::Result;
use crate::log::append::{commit_atomic, commit_checkpoints, commit_group, Request};
use crate::storage::{Shared, Storage};
use crate::types::Appended;

/// Limits of one commit group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most batches in one transaction. Default 1,024.
    pub max_batches: usize,
    /// Most record bytes in one transaction (a single larger batch still goes alone).
    /// Default 64 MiB.
    pub max_bytes: usize,
    /// How long a group started by the background thread waits for more batches before it
    /// commits. Default zero: under no load, no append waits. A few hundred microseconds can
    /// make groups larger when many async writers append at a steady rate.
    pub max_wait: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batches: 1024,
            max_bytes: 64 << 20,
            max_wait: Duration::ZERO,
        }
    }
}

/// A finished request: the result, and the caller's buffers handed back for reuse.
pub(crate) struct Done {
    pub result: Result<Appended>,
    pub request: Request,
}

enum Waiter {
    Sync(Arc<Slot>),
    Async(oneshot::Sender<Done>),
}

/// Where a blocked synchronous caller receives its result.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<Done>>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Request, Waiter)>,
    closed: bool,
    thread_started: bool,
}

/// The group committer of one store.
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    work: Condvar,
    commit_lock: Mutex<()>,
    limits: GroupCommit,
    /// Processor checkpoints waiting to ride along with the next committed group.
    pending_checkpoints: Mutex<Vec<(String, u64)>>,
    /// The tail has grown past the index interval: the background thread flushes it.
    flush_requested: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Committer {
    pub(crate) fn new(limits: GroupCommit) -> Self {
        Committer {
            queue: Mutex::default(),
            work: Condvar::new(),
            commit_lock: Mutex::new(()),
            limits,
            pending_checkpoints: Mutex::new(Vec::new()),
            flush_requested: AtomicBool::new(false),
        }
    }

    /// Writes the deferred index now, between commit groups.
    pub(crate) fn flush_index(&self, storage: &Storage) -> Result<Option<u64>> {
        let _guard = lock(&self.commit_lock);
        crate::index::deferred::flush(&storage.shared)
    }

    /// Asks the background thread to write the deferred index (see `index::deferred::flush`).
    pub(crate) fn request_flush(&self, storage: &Storage) {
        if !self.flush_requested.swap(true, Ordering::AcqRel) {
            Self::ensure_thread(&mut lock(&self.queue), storage);
            self.work.notify_one();
        }
    }

    /// Asks the next committed group to also store checkpoint `seq` of processor `name` (no
    /// fsync of its own). A later call for the same name replaces an earlier one. When no group
    /// commits within [`IDLE_CHECKPOINT_AFTER`], the background thread commits the pending
    /// checkpoints by themselves.
    pub(crate) fn post_checkpoint(&self, storage: &Storage, name: &str, seq: u64) {
        {
            let mut pending = lock(&self.pending_checkpoints);
            match pending.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = entry.1.max(seq),
                None => pending.push((name.to_string(), seq)),
            }
        }
        Self::ensure_thread(&mut lock(&self.queue), storage);
        self.work.notify_one();
    }

    /// Drops the pending checkpoint of `name` (before a reset moves it back).
    pub(crate) fn forget_checkpoint(&self, name: &str) {
        lock(&self.pending_checkpoints).retain(|(n, _)| n != name);
    }

    /// The pending checkpoints, for a group about to commit.
    pub(crate) fn pending_checkpoints(&self) -> Vec<(String, u64)> {
        lock(&self.pending_checkpoints).clone()
    }

    /// Forgets pending checkpoints that a committed group stored.
    pub(crate) fn checkpoints_stored(&self, stored: &[(String, u64)]) {
        lock(&self.pending_checkpoints)
            .retain(|(n, seq)| !stored.iter().any(|(m, s)| m == n && s >= seq));
    }

    /// Commits `request` and returns once it is durable (or failed), blocking the thread.
    pub(crate) fn submit_sync(&self, storage: &Storage, request: Request) -> Done {
        if let Ok(guard) = self.commit_lock.try_lock() {
            // No commit is running: lead one with our batch first.
            let mut group = vec![request];
            let mut waiters = Vec::new();
            self.drain_into(&mut group, &mut waiters);
            let mut results = commit_group(storage, &mut group).into_iter();
            let mut requests = group.into_iter();
            let own = Done {
                result: results.next().expect("one result per request"),
                request: requests.next().expect("own request"),
            };
            drop(guard);
            for ((request, result), waiter) in requests.zip(results).zip(waiters) {
                waiter.finish(Done { result, request });
            }
            self.wake_if_queued();
            return own;
        }
        let slot = Arc::new(Slot::default());
        self.enqueue(storage, request, Waiter::Sync(Arc::clone(&slot)));
        let mut done = lock(&slot.done);
        loop {
            if let Some(done) = done.take() {
                return done;
            }
            done = slot
                .ready
                .wait(done)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Commits the parts of one multi-stream transaction atomically, blocking the thread until
    /// they are durable (or failed). Runs between groups: it waits for a running group to end,
    /// and groups queued meanwhile run after it.
    pub(crate) fn commit_atomic(
        &self,
        storage: &Storage,
        parts: &mut [Request],
    ) -> Result<Vec<Appended>> {
        let guard = lock(&self.commit_lock);
        let result = commit_atomic(storage, parts);
        drop(guard);
        self.wake_if_queued();
        result
    }

    /// [`Committer::commit_atomic`] off the async runtime's threads: on tokio's blocking pool
    /// when called inside a runtime, else on a thread of its own. The transaction commits even if
    /// the caller stops waiting.
    pub(crate) async fn commit_atomic_async(
        storage: Storage,
        mut parts: Vec<Request>,
    ) -> Result<Vec<Appended>> {
        let (tx, rx) = oneshot::channel();
        let work = move || {
            let result = storage.shared.committer.commit_atomic(&storage, &mut parts);
            drop(storage);
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

    /// Queues `request` for the background thread; the receiver yields once it is durable.
    pub(crate) fn submit_async(
        &self,
        storage: &Storage,
        request: Request,
    ) -> oneshot::Receiver<Done> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(storage, request, Waiter::Async(tx));
        rx
    }

    fn enqueue(&self, storage: &Storage, request: Request, waiter: Waiter) {
        let mut queue = lock(&self.queue);
        queue.items.push_back((request, waiter));
        Self::ensure_thread(&mut queue, storage);
        drop(queue);
        self.work.notify_one();
    }

    fn ensure_thread(queue: &mut Queue, storage: &Storage) {
        if !queue.thread_started {
            queue.thread_started = true;
            spawn_background(Arc::downgrade(&storage.shared));
        }
    }

    fn wake_if_queued(&self) {
        if !lock(&self.queue).items.is_empty() {
            self.work.notify_one();
        }
    }

    /// Moves queued requests into `group` while the limits allow.
    fn drain_into(&self, group: &mut Vec<Request>, waiters: &mut Vec<Waiter>) {
        let mut queue = lock(&self.queue);
        let mut bytes: usize = group.iter().map(|r| r.buf.len()).sum();
        while group.len() < self.limits.max_batches {
            let Some((next, _)) = queue.items.front() else {
                break;
            };
            if bytes + next.buf.len() > self.limits.max_bytes && !group.is_empty() {
                break;
            }
            let (request, waiter) = queue.items.pop_front().expect("front exists");
            bytes += request.buf.len();
            group.push(request);
            waiters.push(waiter);
        }
    }

    /// Stops the background thread once the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.work.notify_all();
    }
}

impl Waiter {
    fn finish(self, done: Done) {
        match self {
            Waiter::Sync(slot) => {
                *lock(&slot.done) = Some(done);
                slot.ready.notify_one();
            }
            // A dropped receiver means the caller stopped waiting; the batch is committed anyway.
            Waiter::Async(tx) => drop(tx.send(done)),
        }
    }
}

/// How long a pending processor checkpoint waits for an append group to carry it before the
/// background thread commits it by itself.
pub(crate) const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_millis(50);

/// Starts the thread that commits groups nobody else is committing. It holds the store only
/// weakly, and only while it commits, so dropping every handle closes the store.
fn spawn_background(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("varvedb-commit".into())
        .spawn(move || background(shared));
    if let Err(e) = spawned {
        // Without the thread, queued requests would wait forever: fail loudly in the log, and
        // let synchronous callers keep committing themselves (they lead whenever they can).
        tracing::error!(error = %e, "could not start the group-commit thread");
    }
}

fn background(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let committer = Arc::clone(&shared.committer);
        drop(shared);
        // Wait for work without holding the store. Pending checkpoints wait a little for a group
        // to carry them, then are committed on their own.
        let mut idle_checkpoints = false;
        {
            let mut queue = lock(&committer.queue);
            while queue.items.is_empty() {
                if queue.closed {
                    return;
                }
                if committer.flush_requested.load(Ordering::Acquire) {
                    break;
                }
                if lock(&committer.pending_checkpoints).is_empty() {
                    queue = committer
                        .work
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                let (q, timeout) = committer
                    .work
                    .wait_timeout(queue, IDLE_CHECKPOINT_AFTER)
                    .unwrap_or_else(PoisonError::into_inner);
                queue = q;
                if timeout.timed_out() && queue.items.is_empty() {
                    idle_checkpoints = true;
                    break;
                }
            }
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let storage = Storage::from_shared(shared);
        // A poisoned store (an I/O failure in a commit) writes nothing more until reopened.
        if committer.flush_requested.swap(false, Ordering::AcqRel)
            && !storage.shared.poisoned.load(Ordering::Acquire)
        {
            let _guard = lock(&committer.commit_lock);
            if let Err(e) = crate::index::deferred::flush(&storage.shared) {
                tracing::warn!(error = %e, "writing the deferred stream index failed; the next flush retries");
            }
        }
        if idle_checkpoints {
            let _guard = lock(&committer.commit_lock);
            if let Err(e) = commit_checkpoints(&storage) {
                tracing::warn!(error = %e, "committing processor checkpoints failed; they stay pending");
            }
            continue;
        }
        let guard = lock(&committer.commit_lock);
        let mut group = Vec::new();
        let mut waiters = Vec::new();
        committer.drain_into(&mut group, &mut waiters);
        let wait = committer.limits.max_wait;
        if !wait.is_zero() && !group.is_empty() {
            let deadline = Instant::now() + wait;
            while group.len() < committer.limits.max_batches {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                let queue = lock(&committer.queue);
                let (queue, _) = committer
                    .work
                    .wait_timeout_while(queue, left, |q| q.items.is_empty() && !q.closed)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(queue);
                committer.drain_into(&mut group, &mut waiters);
            }
        }
        if group.is_empty() {
            continue;
        }
        let results = commit_group(&storage, &mut group);
        drop(guard);
        // Let go of the store before anyone is told their batch is done, so that a caller who
        // then drops the last handle really closes it.
        drop(storage);
        for ((request, result), waiter) in group.into_iter().zip(results).zip(waiters) {
            waiter.finish(Done { result, request });
        }
    }
}
