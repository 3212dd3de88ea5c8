//! Typed access to the log: [`Writer`] appends, [`Reader`] reads.

mod reader;
pub(crate) mod view;
mod writer;

pub use reader::{Events, Reader, DEFAULT_MAX_TXN_AGE};
pub use view::EventView;
pub use writer::{EventSerializer, Writer};

pub use crate::subscribe::{ErrorPolicy, EventHandler, Processor, StopHandle};
