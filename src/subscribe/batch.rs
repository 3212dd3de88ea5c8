//! One run of a processor's handler over the events available, on tokio's blocking pool.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handler::{ErrorPolicy, EventHandler};
use super::processor::commit_checkpoint;
use crate::error::{Error, HandlerError, Result};
use crate::log::{LogCursor, Select, Step};
use crate::read::parts;
use crate::read::ViewMemo;
use crate::read::{Readable, Reader};
use crate::types::Direction;

/// The handler's work for one call of [`Batch::run`].
pub(super) struct Batch<R: Readable> {
    pub reader: Reader<R>,
    /// What the handler gets: the reader's types, or what the processor's filter takes.
    pub select: Select,
    pub name: String,
    pub policy: ErrorPolicy,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub stop: Arc<AtomicBool>,
    /// At the end of the log, post the checkpoint to ride along with the next commit.
    pub ride_along: bool,
}

/// What a batch hands back.
pub(super) struct Outcome<H> {
    pub handler: H,
    /// The last event handled (or passed over).
    pub handled: u64,
    /// The committed checkpoint.
    pub durable: u64,
    pub skipped: Vec<(u64, String)>,
    pub result: Result<()>,
}

/// Events handled between two looks at the clock for a time-based checkpoint.
const CLOCK_EVERY: u64 = 64;

impl<R: Readable> Batch<R> {
    /// Handles the events after `handled` until the log ends, the processor is stopped, or an
    /// error stops it, walking the log with the reader's cursor: events of other types are
    /// passed over without being read, shredded ones too (there is nothing to hand the handler).
    /// Commits the checkpoint every `checkpoint_every` events handed to the handler or
    /// `checkpoint_interval`, between the cursor's read transactions, and on stop or error; at
    /// the end of the log it posts the checkpoint to ride along with the next commit (when
    /// `ride_along`).
    pub(super) fn run<H, X>(self, mut handler: H, handled: u64, durable: u64) -> Outcome<H>
    where
        H: EventHandler<R, X>,
        X: Into<HandlerError>,
    {
        let storage = self.reader.storage().clone();
        let log = self.reader.log();
        let select = &self.select;
        let mut cursor = LogCursor::new(handled + 1, Direction::Forward, self.reader.max_txn_age());
        let mut memo = ViewMemo::default();
        let mut skipped = Vec::new();
        let mut handled = handled;
        let mut durable = durable;
        let mut committed_at = Instant::now();
        let mut seen = 0u64;
        // Events handed to the handler since the last checkpoint: what the checkpoint interval
        // counts, so that a processor whose filter passes over most of the log commits as often
        // per handled event as one that takes everything.
        let mut since_checkpoint = 0u64;
        let result = (|| -> Result<()> {
            loop {
                let mut failure = None;
                let mut checkpoint_due = false;
                let step = cursor.step(log, &storage.store.index, select, |txn, rec| {
                    let seq = rec.seq();
                    // Every record before this one was visited: handled or passed over.
                    handled = handled.max(seq - 1);
                    let delivered = match self.reader.view_of(txn.raw(), rec, &mut memo) {
                        Ok(view) => self.deliver_view(&mut handler, &mut skipped, seq, &view),
                        Err(e) => match parts::of(&self.reader, rec, e, false) {
                            // Each part of a split record, one by one: the checkpoint passes
                            // the record once all are handled.
                            Ok(views) => views.iter().try_for_each(|view| {
                                self.deliver_view(&mut handler, &mut skipped, seq, view)
                            }),
                            Err(e) => self.unreadable(&mut skipped, seq, e),
                        },
                    };
                    if let Err(e) = delivered {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                    handled = seq;
                    seen += 1;
                    since_checkpoint += 1;
                    checkpoint_due = since_checkpoint >= self.checkpoint_every
                        || (seen.is_multiple_of(CLOCK_EVERY)
                            && committed_at.elapsed() >= self.checkpoint_interval);
                    if checkpoint_due || self.stop.load(Ordering::Acquire) {
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                })?;
                let step = match step {
                    Step::Failed(e) => {
                        let seq = e.seq().expect("a failed step names its record");
                        handled = handled.max(seq - 1);
                        self.unreadable(&mut skipped, seq, e)?;
                        handled = seq;
                        continue;
                    }
                    step => step,
                };
                if let Some(e) = failure {
                    return Err(e);
                }
                if !matches!(step, Step::Stopped) {
                    // Everything up to the cursor was visited.
                    handled = handled.max(cursor.position() - 1);
                }
                if self.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                if checkpoint_due {
                    commit_checkpoint(&storage, &self.name, handled)?;
                    durable = handled;
                    committed_at = Instant::now();
                    since_checkpoint = 0;
                }
                if matches!(step, Step::End) {
                    if durable < handled && self.ride_along {
                        storage.store.checkpoints.post(&self.name, handled);
                    }
                    return Ok(());
                }
            }
        })();
        // On stop or error, keep what was handled.
        let stopping = result.is_err() || self.stop.load(Ordering::Acquire);
        let result = if stopping && durable < handled {
            match commit_checkpoint(&storage, &self.name, handled) {
                Ok(()) => {
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

    /// What happens to an event that cannot be read: a shredded one is passed over (it can never
    /// be read), one that this build's event type cannot read (a changed layout, a schema
    /// version without an upcast, a newer version stored under a new name, a payload that is not
    /// an archive of the type) stops the
    /// processor whatever its policy, since passing over it would silently drop history; another
    /// is skipped only when the policy says so. `Err` means: stop here.
    fn unreadable(&self, skipped: &mut Vec<(u64, String)>, seq: u64, e: Error) -> Result<()> {
        match e {
            Error::Shredded { .. } => Ok(()),
            e @ (Error::LayoutChanged { .. }
            | Error::UnknownSchemaVersion { .. }
            | Error::RenamedEventType { .. }
            | Error::InvalidPayload { .. }) => Err(e),
            e if self.policy == ErrorPolicy::Skip => {
                tracing::warn!(processor = %self.name, seq, error = %e, "skipping unreadable event");
                skipped.push((seq, e.to_string()));
                Ok(())
            }
            e => Err(e),
        }
    }

    /// Hands one event to the handler under the error policy. `Err` means: stop here.
    #[inline]
    fn deliver_view<H, X>(
        &self,
        handler: &mut H,
        skipped: &mut Vec<(u64, String)>,
        seq: u64,
        view: &R::View<'_>,
    ) -> Result<()>
    where
        H: EventHandler<R, X>,
        X: Into<HandlerError>,
    {
        let envelope = R::envelope(view);
        self.deliver(handler, skipped, seq, |h| {
            h.handle_envelope(&envelope, R::event(view))
        })
    }

    /// Calls `f` on the handler under the error policy. `Err` means: stop here.
    fn deliver<H, X>(
        &self,
        handler: &mut H,
        skipped: &mut Vec<(u64, String)>,
        seq: u64,
        mut f: impl FnMut(&mut H) -> std::result::Result<(), X>,
    ) -> Result<()>
    where
        X: Into<HandlerError>,
    {
        let mut retries_left = match self.policy {
            ErrorPolicy::Retry { attempts, .. } => attempts,
            _ => 0,
        };
        let mut backoff = match self.policy {
            ErrorPolicy::Retry { backoff, .. } => backoff,
            _ => Duration::ZERO,
        };
        loop {
            let err: HandlerError = match f(handler) {
                Ok(()) => return Ok(()),
                Err(e) => e.into(),
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
                source: err,
            });
        }
    }
}
