//! Reacting to the log: processors (consumer groups) with checkpoints in the store.

mod checkpoint;
mod processor;

pub use checkpoint::MAX_PROCESSOR_NAME_LEN;
pub use processor::{ErrorPolicy, EventHandler, Processor, StopHandle};
