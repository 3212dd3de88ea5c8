//! Work that rides along with a commit of the log.
//!
//! Some writes need to be durable but not at once, and are cheap to add to a transaction that
//! commits anyway: a processor's checkpoint, for example. A [`Rider`] writes its pending work
//! into the next commit of the log (no fsync of its own, nothing on its caller's path), and when
//! no append comes before its deadline the write path commits it by itself. The write path knows
//! nothing of what a rider writes.

use std::any::Any;
use std::time::Instant;

use crate::env::WriteKind;
use crate::error::Result;

/// What a rider wrote into a transaction, handed back to it once that transaction committed.
pub(crate) type Receipt = Box<dyn Any + Send>;

/// Work that rides along with commits of the log (see the module documentation).
pub(crate) trait Rider: Send + Sync {
    /// What a commit of this rider alone is, for logs and injected failures.
    fn kind(&self) -> WriteKind;

    /// Writes the pending work into `wtxn`, and returns what it wrote, or `None` when nothing is
    /// pending. Called again from scratch when the transaction is run again (after the map
    /// grew); the work stays pending until [`Rider::committed`] confirms it.
    fn write(&self, wtxn: &mut heed::RwTxn<'_>) -> Result<Option<Receipt>>;

    /// The transaction that carried `receipt` committed.
    fn committed(&self, receipt: Receipt);

    /// When pending work must be committed by itself if no append carries it; `None` when
    /// nothing is pending.
    fn due(&self) -> Option<Instant>;

    /// A commit of this rider's work by itself failed: its work stays pending, and is due again
    /// an interval from now rather than at once.
    fn postpone(&self);
}
