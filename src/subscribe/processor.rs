//! Processors (consumer groups): named, checkpointed, at-least-once handlers of the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::Archive;
use tokio::sync::watch;

use crate::engine::Reader;
use crate::error::{Error, Result};
use crate::log::Envelope;
use crate::storage::Storage;
use crate::subscribe::checkpoint;
use crate::types::Direction;

/// Handles the events a [`Processor`] delivers.
///
/// Implement [`handle`](EventHandler::handle) for the event alone, or
/// [`handle_envelope`](EventHandler::handle_envelope) to see its sequence, stream, version,
/// type, timestamp and ids as well. Handlers run on tokio's blocking pool, so a handler that
/// blocks does not block the runtime.
///
/// # What survives a restart
///
/// The processor's checkpoint is durable, in the store; the handler's own fields are not. After
/// a restart the processor resumes after its checkpoint, so a handler that keeps state in
/// memory (a counter, a map) starts empty and sees only the events after the checkpoint. Keep
/// state that must outlive the process in the store with a
/// [`Projector`](crate::subscribe::Projector), whose writes commit together with its
/// checkpoint (exactly once), or in a system of your own whose writes tolerate a repeat
/// (delivery is at least once). To rebuild in-memory state from the start at every launch,
/// call [`Storage::reset_processor`] with sequence 0 before running, or use a name of its own
/// per run.
pub trait EventHandler<E: Archive> {
    /// Handles one event.
    ///
    /// # Errors
    ///
    /// Any error; the processor's [`ErrorPolicy`] decides what happens next.
    fn handle(&mut self, event: &E::Archived) -> Result<()>;

    /// Handles one event with its envelope. The default calls [`handle`](EventHandler::handle).
    ///
    /// # Errors
    ///
    /// As [`handle`](EventHandler::handle).
    fn handle_envelope(&mut self, envelope: &Envelope<'_>, event: &E::Archived) -> Result<()> {
        let _ = envelope;
        self.handle(event)
    }
}

/// What a processor does when its handler fails, or an event cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop: `run` commits the checkpoint of everything handled before the failing event and
    /// returns the error. The next run starts at the failing event.
    #[default]
    Stop,
    /// Retry the event up to `attempts` more times, waiting `backoff` before the first retry and
    /// doubling it each time; then stop as [`ErrorPolicy::Stop`] does.
    Retry {
        /// Retries after the first failure.
        attempts: u32,
        /// Wait before the first retry.
        backoff: Duration,
    },
    /// Skip the event, record it in [`Processor::skipped`] and the log (`tracing::warn`), and go
    /// on.
    Skip,
}

/// Stops a running [`Processor`] or [`Projector`](crate::subscribe::Projector) from another
/// task or thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    wake: watch::Sender<bool>,
    flag: Arc<AtomicBool>,
}

/// What wakes a processor: a new committed head, or a stop request.
pub(crate) struct Wake {
    head: watch::Receiver<u64>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// The same stop request, cheap to check per event.
    stop_flag: Arc<AtomicBool>,
}

impl Wake {
    pub(crate) fn new(head: watch::Receiver<u64>) -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        Wake {
            head,
            stop_tx,
            stop_rx,
            stop_flag: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn stop_handle(&self) -> StopHandle {
        StopHandle {
            wake: self.stop_tx.clone(),
            flag: Arc::clone(&self.stop_flag),
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop_flag.load(Ordering::Acquire)
    }

    /// The committed head, marking the bus as seen.
    pub(crate) fn head(&mut self, storage: &Storage) -> u64 {
        (*self.head.borrow_and_update()).max(storage.head())
    }
}

/// Waits for a new head or a stop request. `false` when the store's writer side is gone.
pub(crate) async fn wait_for_work(wake: &mut Wake) -> bool {
    tokio::select! {
        changed = wake.head.changed() => changed.is_ok(),
        _ = wake.stop_rx.changed() => true,
    }
}

impl StopHandle {
    /// Asks the processor to stop: `run` returns after the event in hand and after committing
    /// the checkpoint of everything handled.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.send_replace(true);
    }
}

/// A named consumer of the log: it delivers every event after its checkpoint to its handler, in
/// order, and stores its checkpoint in the same store.
///
/// Delivery is at least once. The checkpoint is committed durably at least every
/// [`with_checkpoint_every`](Processor::with_checkpoint_every) events (default 10,000) and every
/// [`with_checkpoint_interval`](Processor::with_checkpoint_interval) (default 1 s) while events
/// flow, and when the processor stops or fails. When it catches up, its checkpoint rides along
/// with the next committed append group (no fsync of its own, and nothing on the delivery path),
/// or is committed after 50 ms without appends. A crash can deliver the events since the last
/// committed checkpoint again, never lose one. On start the processor resumes right after its checkpoint, at once, without waiting for
/// a new append; then it waits on the store's head (a `tokio::sync::watch`) for new events.
///
/// Events whose type the processor's [`Reader`] does not accept are passed over: a processor of
/// `E` sees the events of `E`. Records that cannot be read (damaged, or not a valid archive)
/// follow the [`ErrorPolicy`] like handler errors; none is skipped silently.
///
/// ```
/// use varvedb::engine::{EventHandler, Processor, Reader, Writer};
/// use varvedb::storage::{Storage, StorageConfig};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
/// #[rkyv(derive(Debug))]
/// pub struct MyEvent { pub id: u32 }
///
/// // Sends each event's id to the application (a handler runs on tokio's blocking pool).
/// struct Forward(tokio::sync::mpsc::UnboundedSender<u32>);
/// impl EventHandler<MyEvent> for Forward {
///     fn handle(&mut self, event: &ArchivedMyEvent) -> varvedb::error::Result<()> {
///         let _ = self.0.send(event.id.to_native());
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// let mut writer = Writer::<MyEvent>::new(storage.clone());
/// writer.append(1, 1, MyEvent { id: 5 })?;
/// let reader = Reader::<MyEvent>::new(storage.clone());
/// let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
/// let mut processor = Processor::new(reader, Forward(tx), "consumer_group_1", writer.subscribe());
/// let stop = processor.stop_handle();
/// let task = tokio::spawn(async move { processor.run().await });
/// assert_eq!(handled.recv().await, Some(5)); // history, at once
/// writer.append(1, 2, MyEvent { id: 7 })?;
/// assert_eq!(handled.recv().await, Some(7)); // then live events
/// stop.stop();
/// task.await??;
/// # Ok(()) }
/// ```
pub struct Processor<E, H> {
    reader: Reader<E>,
    handler: Option<H>,
    name: String,
    wake: Wake,
    policy: ErrorPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    skipped: Vec<(u64, String)>,
}

impl<E, H> Processor<E, H>
where
    E: Archive + 'static,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    H: EventHandler<E> + Send + 'static,
{
    /// A processor named `name` that feeds `handler` from `reader`'s store, woken by `head`
    /// (from [`Writer::subscribe`](crate::engine::Writer::subscribe) or
    /// [`Storage::subscribe`]).
    pub fn new(
        reader: Reader<E>,
        handler: H,
        name: impl Into<String>,
        head: watch::Receiver<u64>,
    ) -> Self {
        Processor {
            reader,
            handler: Some(handler),
            name: name.into(),
            wake: Wake::new(head),
            policy: ErrorPolicy::Stop,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(1),
            skipped: Vec::new(),
        }
    }

    /// Sets what happens when the handler fails (default [`ErrorPolicy::Stop`]).
    pub fn with_error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Commits the checkpoint at least every `events` handled events (default 10,000; at least
    /// 1). Smaller batches mean fewer redeliveries after a crash and more fsyncs.
    pub fn with_checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }

    /// Commits the checkpoint at least this often while events flow (default 1 s).
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// A handle that stops [`run`](Processor::run) from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.wake.stop_handle()
    }

    /// The handler.
    ///
    /// # Panics
    ///
    /// Never while `run` is not executing; `run` lends the handler to a blocking task while it
    /// handles a batch.
    pub fn handler(&self) -> &H {
        self.handler
            .as_ref()
            .expect("the handler is back once run returns")
    }

    /// The processor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Events skipped under [`ErrorPolicy::Skip`] since this value was created: sequence and
    /// reason.
    pub fn skipped(&self) -> &[(u64, String)] {
        &self.skipped
    }

    /// The committed checkpoint: the last global sequence this processor handled as far as a
    /// crash is concerned (0 if none). It trails the events handled by at most one checkpoint
    /// batch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProcessorName`], [`Error::Corrupted`] for a damaged checkpoint,
    /// [`Error::Lmdb`].
    pub fn checkpoint(&self) -> Result<u64> {
        checkpoint::check_name(&self.name)?;
        checkpoint::load(self.reader.storage(), &self.name)
    }

    /// Delivers events until stopped. Returns `Ok(())` after [`StopHandle::stop`] or when the
    /// store's writer side is gone, having committed the checkpoint of everything handled.
    ///
    /// # Errors
    ///
    /// [`Error::Handler`] when the handler fails and the policy stops (the checkpoint is then
    /// just before the failing event), a read error under [`ErrorPolicy::Stop`], and the errors
    /// of committing the checkpoint.
    pub async fn run(&mut self) -> Result<()> {
        checkpoint::check_name(&self.name)?;
        let storage = self.reader.storage().clone();
        // `handled`: where delivery goes on from; `durable`: the committed checkpoint.
        let mut handled = checkpoint::load(&storage, &self.name)?;
        let mut durable = handled;
        loop {
            if self.wake.stopped() {
                return self.flush(&storage, handled, durable);
            }
            let head = self.wake.head(&storage);
            if handled < head {
                (handled, durable) = self.deliver_available(handled, durable).await?;
                continue;
            }
            // Caught up: the checkpoint, if any is pending, rides along with the next append
            // group or is committed by the store's commit thread.
            if !wait_for_work(&mut self.wake).await {
                return self.flush(&storage, handled, durable);
            }
        }
    }

    /// Delivers every event committed when it is called (and those committed meanwhile that it
    /// reaches), commits the checkpoint durably, and returns it: the last global sequence
    /// handled. Useful in tests, batch jobs and rebuilds, where [`run`](Processor::run) would
    /// wait for more events. Events of other processes count as soon as they are committed.
    ///
    /// Returns early, with the checkpoint committed, after [`StopHandle::stop`].
    ///
    /// # Errors
    ///
    /// As [`run`](Processor::run).
    ///
    /// ```
    /// use varvedb::engine::{EventHandler, Processor, Reader, Writer};
    /// use varvedb::storage::{Storage, StorageConfig};
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    /// pub struct Deposited { pub cents: u64 }
    ///
    /// struct Total(u64);
    /// impl EventHandler<Deposited> for Total {
    ///     fn handle(&mut self, event: &ArchivedDeposited) -> varvedb::error::Result<()> {
    ///         self.0 += event.cents.to_native();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// let mut writer = Writer::<Deposited>::new(storage.clone());
    /// writer.append(1, 1, Deposited { cents: 250 })?;
    /// writer.append(2, 1, Deposited { cents: 100 })?;
    /// let reader = Reader::<Deposited>::new(storage.clone());
    /// let mut totals = Processor::new(reader, Total(0), "totals", storage.subscribe());
    /// assert_eq!(totals.run_until_caught_up().await?, 2); // the checkpoint
    /// assert_eq!(totals.handler().0, 350);
    /// assert_eq!(storage.processors()?, [("totals".to_string(), 2)]);
    /// # Ok(()) }
    /// ```
    pub async fn run_until_caught_up(&mut self) -> Result<u64> {
        checkpoint::check_name(&self.name)?;
        let storage = self.reader.storage().clone();
        let target = committed_head(&storage)?;
        let mut handled = checkpoint::load(&storage, &self.name)?;
        let mut durable = handled;
        while handled < target && !self.wake.stopped() {
            (handled, durable) = self.deliver_available(handled, durable).await?;
        }
        self.flush(&storage, handled, durable)?;
        Ok(handled)
    }

    /// Hands the handler to the blocking pool for one batch from `handled` to the end of the
    /// log; returns where delivery and the committed checkpoint stand afterwards.
    async fn deliver_available(&mut self, handled: u64, durable: u64) -> Result<(u64, u64)> {
        let handler = self
            .handler
            .take()
            .expect("handler present between batches");
        let job = Batch {
            reader: self.reader.clone(),
            name: self.name.clone(),
            policy: self.policy,
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: self.checkpoint_interval,
            stop: Arc::clone(&self.wake.stop_flag),
        };
        let task = tokio::task::spawn_blocking(move || job.run(handler, handled, durable));
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                // The handler panicked and is lost with its task; the checkpoint stays where
                // it was committed, so its events are delivered again next time.
                return Err(Error::Handler {
                    processor: self.name.clone(),
                    seq: durable + 1,
                    reason: format!("handler panicked: {e}"),
                });
            }
        };
        self.handler = Some(outcome.handler);
        self.skipped.extend(outcome.skipped);
        outcome.result?;
        Ok((outcome.handled, outcome.durable))
    }

    /// Commits the checkpoint of everything handled, if it is not committed yet.
    fn flush(&self, storage: &Storage, handled: u64, durable: u64) -> Result<()> {
        if durable < handled {
            checkpoint::advance(storage, &self.name, handled)?;
            crate::metrics::checkpoint_committed(storage, &self.name, handled);
            storage
                .shared
                .committer
                .checkpoints_stored(&[(self.name.clone(), handled)]);
        }
        Ok(())
    }
}

/// The last committed global sequence of the log, other processes' appends included.
pub(crate) fn committed_head(storage: &Storage) -> Result<u64> {
    let txn = storage.env.read_txn()?;
    crate::index::deferred::last_seq(&storage.shared.dbs, txn.raw())
}

/// One run of the handler over the events available, on the blocking pool.
struct Batch<E> {
    reader: Reader<E>,
    name: String,
    policy: ErrorPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    stop: Arc<AtomicBool>,
}

struct Outcome<H> {
    handler: H,
    /// The last event handled (or passed over).
    handled: u64,
    /// The committed checkpoint.
    durable: u64,
    skipped: Vec<(u64, String)>,
    result: Result<()>,
}

/// Longest a batch keeps one read transaction.
const MAX_TXN_AGE: Duration = Duration::from_millis(100);

impl<E> Batch<E>
where
    E: Archive + 'static,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Handles events after `handled` until the log ends, the processor is stopped, or an error
    /// stops it. Commits the checkpoint every `checkpoint_every` events or `checkpoint_interval`,
    /// and on stop or error; at the end of the log it leaves the checkpoint to the next append
    /// group.
    fn run<H: EventHandler<E>>(
        self,
        mut handler: H,
        mut handled: u64,
        mut durable: u64,
    ) -> Outcome<H> {
        let storage = self.reader.storage().clone();
        let mut skipped = Vec::new();
        let mut committed_at = Instant::now();
        let result = (|| -> Result<()> {
            loop {
                let txn = storage.env.read_txn()?;
                let opened = Instant::now();
                let mut seen = 0u64;
                let mut events = self
                    .reader
                    .read_log(&txn, handled + 1, Direction::Forward)?;
                loop {
                    let Some(item) = events.next() else {
                        if durable < handled {
                            storage
                                .shared
                                .committer
                                .post_checkpoint(&storage, &self.name, handled);
                        }
                        return Ok(());
                    };
                    seen += 1;
                    handled = match item {
                        Ok(view) => {
                            let envelope = view.envelope();
                            self.deliver(&mut handler, &mut skipped, view.seq(), |h| {
                                h.handle_envelope(&envelope, &view)
                            })?;
                            view.seq()
                        }
                        // Events of other types are not this processor's, and shredded
                        // events can never be read: both are passed over.
                        Err(Error::WrongEventType { seq, .. } | Error::Shredded { seq, .. }) => seq,
                        // An unreadable record is skipped only when the policy says so.
                        Err(e) => match (e.seq(), self.policy) {
                            (Some(seq), ErrorPolicy::Skip) => {
                                tracing::warn!(processor = %self.name, seq, error = %e, "skipping unreadable event");
                                skipped.push((seq, e.to_string()));
                                seq
                            }
                            _ => return Err(e),
                        },
                    };
                    if self.stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    let due = handled - durable >= self.checkpoint_every
                        || (seen.is_multiple_of(64)
                            && committed_at.elapsed() >= self.checkpoint_interval);
                    if due {
                        checkpoint::advance(&storage, &self.name, handled)?;
                        crate::metrics::checkpoint_committed(&storage, &self.name, handled);
                        durable = handled;
                        committed_at = Instant::now();
                    }
                    if seen.is_multiple_of(64) && opened.elapsed() > MAX_TXN_AGE {
                        break;
                    }
                }
            }
        })();
        // On stop or error, keep what was handled.
        let stopping = result.is_err() || self.stop.load(Ordering::Acquire);
        let result = if stopping && durable < handled {
            match checkpoint::advance(&storage, &self.name, handled) {
                Ok(()) => {
                    crate::metrics::checkpoint_committed(&storage, &self.name, handled);
                    durable = handled;
                    result
                }
                Err(e) => result.and(Err(e)),
            }
        } else {
            result
        };
        Outcome {
            handler,
            handled,
            durable,
            skipped,
            result,
        }
    }

    /// Calls `f` on the handler under the error policy. `Err` means: stop here.
    fn deliver<H>(
        &self,
        handler: &mut H,
        skipped: &mut Vec<(u64, String)>,
        seq: u64,
        mut f: impl FnMut(&mut H) -> Result<()>,
    ) -> Result<()> {
        let mut retries_left = match self.policy {
            ErrorPolicy::Retry { attempts, .. } => attempts,
            _ => 0,
        };
        let mut backoff = match self.policy {
            ErrorPolicy::Retry { backoff, .. } => backoff,
            _ => Duration::ZERO,
        };
        loop {
            let err = match f(handler) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if retries_left > 0 && !self.stop.load(Ordering::Acquire) {
                retries_left -= 1;
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
                continue;
            }
            if self.policy == ErrorPolicy::Skip {
                tracing::warn!(processor = %self.name, seq, error = %err, "skipping event");
                skipped.push((seq, err.to_string()));
                return Ok(());
            }
            return Err(Error::Handler {
                processor: self.name.clone(),
                seq,
                reason: err.to_string(),
            });
        }
    }
}

impl Storage {
    /// Every processor that ever committed a checkpoint, with its checkpoint, ordered by name.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a damaged checkpoint, [`Error::Lmdb`].
    pub fn processors(&self) -> Result<Vec<(String, u64)>> {
        checkpoint::list(self)
    }

    /// Sets the checkpoint of processor `name` to `seq` (0: the start), so that its next run
    /// delivers every event after `seq` again: how a projection is rebuilt. Do not call it while
    /// that processor runs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProcessorName`], [`Error::Lmdb`].
    pub fn reset_processor(&self, name: &str, seq: u64) -> Result<()> {
        checkpoint::check_name(name)?;
        self.shared.committer.forget_checkpoint(name);
        checkpoint::store(self, name, seq)
    }
}
