//! Exactly-once projections: a read model kept in the store's own LMDB environment, written in
//! the same transaction as the projector's checkpoint.

use std::marker::PhantomData;

use rkyv::util::AlignedVec;
use tokio::sync::watch;

use super::checkpoint;
use super::processor::{committed_head, Panicked};
use super::wake::{wait_for_work, StopHandle, Wake};
use crate::env::{Commit, WriteKind};
use crate::error::{Error, HandlerError, Result};
use crate::format::Envelope;
use crate::log::Scan;
use crate::read::view::PAYLOAD_ALIGN;
use crate::read::{Readable, Reader};
use crate::store::Storage;
use crate::types::Direction;

/// A projection applied in the store's write transaction: everything it writes through `txn`
/// commits together with the projector's checkpoint, or not at all.
///
/// `apply` may run again for the same events when a transaction is retried (after the map grew,
/// or after a crash): only what it writes through `txn` may carry state, never its own fields.
///
/// A projection fails with an error type of its choosing, `X` (VarveDB's [`Error`] by default,
/// so that `?` works on `heed` calls; see [`EventHandler`](crate::EventHandler)).
pub trait Projection<R: Readable, X: Into<HandlerError> = Error> {
    /// Applies one event.
    ///
    /// # Errors
    ///
    /// Any error aborts the whole batch: neither its writes nor the checkpoint move, and
    /// [`Projector::run`] returns it as [`Error::Handler`].
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: R::Ref<'_>,
    ) -> std::result::Result<(), X>;
}

impl Storage {
    /// A database of your own in this store's LMDB environment (created when missing), for the
    /// read model of a [`Projection`]. Read it with [`ReadTxn::heed`](crate::ReadTxn::heed).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProcessorName`] for an empty name or one over 255 bytes,
    /// [`Error::Lmdb`] (for example when the environment's 128 named databases are used up).
    pub fn projection_database(
        &self,
        name: &str,
    ) -> Result<heed::Database<'static, heed::types::Bytes, heed::types::Bytes>> {
        checkpoint::check_name(name)?;
        self.env.create_database(&format!("projection/{name}"))
    }
}

/// Runs a [`Projection`] over the log, exactly once per event.
///
/// Each batch (at most [`Projector::with_batch`] events) is one LMDB write transaction that
/// reads the events, applies them, and moves the checkpoint: a crash at any moment leaves the
/// read model and the checkpoint consistent, so no event is applied twice or lost. The write
/// lock is held while a batch is applied, so appends wait for it: keep batches short.
pub struct Projector<R: Readable, P, X = Error> {
    reader: Reader<R>,
    projection: Option<P>,
    name: String,
    wake: Wake,
    batch: usize,
    _error: PhantomData<fn() -> X>,
}

impl<R, P, X> Projector<R, P, X>
where
    R: Readable,
    P: Projection<R, X> + Send + 'static,
    X: Into<HandlerError> + 'static,
{
    /// A projector named `name` (its checkpoint's name) feeding `projection` from `reader`'s
    /// store, woken by `head`.
    pub fn new(
        reader: Reader<R>,
        projection: P,
        name: impl Into<String>,
        head: watch::Receiver<u64>,
    ) -> Self {
        Projector {
            reader,
            projection: Some(projection),
            name: name.into(),
            wake: Wake::new(head),
            batch: 1_000,
            _error: PhantomData,
        }
    }

    /// Applies at most `events` events per transaction (default 1,000; at least 1).
    pub fn with_batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// A handle that stops [`run`](Projector::run) from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.wake.stop_handle()
    }

    /// The projection.
    ///
    /// # Panics
    ///
    /// Never while `run` is not executing.
    pub fn projection(&self) -> &P {
        self.projection
            .as_ref()
            .expect("the projection is back once run returns")
    }

    /// Applies events until stopped; returns `Ok(())` after [`StopHandle::stop`] or when the
    /// store's writer side is gone.
    ///
    /// # Errors
    ///
    /// The projection's error (with its event's sequence in [`Error::Handler`]), a read error,
    /// or a write error. Nothing of the failing batch is kept.
    pub async fn run(&mut self) -> Result<()> {
        checkpoint::check_name(&self.name)?;
        let storage = self.reader.storage().clone();
        loop {
            if self.wake.stopped() {
                return Ok(());
            }
            let head = self.wake.head(&storage);
            let position = checkpoint::load(self.reader.log(), &self.name)?;
            if position < head {
                self.apply_next_batch(position).await?;
                continue;
            }
            if !wait_for_work(&mut self.wake).await {
                return Ok(());
            }
        }
    }

    /// Applies every event committed when it is called (and those committed meanwhile that it
    /// reaches), then returns the checkpoint: the last global sequence applied, committed with
    /// the read model. For rebuilds, batch jobs and tests, where [`run`](Projector::run) would
    /// wait for more events. Returns early after [`StopHandle::stop`].
    ///
    /// # Errors
    ///
    /// As [`run`](Projector::run).
    pub async fn run_until_caught_up(&mut self) -> Result<u64> {
        checkpoint::check_name(&self.name)?;
        let storage = self.reader.storage().clone();
        let target = committed_head(&storage)?;
        loop {
            let position = checkpoint::load(self.reader.log(), &self.name)?;
            if position >= target || self.wake.stopped() {
                return Ok(position);
            }
            self.apply_next_batch(position).await?;
        }
    }

    /// Applies the next batch after `position` on the blocking pool.
    async fn apply_next_batch(&mut self, position: u64) -> Result<()> {
        let mut projection = self.projection.take().expect("projection present");
        let reader = self.reader.clone();
        let name = self.name.clone();
        let batch = self.batch;
        let task = tokio::task::spawn_blocking(move || {
            let result = apply_batch(&reader, &mut projection, &name, batch);
            (projection, result)
        });
        let (projection, result) = task.await.map_err(|e| Error::Handler {
            processor: self.name.clone(),
            seq: position + 1,
            source: Box::new(Panicked(e.to_string())),
        })?;
        self.projection = Some(projection);
        result
    }
}

/// Applies the events after the checkpoint in one write transaction, up to `batch` records of
/// the log (events of other types, and shredded ones, are passed over but count), and moves the
/// checkpoint past the last record visited.
fn apply_batch<R, P, X>(
    reader: &Reader<R>,
    projection: &mut P,
    name: &str,
    batch: usize,
) -> Result<()>
where
    R: Readable,
    P: Projection<R, X>,
    X: Into<HandlerError>,
{
    let log = reader.log();
    let select = reader.select();
    // Records are copied out of the map so the transaction can be written while they are read;
    // record lengths are multiples of 16, so payloads stay 16-byte aligned in the copy.
    let mut records = AlignedVec::<PAYLOAD_ALIGN>::new();
    let mut spans: Vec<(u64, usize, usize)> = Vec::with_capacity(batch);
    log.env.write(WriteKind::Projection, |wtxn| {
        records.clear();
        spans.clear();
        let position = checkpoint::load_in(&log.dbs, wtxn, name)?;
        let last = {
            let mut scan = Scan::new(
                &log.dbs,
                wtxn,
                position + 1,
                Direction::Forward,
                select.clone(),
            )?
            .with_budget(batch as u64);
            for item in scan.by_ref() {
                let rec = item?;
                spans.push((rec.seq(), records.len(), rec.raw().len()));
                records.extend_from_slice(rec.raw());
            }
            scan.last_visited()
        };
        let Some(last) = last else {
            return Ok(Commit::Abort(()));
        };
        let mut memo = crate::read::ViewMemo::default();
        for &(seq, start, len) in &spans {
            let rec = crate::format::record::decode_event(seq, &records[start..start + len])?;
            let apply = |projection: &mut P, wtxn: &mut heed::RwTxn<'_>, view: &R::View<'_>| {
                projection
                    .apply(wtxn, &R::envelope(view), R::event(view))
                    .map_err(|e| Error::Handler {
                        processor: name.to_string(),
                        seq,
                        source: e.into(),
                    })
            };
            match reader.view_of(wtxn, rec, &mut memo) {
                Ok(view) => apply(projection, wtxn, &view)?,
                Err(e) => match crate::read::parts::of(reader, rec, e, false) {
                    // Each part of a split record, all in this transaction with the
                    // checkpoint past the record.
                    Ok(views) => {
                        for view in &views {
                            apply(projection, wtxn, view)?;
                        }
                    }
                    Err(Error::Shredded { .. }) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        checkpoint::put_in(&log.dbs, wtxn, name, last)?;
        Ok(Commit::Commit(()))
    })
}
