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
//! 9   u8   flags          bit 0 correlation id, bit 1 causation id, bit 2 metadata,
//!                         bit 3 encrypted, bit 4 sealed in transit
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
//!
//! An encrypted record (flag bit 3) has a 16-byte crypto block (`nonce[12] ‖ key_version u32`)
//! after the ids, no metadata in its header, and in place of the payload the AES-256-GCM sealing
//! of `metadata ‖ zero padding to 16 ‖ payload`, followed by the 16-byte tag; `payload_len` is
//! the length of that sealed region. The associated data is everything in the header but the
//! checksums and the crypto block, with the store id and key version (see [`seal`]).
//!
//! A record sealed in transit (flag bit 4, with bit 3) was sealed by the node that wrote it,
//! before the cluster's log gave it a position ([`seal_in_transit`]): its associated data has
//! the position fields and the timestamp as zeros, under another prefix, and its nonce is
//! derived from what it seals, so that a retry of the same event gives the same bytes. A
//! replica stores it as it came, with the position it assigned.
//!
//! The functions a read calls are `#[inline]`: readers are generic over the event type, so a
//! scan's loop is compiled in the application's crate, which cannot inline a plain function of
//! this one without the attribute.

use std::borrow::Cow;

use uuid::Uuid;

use crate::cipher::aead::{Nonces, TAG_LEN};
use crate::cipher::{PlainBuf, StreamKey};
use crate::error::{Error, Result};
use crate::format::{checksum, Envelope, Part};
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
const FLAG_ENCRYPTED: u8 = 8;
const FLAG_TRANSIT: u8 = 16;
const KNOWN_FLAGS: u8 =
    FLAG_CORRELATION | FLAG_CAUSATION | FLAG_METADATA | FLAG_ENCRYPTED | FLAG_TRANSIT;
/// Length of the crypto block of an encrypted record: nonce and key version.
const CRYPTO_BLOCK_LEN: usize = 16;
/// Room on the stack for the associated data of a sealed record: enough for event type names up
/// to about 100 bytes, longer ones build it on the heap (a buffer for the longest name would be
/// 1 KiB zeroed for every record).
const AAD_INLINE: usize = 256;
const AAD_PREFIX: &[u8] = b"varvedb/record";
/// The prefix of the associated data of a record sealed in transit.
const TRANSIT_AAD_PREFIX: &[u8] = b"varvedb/transit";

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
#[inline]
pub(crate) fn is_stub(seq: u64, value: &[u8]) -> Result<bool> {
    match value.first_chunk::<STUB_LEN>() {
        Some(s) if value.len() == STUB_LEN => check_stub(seq, s),
        _ => Ok(false),
    }
}

/// Checks a 16-byte `log` value as a stub (out of line: scans see it once per large record).
#[inline(never)]
fn check_stub(seq: u64, s: &[u8; STUB_LEN]) -> Result<bool> {
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

#[inline]
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
    /// Whether the record will be sealed (an encrypted store): the metadata then goes into the
    /// sealed region, in front of the payload.
    pub encrypted: bool,
}

/// Where [`begin`] put a record in the batch buffer.
pub(crate) struct Begun {
    /// Offset of the record in the buffer.
    pub start: usize,
    /// Offset of its payload region from the record start.
    pub payload_offset: usize,
}

/// Appends the header and variable part of a record to `buf` (which must end at a multiple of
/// [`ALIGN`]) and pads it so that the payload can be serialized right after, at a multiple of
/// [`ALIGN`]. For an encrypted record the metadata and its padding are written first, at the
/// start of what will be sealed. The position fields are zero until [`finish`] and
/// [`set_position`].
pub(crate) fn begin(buf: &mut Vec<u8>, parts: &RecordParts<'_>) -> Begun {
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
    if parts.encrypted {
        flags |= FLAG_ENCRYPTED;
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
    if parts.encrypted {
        buf.extend_from_slice(&[0u8; CRYPTO_BLOCK_LEN]); // nonce and key version, set when sealed
    }
    buf.extend_from_slice(parts.event_type.as_bytes());
    if !parts.encrypted {
        buf.extend_from_slice(metadata);
    }
    buf.resize(start + align_up(buf.len() - start), 0);
    let payload_offset = buf.len() - start;
    if parts.encrypted {
        buf.extend_from_slice(metadata);
        buf.resize(start + align_up(buf.len() - start), 0);
    }
    Begun {
        start,
        payload_offset,
    }
}

/// Completes a record whose payload was appended to `buf` after [`begin`]: pads it and stores the
/// payload length, and for a plain record the payload checksum (an encrypted record gets room for
/// its tag, and its checksum when it is sealed). Returns the record's length.
pub(crate) fn finish(buf: &mut Vec<u8>, start: usize, payload_offset: usize) -> usize {
    let encrypted = buf[start + 9] & FLAG_ENCRYPTED != 0;
    if encrypted {
        buf.extend_from_slice(&[0u8; TAG_LEN]);
    }
    let payload_len = buf.len() - start - payload_offset;
    buf.resize(start + align_up(buf.len() - start), 0);
    let rec = &mut buf[start..];
    rec[80..84].copy_from_slice(&(payload_len as u32).to_le_bytes());
    if !encrypted {
        let payload_crc = checksum::crc32c(&rec[payload_offset..]);
        rec[OFF_PAYLOAD_CRC..OFF_PAYLOAD_CRC + 4].copy_from_slice(&payload_crc.to_le_bytes());
    }
    rec.len()
}

/// The event type name and schema version of a staged record (one that [`begin`] wrote).
pub(crate) fn staged_schema(rec: &[u8]) -> (&[u8], u16) {
    let flags = rec[9];
    let at = crypto_offset(flags)
        + if flags & FLAG_ENCRYPTED != 0 {
            CRYPTO_BLOCK_LEN
        } else {
            0
        };
    let len = u16_at(rec, 12) as usize;
    (&rec[at..at + len], u16_at(rec, 10))
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
/// The length of the record at the start of `bytes` as its header gives it (`None` when the
/// header is cut short): for records sent one after another, as a replicated log does. The
/// record itself is checked by [`decode`].
pub(crate) fn stated_len(bytes: &[u8]) -> Option<usize> {
    let h = bytes.first_chunk::<HEADER_LEN>()?;
    let flags = h[9];
    let encrypted = flags & FLAG_ENCRYPTED != 0;
    let type_offset = crypto_offset(flags) + if encrypted { CRYPTO_BLOCK_LEN } else { 0 };
    let payload_offset = align_up(
        type_offset + u16_at(h, 12) as usize + if encrypted { 0 } else { u32_at(h, 84) as usize },
    );
    Some(align_up(
        payload_offset.checked_add(u32_at(h, 80) as usize)?,
    ))
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
/// Seals a finished record (`rec`, its payload at `payload_offset`) for a journey outside the
/// store: its timestamp set, its position fields zero, its header checksum over them. An
/// encrypted record is sealed under `key` (the stream's data key and the store id) with a
/// synthetic nonce, and flagged as sealed in transit (see the module documentation); one that is
/// sealed already keeps its sealed bytes. [`decode`] with sequence 0 checks it on arrival; the
/// store sets the position when it writes it.
///
/// # Errors
///
/// [`Error::Crypto`] for an encrypted record without a key, or a failed AES-GCM.
pub(crate) fn seal_in_transit(
    rec: &mut [u8],
    payload_offset: usize,
    timestamp_ns: u64,
    key: Option<(&StreamKey, u128)>,
) -> Result<()> {
    rec[OFF_SEQ..OFF_SEQ + 8].fill(0);
    rec[OFF_VERSION..OFF_VERSION + 8].fill(0);
    rec[OFF_PREV..OFF_PREV + 8].fill(0);
    rec[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].copy_from_slice(&timestamp_ns.to_le_bytes());
    if is_encrypted(rec) && rec[9] & FLAG_TRANSIT == 0 {
        let (key, store_id) = key.ok_or(Error::Crypto {
            reason: "an encrypted record was to leave the store without its stream key",
        })?;
        rec[9] |= FLAG_TRANSIT;
        let sealed_len = u32_at(rec, 80) as usize;
        let ct_len = sealed_len - TAG_LEN;
        let block = crypto_offset(rec[9]);
        rec[block + 12..block + 16].copy_from_slice(&key.version.to_le_bytes());
        let mut aad_buf = [0u8; AAD_INLINE];
        let aad = aad(rec, store_id, key.version, &mut aad_buf).into_owned();
        let nonce = key.transit_nonce(&aad, &rec[payload_offset..payload_offset + ct_len]);
        let region = &mut rec[payload_offset..payload_offset + ct_len];
        let tag = key
            .key
            .seal(nonce, &aad, region)
            .map_err(|_| Error::Crypto {
                reason: "AES-GCM failed",
            })?;
        rec[payload_offset + ct_len..payload_offset + sealed_len].copy_from_slice(&tag);
        rec[block..block + 12].copy_from_slice(&nonce);
        let payload_crc = checksum::crc32c(&rec[payload_offset..]);
        rec[OFF_PAYLOAD_CRC..OFF_PAYLOAD_CRC + 4].copy_from_slice(&payload_crc.to_le_bytes());
    }
    let header_crc = checksum::crc32c(&rec[HEADER_CRC_START..payload_offset]);
    rec[0..4].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

/// Whether a record was sealed in transit (see the module documentation).
pub(crate) fn is_sealed_in_transit(rec: &[u8]) -> bool {
    rec.get(9).is_some_and(|f| f & FLAG_TRANSIT != 0)
}

/// Whether a staged record is to be sealed.
pub(crate) fn is_encrypted(rec: &[u8]) -> bool {
    rec.get(9).is_some_and(|f| f & FLAG_ENCRYPTED != 0)
}

/// Offset of the crypto block of an encrypted record, after the optional ids.
#[inline]
fn crypto_offset(flags: u8) -> usize {
    HEADER_LEN
        + 16 * ((flags & FLAG_CORRELATION != 0) as usize + (flags & FLAG_CAUSATION != 0) as usize)
}

/// The associated data of a sealed record: a prefix, the store id, the key version, and every
/// header field but the checksums and the crypto block (record version, flags, schema version,
/// type length, sequence, stream, version, previous sequence, timestamp, event id, lengths, ids,
/// event type). A ciphertext moved to another record, store or key, or a changed header field,
/// fails authentication. A record sealed in transit has its own prefix, and zeros for the
/// sequence, version, previous sequence and timestamp, which the log sets after it was sealed.
fn aad<'b>(
    rec: &[u8],
    store_id: u128,
    key_version: u32,
    buf: &'b mut [u8; AAD_INLINE],
) -> Cow<'b, [u8]> {
    let flags = rec[9];
    let transit = flags & FLAG_TRANSIT != 0;
    let prefix = if transit {
        TRANSIT_AAD_PREFIX
    } else {
        AAD_PREFIX
    };
    let ids_end = crypto_offset(flags);
    let type_start = ids_end + CRYPTO_BLOCK_LEN;
    let type_len = u16_at(rec, 12) as usize;
    let parts: [&[u8]; 5] = [
        prefix,
        &store_id.to_le_bytes(),
        &key_version.to_le_bytes(),
        &rec[HEADER_CRC_START..ids_end],
        &rec[type_start..type_start + type_len],
    ];
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    // Where the record's byte `o` of the header is in the associated data.
    let header_at = prefix.len() + 16 + 4 - HEADER_CRC_START;
    let unplace = |out: &mut [u8]| {
        if transit {
            out[header_at + OFF_SEQ..header_at + OFF_SEQ + 8].fill(0);
            out[header_at + OFF_VERSION..header_at + OFF_TIMESTAMP + 8].fill(0);
        }
    };
    if len > AAD_INLINE {
        let mut owned = parts.concat();
        unplace(&mut owned);
        return Cow::Owned(owned);
    }
    let mut n = 0;
    for p in parts {
        buf[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    unplace(&mut buf[..n]);
    Cow::Borrowed(&buf[..n])
}

/// Seals a staged encrypted record whose position fields are set: encrypts its metadata and
/// payload under `key` with a fresh random nonce, stores nonce, key version and tag, and the
/// payload checksum (of the ciphertext). The header checksum is left to [`set_position`].
fn seal(rec: &mut [u8], payload_offset: usize, sealer: Sealer<'_>) -> Result<()> {
    let Sealer {
        key,
        store_id,
        nonces,
    } = sealer;
    let sealed_len = u32_at(rec, 80) as usize;
    let ct_len = sealed_len - TAG_LEN;
    let block = crypto_offset(rec[9]);
    rec[block + 12..block + 16].copy_from_slice(&key.version.to_le_bytes());
    let mut aad_buf = [0u8; AAD_INLINE];
    let aad = aad(rec, store_id, key.version, &mut aad_buf);
    let region = &mut rec[payload_offset..payload_offset + ct_len];
    let failed = |_| Error::Crypto {
        reason: "the random number generator or AES-GCM failed",
    };
    let nonce = nonces.next().map_err(failed)?;
    let tag = key.key.seal(nonce, &aad, region).map_err(failed)?;
    rec[payload_offset + ct_len..payload_offset + sealed_len].copy_from_slice(&tag);
    rec[block..block + 12].copy_from_slice(&nonce);
    let payload_crc = checksum::crc32c(&rec[payload_offset..]);
    rec[OFF_PAYLOAD_CRC..OFF_PAYLOAD_CRC + 4].copy_from_slice(&payload_crc.to_le_bytes());
    Ok(())
}

/// The position of a record in the log.
#[derive(Clone, Copy)]
pub(crate) struct Place {
    pub seq: u64,
    pub version: u64,
    pub prev_seq: u64,
    pub timestamp_ns: u64,
}

/// What sealing an encrypted record needs: the stream's data key, the store id (bound into the
/// associated data) and the nonce pool of the write transaction.
pub(crate) struct Sealer<'a> {
    pub key: &'a StreamKey,
    pub store_id: u128,
    pub nonces: &'a mut Nonces,
}

/// Stores the position of a finished record, seals it when it is encrypted (`key` is then the
/// stream's [`Sealer`]), and seals its header checksum.
pub(crate) fn set_position(
    rec: &mut [u8],
    payload_offset: usize,
    place: Place,
    key: Option<Sealer<'_>>,
) -> Result<()> {
    rec[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&place.seq.to_le_bytes());
    rec[OFF_VERSION..OFF_VERSION + 8].copy_from_slice(&place.version.to_le_bytes());
    rec[OFF_PREV..OFF_PREV + 8].copy_from_slice(&place.prev_seq.to_le_bytes());
    rec[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].copy_from_slice(&place.timestamp_ns.to_le_bytes());
    if is_encrypted(rec) && !is_sealed_in_transit(rec) {
        let sealer = key.ok_or(Error::Crypto {
            reason: "an encrypted record reached the log without its stream key",
        })?;
        seal(rec, payload_offset, sealer)?;
    }
    let header_crc = checksum::crc32c(&rec[HEADER_CRC_START..payload_offset]);
    rec[0..4].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
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

/// Whether a staged encrypted record (`staged`, not sealed yet) holds the same event as the
/// stored record `stored`, whose sealed region decrypted to `stored_plain`: equal in everything
/// but the position fields, the checksums and the crypto block.
pub(crate) fn same_sealed_event(
    staged: &[u8],
    payload_offset: usize,
    stored: &[u8],
    stored_plain: &[u8],
) -> bool {
    if staged.len() != stored.len() || staged.len() < payload_offset || staged[9] != stored[9] {
        return false;
    }
    let block = crypto_offset(staged[9]);
    let ct_len = (u32_at(staged, 80) as usize).saturating_sub(TAG_LEN);
    staged[8..OFF_SEQ] == stored[8..OFF_SEQ]
        && staged[24..40] == stored[24..40]
        && staged[64..HEADER_LEN] == stored[64..HEADER_LEN]
        && staged[HEADER_LEN..block] == stored[HEADER_LEN..block]
        && staged[block + CRYPTO_BLOCK_LEN..payload_offset]
            == stored[block + CRYPTO_BLOCK_LEN..payload_offset]
        && staged.get(payload_offset..payload_offset + ct_len) == Some(stored_plain)
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

/// The decrypted region of an encrypted record: metadata, padding, payload, in an aligned buffer.
pub(crate) struct Opened {
    pub buf: PlainBuf,
    /// Length of the metadata at the buffer's start, when the record has metadata.
    pub metadata: Option<usize>,
    pub payload_start: usize,
    pub payload_len: usize,
}

impl Opened {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.buf[self.payload_start..self.payload_start + self.payload_len]
    }

    pub(crate) fn metadata(&self) -> Option<&[u8]> {
        self.metadata.map(|len| &self.buf[..len])
    }
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
    /// Offset of the payload region in the low 31 bits, and in the top bit ([`PAYLOAD_CHECKED`])
    /// whether the payload checksum was verified along with the header's. Not a `bool` field:
    /// moving the struct then copies the `bool` and its padding as one 8-byte word just after a
    /// 1-byte store, which the CPU cannot forward from its store buffer: a stall on every record
    /// of a scan.
    payload: u32,
}

/// The flag bit of [`DecodedRecord::payload`]. Payload offsets are below it: `decode_verified`
/// refuses any larger one (the header, type name and metadata of a record are at most about
/// 1 GiB, the metadata limit).
const PAYLOAD_CHECKED: u32 = 1 << 31;

impl<'a> DecodedRecord<'a> {
    /// The whole record.
    #[inline]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Global sequence of the record.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Version of the record in its stream.
    #[inline]
    pub fn version(&self) -> u64 {
        u64_at(self.bytes, OFF_VERSION)
    }

    /// The stream of the record.
    #[inline]
    pub fn stream(&self) -> StreamId {
        StreamId(u128_at(self.bytes, 24))
    }

    /// The event type name's bytes (UTF-8 when decoded by [`decode`], or when equal to a name).
    #[inline]
    pub fn event_type_bytes(&self) -> &'a [u8] {
        let start = self.type_offset as usize;
        &self.bytes[start..start + u16_at(self.bytes, 12) as usize]
    }

    /// The schema version of the event.
    #[inline]
    pub fn schema_version(&self) -> u16 {
        u16_at(self.bytes, 10)
    }

    /// Checks that the event type name is UTF-8 (what [`decode`] checks, for a record decoded
    /// otherwise).
    pub fn check_type_name(&self) -> Result<()> {
        match std::str::from_utf8(self.event_type_bytes()) {
            Ok(_) => Ok(()),
            Err(_) => Err(bad(self.seq, "event type is not UTF-8")),
        }
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
        let encrypted = flags & FLAG_ENCRYPTED != 0;
        // Sealed metadata is only in envelopes of decrypted events (`with_metadata`).
        let metadata = (flags & FLAG_METADATA != 0 && !encrypted)
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
            payload_len: self.plain_payload_len() as u32,
            encrypted,
            part: Part::WHOLE,
        }
    }

    /// Whether the record is sealed.
    #[inline]
    pub fn is_encrypted(&self) -> bool {
        self.bytes[9] & FLAG_ENCRYPTED != 0
    }

    /// The error for a record whose sealing does not match the store: a plaintext record in an
    /// encrypted store (a downgrade, refused) or a sealed one in a store without encryption.
    #[cold]
    pub fn sealing_mismatch(&self) -> Error {
        let reason = if self.is_encrypted() {
            "encrypted record in a store without encryption"
        } else {
            "plaintext record in an encrypted store"
        };
        Error::corrupted(self.seq(), reason)
    }

    /// Length of the (plaintext) payload.
    fn plain_payload_len(&self) -> usize {
        let len = u32_at(self.bytes, 80) as usize;
        if self.is_encrypted() {
            len - TAG_LEN - align_up(u32_at(self.bytes, 84) as usize)
        } else {
            len
        }
    }

    /// The key version an encrypted record was sealed under.
    pub fn key_version(&self) -> u32 {
        let block = crypto_offset(self.bytes[9]);
        u32_at(self.bytes, block + 12)
    }

    /// Decrypts an encrypted record (after verifying its payload checksum) into a pooled aligned
    /// buffer.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] on a checksum mismatch or for a plaintext record (nothing to open),
    /// [`Error::Decryption`] when authentication fails (tampered, moved, or sealed under another
    /// key).
    pub fn open(&self, key: &StreamKey, store_id: u128) -> Result<Opened> {
        // Decoding checked the sealed region's length against the tag and metadata only for a
        // record flagged as sealed; a plain record's payload may be shorter than a tag.
        if !self.is_encrypted() {
            return Err(self.sealing_mismatch());
        }
        let sealed = self.payload_region()?;
        let ct_len = sealed.len() - TAG_LEN;
        let mut buf = PlainBuf::copy_of(sealed);
        let block = crypto_offset(self.bytes[9]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.bytes[block..block + 12]);
        let mut aad_buf = [0u8; AAD_INLINE];
        let aad = aad(self.bytes, store_id, self.key_version(), &mut aad_buf);
        if key.key.open(nonce, &aad, buf.as_mut_slice()).is_err() {
            return Err(Error::Decryption {
                seq: self.seq,
                stream: self.stream(),
            });
        }
        buf.truncate(ct_len);
        let metadata_len = u32_at(self.bytes, 84) as usize;
        Ok(Opened {
            buf,
            metadata: (self.bytes[9] & FLAG_METADATA != 0).then_some(metadata_len),
            payload_start: align_up(metadata_len),
            payload_len: self.plain_payload_len(),
        })
    }

    /// Offset of the payload region in the record.
    #[inline]
    pub(crate) fn payload_offset(&self) -> usize {
        (self.payload & !PAYLOAD_CHECKED) as usize
    }

    /// The payload bytes of a plain record (the sealed region of an encrypted one), after
    /// verifying the payload checksum (unless [`decode_event`] already did).
    #[inline]
    pub fn payload_region(&self) -> Result<&'a [u8]> {
        let region = &self.bytes[self.payload_offset()..];
        if self.payload & PAYLOAD_CHECKED == 0
            && checksum::crc32c(region) != u32_at(self.bytes, OFF_PAYLOAD_CRC)
        {
            return Err(bad(self.seq, "payload checksum mismatch"));
        }
        Ok(&region[..u32_at(self.bytes, 80) as usize])
    }

    /// The payload bytes of a plain record whose payload checksum [`decode_event`] verified,
    /// `None` otherwise (an encrypted record, or one decoded by [`decode`]): the fast path of a
    /// typed read, with no `Result` to unpack.
    #[inline]
    pub fn verified_plain_payload(&self) -> Option<&'a [u8]> {
        if self.payload & PAYLOAD_CHECKED == 0 || self.is_encrypted() {
            return None;
        }
        let start = self.payload_offset();
        self.bytes
            .get(start..start + u32_at(self.bytes, 80) as usize)
    }

    /// The payload bytes of a plain record, after verifying the payload checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] on a checksum mismatch, or for an encrypted record (whose payload
    /// must be opened with [`DecodedRecord::open`]).
    #[inline]
    pub fn payload(&self) -> Result<&'a [u8]> {
        if self.is_encrypted() {
            return Err(bad(self.seq, "encrypted record read as plaintext"));
        }
        self.payload_region()
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
    } else if h[9] & FLAG_TRANSIT != 0 && h[9] & FLAG_ENCRYPTED == 0 {
        "a plain record flagged as sealed in transit"
    } else if u16_at(h, 14) != 0 {
        "reserved header field is not zero"
    } else if align_up(payload_offset + payload_len) != len {
        "payload length does not match the record length"
    } else if u64_at(h, OFF_SEQ) == seq {
        "sealed region shorter than its tag and metadata"
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
    let rec = decode_verified(seq, bytes, false)?;
    rec.check_type_name()?;
    Ok(rec)
}

/// Decodes and verifies the header of a record, but neither its payload checksum (checked when
/// the payload is read) nor that the event type name is UTF-8: for scans that decide on the
/// header whether they want a record at all, and then compare the name with known (UTF-8) ones
/// or check it with [`DecodedRecord::check_type_name`].
#[inline]
pub(crate) fn decode_header(seq: u64, bytes: &[u8]) -> Result<DecodedRecord<'_>> {
    decode_verified(seq, bytes, false)
}

/// Decodes a record for a full read: verifies both checksums in one pass, but not that the event
/// type name is UTF-8. For callers that compare the name with a known (UTF-8) one before they use
/// it: equality proves it is UTF-8.
#[inline]
pub(crate) fn decode_event(seq: u64, bytes: &[u8]) -> Result<DecodedRecord<'_>> {
    decode_verified(seq, bytes, true)
}

/// Decodes a record as [`decode_event`] (`with_payload`) or [`decode_header`] do. Always
/// inlined: it is the heart of every scan's loop, which is compiled in the application's crate.
#[inline(always)]
pub(crate) fn decode_verified(
    seq: u64,
    bytes: &[u8],
    with_payload: bool,
) -> Result<DecodedRecord<'_>> {
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
    let encrypted = flags & FLAG_ENCRYPTED != 0;
    let type_offset = crypto_offset(flags) + if encrypted { CRYPTO_BLOCK_LEN } else { 0 };
    let payload_offset =
        align_up(type_offset + type_len + if encrypted { 0 } else { metadata_len });
    if payload_offset > bytes.len() || payload_offset >= PAYLOAD_CHECKED as usize {
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
        && u64_at(h, OFF_SEQ) == seq
        && (!encrypted || payload_len >= TAG_LEN + align_up(metadata_len))
        && (encrypted || flags & FLAG_TRANSIT == 0);
    if !well_formed {
        return Err(malformed(seq, h, payload_offset, payload_len, bytes.len()));
    }
    Ok(DecodedRecord {
        bytes,
        seq,
        type_offset: type_offset as u32,
        payload: payload_offset as u32 | if with_payload { PAYLOAD_CHECKED } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_with(
        meta: Option<&[u8]>,
        corr: bool,
        key: Option<(&StreamKey, u128)>,
    ) -> (Vec<u8>, usize) {
        sample_typed("Thing", meta, corr, key)
    }

    fn sample_typed(
        event_type: &str,
        meta: Option<&[u8]>,
        corr: bool,
        key: Option<(&StreamKey, u128)>,
    ) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let parts = RecordParts {
            stream: StreamId(9),
            event_id: Uuid::from_u128(77),
            correlation_id: corr.then(|| Uuid::from_u128(5)),
            causation_id: None,
            event_type,
            schema_version: 3,
            metadata: meta,
            encrypted: key.is_some(),
        };
        let Begun {
            start,
            payload_offset,
        } = begin(&mut buf, &parts);
        buf.extend_from_slice(b"payload bytes!!");
        let len = finish(&mut buf, start, payload_offset);
        let place = Place {
            seq: 42,
            version: 2,
            prev_seq: 40,
            timestamp_ns: 1_000,
        };
        let mut nonces = Nonces::new();
        let sealer = key.map(|(key, store_id)| Sealer {
            key,
            store_id,
            nonces: &mut nonces,
        });
        set_position(&mut buf[start..start + len], payload_offset, place, sealer).unwrap();
        (buf, payload_offset)
    }

    fn sample(meta: Option<&[u8]>, corr: bool) -> (Vec<u8>, usize) {
        sample_with(meta, corr, None)
    }

    const STORE: u128 = 0x5702E;

    fn sealed(meta: Option<&[u8]>, corr: bool) -> (Vec<u8>, StreamKey) {
        let key = StreamKey::from_bytes(&[3; 32], 1);
        let (buf, _) = sample_with(meta, corr, Some((&key, STORE)));
        (buf, key)
    }

    #[test]
    fn sealed_records_with_long_type_names_round_trip_and_authenticate_the_name() {
        // Names up to about 100 bytes build the associated data on the stack, longer ones on
        // the heap: both paths seal and open, and both cover the name.
        let key = StreamKey::from_bytes(&[3; 32], 1);
        for len in [1, 100, 150, 200, MAX_EVENT_TYPE_LEN] {
            let name = "n".repeat(len);
            let (mut buf, payload_offset) =
                sample_typed(&name, Some(b"meta"), true, Some((&key, STORE)));
            let rec = decode(42, &buf).unwrap();
            assert_eq!(rec.envelope().event_type, name);
            let opened = rec.open(&key, STORE).unwrap();
            assert_eq!(opened.payload(), b"payload bytes!!", "name of {len} bytes");
            // Another name of the same length, with the header checksum made to match: only
            // the authentication tag can tell.
            let at = crypto_offset(buf[9]) + CRYPTO_BLOCK_LEN + len / 2;
            assert_eq!(buf[at], b'n');
            buf[at] = b'm';
            let crc = checksum::crc32c(&buf[HEADER_CRC_START..payload_offset]);
            buf[..4].copy_from_slice(&crc.to_le_bytes());
            let rec = decode(42, &buf).unwrap();
            assert!(
                matches!(rec.open(&key, STORE), Err(Error::Decryption { .. })),
                "a changed name of {len} bytes must fail authentication"
            );
        }
    }

    #[test]
    fn sealed_round_trip() {
        for meta in [None, Some(&b"m"[..]), Some(&[7u8; 100][..])] {
            for corr in [false, true] {
                let (buf, key) = sealed(meta, corr);
                assert_eq!(buf.len() % ALIGN, 0);
                let rec = decode(42, &buf).unwrap();
                assert!(rec.is_encrypted());
                let env = rec.envelope();
                assert!(env.encrypted);
                assert_eq!(
                    env.metadata, None,
                    "sealed metadata is not in a bare envelope"
                );
                assert_eq!(env.payload_len, 15);
                assert_eq!(env.event_type, "Thing");
                assert!(rec.payload().is_err(), "a sealed payload is not plaintext");
                let opened = rec.open(&key, STORE).unwrap();
                assert_eq!(opened.payload(), b"payload bytes!!");
                assert_eq!(opened.metadata(), meta);
                assert_eq!(opened.payload().as_ptr() as usize % ALIGN, 0);
                // The plaintext is nowhere in the record.
                assert!(!buf.windows(15).any(|w| w == b"payload bytes!!"));
                if let Some(m) = meta {
                    assert!(m.len() < 8 || !buf.windows(m.len()).any(|w| w == m));
                }
            }
        }
    }

    #[test]
    fn sealed_records_fail_authentication_under_another_key_store_or_place() {
        let (buf, key) = sealed(Some(b"meta"), true);
        let rec = decode(42, &buf).unwrap();
        let other = StreamKey::from_bytes(&[4; 32], 1);
        assert!(matches!(
            rec.open(&other, STORE),
            Err(Error::Decryption { seq: 42, .. })
        ));
        assert!(matches!(
            rec.open(&key, STORE + 1),
            Err(Error::Decryption { .. })
        ));
        // A header field changed with both checksums fixed: authentication fails.
        for field in [OFF_SEQ, 24, OFF_VERSION, OFF_TIMESTAMP, 64, 10] {
            let mut bad = buf.clone();
            bad[field] ^= 1;
            let po = decode_verified(42, &buf, false).unwrap().payload_offset();
            let crc = checksum::crc32c(&bad[HEADER_CRC_START..po]);
            bad[0..4].copy_from_slice(&crc.to_le_bytes());
            let seq = u64_at(&bad, OFF_SEQ);
            let rec = decode(seq, &bad).unwrap();
            assert!(
                matches!(rec.open(&key, STORE), Err(Error::Decryption { .. })),
                "field at {field}"
            );
        }
        // Every flipped ciphertext bit, checksum fixed: authentication fails.
        let po = decode_verified(42, &buf, false).unwrap().payload_offset();
        for byte in po..buf.len() - 16 {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            let crc = checksum::crc32c(&bad[po..]);
            bad[4..8].copy_from_slice(&crc.to_le_bytes());
            let rec = decode(42, &bad).unwrap();
            let len = u32_at(&bad, 80) as usize;
            if byte < po + len {
                assert!(
                    matches!(rec.open(&key, STORE), Err(Error::Decryption { .. })),
                    "byte {byte}"
                );
            }
        }
    }

    #[test]
    fn opening_a_plaintext_record_is_an_error() {
        // Its 15-byte payload is shorter than a tag: nothing to open, and no length to trust.
        let (plain, _) = sample(None, false);
        let rec = decode(42, &plain).unwrap();
        assert!(u32_at(&plain, 80) < TAG_LEN as u32);
        let key = StreamKey::from_bytes(&[3; 32], 1);
        match rec.open(&key, STORE) {
            Err(Error::Corrupted { seq: 42, reason }) => {
                assert!(reason.contains("plaintext record"), "{reason}")
            }
            Err(other) => panic!("expected Corrupted, got {other:?}"),
            Ok(_) => panic!("a plaintext record opened"),
        }
    }

    #[test]
    fn every_flipped_bit_of_a_sealed_record_is_detected() {
        let (buf, key) = sealed(Some(b"meta"), true);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let res = decode(42, &bad).and_then(|r| r.open(&key, STORE).map(|_| ()));
                assert!(
                    matches!(res, Err(Error::Corrupted { seq: 42, .. })),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
    }

    /// A staged record of an encrypted store (not sealed), with `payload`.
    fn staged_encrypted(payload: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let parts = RecordParts {
            stream: StreamId(9),
            event_id: Uuid::from_u128(77),
            correlation_id: Some(Uuid::from_u128(5)),
            causation_id: None,
            event_type: "Thing",
            schema_version: 3,
            metadata: Some(b"meta"),
            encrypted: true,
        };
        let Begun {
            start,
            payload_offset,
        } = begin(&mut buf, &parts);
        buf.extend_from_slice(payload);
        finish(&mut buf, start, payload_offset);
        (buf, payload_offset)
    }

    #[test]
    fn records_sealed_in_transit_are_the_same_bytes_for_the_same_event_and_open_once_placed() {
        let key = StreamKey::from_bytes(&[3; 32], 1);
        let sealed = |payload: &[u8], timestamp_ns: u64| {
            let (mut rec, po) = staged_encrypted(payload);
            seal_in_transit(&mut rec, po, timestamp_ns, Some((&key, STORE))).unwrap();
            (rec, po)
        };
        let (mut rec, po) = sealed(b"payload bytes!!", 1_000);
        assert!(is_sealed_in_transit(&rec));
        assert!(!rec.windows(15).any(|w| w == b"payload bytes!!"));
        // The same event sealed again, at another time: the same sealed bytes.
        let (again, _) = sealed(b"payload bytes!!", 2_000);
        assert!(same_event(&rec, &again));
        // Sealing a sealed record keeps its bytes (a commit encoded twice).
        let before = rec.clone();
        seal_in_transit(&mut rec, po, 1_000, Some((&key, STORE))).unwrap();
        assert_eq!(rec, before);
        // Another payload: another nonce, another ciphertext.
        let (other, _) = sealed(b"payload bytes!?", 1_000);
        let block = crypto_offset(rec[9]);
        assert_ne!(rec[block..block + 12], other[block..block + 12]);
        assert!(!same_event(&rec, &other));
        // In transit it opens at sequence 0; placed in a log it opens at its sequence.
        let opened = decode(0, &rec).unwrap().open(&key, STORE).unwrap();
        assert_eq!(opened.payload(), b"payload bytes!!");
        let place = Place {
            seq: 42,
            version: 2,
            prev_seq: 40,
            timestamp_ns: 5_000,
        };
        set_position(&mut rec, po, place, None).unwrap();
        let stored = decode(42, &rec).unwrap();
        assert_eq!(stored.envelope().version, 2);
        assert_eq!(stored.envelope().timestamp_ns, 5_000);
        let opened = stored.open(&key, STORE).unwrap();
        assert_eq!(opened.payload(), b"payload bytes!!");
        assert_eq!(opened.metadata(), Some(&b"meta"[..]));
        // Another key or store, or a changed stream, id or type, fails authentication.
        let other_key = StreamKey::from_bytes(&[4; 32], 1);
        assert!(matches!(
            stored.open(&other_key, STORE),
            Err(Error::Decryption { .. })
        ));
        assert!(matches!(
            stored.open(&key, STORE + 1),
            Err(Error::Decryption { .. })
        ));
        for field in [24, 64, 10, block + CRYPTO_BLOCK_LEN] {
            let mut bad = rec.clone();
            bad[field] ^= 1;
            let crc = checksum::crc32c(&bad[HEADER_CRC_START..po]);
            bad[0..4].copy_from_slice(&crc.to_le_bytes());
            let rec = decode(42, &bad).unwrap();
            assert!(
                matches!(rec.open(&key, STORE), Err(Error::Decryption { .. })),
                "field at {field}"
            );
        }
        // An encrypted record without its key cannot leave the store; a plain one flagged as
        // sealed in transit is refused.
        let (mut unsealed, po) = staged_encrypted(b"x");
        assert!(matches!(
            seal_in_transit(&mut unsealed, po, 1, None),
            Err(Error::Crypto { .. })
        ));
        let (mut plain, po) = sample(None, false);
        plain[9] |= FLAG_TRANSIT;
        let crc = checksum::crc32c(&plain[HEADER_CRC_START..po]);
        plain[0..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(42, &plain), Err(Error::Corrupted { .. })));
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
