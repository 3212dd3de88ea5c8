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
#![deny(unsafe_code)]

pub mod engine;
pub mod error;
mod index;
mod log;
pub mod storage;
pub mod subscribe;
mod types;

/// The README's examples, compiled and run as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

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
pub mod fuzzing {
    use rkyv::api::high::HighValidator;
    use rkyv::bytecheck::CheckBytes;
    use rkyv::rancor;

    use crate::error::Result;

    /// Decodes `bytes` as the record stored under `seq`, verifies both checksums and validates the
    /// payload as an archived `E`, exactly as a read does. Returns the event's version.
    pub fn decode_record<E>(seq: u64, bytes: &[u8]) -> Result<u64>
    where
        E: rkyv::Archive,
        E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        let rec = crate::log::record::decode(seq, bytes)?;
        let _ = rec.envelope();
        let (view, _) = crate::engine::EventView::<E>::new(rec)?;
        Ok(view.version())
    }

    /// Encodes a complete record the way the writer does, for building fuzz seeds.
    pub fn encode_record<E>(
        seq: u64,
        version: u64,
        event: &E,
        event_type: &str,
        metadata: Option<&[u8]>,
    ) -> Vec<u8>
    where
        E: for<'a> rkyv::Serialize<crate::engine::EventSerializer<'a>>,
    {
        use crate::log::record::{begin, finish, set_position, RecordParts};
        let mut buf = Vec::new();
        let parts = RecordParts {
            stream: crate::StreamId(seq as u128 % 7),
            event_id: uuid::Uuid::from_u128(seq as u128),
            correlation_id: Some(uuid::Uuid::from_u128(1)),
            causation_id: None,
            event_type,
            schema_version: 1,
            metadata,
        };
        let start = begin(&mut buf, &parts);
        let payload_offset = buf.len() - start;
        let mut arena = rkyv::ser::allocator::Arena::new();
        let mut buf = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            event,
            buf,
            arena.acquire(),
        )
        .expect("serializing a fuzz seed");
        let len = finish(&mut buf, start, payload_offset);
        set_position(
            &mut buf[start..start + len],
            payload_offset,
            seq,
            version,
            0,
            1,
        );
        buf
    }
}
