//! Typed appends: [`Writer`] serializes events of one type and hands them to the write path;
//! [`Transaction`] gathers batches for several streams, appended atomically.

mod transaction;
mod writer;

pub use transaction::Transaction;
pub use writer::Writer;
