//! The record: one event and its envelope, as stored in the log database.
//!
//! The layout is specified in `docs/format.md`; this file is its only implementation. All integers
//! are little-endian. A record is a multiple of [`ALIGN`] bytes long and its payload starts at a
//! multiple of [`ALIGN`], so that a record stored in an LMDB leaf node (whose node size is then a
//! multiple of 16) or on an overflow page has its payload 16-byte aligned in the memory map.
//!
//! ```text
//! 0   u32  header_crc     CRC-32C of bytes [8, payload_offset)
//! 4   u32  payload_crc    CRC-32C of bytes [payload_offset, len)
//! 8   u8   record_version (1)
//! 9   u8   flags          bit 0 correlation id, bit 1 causation id, bit 2 metadata
//! 10  u16  schema_version
//! 12  u16  event_type_len
//! 14  u16  reserved (0)
//! 16  u64  seq
//! 24  u128 stream
//! 40  u64  version
//! 48  u64  prev_seq       sequence of the stream's previous event, 0 for its first
//! 56  u64  timestamp_ns   commit time, nanoseconds since the Unix epoch
//! 64  u128 event_id
//! 80  u32  payload_len
//! 84  u32  metadata_len
//! 88  [u128 correlation_id] [u128 causation_id] event_type metadata  zero padding to 16
//! payload_offset: payload (rkyv archive)  zero padding to 16
//! ```

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::log::{checksum, Envelope};
use crate::types::StreamId;

/// Version of the record layout, stored in every record.
pub(crate) const RECORD_VERSION: u8 = 1;
/// Alignment of records and payloads.
pub(crate) const ALIGN: usize = 16;
/// Length of the fixed part of the header.
pub(crate) const HEADER_LEN: usize = 88;
/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;

const FLAG_CORRELATION: u8 = 1;
const FLAG_CAUSATION: u8 = 2;
const FLAG_METADATA: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_CORRELATION | FLAG_CAUSATION | FLAG_METADATA;

const OFF_PAYLOAD_CRC: usize = 4;
/// The header checksum starts at the first 8-byte aligned byte after both checksums, so that it
/// runs on whole 8-byte words. The payload checksum field is not covered by it: a damaged payload
/// checksum fails the payload check instead.
const HEADER_CRC_START: usize = 8;
const OFF_SEQ: usize = 16;
const OFF_VERSION: usize = 40;
const OFF_PREV: usize = 48;
const OFF_TIMESTAMP: usize = 56;

/// Length of a stub: the `log` value of a record stored in `log_large`.
pub(crate) const STUB_LEN: usize = 16;
/// Flag of a stub (no record has it).
const FLAG_STUB: u8 = 0x80;

/// The stub stored in `log` for a record kept in `log_large`:
/// `crc32c(bytes 4..16) u32 | record_version u8 | flags u8 (0x80) | reserved u16 | seq u64`.
pub(crate) fn stub(seq: u64) -> [u8; STUB_LEN] {
    let mut s = [0u8; STUB_LEN];
    s[4] = RECORD_VERSION;
    s[5] = FLAG_STUB;
    s[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = checksum::crc32c(&s[4..]);
    s[..4].copy_from_slice(&crc.to_le_bytes());
    s
}

/// Whether a `log` value is a stub, checking it when it has a stub's length. Records are never
/// 16 bytes long (their header alone is 88).
pub(crate) fn is_stub(seq: u64, value: &[u8]) -> Result<bool> {
    let Some(s) = value
        .first_chunk::<STUB_LEN>()
        .filter(|_| value.len() == STUB_LEN)
    else {
        return Ok(false);
    };
    let valid = u32_at(s, 0) == checksum::crc32c(&s[4..])
        && s[4] == RECORD_VERSION
        && s[5] == FLAG_STUB
        && u16_at(s, 6) == 0
        && u64_at(s, 8) == seq;
    if !valid {
        return Err(bad(seq, "damaged stub of a large record"));
    }
    Ok(true)
}

/// The longest record kept inline in `log` for an LMDB page size: every longer one goes to
/// `log_large`, on its own overflow pages. LMDB moves a leaf value to overflow pages when its node
/// (8-byte node header, 8-byte key, value) exceeds `((page - 16) / 2 & !1) - 2` bytes, and such a
/// node takes 24 bytes in the leaf, which would shift every following node by 8. With this
/// threshold `log` holds no overflow node, so its nodes stay multiples of 16 long, and every
/// record in `log_large` is on overflow pages, page-aligned.
pub(crate) fn inline_limit(page_size: usize) -> usize {
    let node_max = (((page_size - 16) / 2) & !1) - 2;
    (node_max - 16) & !(ALIGN - 1)
}

pub(crate) const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// The parts of an envelope known before the write transaction assigns the position.
pub(crate) struct RecordParts<'a> {
    pub stream: StreamId,
    pub event_id: Uuid,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub metadata: Option<&'a [u8]>,
}

/// Appends the header and variable part of a record to `buf` (which must end at a multiple of
/// [`ALIGN`]) and pads it so that the payload can be serialized right after. Returns the offset of
/// the record start in `buf`. The position fields are zero until [`finish`] and [`set_position`].
pub(crate) fn begin(buf: &mut Vec<u8>, parts: &RecordParts<'_>) -> usize {
    debug_assert_eq!(buf.len() % ALIGN, 0);
    let start = buf.len();
    let mut flags = 0u8;
    if parts.correlation_id.is_some() {
        flags |= FLAG_CORRELATION;
    }
    if parts.causation_id.is_some() {
        flags |= FLAG_CAUSATION;
    }
    if parts.metadata.is_some() {
        flags |= FLAG_METADATA;
    }
    let metadata = parts.metadata.unwrap_or(&[]);
    buf.extend_from_slice(&[0u8; 8]); // both CRCs, filled later
    buf.push(RECORD_VERSION);
    buf.push(flags);
    buf.extend_from_slice(&parts.schema_version.to_le_bytes());
    buf.extend_from_slice(&(parts.event_type.len() as u16).to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&0u64.to_le_bytes()); // seq
    buf.extend_from_slice(&parts.stream.0.to_le_bytes());
    buf.extend_from_slice(&0u64.to_le_bytes()); // version
    buf.extend_from_slice(&0u64.to_le_bytes()); // prev_seq
    buf.extend_from_slice(&0u64.to_le_bytes()); // timestamp
    buf.extend_from_slice(&parts.event_id.as_u128().to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes()); // payload_len, filled by finish
    buf.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    debug_assert_eq!(buf.len() - start, HEADER_LEN);
    if let Some(id) = parts.correlation_id {
        buf.extend_from_slice(&id.as_u128().to_le_bytes());
    }
    if let Some(id) = parts.causation_id {
        buf.extend_from_slice(&id.as_u128().to_le_bytes());
    }
    buf.extend_from_slice(parts.event_type.as_bytes());
    buf.extend_from_slice(metadata);
    buf.resize(start + align_up(buf.len() - start), 0);
    start
}

/// Completes a record whose payload was appended to `buf` after [`begin`]: pads it, stores the
/// payload length and the payload checksum. Returns the record's length.
pub(crate) fn finish(buf: &mut Vec<u8>, start: usize, payload_offset: usize) -> usize {
    let payload_len = buf.len() - start - payload_offset;
    buf.resize(start + align_up(buf.len() - start), 0);
    let rec = &mut buf[start..];
    rec[80..84].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let payload_crc = checksum::crc32c(&rec[payload_offset..]);
    rec[OFF_PAYLOAD_CRC..OFF_PAYLOAD_CRC + 4].copy_from_slice(&payload_crc.to_le_bytes());
    rec.len()
}

/// Stores the position of a finished record and seals its header checksum.
pub(crate) fn set_position(
    rec: &mut [u8],
    payload_offset: usize,
    seq: u64,
    version: u64,
    prev_seq: u64,
    timestamp_ns: u64,
) {
    rec[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    rec[OFF_VERSION..OFF_VERSION + 8].copy_from_slice(&version.to_le_bytes());
    rec[OFF_PREV..OFF_PREV + 8].copy_from_slice(&prev_seq.to_le_bytes());
    rec[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].copy_from_slice(&timestamp_ns.to_le_bytes());
    let header_crc = checksum::crc32c(&rec[HEADER_CRC_START..payload_offset]);
    rec[0..4].copy_from_slice(&header_crc.to_le_bytes());
}

/// The commit timestamp of a stored record, read without verification. Used only to keep commit
/// timestamps monotonic; a damaged value can at worst hold later timestamps at a constant.
pub(crate) fn raw_timestamp(rec: &[u8]) -> u64 {
    rec.get(OFF_TIMESTAMP..OFF_TIMESTAMP + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// Whether two records hold the same event: equal in everything but the position fields (seq,
/// version, prev_seq, timestamp) and the header checksum that covers them.
pub(crate) fn same_event(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.len() >= HEADER_LEN
        && a[4..OFF_SEQ] == b[4..OFF_SEQ]
        && a[24..40] == b[24..40]
        && a[64..] == b[64..]
}

#[inline(always)]
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
#[inline(always)]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
#[inline(always)]
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
#[inline(always)]
fn u128_at(b: &[u8], off: usize) -> u128 {
    u128::from_le_bytes(b[off..off + 16].try_into().expect("16 bytes"))
}

/// A record whose header has been verified; the payload is checked separately by
/// [`DecodedRecord::payload`], so that reading an envelope never touches payload bytes. Small and
/// cheap to move: the envelope is decoded only when asked for.
#[derive(Clone, Copy)]
pub(crate) struct DecodedRecord<'a> {
    bytes: &'a [u8],
    seq: u64,
    /// Offset of the event type name; the optional ids precede it.
    type_offset: u32,
    payload_offset: u32,
    /// Whether the payload checksum was verified along with the header's.
    payload_checked: bool,
}

impl<'a> DecodedRecord<'a> {
    /// Global sequence of the record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Version of the record in its stream.
    pub fn version(&self) -> u64 {
        u64_at(self.bytes, OFF_VERSION)
    }

    /// The stream of the record.
    pub fn stream(&self) -> StreamId {
        StreamId(u128_at(self.bytes, 24))
    }

    /// The event type name's bytes (UTF-8 when decoded by [`decode`], or when equal to a name).
    pub fn event_type_bytes(&self) -> &'a [u8] {
        let start = self.type_offset as usize;
        &self.bytes[start..start + u16_at(self.bytes, 12) as usize]
    }

    /// Decodes the envelope.
    pub fn envelope(&self) -> Envelope<'a> {
        let b = self.bytes;
        let flags = b[9];
        let mut off = HEADER_LEN;
        let mut take_id = |flag: u8| {
            (flags & flag != 0).then(|| {
                off += 16;
                Uuid::from_u128(u128_at(b, off - 16))
            })
        };
        let correlation_id = take_id(FLAG_CORRELATION);
        let causation_id = take_id(FLAG_CAUSATION);
        let type_bytes = self.event_type_bytes();
        // The name was checked to be UTF-8 (by `decode`, or by equality with a known name), so
        // the fallback is unreachable.
        let event_type = std::str::from_utf8(type_bytes).unwrap_or_default();
        let meta_start = self.type_offset as usize + type_bytes.len();
        let metadata = (flags & FLAG_METADATA != 0)
            .then(|| &b[meta_start..meta_start + u32_at(b, 84) as usize]);
        let prev = u64_at(b, OFF_PREV);
        Envelope {
            seq: self.seq,
            stream: self.stream(),
            version: self.version(),
            prev_seq: (prev != 0).then_some(prev),
            timestamp_ns: u64_at(b, OFF_TIMESTAMP),
            event_id: Uuid::from_u128(u128_at(b, 64)),
            correlation_id,
            causation_id,
            event_type,
            schema_version: u16_at(b, 10),
            metadata,
            payload_len: u32_at(b, 80),
        }
    }

    /// The payload bytes, after verifying the payload checksum (unless [`decode_event`] already
    /// did).
    pub fn payload(&self) -> Result<&'a [u8]> {
        let region = &self.bytes[self.payload_offset as usize..];
        if !self.payload_checked && checksum::crc32c(region) != u32_at(self.bytes, OFF_PAYLOAD_CRC)
        {
            return Err(bad(self.seq, "payload checksum mismatch"));
        }
        Ok(&region[..u32_at(self.bytes, 80) as usize])
    }

    /// The whole record (header, payload and padding).
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cold]
#[inline(never)]
fn bad(seq: u64, reason: &str) -> Error {
    Error::corrupted(seq, reason)
}

/// Names what is wrong with a record whose checksums hold but whose header does not.
#[cold]
#[inline(never)]
fn malformed(
    seq: u64,
    h: &[u8; HEADER_LEN],
    payload_offset: usize,
    payload_len: usize,
    len: usize,
) -> Error {
    let reason = if h[8] != RECORD_VERSION {
        "unknown record version"
    } else if h[9] & !KNOWN_FLAGS != 0 {
        "unknown record flags"
    } else if u16_at(h, 14) != 0 {
        "reserved header field is not zero"
    } else if align_up(payload_offset + payload_len) != len {
        "payload length does not match the record length"
    } else {
        "record holds a different sequence than its key"
    };
    bad(seq, reason)
}

/// Decodes and verifies the header of the record stored under key `seq`, including that the
/// event type name is UTF-8.
///
/// Every length is bounds-checked before it is used, so arbitrary bytes give an error, never a
/// panic.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<DecodedRecord<'_>> {
    let rec = decode_with(seq, bytes, false)?;
    if std::str::from_utf8(rec.event_type_bytes()).is_err() {
        return Err(Error::corrupted(seq, "event type is not UTF-8"));
    }
    Ok(rec)
}

/// Decodes a record for a full read: verifies both checksums in one pass, but not that the event
/// type name is UTF-8. For callers that compare the name with a known (UTF-8) one before they use
/// it: equality proves it is UTF-8.
pub(crate) fn decode_event(seq: u64, bytes: &[u8]) -> Result<DecodedRecord<'_>> {
    decode_with(seq, bytes, true)
}

fn decode_with(seq: u64, bytes: &[u8], with_payload: bool) -> Result<DecodedRecord<'_>> {
    // One bounds check for the fixed header; its fields are then read without any.
    let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(bad(seq, "record shorter than its header"));
    };
    if !bytes.len().is_multiple_of(ALIGN) || bytes.len() > u32::MAX as usize {
        return Err(bad(seq, "record length is not a multiple of 16"));
    }
    let flags = h[9];
    let type_len = u16_at(h, 12) as usize;
    let payload_len = u32_at(h, 80) as usize;
    let metadata_len = u32_at(h, 84) as usize;
    let ids_len =
        16 * ((flags & FLAG_CORRELATION != 0) as usize + (flags & FLAG_CAUSATION != 0) as usize);
    let type_offset = HEADER_LEN + ids_len;
    let payload_offset = align_up(type_offset + type_len + metadata_len);
    if payload_offset > bytes.len() {
        return Err(bad(seq, "header lengths exceed the record"));
    }
    let (front, payload) = bytes.split_at(payload_offset);
    let header = &front[HEADER_CRC_START..];
    if with_payload {
        let (hc, pc) = checksum::crc32c_pair(header, payload);
        if hc != u32_at(h, 0) {
            return Err(bad(seq, "header checksum mismatch"));
        }
        if pc != u32_at(h, OFF_PAYLOAD_CRC) {
            return Err(bad(seq, "payload checksum mismatch"));
        }
    } else if checksum::crc32c(header) != u32_at(h, 0) {
        return Err(bad(seq, "header checksum mismatch"));
    }
    // The header is intact from here on; what follows catches records that were written wrong
    // or are being read under the wrong key. One branch for all, the reason only on failure.
    let well_formed = h[8] == RECORD_VERSION
        && flags & !KNOWN_FLAGS == 0
        && u16_at(h, 14) == 0
        && align_up(payload_offset + payload_len) == bytes.len()
        && u64_at(h, OFF_SEQ) == seq;
    if !well_formed {
        return Err(malformed(seq, h, payload_offset, payload_len, bytes.len()));
    }
    Ok(DecodedRecord {
        bytes,
        seq,
        type_offset: type_offset as u32,
        payload_offset: payload_offset as u32,
        payload_checked: with_payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(meta: Option<&[u8]>, corr: bool) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let parts = RecordParts {
            stream: StreamId(9),
            event_id: Uuid::from_u128(77),
            correlation_id: corr.then(|| Uuid::from_u128(5)),
            causation_id: None,
            event_type: "Thing",
            schema_version: 3,
            metadata: meta,
        };
        let start = begin(&mut buf, &parts);
        let payload_offset = buf.len() - start;
        buf.extend_from_slice(b"payload bytes!!");
        let len = finish(&mut buf, start, payload_offset);
        set_position(
            &mut buf[start..start + len],
            payload_offset,
            42,
            2,
            40,
            1_000,
        );
        (buf, payload_offset)
    }

    #[test]
    fn round_trip_and_alignment() {
        for meta in [None, Some(&b"m"[..]), Some(&[7u8; 100][..])] {
            for corr in [false, true] {
                let (buf, payload_offset) = sample(meta, corr);
                assert_eq!(buf.len() % ALIGN, 0);
                assert_eq!(payload_offset % ALIGN, 0);
                let rec = decode(42, &buf).unwrap();
                let env = rec.envelope();
                assert_eq!(env.stream, StreamId(9));
                assert_eq!(env.version, 2);
                assert_eq!(env.prev_seq, Some(40));
                assert_eq!(env.timestamp_ns, 1_000);
                assert_eq!(env.event_type, "Thing");
                assert_eq!(env.schema_version, 3);
                assert_eq!(env.metadata, meta);
                assert_eq!(env.correlation_id, corr.then(|| Uuid::from_u128(5)));
                assert_eq!(rec.payload().unwrap(), b"payload bytes!!");
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let (buf, _) = sample(Some(b"meta"), true);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let res = decode(42, &bad).and_then(|r| r.payload().map(|_| ()));
                assert!(
                    matches!(res, Err(Error::Corrupted { seq: 42, .. })),
                    "flip at byte {byte} bit {bit} not detected"
                );
                let res = decode_event(42, &bad).and_then(|r| r.payload().map(|_| ()));
                assert!(
                    matches!(res, Err(Error::Corrupted { seq: 42, .. })),
                    "flip at byte {byte} bit {bit} not detected by a full read"
                );
            }
        }
    }

    #[test]
    fn stubs_round_trip_and_damage_is_an_error() {
        let s = stub(9);
        assert!(is_stub(9, &s).unwrap());
        assert!(is_stub(10, &s).is_err());
        for i in 0..STUB_LEN * 8 {
            let mut bad = s;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(is_stub(9, &bad).is_err(), "bit {i}");
        }
        let (rec, _) = sample(None, false);
        assert!(!is_stub(42, &rec).unwrap());
    }

    #[test]
    fn inline_limit_keeps_log_nodes_inline_and_large_ones_on_overflow_pages() {
        // 4 KiB pages: LMDB's largest inline leaf node is 2,038 bytes.
        assert_eq!(inline_limit(4096), 2016);
        for page in [4096usize, 16384, 65536] {
            let node_max = (((page - 16) / 2) & !1) - 2;
            let limit = inline_limit(page);
            assert_eq!(limit % 16, 0);
            assert!(16 + limit <= node_max);
            assert!(16 + limit + 16 > node_max);
        }
    }

    #[test]
    fn wrong_key_and_truncation_are_errors() {
        let (buf, _) = sample(None, false);
        assert!(matches!(
            decode(43, &buf),
            Err(Error::Corrupted { seq: 43, .. })
        ));
        for cut in 0..buf.len() {
            let res = decode(42, &buf[..cut]).and_then(|r| r.payload().map(|_| ()));
            assert!(res.is_err(), "truncation to {cut} bytes accepted");
        }
    }
}
