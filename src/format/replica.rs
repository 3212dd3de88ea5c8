//! The entries of the `replica` database (`docs/format.md`, "replica", version 8): where a store
//! that replicates a cluster's log stands in it. Each entry carries a CRC-32C over its key and
//! value, so an entry moved under another key or damaged is an error, never a position.

#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

use crate::error::{DamagedEntry, Error, Result};
use crate::format::checksum::{crc32c, crc32c_append};
use crate::types::StreamId;

/// Key of the origin entry: which JetStream stream the store replicates.
pub(crate) const ORIGIN_KEY: &[u8] = b"o";
/// Key of the applied entry: the last JetStream sequence applied to the store.
pub(crate) const APPLIED_KEY: &[u8] = b"a";
/// First byte of a stream's entry: `s` ‖ stream id `u128` BE.
const STREAM_TAG: u8 = b's';

/// The JetStream stream a replica follows: its name, the time the cluster created it (a stream
/// deleted and made again under the same name is another log) and the prefix of its subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub stream: String,
    pub created_ns: u64,
    pub subject_prefix: String,
}

/// The key of `stream`'s entry: the JetStream sequence of the last message on its subject.
pub(crate) fn stream_key(stream: StreamId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = STREAM_TAG;
    key[1..].copy_from_slice(&stream.0.to_be_bytes());
    key
}

/// A sequence entry: `seq u64 LE ‖ CRC-32C(key ‖ those 8 bytes)`.
pub(crate) fn encode_seq(key: &[u8], seq: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c_append(crc32c(key), &v[..8]);
    v[8..].copy_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes the sequence entry under `key`.
pub(crate) fn decode_seq(key: &[u8], bytes: &[u8]) -> Result<u64> {
    let bytes: &[u8; 12] = bytes
        .try_into()
        .map_err(|_| damaged(key, "not 12 bytes long"))?;
    let crc = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
    if crc32c_append(crc32c(key), &bytes[..8]) != crc {
        return Err(damaged(
            key,
            "checksum mismatch (or it belongs to another key)",
        ));
    }
    Ok(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
}

/// The origin entry: `created_ns u64 LE ‖ len u16 LE ‖ stream ‖ len u16 LE ‖ prefix ‖ CRC-32C`
/// of the bytes before it.
pub(crate) fn encode_origin(origin: &Origin) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + origin.stream.len() + origin.subject_prefix.len());
    v.extend_from_slice(&origin.created_ns.to_le_bytes());
    for text in [&origin.stream, &origin.subject_prefix] {
        v.extend_from_slice(&(text.len() as u16).to_le_bytes());
        v.extend_from_slice(text.as_bytes());
    }
    let crc = crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes the origin entry.
pub(crate) fn decode_origin(bytes: &[u8]) -> Result<Origin> {
    let bad = |reason| damaged(ORIGIN_KEY, reason);
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or_else(|| bad("shorter than its checksum"))?;
    if crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(bad("checksum mismatch"));
    }
    let (created, mut rest) = body
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("shorter than its fields"))?;
    let mut text = || -> Result<String> {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("shorter than its fields"))?;
        let len = u16::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad("shorter than its fields"));
        }
        let (text, tail) = tail.split_at(len);
        rest = tail;
        String::from_utf8(text.to_vec()).map_err(|_| bad("a name that is not UTF-8"))
    };
    let stream = text()?;
    let subject_prefix = text()?;
    if !rest.is_empty() {
        return Err(bad("longer than its fields"));
    }
    Ok(Origin {
        stream,
        created_ns: u64::from_le_bytes(*created),
        subject_prefix,
    })
}

fn damaged(key: &[u8], reason: &str) -> Error {
    let what = match key {
        ORIGIN_KEY => "the replicated JetStream stream".to_string(),
        APPLIED_KEY => "the last applied JetStream sequence".to_string(),
        [STREAM_TAG, id @ ..] if id.len() == 16 => format!(
            "the last JetStream sequence of stream {}",
            StreamId(u128::from_be_bytes(id.try_into().expect("16 bytes")))
        ),
        _ => "an unknown key".to_string(),
    };
    Error::Damaged {
        entry: DamagedEntry::Replica { what },
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_round_trip_and_are_bound_to_their_key() {
        let key = stream_key(StreamId(7));
        let v = encode_seq(&key, 42);
        assert_eq!(decode_seq(&key, &v).unwrap(), 42);
        assert!(decode_seq(&stream_key(StreamId(8)), &v).is_err());
        assert!(decode_seq(APPLIED_KEY, &v).is_err());
        for bit in 0..v.len() * 8 {
            let mut bad = v;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_seq(&key, &bad).is_err(), "bit {bit}");
        }
        assert!(decode_seq(&key, &v[..11]).is_err());
    }

    #[test]
    fn the_origin_round_trips_and_every_flipped_bit_is_refused() {
        let origin = Origin {
            stream: "VARVEDB".into(),
            created_ns: 1_700_000_000_123,
            subject_prefix: "varvedb".into(),
        };
        let v = encode_origin(&origin);
        assert_eq!(decode_origin(&v).unwrap(), origin);
        for bit in 0..v.len() * 8 {
            let mut bad = v.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_origin(&bad).is_err(), "bit {bit}");
        }
        for len in 0..v.len() {
            assert!(decode_origin(&v[..len]).is_err(), "cut to {len}");
        }
    }
}
