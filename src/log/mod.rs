//! The global log: records keyed by global sequence, their envelope and their byte layout.

pub(crate) mod append;
pub(crate) mod checksum;
mod envelope;
pub(crate) mod group;
pub(crate) mod prefetch;
pub(crate) mod record;

pub use envelope::{Envelope, OwnedEnvelope};
pub use group::GroupCommit;
pub use record::MAX_EVENT_TYPE_LEN;
