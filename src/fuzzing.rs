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
    let mut buf =
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(event, buf, arena.acquire())
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
