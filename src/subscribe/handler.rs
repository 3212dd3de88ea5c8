//! What a processor calls: the [`EventHandler`] and its [`ErrorPolicy`].

use std::time::Duration;

use crate::read::Readable;

use crate::error::{Error, HandlerError};
use crate::format::Envelope;

/// Handles the events a [`Processor`](crate::Processor) delivers.
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
/// [`Projector`](crate::Projector), whose writes commit together with its
/// checkpoint (exactly once), or in a system of your own whose writes tolerate a repeat
/// (delivery is at least once). To rebuild in-memory state from the start at every launch,
/// call [`Storage::reset_processor`](crate::Storage::reset_processor) with sequence 0 before running, or use a name of its own
/// per run.
///
/// # Errors of its own
///
/// A handler fails with an error type of its choosing, `X`: VarveDB's [`Error`] by default (so
/// that `?` works on the store's calls), or any error that converts into a boxed
/// `std::error::Error` ([`HandlerError`] itself, `anyhow::Error`, a type of yours). The
/// processor reports it as [`Error::Handler`], with the handler's error as its source.
///
/// ```
/// use varvedb::{Envelope, EventHandler, HandlerError};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// pub struct Shipped { pub order: u64 }
///
/// #[derive(Debug)]
/// struct Unknown(u64);
/// impl std::fmt::Display for Unknown {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "order {} is unknown", self.0)
///     }
/// }
/// impl std::error::Error for Unknown {}
///
/// struct Shipping;
/// impl EventHandler<Shipped, Unknown> for Shipping {
///     fn handle(&mut self, event: &ArchivedShipped) -> Result<(), Unknown> {
///         Err(Unknown(event.order.to_native()))
///     }
/// }
/// ```
pub trait EventHandler<R: Readable, X: Into<HandlerError> = Error> {
    /// Handles one event.
    ///
    /// # Errors
    ///
    /// Any error; the processor's [`ErrorPolicy`] decides what happens next.
    fn handle(&mut self, event: R::Ref<'_>) -> std::result::Result<(), X>;

    /// Handles one event with its envelope. The default calls [`handle`](EventHandler::handle).
    ///
    /// # Errors
    ///
    /// As [`handle`](EventHandler::handle).
    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        event: R::Ref<'_>,
    ) -> std::result::Result<(), X> {
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
    /// Skip the event, record it in [`Processor::skipped`](crate::Processor::skipped) and the log (`tracing::warn`), and go
    /// on.
    Skip,
}
