//! Reading the log: the records of an open store by global sequence, and the one way every
//! reader walks it ([`Scan`] in a given transaction, [`LogCursor`] across renewed ones).
//!
//! Every scan decides on a record's verified header whether the reader wants it ([`Select`]),
//! before its payload is checksummed, decrypted or validated: a reader of a few streams or types
//! does not pay for the others, and never sees their damaged or shredded records. A record whose
//! header is damaged cannot be judged, and is reported to every scan that reaches it.

mod cursor;
mod labels;
mod named;
pub(crate) mod prefetch;
mod scan;

use crate::crypto::Crypto;
use crate::env::{Dbs, Env};
use crate::schema::Schemas;

pub(crate) use cursor::{LogCursor, Step};
pub(crate) use named::NamedStreams;
pub(crate) use scan::{bytes_eq, has_name, Scan, Select};

/// The log of one open store: its environment and databases, and the keys of an encrypted store.
///
/// Fields drop in declaration order: the keystore (in `crypto`) closes before the data
/// environment, because a reopen waits for the data environment's closing event and then opens
/// both.
pub(crate) struct Log {
    /// The keys of an encrypted store; `None` for a plain one.
    pub crypto: Option<Crypto>,
    pub dbs: Dbs,
    pub env: Env,
    /// The store's random identity, bound into every sealed record.
    pub store_id: u128,
    /// The recorded layouts of the event types in the log.
    pub schemas: Schemas,
    /// The streams known to be recorded under their names.
    pub named: NamedStreams,
}
