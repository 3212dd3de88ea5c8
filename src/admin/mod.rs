//! Type-independent access to a store, for tools such as `varve`: raw records, verification,
//! backup, export and import; and [`Migration`], which rewrites a store with the application's
//! current event types.
//!
//! Everything else here works without knowing the application's event types: events are read as
//! their verified envelope and payload bytes ([`RawEvent`]). An application that wants its
//! payloads shown as JSON registers a decoder per event type in [`Decoders`] and hands it to the
//! `varve` crate's `run` function, which gives it its own `varve`-like binary.
//!
//! ```
//! use varvedb::admin;
//! use varvedb::{Storage, StorageConfig};
//! use varvedb::Writer;
//! use varvedb::Direction;
//!
//! # let dir = tempfile::tempdir()?;
//! let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
//! Writer::<u32>::new(storage.clone()).append(5, 1, 42)?;
//! let txn = storage.env.read_txn()?;
//! for event in admin::log(&storage, &txn, 1, Direction::Forward)? {
//!     let event = event?;
//!     assert_eq!(event.envelope.event_type, "u32");
//!     assert_eq!(event.payload.map(<[u8]>::len), Some(4));
//! }
//! drop(txn);
//! assert!(admin::verify(&storage, &mut |_| {})?.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backup;
mod decoders;
mod import;
mod info;
mod migrate;
mod names;
mod raw;
mod verify;

pub use backup::{backup, BackupInfo};
pub use decoders::{DecodeError, Decoders, PayloadDecoder};
pub use import::{ImportError, ImportEvent, Importer};
pub use info::{info, ProcessorInfo, StoreInfo};
pub use migrate::{
    MigrateError, Migration, MigrationProgress, MigrationReport, TypeCount, UpcastCount,
};
pub use names::{categories, filtered, stream_name, StreamNames};
pub use raw::{contents, event, last_seq, log, stream, streams, Contents, RawEvent, RawEvents};
pub use verify::{verify, verify_with, Problem, ProblemKind, VerifyProgress, VerifyReport};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_crypto;
