//! Typed reads: [`Reader`] reads events of one type, as [`EventView`]s that deref to the
//! archived type, validated and borrowed straight from the memory map.
//!
//! # Which events a reader sees
//!
//! A `Reader<E>` reads the events of `E`: those stored under a type name it accepts
//! ([`Event::NAME`](crate::Event::NAME) and those added with [`Reader::accept_event_types`]).
//! A reader of a set of event types ([`Readable`], `#[derive(varvedb::EventSet)]`) reads the
//! events of each member, each record by the member whose names it carries, under the same
//! rules. One rule holds for every reader of the log:
//!
//! - **Scans pass over events of other types**, without touching their payloads: `read_log`,
//!   `read_stream`, the `for_each_*` walks, subscriptions, processors and projectors. A store
//!   holds many types; a reader of orders reads orders.
//! - **A read of one event by position** (`get`, `last_in_stream`) that finds another type
//!   returns [`Error::WrongEventType`](crate::Error::WrongEventType): the caller asked for that
//!   event.
//! - **A shredded event** (its stream's key destroyed) is an
//!   [`Error::Shredded`](crate::Error::Shredded) item wherever events are yielded (point reads,
//!   the `read_*` iterators, subscriptions), and they go on after it. The `for_each_*` walks
//!   stop at it, as at any event they cannot read, with its error (resume after its sequence).
//!   Processors and projectors, which have nothing to hand a handler, pass over it.
//! - **Events of older versions** of `E` (named by `#[event(previous = ...)]`, see
//!   [`Upcast`](crate::Upcast)) are read as `E` through the steps between them, on every path.
//!   A stored event that a step splits ([`Split`](crate::Split)) is read as each of its parts,
//!   one after another at its place in the log, on every path that walks the log or a stream;
//!   `get` returns [`Error::SplitEvent`](crate::Error::SplitEvent) for it, and
//!   [`Reader::get_parts`] every part.
//! - **Events of newer versions stored under a new name** (a newer build renamed the type, and
//!   the store recorded the rename) are [`Error::RenamedEventType`](crate::Error::RenamedEventType)
//!   items on every path: scans follow the store's renames in their own transaction, so a
//!   reader never mistakes them for a type it does not know.
//! - **An event of an accepted type that `E` cannot read** is an error item, never skipped and
//!   never read as `E`: one stored at a schema version `E` has no way to read is
//!   [`Error::UnknownSchemaVersion`](crate::Error::UnknownSchemaVersion), one whose type and
//!   version the store recorded with another layout than the one the reader reads it with is
//!   [`Error::LayoutChanged`](crate::Error::LayoutChanged). Processors stop at either, whatever
//!   their error policy, with their checkpoint before it.
//! - **A damaged record** is an error item, never skipped by a scan: a damaged payload is
//!   reported to the readers that want the record, a damaged header to every scan that reaches
//!   it (its type and stream cannot be known).

mod events;
mod filter;
pub(crate) mod parts;
pub(crate) mod readable;
#[allow(clippy::module_inception)]
mod reader;
pub(crate) mod view;

pub use events::Events;
pub use filter::Filter;

/// What a run of reads learned and can reuse for the next record: the stream key of the last
/// encrypted record, and whether the reader's type was checked against the store's record of its
/// layout (one accepted name, at the reader's schema version); for a set of types, which members
/// were.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct ViewMemo {
    pub(crate) keys: crate::crypto::KeyMemo,
    schema_checked: bool,
    members_checked: u64,
    /// The rest of a split record that an iterator hands out one part per call, read again at
    /// each call (`Events`): its record's next read hands them back instead of upcasting again.
    pub(crate) pending: Option<crate::event::SplitParts>,
}
pub use readable::{Member, Readable, Record};
pub use reader::{Reader, DEFAULT_MAX_TXN_AGE};
pub use view::EventView;
