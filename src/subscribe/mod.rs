//! Reacting to the log: catch-up subscriptions, processors (consumer groups) with checkpoints
//! in the store, and exactly-once projections. All of them walk the log with the reader's
//! cursor (`crate::log::LogCursor`), under the rules of `crate::read`.

mod batch;
pub(crate) mod checkpoint;
mod handler;
mod processor;
mod projection;
mod subscription;
mod wake;

pub use crate::format::checkpoint::MAX_PROCESSOR_NAME_LEN;
pub(crate) use checkpoint::CheckpointBoard;
pub use handler::{ErrorPolicy, EventHandler};
pub use processor::Processor;
pub use projection::{Projection, Projector};
pub use subscription::{RecordedEvent, StartFrom, Subscription, SubscriptionItem};
pub use wake::StopHandle;
