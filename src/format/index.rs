//! The layouts beside the log: the key of the (stream, version) index, the value of a stream
//! head, and the index watermark (`docs/format.md`).

use crate::error::{DamagedEntry, Error, Result};
use crate::types::{Direction, StreamId, StreamInfo};

/// Key of the stream index: stream id (big-endian u128) then version (big-endian u64), so that a
/// stream's entries are adjacent and ordered by version.
pub(crate) fn stream_version_key(stream: StreamId, version: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&stream.to_key());
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

/// Splits a stream index key.
pub(crate) fn parse_stream_version_key(key: &[u8]) -> Option<(StreamId, u64)> {
    let stream: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let version: [u8; 8] = key.get(16..24)?.try_into().ok()?;
    (key.len() == 24).then(|| {
        (
            StreamId(u128::from_be_bytes(stream)),
            u64::from_be_bytes(version),
        )
    })
}

/// Decodes an entry of the stream index: the stream, the version and the sequence it names.
///
/// # Errors
///
/// [`Error::Damaged`] for a key that is not 24 bytes or a value that is not 8.
#[inline]
pub(crate) fn parse_index_entry(key: &[u8], value: &[u8]) -> Result<(StreamId, u64, u64)> {
    let (stream, version) = parse_stream_version_key(key).ok_or_else(|| Error::Damaged {
        entry: DamagedEntry::StreamIndexKey,
        reason: format!("a key of {} bytes, not 24", key.len()),
    })?;
    Ok((stream, version, parse_index_seq(stream, version, value)?))
}

/// Decodes the value of the stream index entry of `version` of `stream`: the sequence it names.
///
/// # Errors
///
/// [`Error::Damaged`] for a value that is not 8 bytes.
#[inline]
pub(crate) fn parse_index_seq(stream: StreamId, version: u64, value: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| Error::Damaged {
        entry: DamagedEntry::StreamIndexEntry { stream, version },
        reason: format!("a value of {} bytes, not 8", value.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Length of a stream head value.
pub(crate) const HEAD_LEN: usize = 28;

/// The head of a stream: where it ends. Stored under the stream's big-endian id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Head {
    /// `version | first_seq | last_seq` (little-endian u64s) then the CRC-32C of the stream key and
    /// those 24 bytes.
    pub(crate) fn encode(&self, stream: StreamId) -> [u8; HEAD_LEN] {
        let mut v = [0u8; HEAD_LEN];
        v[0..8].copy_from_slice(&self.version.to_le_bytes());
        v[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        v[16..24].copy_from_slice(&self.last_seq.to_le_bytes());
        let crc = crate::format::checksum::crc32c_append(
            crate::format::checksum::crc32c(&stream.to_key()),
            &v[..24],
        );
        v[24..28].copy_from_slice(&crc.to_le_bytes());
        v
    }

    pub(crate) fn decode(stream: StreamId, bytes: &[u8]) -> Result<Head> {
        let bad = |reason: &str| Error::Damaged {
            entry: DamagedEntry::StreamHead { stream },
            reason: reason.to_string(),
        };
        if bytes.len() != HEAD_LEN {
            return Err(bad("not 28 bytes long"));
        }
        let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
        if crate::format::checksum::crc32c_append(
            crate::format::checksum::crc32c(&stream.to_key()),
            &bytes[..24],
        ) != crc
        {
            return Err(bad("checksum mismatch"));
        }
        let u = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let head = Head {
            version: u(0),
            first_seq: u(8),
            last_seq: u(16),
        };
        if head.version == 0 || head.first_seq == 0 || head.last_seq < head.first_seq {
            return Err(bad("its version or sequences are out of order"));
        }
        Ok(head)
    }

    /// The stream's summary.
    pub(crate) fn info(&self, stream: StreamId) -> StreamInfo {
        StreamInfo {
            stream,
            version: self.version,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
        }
    }
}

/// The first and the last index key of `stream` that a read from version `from` in `direction`
/// covers (inclusive).
pub(crate) fn stream_read_keys(
    stream: StreamId,
    from: u64,
    direction: Direction,
) -> ([u8; 24], [u8; 24]) {
    match direction {
        Direction::Forward => (
            stream_version_key(stream, from),
            stream_version_key(stream, u64::MAX),
        ),
        Direction::Backward => (
            stream_version_key(stream, 0),
            stream_version_key(stream, from),
        ),
    }
}

/// Decodes a heads-database key.
pub(crate) fn parse_stream_key(key: &[u8]) -> Result<StreamId> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| Error::Damaged {
        entry: DamagedEntry::StreamHeadKey,
        reason: format!("a key of {} bytes, not 16", key.len()),
    })?;
    Ok(StreamId(u128::from_be_bytes(bytes)))
}

/// The `meta` key of the index watermark: the (stream, version) index and the stream heads hold
/// every event up to this sequence and none after it.
pub(crate) const WATERMARK_KEY: &str = "indexed_through";

/// The watermark's value: the sequence as a little-endian `u64`.
pub(crate) fn encode_watermark(seq: u64) -> [u8; 8] {
    seq.to_le_bytes()
}

/// Decodes the watermark's value.
pub(crate) fn decode_watermark(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .map_err(|_| Error::Damaged {
            entry: DamagedEntry::IndexWatermark,
            reason: format!("{} bytes, not 8", bytes.len()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trip_and_damage() {
        let head = Head {
            version: 3,
            first_seq: 10,
            last_seq: 99,
        };
        let bytes = head.encode(StreamId(5));
        assert_eq!(Head::decode(StreamId(5), &bytes).unwrap(), head);
        // The checksum binds the head to its stream.
        assert!(Head::decode(StreamId(6), &bytes).is_err());
        for i in 0..HEAD_LEN * 8 {
            let mut bad = bytes;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(Head::decode(StreamId(5), &bad).is_err(), "bit {i}");
        }
    }

    #[test]
    fn stream_keys_sort_by_stream_then_version() {
        let a = stream_version_key(StreamId(1), 300);
        let b = stream_version_key(StreamId(2), 1);
        let c = stream_version_key(StreamId(1), 2);
        assert!(c < a && a < b);
        assert_eq!(parse_stream_version_key(&a), Some((StreamId(1), 300)));
    }
}
