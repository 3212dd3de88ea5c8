//! The bytes format: how records, stream index keys, stream heads and processor checkpoints are
//! laid out, as `docs/format.md` specifies them. Pure functions on bytes: nothing here knows LMDB,
//! and every decoder refuses damaged bytes with an error rather than returning a wrong value.

pub(crate) mod checkpoint;
pub(crate) mod checksum;
mod envelope;
pub(crate) mod index;
pub(crate) mod name;
pub(crate) mod record;
pub(crate) mod replica;
pub(crate) mod schema;

pub use envelope::{Envelope, OwnedEnvelope, Part};
pub use record::MAX_EVENT_TYPE_LEN;
