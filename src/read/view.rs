//! Zero-copy views of stored events.
#![allow(unsafe_code)]

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use crate::crypto::{Crypto, KeyMemo};
use crate::error::{Error, Result};
use crate::event::{Parts, SplitParts};
use crate::format::record::{DecodedRecord, Opened};
use crate::format::{Envelope, Part};
use crate::types::StreamId;

/// Alignment VarveDB guarantees to payloads: rkyv archives need at most 16.
pub(crate) const PAYLOAD_ALIGN: usize = 16;

/// A stored event: its envelope and a validated view of its archived payload.
///
/// Derefs to `E::Archived` (for `#[derive(rkyv::Archive)] struct MyEvent`, `ArchivedMyEvent`).
/// When the payload is 16-byte aligned in the memory map, which the record layout arranges, the
/// view points straight into the map: no allocation, no copy. Otherwise the payload is copied
/// once into an aligned buffer, and [`Stats::unaligned_copies`](crate::Stats) counts it.
///
/// In an encrypted store the payload is decrypted once, when the view is made, into an aligned
/// buffer taken from a small per-thread pool (and returned to it when the view is dropped).
pub struct EventView<'t, E: Archive> {
    record: DecodedRecord<'t>,
    payload: Payload<'t, E::Archived>,
}

enum Payload<'t, A> {
    Borrowed(&'t A),
    /// Validated copy; `A` lives at the root position of the buffer.
    Copied(AlignedVec<PAYLOAD_ALIGN>),
    /// Decrypted and validated; `A` lives at the root position of the payload.
    Decrypted(Opened),
    /// An event of an older version, upcast and archived again, validated. No larger than
    /// `Decrypted` (the decrypted record is shared), so it does not grow the view.
    Upcast(Upcasted),
}

/// An event of an older version, read as the reader's type.
struct Upcasted {
    /// The archive, validated; `A` lives at the root position of the buffer.
    archive: AlignedVec<PAYLOAD_ALIGN>,
    /// The decrypted record, kept for its metadata; shared by the parts of a split.
    opened: Option<Arc<Opened>>,
    /// Which of the parts of a split this is.
    part: Part,
}

impl<'t, E: Archive> EventView<'t, E>
where
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Verifies the payload checksum, decrypts the payload when the record is encrypted, and
    /// validates it as an archived `E`, copying a plain payload first when it is misaligned.
    /// Returns the view and whether a copy was made. `crypto` is the store's keys (`None` for a
    /// plain store); a record whose encryption does not match the store's is corrupt (a plaintext
    /// record in an encrypted store would be a downgrade).
    pub(crate) fn new(
        record: DecodedRecord<'t>,
        crypto: Option<&Crypto>,
        memo: &mut KeyMemo,
    ) -> Result<(Self, bool)> {
        match (record.is_encrypted(), crypto) {
            (false, None) => Self::plain(record),
            (true, Some(crypto)) => {
                let key = crypto.key_for_read_memo(
                    memo,
                    record.stream(),
                    record.key_version(),
                    record.seq(),
                )?;
                let opened = record.open(key, crypto.store_id())?;
                Ok((Self::from_opened(record, opened)?, false))
            }
            (false, Some(_)) | (true, None) => Err(record.sealing_mismatch()),
        }
    }

    /// The view of a plain record whose payload [`DecodedRecord::verified_plain_payload`]
    /// returned, when it is aligned in the map and valid as an archived `E`: the common case of
    /// a typed read, built without the `Result` layers of [`EventView::new`] (moving those
    /// through memory costs a scan on every record). `None` sends the caller to `new`, which
    /// copies a misaligned payload or reports the invalid one.
    #[inline]
    pub(crate) fn borrowed(record: DecodedRecord<'t>, payload: &'t [u8]) -> Option<Self> {
        if !(payload.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN) {
            return None;
        }
        let archived = rkyv::access::<E::Archived, rancor::Error>(payload).ok()?;
        Some(EventView {
            record,
            payload: Payload::Borrowed(archived),
        })
    }

    /// Validates a decrypted payload as an archived `E`.
    pub(crate) fn from_opened(record: DecodedRecord<'t>, opened: Opened) -> Result<Self> {
        rkyv::access::<E::Archived, rancor::Error>(opened.payload()).map_err(|e| {
            Error::InvalidPayload {
                seq: record.seq(),
                reason: e.to_string(),
            }
        })?;
        Ok(EventView {
            record,
            payload: Payload::Decrypted(opened),
        })
    }

    /// The view of an event of an older version, read as `E` through `upcaster`: its payload
    /// verified (decrypted in an encrypted store) and handed, aligned, to the upcaster, whose
    /// archive of `E` is validated. When the upcaster splits the event into several,
    /// [`Error::Split`] with their archives, for [`EventView::split`].
    pub(crate) fn upcast(
        record: DecodedRecord<'t>,
        crypto: Option<&Crypto>,
        memo: &mut KeyMemo,
        upcaster: &crate::event::Upcaster<E>,
    ) -> Result<Self> {
        let seq = record.seq();
        let invalid = |reason: String| Error::InvalidPayload {
            seq,
            reason: format!(
                "upcasting from {} v{}: {reason}",
                upcaster.name, upcaster.version
            ),
        };
        let (archives, opened) = match (record.is_encrypted(), crypto) {
            (true, Some(crypto)) => {
                let key =
                    crypto.key_for_read_memo(memo, record.stream(), record.key_version(), seq)?;
                let opened = record.open(key, crypto.store_id())?;
                (
                    upcaster.archive(opened.payload()).map_err(invalid)?,
                    Some(Arc::new(opened)),
                )
            }
            (false, None) => {
                let payload = record.payload()?;
                let archive = if (payload.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN) {
                    upcaster.archive(payload)
                } else {
                    let mut copy = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(payload.len());
                    copy.extend_from_slice(payload);
                    upcaster.archive(&copy)
                };
                (archive.map_err(invalid)?, None)
            }
            (false, Some(_)) | (true, None) => return Err(record.sealing_mismatch()),
        };
        let archive = match archives {
            Parts::One(archive) => archive,
            // Each part is validated when its view is made (`split_part`).
            Parts::Many(archives) => {
                return Err(Error::Split(SplitParts::new(seq, archives, opened)))
            }
        };
        rkyv::access::<E::Archived, rancor::Error>(&archive).map_err(|e| invalid(e.to_string()))?;
        Ok(EventView {
            record,
            payload: Payload::Upcast(Upcasted {
                archive,
                opened,
                part: Part::WHOLE,
            }),
        })
    }

    /// The view of part `index` of a split record (`record` is the record
    /// [`EventView::upcast`] split into `parts`), its archive taken out of `parts` and
    /// validated again as an archived `E`: the parts may come from another reader's rules than
    /// this one's, and a view is only made of bytes it validated.
    pub(crate) fn split_part(
        record: DecodedRecord<'t>,
        parts: &mut SplitParts,
        index: usize,
    ) -> Result<Self> {
        let seq = record.seq();
        if parts.seq != seq || index >= parts.count() {
            return Err(Error::corrupted(
                seq,
                format!(
                    "part {index} of the {} parts of the event at sequence {} read at {seq}",
                    parts.count(),
                    parts.seq
                ),
            ));
        }
        let invalid = |reason: String| Error::InvalidPayload {
            seq,
            reason: format!("part {index} of a split: {reason}"),
        };
        let count = u32::try_from(parts.count())
            .map_err(|_| invalid(format!("the split made {} parts", parts.count())))?;
        let archive = std::mem::take(&mut parts.archives[index]);
        rkyv::access::<E::Archived, rancor::Error>(&archive).map_err(|e| invalid(e.to_string()))?;
        Ok(EventView {
            record,
            payload: Payload::Upcast(Upcasted {
                archive,
                opened: parts.opened.clone(),
                part: Part {
                    index: index as u32,
                    count,
                },
            }),
        })
    }

    fn plain(record: DecodedRecord<'t>) -> Result<(Self, bool)> {
        let payload = record.payload()?;
        let invalid = |e: rancor::Error| Error::InvalidPayload {
            seq: record.seq(),
            reason: e.to_string(),
        };
        if (payload.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN) {
            let archived = rkyv::access::<E::Archived, rancor::Error>(payload).map_err(invalid)?;
            return Ok((
                EventView {
                    record,
                    payload: Payload::Borrowed(archived),
                },
                false,
            ));
        }
        let mut copy = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(payload.len());
        copy.extend_from_slice(payload);
        rkyv::access::<E::Archived, rancor::Error>(&copy).map_err(invalid)?;
        Ok((
            EventView {
                record,
                payload: Payload::Copied(copy),
            },
            true,
        ))
    }
}

impl<'t, E: Archive> EventView<'t, E> {
    /// The event's envelope (decoded from the verified header on each call; in an encrypted
    /// store its metadata comes from the decrypted payload).
    pub fn envelope(&self) -> Envelope<'_> {
        let mut envelope = self.record.envelope();
        match &self.payload {
            Payload::Decrypted(opened) => envelope.metadata = opened.metadata(),
            Payload::Upcast(upcasted) => {
                if let Some(opened) = &upcasted.opened {
                    envelope.metadata = opened.metadata();
                }
                envelope.part = upcasted.part;
            }
            Payload::Borrowed(_) | Payload::Copied(_) => {}
        }
        envelope
    }

    /// Which of the events an upcast split the stored event into this one is ([`Part::WHOLE`]
    /// when it is not split).
    pub fn part(&self) -> Part {
        match &self.payload {
            Payload::Upcast(upcasted) => upcasted.part,
            _ => Part::WHOLE,
        }
    }

    /// Global sequence of the event.
    pub fn seq(&self) -> u64 {
        self.record.seq()
    }

    /// Version of the event in its stream.
    pub fn version(&self) -> u64 {
        self.record.version()
    }

    /// The stream of the event.
    pub fn stream(&self) -> StreamId {
        self.record.stream()
    }

    /// The archived event.
    pub fn archived(&self) -> &E::Archived {
        match &self.payload {
            Payload::Borrowed(a) => a,
            // SAFETY: `new` validated these exact bytes as an `E::Archived` with bytecheck
            // (`rkyv::access`) before storing them, the buffer is 16-byte aligned, and it is never
            // mutated afterwards, so the unchecked access sees the same valid archive.
            Payload::Copied(bytes) => unsafe { rkyv::access_unchecked::<E::Archived>(bytes) },
            // SAFETY: `from_opened` validated exactly these bytes (the payload range of the
            // decrypted buffer, 16-byte aligned because the buffer is and the range starts at a
            // multiple of 16) as an `E::Archived`; the buffer is owned by the view and never
            // mutated afterwards.
            Payload::Decrypted(opened) => unsafe {
                rkyv::access_unchecked::<E::Archived>(opened.payload())
            },
            // SAFETY: `upcast` (or `split`, for a part of a split) validated exactly these bytes
            // as an `E::Archived` with bytecheck; the buffer is 16-byte aligned, owned by the
            // view and never mutated afterwards.
            Payload::Upcast(upcasted) => unsafe {
                rkyv::access_unchecked::<E::Archived>(&upcasted.archive)
            },
        }
    }

    /// The payload bytes (already verified and validated as an archived `E`).
    pub(crate) fn payload_bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Borrowed(_) => self
                .record
                .payload()
                .expect("the payload checksum was verified when the view was made"),
            Payload::Copied(bytes) => bytes,
            Payload::Upcast(upcasted) => &upcasted.archive,
            Payload::Decrypted(opened) => opened.payload(),
        }
    }

    /// Whether the event was stored at an older schema version and upcast to `E` (its
    /// envelope's `schema_version` is the stored one).
    pub fn is_upcast(&self) -> bool {
        matches!(self.payload, Payload::Upcast(..))
    }

    /// Whether the payload had to be copied because it was misaligned in the map.
    pub fn is_copied(&self) -> bool {
        matches!(self.payload, Payload::Copied(_))
    }

    /// Deserializes the archived event into an owned `E`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPayload`] if rkyv's deserializer fails (for example on a shared pointer
    /// limit); the archive itself was validated when the view was made.
    pub fn deserialize(&self) -> Result<E>
    where
        E::Archived: rkyv::Deserialize<E, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        rkyv::deserialize::<E, rancor::Error>(self.archived()).map_err(|e| Error::InvalidPayload {
            seq: self.record.seq(),
            reason: e.to_string(),
        })
    }
}

impl<E: Archive> Deref for EventView<'_, E> {
    type Target = E::Archived;

    fn deref(&self) -> &E::Archived {
        self.archived()
    }
}

impl<E: Archive> fmt::Debug for EventView<'_, E>
where
    E::Archived: fmt::Debug,
{
    /// Formats the archived event, as if the view were `&E::Archived`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.archived(), f)
    }
}
