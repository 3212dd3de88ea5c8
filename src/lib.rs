//! VarveDB: an embedded, append-only event store on LMDB, with zero-copy reads of
//! [rkyv](https://docs.rs/rkyv) archives.
//!
//! - [`Storage`] opens a store (one directory, one LMDB environment).
//! - [`Writer`] appends typed events with optimistic concurrency, atomic batches and
//!   idempotent retries; every append is durable when it returns.
//! - [`Reader`] reads them back as [`EventView`]s that deref to the archived type, validated
//!   and borrowed straight from the memory map.
//! - [`Processor`], [`Projector`] and [`Subscription`] react to the log as it grows.
//!
//! ```
//! use varvedb::{Reader, Storage, StorageConfig, Writer};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
//! #[rkyv(derive(Debug))]
//! pub struct MyEvent { pub id: u32, pub data: String }
//!
//! # let dir = tempfile::tempdir()?;
//! let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
//! let mut writer = Writer::<MyEvent>::new(storage.clone());
//! let reader = Reader::<MyEvent>::new(storage.clone());
//! writer.append(1, 1, MyEvent { id: 1, data: "Hello".into() })?; // stream 1 gets version 1
//! let txn = storage.read_txn()?;
//! if let Some(event) = reader.get(&txn, 1)? {   // global sequence 1
//!     println!("{:?}", event);                    // derefs to &ArchivedMyEvent
//!     assert_eq!(event.data, "Hello");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every public item is at the crate root. The modules `storage`, `engine` and `error` also name
//! the items of the original design (`varvedb::Storage`, `varvedb::Writer`,
//! `varvedb::error::Result`, ...) so that code written against it keeps working; `admin` holds
//! the type-independent tools API and `metrics` the metric names and exporters.
//!
//! The on-disk format is specified in `docs/format.md`, and the layers of the code in
//! `docs/design.md`.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The derive macros name `::varvedb`, in this crate's own tests too.
extern crate self as varvedb;

// The layers, from the bottom up; each depends only on those above it in this list.
pub mod admin;
mod append;
mod cipher;
#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
mod crypto;
mod env;
pub mod error;
mod event;
mod format;
mod index;
mod log;
pub mod metrics;
mod name;
mod read;
mod schema;
mod store;
mod subscribe;
mod types;
mod write;

pub use append::{Transaction, Writer};
pub use env::{Env, ReadTxn, FORMAT_VERSION};
pub use error::{DamagedEntry, Error, HandlerError, Result};
pub use event::{
    Event, EventSerializer, Fingerprint, Layout, LayoutHasher, Split, Upcast, Upcaster,
};
pub use format::{Envelope, OwnedEnvelope, Part, MAX_EVENT_TYPE_LEN};
pub use index::DEFAULT_INDEX_INTERVAL;
pub use name::{StreamName, MAX_STREAM_NAME_LEN};
pub use read::{EventView, Events, Filter, Readable, Reader, DEFAULT_MAX_TXN_AGE};
pub use store::{
    Durability, Stats, Storage, StorageConfig, DEFAULT_MAP_SIZE, DEFAULT_MAX_EVENT_SIZE,
    MAX_EVENT_SIZE_LIMIT,
};
pub use subscribe::{
    ErrorPolicy, EventHandler, Processor, Projection, Projector, RecordedEvent, StartFrom,
    StopHandle, Subscription, SubscriptionItem, MAX_PROCESSOR_NAME_LEN,
};
pub use types::{
    default_event_type, Appended, Direction, ExpectedVersion, IntoStreamId, NewEvent, Position,
    StreamId, StreamInfo,
};
/// `#[derive(varvedb::EventSet)]` on an enum whose variants each hold one event type: a set of
/// event types that one reader, subscription, processor or projector reads in log order. See
/// [`Readable`].
pub use varvedb_derive::EventSet;
/// `#[derive(varvedb::Event)]` and `#[derive(varvedb::Layout)]`: see the traits of the same names.
pub use varvedb_derive::{Event, Layout};
pub use write::GroupCommit;

/// The `heed` crate, whose transaction and database types [`Projection::apply`] and
/// [`Storage::projection_database`] use: re-exported so that a projection names the same `heed`
/// version as the store, without a dependency of its own.
pub use heed;
/// Re-exported so that users name the same `uuid` version VarveDB uses.
pub use uuid::Uuid;

/// The original design's path to the store: `varvedb::{Storage, StorageConfig}`.
pub mod storage {
    pub use crate::{Storage, StorageConfig};
}

/// The original design's path to typed access:
/// `varvedb::{Writer, Reader, Processor, EventHandler}`.
pub mod engine {
    pub use crate::{EventHandler, Processor, Reader, Writer};
}

/// The README's examples, compiled and run as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// What the derive macros' code names; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::SplitParts;
    pub use crate::read::readable::same_name;
    pub use crate::read::{Member, Record, ViewMemo};
    pub use rkyv::Archive;
}

/// Entry points for the fuzz targets in `fuzz/`; not part of the public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// Failure injection for VarveDB's own tests; not part of the public API.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod failpoints;
