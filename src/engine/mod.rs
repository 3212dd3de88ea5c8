//! Typed access to the log: [`Writer`] appends (and [`Transaction`] appends to several streams
//! atomically), [`Reader`] reads.

mod reader;
mod transaction;
pub(crate) mod view;
mod writer;

pub use reader::{Events, Reader, DEFAULT_MAX_TXN_AGE};
pub use transaction::Transaction;
pub use view::EventView;
pub use writer::{EventSerializer, Writer};

pub use crate::subscribe::{ErrorPolicy, EventHandler, Processor, StopHandle};
