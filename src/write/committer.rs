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

use super::{Request, WritePath};
use crate::error::Result;
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
    /// The commit thread, once started, until [`Committer::close`] joins it.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The group committer of one store: the queue of batches, the lock that makes commits of this
/// process one at a time, and the commit thread's work.
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    work: Condvar,
    commit_lock: Mutex<()>,
    limits: GroupCommit,
    /// The index's tail has grown past its interval: the commit thread flushes it.
    flush_requested: AtomicBool,
    /// A rider has new work: the commit thread looks at the riders' deadlines again. Checked
    /// under the queue's lock, so a post that comes while the thread goes to sleep wakes it.
    riders_changed: AtomicBool,
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
            flush_requested: AtomicBool::new(false),
            riders_changed: AtomicBool::new(false),
        }
    }

    /// Takes the commit lock: no other write transaction of the log starts in this process
    /// until the guard drops.
    pub(crate) fn lock_commits(&self) -> MutexGuard<'_, ()> {
        lock(&self.commit_lock)
    }

    /// Asks the commit thread to flush the stream index.
    pub(crate) fn request_flush(&self, wp: &WritePath) {
        if !self.flush_requested.swap(true, Ordering::AcqRel) {
            self.wake(wp);
        }
    }

    /// Wakes the commit thread (starting it if needed), for a flush.
    pub(crate) fn wake(&self, wp: &WritePath) {
        Self::ensure_thread(&mut lock(&self.queue), wp);
        self.work.notify_one();
    }

    /// Wakes the commit thread (starting it if needed) for riders' new work.
    pub(crate) fn riders_changed(&self, wp: &WritePath) {
        let mut queue = lock(&self.queue);
        self.riders_changed.store(true, Ordering::Release);
        Self::ensure_thread(&mut queue, wp);
        drop(queue);
        self.work.notify_one();
    }

    /// Commits `request` and returns once it is durable (or failed), blocking the thread.
    pub(crate) fn submit_sync(wp: &Arc<WritePath>, request: Request) -> Done {
        let this = &*wp.committer;
        if let Ok(guard) = this.commit_lock.try_lock() {
            // No commit is running: lead one with our batch first.
            let mut group = vec![request];
            let mut waiters = Vec::new();
            this.drain_into(&mut group, &mut waiters);
            let mut results = wp.commit_group(&mut group).into_iter();
            let mut requests = group.into_iter();
            let own = Done {
                result: results.next().expect("one result per request"),
                request: requests.next().expect("own request"),
            };
            drop(guard);
            for ((request, result), waiter) in requests.zip(results).zip(waiters) {
                waiter.finish(Done { result, request });
            }
            this.wake_if_queued();
            return own;
        }
        let slot = Arc::new(Slot::default());
        this.enqueue(wp, request, Waiter::Sync(Arc::clone(&slot)));
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

    /// Queues `request` for the commit thread; the receiver yields once it is durable.
    pub(crate) fn submit_async(wp: &Arc<WritePath>, request: Request) -> oneshot::Receiver<Done> {
        let (tx, rx) = oneshot::channel();
        wp.committer.enqueue(wp, request, Waiter::Async(tx));
        rx
    }

    fn enqueue(&self, wp: &WritePath, request: Request, waiter: Waiter) {
        let mut queue = lock(&self.queue);
        queue.items.push_back((request, waiter));
        Self::ensure_thread(&mut queue, wp);
        drop(queue);
        self.work.notify_one();
    }

    fn ensure_thread(queue: &mut Queue, wp: &WritePath) {
        if !queue.thread_started && !queue.closed {
            queue.thread_started = true;
            queue.thread = spawn_background(wp.me());
        }
    }

    /// Wakes the commit thread when batches are queued.
    pub(crate) fn wake_if_queued(&self) {
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

    /// Stops the commit thread once the queue is empty, and waits until it has ended: a closed
    /// store leaves no thread of its own behind. (Unless called on the commit thread itself,
    /// when it let go of the store last: it ends as soon as this returns.)
    pub(crate) fn close(&self) {
        let thread = {
            let mut queue = lock(&self.queue);
            queue.closed = true;
            queue.thread.take()
        };
        self.work.notify_all();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("the group-commit thread panicked");
            }
        }
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

/// Starts the thread that commits groups nobody else is committing, flushes the index and
/// commits riders' work when it is due. It holds the write path only weakly, and only while it
/// works, so dropping the store closes it.
fn spawn_background(wp: Weak<WritePath>) -> Option<std::thread::JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name("varvedb-commit".into())
        .spawn(move || background(wp));
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            // Without the thread, queued requests would wait forever: fail loudly in the log,
            // and let synchronous callers keep committing themselves (they lead whenever they
            // can).
            tracing::error!(error = %e, "could not start the group-commit thread");
            None
        }
    }
}

/// What woke the commit thread.
enum Wake {
    /// Batches are queued (or a flush was asked for).
    Work,
    /// Riders' work is due and no batch came to carry it.
    RidersDue,
    /// The store is closing and the queue is empty.
    Closed,
}

/// Waits for work: queued batches, a requested flush, riders' work coming `due` (as the caller
/// read it before), new riders' work, or the end. The caller holds only the committer, never the
/// write path, while it waits.
fn wait_for_work(this: &Committer, due: Option<Instant>) -> Wake {
    let mut queue = lock(&this.queue);
    if !queue.items.is_empty() || this.flush_requested.load(Ordering::Acquire) {
        return Wake::Work;
    }
    if queue.closed {
        return Wake::Closed;
    }
    // Work posted since the caller read `due`: read the deadlines again.
    if this.riders_changed.swap(false, Ordering::AcqRel) {
        return Wake::Work;
    }
    match due {
        // Woken by new work, or by riders with new work: look at everything again.
        None => {
            queue = this
                .work
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            drop(queue);
            Wake::Work
        }
        Some(due) => {
            let Some(left) = due.checked_duration_since(Instant::now()) else {
                return Wake::RidersDue;
            };
            let (queue, timeout) = this
                .work
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner);
            if timeout.timed_out() && queue.items.is_empty() && !queue.closed {
                Wake::RidersDue
            } else {
                Wake::Work
            }
        }
    }
}

fn background(weak: Weak<WritePath>) {
    loop {
        let (committer, due) = match weak.upgrade() {
            Some(wp) => (Arc::clone(&wp.committer), wp.riders_due()),
            None => return,
        };
        let wake = wait_for_work(&committer, due);
        drop(committer);
        if let Wake::Closed = wake {
            return;
        }
        let Some(wp) = weak.upgrade() else {
            return;
        };
        let this = &*wp.committer;
        // A poisoned store writes nothing more until reopened; queued batches still get their
        // error from the commit below.
        let poisoned = wp.log.env.guard().poison.is_set();
        if this.flush_requested.swap(false, Ordering::AcqRel) && !poisoned {
            if let Err(e) = wp.flush_index() {
                tracing::warn!(error = %e, "writing the deferred stream index failed; the next flush retries");
            }
        }
        if let Wake::RidersDue = wake {
            if !poisoned {
                if let Err(e) = wp.commit_riders() {
                    tracing::warn!(error = %e, "committing riders' work by itself failed; it stays pending");
                }
            }
            continue;
        }
        let guard = this.lock_commits();
        let mut group = Vec::new();
        let mut waiters = Vec::new();
        this.drain_into(&mut group, &mut waiters);
        let wait = this.limits.max_wait;
        if !wait.is_zero() && !group.is_empty() {
            let deadline = Instant::now() + wait;
            while group.len() < this.limits.max_batches {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                let queue = lock(&this.queue);
                let (queue, _) = this
                    .work
                    .wait_timeout_while(queue, left, |q| q.items.is_empty() && !q.closed)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(queue);
                this.drain_into(&mut group, &mut waiters);
            }
        }
        if group.is_empty() {
            continue;
        }
        let results = wp.commit_group(&mut group);
        drop(guard);
        // Let go of the store before anyone is told their batch is done, so that a caller who
        // then drops the last handle really closes it.
        drop(wp);
        for ((request, result), waiter) in group.into_iter().zip(results).zip(waiters) {
            waiter.finish(Done { result, request });
        }
    }
}
