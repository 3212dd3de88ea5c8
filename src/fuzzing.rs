//! Entry points for the fuzz targets in `fuzz/`; not part of the public API.

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
    let rec = crate::format::record::decode(seq, bytes)?;
    let _ = rec.envelope();
    let (view, _) = crate::read::EventView::<E>::new(rec, None, &mut Default::default())?;
    Ok(view.version())
}

/// Decodes `bytes` as an encrypted record stored under `seq`, decrypts it with the data `key`
/// of a store `store_id`, and validates the payload as an archived `E`, as an encrypted read
/// does. Returns the event's version.
pub fn decrypt_record<E>(seq: u64, bytes: &[u8], key: &[u8; 32], store_id: u128) -> Result<u64>
where
    E: rkyv::Archive,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let rec = crate::format::record::decode(seq, bytes)?;
    let _ = rec.envelope();
    let key = crate::cipher::StreamKey::from_bytes(key, 1);
    let opened = rec.open(&key, store_id)?;
    let view = crate::read::EventView::<E>::from_opened(rec, opened)?;
    let _ = view.envelope();
    Ok(view.version())
}

/// Encodes a complete record the way the writer does, for building fuzz seeds; sealed under
/// `key` (a data key, key version 1, of store `store_id`) when one is given.
pub fn encode_record<E>(
    seq: u64,
    version: u64,
    event: &E,
    event_type: &str,
    metadata: Option<&[u8]>,
    key: Option<(&[u8; 32], u128)>,
) -> Vec<u8>
where
    E: for<'a> rkyv::Serialize<crate::event::EventSerializer<'a>>,
{
    use crate::format::record::{begin, finish, set_position, Place, RecordParts, Sealer};
    let mut buf = Vec::new();
    let parts = RecordParts {
        stream: crate::StreamId(seq as u128 % 7),
        event_id: uuid::Uuid::from_u128(seq as u128),
        correlation_id: Some(uuid::Uuid::from_u128(1)),
        causation_id: None,
        event_type,
        schema_version: 1,
        metadata,
        encrypted: key.is_some(),
    };
    let begun = begin(&mut buf, &parts);
    let (start, payload_offset) = (begun.start, begun.payload_offset);
    let mut arena = rkyv::ser::allocator::Arena::new();
    let mut buf =
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(event, buf, arena.acquire())
            .expect("serializing a fuzz seed");
    let len = finish(&mut buf, start, payload_offset);
    let key = key.map(|(k, id)| (crate::cipher::StreamKey::from_bytes(k, 1), id));
    let mut nonces = crate::cipher::aead::Nonces::new();
    set_position(
        &mut buf[start..start + len],
        payload_offset,
        Place {
            seq,
            version,
            prev_seq: 0,
            timestamp_ns: 1,
        },
        key.as_ref().map(|(k, id)| Sealer {
            key: k,
            store_id: *id,
            nonces: &mut nonces,
        }),
    )
    .expect("sealing a fuzz seed");
    buf
}

/// Reads `payload` as the archived payload of a plain record stored under `event_type` at
/// `schema_version`, the way a `Reader<E>` reads one: as `E` itself when those are `E`'s name
/// and version (zero-copy when the payload is aligned, else copied first), through `E`'s
/// upcaster for them when `E` has one (`#[event(previous = ...)]`), and otherwise not at all
/// (`None`). The record around the payload is framed with valid checksums, so that what is
/// exercised is the payload's validation and the upcast; `misalign` puts the record one byte
/// off 16-byte alignment in memory. The store's check of recorded layouts is not part of this:
/// it compares fingerprints, never payload bytes.
///
/// Returns the events deserialized (one, or the parts of a split, in order), and whether they
/// were upcast.
pub fn read_payload<E>(
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
    misalign: bool,
) -> Option<Result<(Vec<E>, bool)>>
where
    E: crate::Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<E, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    use crate::format::record::{begin, finish, set_position, Place, RecordParts};
    use crate::read::EventView;

    let current = event_type == E::NAME && schema_version == E::VERSION;
    let upcaster = if current {
        None
    } else {
        Some(
            E::upcasts()
                .into_iter()
                .find(|u| u.name == event_type && u.version == schema_version)?,
        )
    };

    let mut buf = Vec::new();
    let parts = RecordParts {
        stream: crate::StreamId(1),
        event_id: uuid::Uuid::from_u128(1),
        correlation_id: None,
        causation_id: None,
        event_type,
        schema_version,
        metadata: None,
        encrypted: false,
    };
    let begun = begin(&mut buf, &parts);
    buf.extend_from_slice(payload);
    let len = finish(&mut buf, begun.start, begun.payload_offset);
    let place = Place {
        seq: 1,
        version: 1,
        prev_seq: 0,
        timestamp_ns: 1,
    };
    set_position(&mut buf[..len], begun.payload_offset, place, None)
        .expect("a plain record needs no key");
    let mut memory = rkyv::util::AlignedVec::<16>::with_capacity(len + 1);
    if misalign {
        memory.push(0);
    }
    memory.extend_from_slice(&buf[..len]);
    let bytes = &memory[usize::from(misalign)..];

    let read = || -> Result<(Vec<E>, bool)> {
        let rec = crate::format::record::decode_event(1, bytes)?;
        let views = match &upcaster {
            Some(upcaster) => {
                match EventView::upcast(rec, None, &mut Default::default(), upcaster) {
                    Ok(view) => vec![view],
                    // As the read paths hand out the parts of a split record.
                    Err(crate::Error::Split(mut parts)) => (0..parts.count())
                        .map(|i| EventView::split_part(rec, &mut parts, i))
                        .collect::<Result<Vec<_>>>()?,
                    Err(e) => return Err(e),
                }
            }
            // As `Reader::view_of` reads an event of its own version in a plain store.
            None => vec![match rec
                .verified_plain_payload()
                .and_then(|payload| EventView::<E>::borrowed(rec, payload))
            {
                Some(view) => view,
                None => EventView::new(rec, None, &mut Default::default())?.0,
            }],
        };
        let upcast = views[0].is_upcast();
        let values = views
            .iter()
            .map(EventView::deserialize)
            .collect::<Result<Vec<E>>>()?;
        Ok((values, upcast))
    };
    Some(read())
}
