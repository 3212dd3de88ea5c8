//! Processors (consumer groups): named, checkpointed, at-least-once handlers of the log.

use std::marker::PhantomData;
use std::time::Duration;

use tokio::sync::watch;

use super::batch::Batch;
use super::checkpoint;
use super::handler::{ErrorPolicy, EventHandler};
use super::wake::{wait_for_work, StopHandle, Wake};
use crate::error::{Error, HandlerError, Result};
use crate::read::{Filter, Readable, Reader};
use crate::store::Storage;

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
/// use varvedb::{EventHandler, Processor, Reader, Writer};
/// use varvedb::{Storage, StorageConfig};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
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
pub struct Processor<R: Readable, H, X = Error> {
    reader: Reader<R>,
    handler: Option<H>,
    name: String,
    wake: Wake,
    policy: ErrorPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    skipped: Vec<(u64, String)>,
    /// Which events the handler gets; `None`: every event of the reader's types.
    filter: Option<Filter>,
    _error: PhantomData<fn() -> X>,
}

impl<R, H, X> Processor<R, H, X>
where
    R: Readable,
    H: EventHandler<R, X> + Send + 'static,
    X: Into<HandlerError> + 'static,
{
    /// A processor named `name` that feeds `handler` from `reader`'s store, woken by `head`
    /// (from [`Writer::subscribe`](crate::Writer::subscribe) or
    /// [`Storage::subscribe`]).
    pub fn new(
        reader: Reader<R>,
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
            filter: None,
            _error: PhantomData,
        }
    }

    /// Hands the handler only the events `filter` takes (see [`Filter`]): a processor of one
    /// category, or of some event types, reads their events from the label index and passes
    /// over the rest of the log without reading it. Its checkpoint is a global position as
    /// always, so the filter can change between runs: the processor goes on after its
    /// checkpoint with the new one.
    ///
    /// A stream or category the filter was given that is not one fails [`Processor::run`] with
    /// [`Error::InvalidStreamId`] or [`Error::InvalidStreamName`].
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
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
        checkpoint::load(self.reader.log(), &self.name)
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
        let mut handled = checkpoint::load(self.reader.log(), &self.name)?;
        let mut durable = handled;
        loop {
            if self.wake.stopped() {
                return self.flush(&storage, handled, durable);
            }
            let head = self.wake.head(&storage);
            if handled < head {
                (handled, durable) = self.deliver_available(handled, durable, true).await?;
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
    /// use varvedb::{EventHandler, Processor, Reader, Writer};
    /// use varvedb::{Storage, StorageConfig};
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
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
        let mut handled = checkpoint::load(self.reader.log(), &self.name)?;
        let mut durable = handled;
        while handled < target && !self.wake.stopped() {
            // The checkpoint is committed below: nothing to post for a commit to carry.
            (handled, durable) = self.deliver_available(handled, durable, false).await?;
        }
        self.flush(&storage, handled, durable)?;
        Ok(handled)
    }

    /// Hands the handler to the blocking pool for one batch from `handled` to the end of the
    /// log; returns where delivery and the committed checkpoint stand afterwards. With
    /// `ride_along`, a checkpoint left uncommitted at the end rides along with the next commit.
    async fn deliver_available(
        &mut self,
        handled: u64,
        durable: u64,
        ride_along: bool,
    ) -> Result<(u64, u64)> {
        let handler = self
            .handler
            .take()
            .expect("handler present between batches");
        let select = match &self.filter {
            Some(filter) => filter.clone().select(&self.reader)?,
            None => self.reader.select(),
        };
        let job = Batch {
            reader: self.reader.clone(),
            select,
            name: self.name.clone(),
            policy: self.policy,
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: self.checkpoint_interval,
            stop: self.wake.stop_flag(),
            ride_along,
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
                    source: Box::new(Panicked(e.to_string())),
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
            commit_checkpoint(storage, &self.name, handled)?;
        }
        Ok(())
    }
}

/// The last committed global sequence of the log, other processes' appends included.
pub(crate) fn committed_head(storage: &Storage) -> Result<u64> {
    let txn = storage.env.read_txn()?;
    storage.store.log.dbs.last_seq(txn.raw())
}

/// Durably commits checkpoint `seq` of processor `name` (never moving it back), and drops what
/// the board held for it up to there.
pub(crate) fn commit_checkpoint(storage: &Storage, name: &str, seq: u64) -> Result<()> {
    let store = &storage.store;
    checkpoint::advance(&store.log, name, seq)?;
    store.checkpoints.stored(&[(name.to_string(), seq)]);
    crate::metrics::handles::checkpoint_committed(
        store.log.env.metrics(),
        storage.head(),
        name,
        seq,
    );
    Ok(())
}

/// A handler's panic, as the source of [`Error::Handler`].
#[derive(Debug)]
pub(crate) struct Panicked(pub(crate) String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl Storage {
    /// Every processor that ever committed a checkpoint, with its checkpoint, ordered by name.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a damaged checkpoint, [`Error::Lmdb`].
    pub fn processors(&self) -> Result<Vec<(String, u64)>> {
        checkpoint::list(&self.store.log)
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
        self.store.checkpoints.forget(name);
        checkpoint::store(&self.store.log, name, seq)
    }
}
