//! Reacting to the log: catch-up subscriptions, and processors (consumer groups) with
//! checkpoints in the store.

pub(crate) mod checkpoint;
mod processor;
mod projection;
mod subscription;

pub use checkpoint::MAX_PROCESSOR_NAME_LEN;
pub use processor::{ErrorPolicy, EventHandler, Processor, StopHandle};
pub use projection::{Projection, Projector};
pub use subscription::{Filter, RecordedEvent, StartFrom, Subscription, SubscriptionItem};
