//! Events read without their Rust type: verified envelopes and payload bytes.

use std::ops::Bound;

use crate::env::ReadTxn;
use crate::error::{Error, Result};
use crate::format::index::{parse_index_entry, stream_read_keys};
use crate::format::record::{self, Opened};
use crate::format::Envelope;
use crate::store::Storage;
use crate::types::{Direction, IntoStreamId, StreamInfo};

/// A stored event read without knowing its type.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct RawEvent<'t> {
    /// The envelope, from a header whose checksum was verified.
    pub envelope: Envelope<'t>,
    /// The payload bytes (an rkyv archive), after their checksum was verified; `None` for an
    /// encrypted record, whose payload is sealed (its checksum was verified all the same): get
    /// it with [`contents`].
    pub payload: Option<&'t [u8]>,
    /// The whole verified record, for [`contents`].
    record: &'t [u8],
}

impl std::fmt::Debug for RawEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent")
            .field("envelope", &self.envelope)
            .field("payload_len", &self.payload.map(<[u8]>::len))
            .finish_non_exhaustive()
    }
}

impl RawEvent<'_> {
    /// Whether the event's payload and metadata are sealed (an encrypted store).
    pub fn is_encrypted(&self) -> bool {
        self.envelope.encrypted
    }

    /// Length of the event's metadata, `None` when it has none. Known without decrypting: an
    /// encrypted record keeps the length in the clear (`docs/format.md`, "Encrypted records").
    pub fn metadata_len(&self) -> Option<u32> {
        // Header bytes 9 (flags, bit 2: metadata) and 84..88 (metadata_len, u32 LE), verified
        // by the header checksum when the event was read.
        let flags = self.record.get(9).copied().unwrap_or(0);
        let len = self
            .record
            .get(84..88)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes);
        (flags & 4 != 0).then_some(len)
    }
}

/// An event's payload and metadata in the clear: borrowed from the map for a plain store,
/// decrypted into a buffer of their own for an encrypted one.
pub struct Contents<'t> {
    inner: ContentsInner<'t>,
}

enum ContentsInner<'t> {
    Plain {
        payload: &'t [u8],
        metadata: Option<&'t [u8]>,
    },
    Opened(Opened),
}

impl Contents<'_> {
    /// The payload bytes (an rkyv archive), 16-byte aligned for a decrypted payload.
    pub fn payload(&self) -> &[u8] {
        match &self.inner {
            ContentsInner::Plain { payload, .. } => payload,
            ContentsInner::Opened(o) => o.payload(),
        }
    }

    /// The metadata bytes, when the event has metadata.
    pub fn metadata(&self) -> Option<&[u8]> {
        match &self.inner {
            ContentsInner::Plain { metadata, .. } => *metadata,
            ContentsInner::Opened(o) => o.metadata(),
        }
    }
}

impl std::fmt::Debug for Contents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contents")
            .field("payload_len", &self.payload().len())
            .field("metadata_len", &self.metadata().map(<[u8]>::len))
            .finish()
    }
}

/// The payload and metadata of `event`, an event read from `storage`, in the clear: decrypted
/// with its stream's key when the store is encrypted.
///
/// # Errors
///
/// - [`Error::Shredded`] for an event of a shredded stream: its payload is gone for good.
/// - [`Error::Decryption`] when the record fails authentication (tampered or moved).
/// - [`Error::Keystore`] when the stream's key is missing or damaged.
/// - [`Error::Corrupted`] when the record's encryption does not match the store's (a plaintext
///   record in an encrypted store, or the reverse), or its payload checksum fails.
pub fn contents<'t>(storage: &Storage, event: &RawEvent<'t>) -> Result<Contents<'t>> {
    let seq = event.envelope.seq;
    let rec = record::decode(seq, event.record)?;
    let inner = match (rec.is_encrypted(), storage.log().crypto.as_ref()) {
        (false, None) => ContentsInner::Plain {
            payload: rec.payload()?,
            metadata: event.envelope.metadata,
        },
        (true, Some(crypto)) => {
            let key = crypto.key_for_read(rec.stream(), rec.key_version(), seq)?;
            ContentsInner::Opened(rec.open(&key, crypto.store_id())?)
        }
        (false, Some(_)) | (true, None) => return Err(rec.sealing_mismatch()),
    };
    Ok(Contents { inner })
}

/// An iterator over raw events, borrowing the caller's read transaction. Every item is
/// verified; a damaged record is an error item, never skipped.
pub struct RawEvents<'t> {
    inner: Box<dyn Iterator<Item = Result<RawEvent<'t>>> + 't>,
}

impl<'t> RawEvents<'t> {
    pub(crate) fn new(inner: Box<dyn Iterator<Item = Result<RawEvent<'t>>> + 't>) -> Self {
        RawEvents { inner }
    }
}

impl<'t> Iterator for RawEvents<'t> {
    type Item = Result<RawEvent<'t>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

impl std::fmt::Debug for RawEvents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvents").finish_non_exhaustive()
    }
}

/// Verifies a record (header and payload checksums) and splits it into envelope and payload.
pub(crate) fn raw_event(seq: u64, bytes: &[u8]) -> Result<RawEvent<'_>> {
    let rec = record::decode(seq, bytes)?;
    let payload = if rec.is_encrypted() {
        rec.payload_region()?;
        None
    } else {
        Some(rec.payload()?)
    };
    Ok(RawEvent {
        envelope: rec.envelope(),
        payload,
        record: bytes,
    })
}

/// The event at global sequence `seq`, or `None` when there is none.
///
/// # Errors
///
/// [`Error::Corrupted`] when the record fails a checksum, [`Error::ForeignTransaction`] for a
/// transaction of another store, [`Error::Lmdb`].
pub fn event<'t>(storage: &Storage, txn: &'t ReadTxn, seq: u64) -> Result<Option<RawEvent<'t>>> {
    let txn = txn.of(&storage.env)?;
    match storage.log().dbs.get_record(txn, seq)? {
        Some(bytes) => raw_event(seq, bytes).map(Some),
        None => Ok(None),
    }
}

/// The global sequence of the last event in the log (0 when it is empty), as of `txn`. Unlike
/// [`Storage::head`], this sees appends of other processes.
///
/// # Errors
///
/// [`Error::ForeignTransaction`], [`Error::Lmdb`].
pub fn last_seq(storage: &Storage, txn: &ReadTxn) -> Result<u64> {
    let txn = txn.of(&storage.env)?;
    Ok(storage.log().dbs.log.last(txn)?.map_or(0, |(seq, _)| seq))
}

/// The events of the log from sequence `from` on (inclusive), in `direction`. Use `u64::MAX`
/// with [`Direction::Backward`] to start at the newest event.
///
/// # Errors
///
/// The call fails on [`Error::ForeignTransaction`] or [`Error::Lmdb`]; each item fails as
/// [`event`] does.
pub fn log<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    from: u64,
    direction: Direction,
) -> Result<RawEvents<'t>> {
    let raw = txn.of(&storage.env)?;
    let dbs = &storage.log().dbs;
    let large = dbs.log_large;
    let resolve = move |entry: heed::Result<(u64, &'t [u8])>| -> Result<RawEvent<'t>> {
        let (seq, value) = entry?;
        let bytes = if record::is_stub(seq, value)? {
            large
                .get(raw, &seq)?
                .ok_or_else(|| Error::corrupted(seq, "large record missing behind its stub"))?
        } else {
            value
        };
        raw_event(seq, bytes)
    };
    let inner: Box<dyn Iterator<Item = Result<RawEvent<'t>>> + 't> = match direction {
        Direction::Forward => Box::new(dbs.log.range(raw, &(from..))?.map(resolve)),
        Direction::Backward => Box::new(dbs.log.rev_range(raw, &(..=from))?.map(resolve)),
    };
    Ok(RawEvents { inner })
}

/// The events of `stream` from version `from` on (inclusive), in `direction`. Each record
/// reached through the stream index is checked to be the one the index names.
///
/// # Errors
///
/// The call fails on [`Error::InvalidStreamId`], [`Error::ForeignTransaction`] or
/// [`Error::Lmdb`]; each item fails as [`event`] does, or with [`Error::Corrupted`] when the
/// index disagrees with the log.
pub fn stream<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    stream: impl IntoStreamId,
    from: u64,
    direction: Direction,
) -> Result<RawEvents<'t>> {
    let stream = stream.into_stream_id()?;
    let raw = txn.of(&storage.env)?;
    let dbs = &storage.log().dbs;
    let (lo, hi) = stream_read_keys(stream, from, direction);
    let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
    let tail = storage
        .store
        .index
        .tail_entries(dbs, raw, stream, from, direction)?;
    let storage = storage.clone();
    let resolve = move |(version, seq): (u64, u64)| -> Result<RawEvent<'t>> {
        let bytes = storage
            .log()
            .dbs
            .get_record(raw, seq)?
            .ok_or_else(|| Error::corrupted(seq, "stream index points at a missing record"))?;
        let event = raw_event(seq, bytes)?;
        let env = &event.envelope;
        if env.stream != stream || env.version != version {
            return Err(Error::corrupted(
                seq,
                format!(
                    "index says stream {stream} version {version}, record says stream {} version {}",
                    env.stream, env.version
                ),
            ));
        }
        Ok(event)
    };
    let entry = |entry: heed::Result<(&'t [u8], &'t [u8])>| -> Result<(u64, u64)> {
        let (key, value) = entry?;
        let (_, version, seq) = parse_index_entry(key, value)?;
        Ok((version, seq))
    };
    // The index on disk holds the events up to its watermark; the later ones are in the tail.
    let inner: Box<dyn Iterator<Item = Result<RawEvent<'t>>> + 't> = match direction {
        Direction::Forward => {
            let tail = tail.into_iter().map(|e| Ok((e.version, e.seq)));
            Box::new(
                dbs.stream_index
                    .range(raw, &bounds)?
                    .map(entry)
                    .chain(tail)
                    .map(move |e| e.and_then(&resolve)),
            )
        }
        Direction::Backward => {
            let tail = tail.into_iter().map(|e| Ok((e.version, e.seq)));
            Box::new(
                tail.chain(dbs.stream_index.rev_range(raw, &bounds)?.map(entry))
                    .map(move |e| e.and_then(&resolve)),
            )
        }
    };
    Ok(RawEvents { inner })
}

/// Every stream, ordered by id, with its current version and first and last sequence.
///
/// # Errors
///
/// The call fails on [`Error::ForeignTransaction`] or [`Error::Lmdb`]; an item fails with
/// [`Error::Corrupted`] when a stream head is damaged.
pub fn streams<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
) -> Result<impl Iterator<Item = Result<StreamInfo>> + 't> {
    let store = &storage.store;
    store.index.streams(&store.log.dbs, txn.of(&storage.env)?)
}
