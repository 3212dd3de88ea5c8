//! VarveDB: an embedded, append-only event store on LMDB, with zero-copy reads of
//! [rkyv](https://docs.rs/rkyv) archives.
//!
//! - [`storage::Storage`] opens a store (one directory, one LMDB environment).
//! - [`engine::Writer`] appends typed events with optimistic concurrency, atomic batches and
//!   idempotent retries; every append is durable when it returns.
//! - [`engine::Reader`] reads them back as [`engine::EventView`]s that deref to the archived
//!   type, validated and borrowed straight from the memory map.
//!
//! ```
//! use varvedb::storage::{Storage, StorageConfig};
//! use varvedb::engine::{Writer, Reader};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
//! #[rkyv(derive(Debug))]
//! pub struct MyEvent { pub id: u32, pub data: String }
//!
//! # let dir = tempfile::tempdir()?;
//! let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
//! let mut writer = Writer::<MyEvent>::new(storage.clone());
//! let reader = Reader::<MyEvent>::new(storage.clone());
//! writer.append(1, 1, MyEvent { id: 1, data: "Hello".into() })?; // stream 1 gets version 1
//! let txn = storage.env.read_txn()?;
//! if let Some(event) = reader.get(&txn, 1)? {   // global sequence 1
//!     println!("{:?}", event);                    // derefs to &ArchivedMyEvent
//!     assert_eq!(event.data, "Hello");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The on-disk format is specified in `docs/format.md`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

pub mod admin;
mod crypto;
pub mod engine;
pub mod error;
mod index;
mod log;
pub mod metrics;
pub mod storage;
pub mod subscribe;
mod types;

/// The README's examples, compiled and run as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The `heed` crate, whose transaction and database types [`subscribe::Projection::apply`] and
/// [`storage::Storage::projection_database`] use: re-exported so that a projection names the
/// same `heed` version as the store, without a dependency of its own.
pub use heed;
pub use log::{Envelope, GroupCommit, OwnedEnvelope, MAX_EVENT_TYPE_LEN};
pub use types::{
    default_event_type, Appended, Direction, ExpectedVersion, IntoStreamId, NewEvent, Position,
    StreamId, StreamInfo,
};
/// Re-exported so that users name the same `uuid` version VarveDB uses.
pub use uuid::Uuid;

/// Entry points for the fuzz targets in `fuzz/`; not part of the public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
