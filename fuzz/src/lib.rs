//! Shared code of the VarveDB fuzz targets and of the seed generators (`examples/`): the event
//! type the record targets decode, the input format, and a mirror of the record layout of
//! `docs/format.md` used to re-seal checksums and to cross-check the library's validation. The
//! `upcast` target's types and input format are in [`upcast`].
//!
//! # Input format of `decode_record`
//!
//! The first byte selects a mode (`byte % 3`):
//!
//! - [`MODE_RAW`]: an 8-byte little-endian sequence, then arbitrary record bytes. The decoder must
//!   not panic; it is also run under the sequence stored in the record, so that it gets past the
//!   key check.
//! - [`MODE_CORRUPT`]: an [`EventSpec`], then [`Op`]s. A valid record is encoded from the spec and
//!   must decode; then the ops modify a copy, which must decode to `Error::Corrupted` under the
//!   record's sequence unless it is byte-identical to the original.
//! - [`MODE_RESEAL`]: like [`MODE_CORRUPT`], but both checksums are recomputed after the ops, so
//!   that the checks behind them (header fields, rkyv's bytecheck of the payload) are exercised on
//!   modified data. The decoder must not panic, and whatever it accepts must also be accepted by
//!   rkyv's validator here.

use rkyv::rancor;
use rkyv::util::AlignedVec;

pub mod upcast;

/// Raw record bytes under a given sequence.
pub const MODE_RAW: u8 = 0;
/// Valid record, then corruption: must be detected.
pub const MODE_CORRUPT: u8 = 1;
/// Valid record, then modification with re-sealed checksums: must not panic.
pub const MODE_RESEAL: u8 = 2;
/// Number of modes.
pub const MODES: u8 = 3;

/// Length of the fixed record header.
pub const HEADER_LEN: usize = 88;
/// First byte covered by the header checksum, which runs to the payload (`docs/format.md`: it
/// does not cover the payload checksum at bytes 4..8).
pub const HEADER_CRC_START: usize = 8;
/// Alignment of records and payloads.
pub const ALIGN: usize = 16;
/// Most ops applied to one record.
pub const MAX_OPS: usize = 16;

/// The event the fuzz targets store: strings, vectors, an option, a bool and an enum, so that
/// bytecheck has relative pointers, lengths, UTF-8, tags and bool values to validate.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
pub struct FuzzEvent {
    /// A name.
    pub name: String,
    /// Some numbers.
    pub values: Vec<u64>,
    /// Some strings.
    pub tags: Vec<String>,
    /// An optional number.
    pub maybe: Option<u32>,
    /// A bool.
    pub flag: bool,
    /// An enum with data.
    pub kind: Kind,
}

/// Enum field of [`FuzzEvent`].
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Layout, Debug, Clone, PartialEq, Eq,
)]
pub enum Kind {
    /// No data.
    Empty,
    /// A number.
    Number(u16),
    /// A string and a char.
    Text {
        /// The text.
        text: String,
        /// A char.
        mark: char,
    },
}

/// A byte cursor that never fails: reads past the end give zeros.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// A byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A string of up to 255 bytes (length byte first), made valid UTF-8 lossily.
    pub fn string(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }
}

/// Everything a record is encoded from in the structured modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// Sequence (the record's key).
    pub seq: u64,
    /// Version in the stream.
    pub version: u64,
    /// The payload.
    pub event: FuzzEvent,
    /// Event type name (at most 255 bytes before lossy UTF-8 repair).
    pub event_type: String,
    /// Optional metadata (at most 1023 bytes).
    pub metadata: Option<Vec<u8>>,
}

impl EventSpec {
    /// Reads a spec; any bytes make one.
    pub fn parse(c: &mut Cursor<'_>) -> EventSpec {
        let seq = c.u64();
        let version = c.u64();
        let name = c.string();
        let n_values = c.u8() as usize % 64;
        let values = (0..n_values).map(|_| c.u64()).collect();
        let n_tags = c.u8() as usize % 8;
        let tags = (0..n_tags).map(|_| c.string()).collect();
        let maybe = match c.u8() {
            0 => None,
            _ => Some(c.u32()),
        };
        let flag = c.u8() & 1 == 1;
        let kind = match c.u8() % 3 {
            0 => Kind::Empty,
            1 => Kind::Number(c.u16()),
            _ => Kind::Text {
                text: c.string(),
                mark: char::from_u32(c.u32()).unwrap_or('?'),
            },
        };
        let mut event_type = c.string();
        if event_type.is_empty() {
            event_type = "FuzzEvent".to_string();
        }
        let metadata = match c.u8() {
            0 => None,
            _ => {
                let n = c.u16() as usize % 1024;
                Some(c.bytes(n).to_vec())
            }
        };
        EventSpec {
            seq,
            version,
            event: FuzzEvent {
                name,
                values,
                tags,
                maybe,
                flag,
                kind,
            },
            event_type,
            metadata,
        }
    }

    /// The bytes [`EventSpec::parse`] reads back as this spec (strings must be at most 255 bytes,
    /// at most 63 values and 7 tags, metadata at most 1023 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            assert!(s.len() <= 255);
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        let e = &self.event;
        assert!(e.values.len() < 64 && e.tags.len() < 8);
        let mut out = Vec::new();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        string(&mut out, &e.name);
        out.push(e.values.len() as u8);
        for v in &e.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(e.tags.len() as u8);
        for t in &e.tags {
            string(&mut out, t);
        }
        match e.maybe {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.push(u8::from(e.flag));
        match &e.kind {
            Kind::Empty => out.push(0),
            Kind::Number(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Kind::Text { text, mark } => {
                out.push(2);
                string(&mut out, text);
                out.extend_from_slice(&u32::from(*mark).to_le_bytes());
            }
        }
        string(&mut out, &self.event_type);
        match &self.metadata {
            None => out.push(0),
            Some(m) => {
                assert!(m.len() < 1024);
                out.push(1);
                out.extend_from_slice(&(m.len() as u16).to_le_bytes());
                out.extend_from_slice(m);
            }
        }
        out
    }

    /// Encodes the record with the library's encoder.
    pub fn encode(&self) -> Vec<u8> {
        varvedb::fuzzing::encode_record(
            self.seq,
            self.version,
            &self.event,
            &self.event_type,
            self.metadata.as_deref(),
            None,
        )
    }

    /// Encodes the record sealed under the data key `key` of store `store_id`, as an encrypted
    /// store writes it.
    pub fn encode_sealed(&self, key: &[u8; 32], store_id: u128) -> Vec<u8> {
        varvedb::fuzzing::encode_record(
            self.seq,
            self.version,
            &self.event,
            &self.event_type,
            self.metadata.as_deref(),
            Some((key, store_id)),
        )
    }
}

/// A modification of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Flips one bit anywhere.
    FlipBit {
        /// Byte position (modulo the length).
        pos: u16,
        /// Bit 0..8.
        bit: u8,
    },
    /// XORs a byte anywhere with a non-zero mask.
    XorByte {
        /// Byte position (modulo the length).
        pos: u16,
        /// The mask (0 is taken as 0x80).
        mask: u8,
    },
    /// Overwrites a byte outside the two checksum fields. (Overwriting a checksum with a chosen
    /// value would let the fuzzer forge it from the comparison it observes, which proves nothing:
    /// CRCs are not meant to resist forgery.)
    SetByte {
        /// Byte position (modulo the length less the 8 checksum bytes, plus 8).
        pos: u16,
        /// The new value.
        value: u8,
    },
    /// Copies up to 32 bytes within the record, to a destination outside the checksum fields
    /// (a torn or misplaced write).
    CopyWithin {
        /// Source position.
        src: u16,
        /// Destination position (past the checksum fields).
        dst: u16,
        /// Length.
        len: u8,
    },
    /// Truncates the record.
    Truncate {
        /// New length (modulo the length).
        len: u16,
    },
    /// Appends bytes.
    Extend {
        /// Number of bytes (modulo 48, plus 1).
        n: u8,
        /// Their value.
        value: u8,
    },
}

impl Op {
    /// Reads an op.
    pub fn parse(c: &mut Cursor<'_>) -> Op {
        match c.u8() % 6 {
            0 => Op::FlipBit {
                pos: c.u16(),
                bit: c.u8(),
            },
            1 => Op::XorByte {
                pos: c.u16(),
                mask: c.u8(),
            },
            2 => Op::SetByte {
                pos: c.u16(),
                value: c.u8(),
            },
            3 => Op::CopyWithin {
                src: c.u16(),
                dst: c.u16(),
                len: c.u8(),
            },
            4 => Op::Truncate { len: c.u16() },
            _ => Op::Extend {
                n: c.u8(),
                value: c.u8(),
            },
        }
    }

    /// The bytes [`Op::parse`] reads back as this op.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match *self {
            Op::FlipBit { pos, bit } => {
                out.push(0);
                out.extend_from_slice(&pos.to_le_bytes());
                out.push(bit);
            }
            Op::XorByte { pos, mask } => {
                out.push(1);
                out.extend_from_slice(&pos.to_le_bytes());
                out.push(mask);
            }
            Op::SetByte { pos, value } => {
                out.push(2);
                out.extend_from_slice(&pos.to_le_bytes());
                out.push(value);
            }
            Op::CopyWithin { src, dst, len } => {
                out.push(3);
                out.extend_from_slice(&src.to_le_bytes());
                out.extend_from_slice(&dst.to_le_bytes());
                out.push(len);
            }
            Op::Truncate { len } => {
                out.push(4);
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::Extend { n, value } => {
                out.push(5);
                out.push(n);
                out.push(value);
            }
        }
        out
    }

    /// Applies the op to `rec`.
    pub fn apply(&self, rec: &mut Vec<u8>) {
        let len = rec.len();
        match *self {
            Op::FlipBit { pos, bit } if len > 0 => rec[pos as usize % len] ^= 1 << (bit % 8),
            Op::XorByte { pos, mask } if len > 0 => {
                rec[pos as usize % len] ^= if mask == 0 { 0x80 } else { mask };
            }
            Op::SetByte { pos, value } if len > 8 => rec[8 + pos as usize % (len - 8)] = value,
            Op::CopyWithin { src, dst, len: n } if len > 8 => {
                let dst = 8 + dst as usize % (len - 8);
                let src = src as usize % len;
                let n = (n as usize % 33).min(len - dst).min(len - src);
                rec.copy_within(src..src + n, dst);
            }
            Op::Truncate { len: new } if len > 0 => rec.truncate(new as usize % len),
            Op::Extend { n, value } => rec.resize(len + 1 + n as usize % 48, value),
            _ => {}
        }
    }
}

/// Rounds up to [`ALIGN`].
pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where the payload of `rec` is, according to its (unverified) header: `(payload_offset,
/// payload_len)`, or `None` when the header's lengths do not fit in `rec`.
pub fn layout(rec: &[u8]) -> Option<(usize, usize)> {
    if rec.len() < HEADER_LEN {
        return None;
    }
    let flags = rec[9];
    let type_len = u16::from_le_bytes([rec[12], rec[13]]) as usize;
    let payload_len = u32::from_le_bytes(rec[80..84].try_into().ok()?) as usize;
    let metadata_len = u32::from_le_bytes(rec[84..88].try_into().ok()?) as usize;
    let ids = 16 * (usize::from(flags & 1) + usize::from((flags >> 1) & 1));
    // An encrypted record (flag bit 3) has a 16-byte crypto block and no metadata in its header.
    let payload_offset = if flags & 8 != 0 {
        align_up(HEADER_LEN + ids + 16 + type_len)
    } else {
        align_up(HEADER_LEN + ids + type_len + metadata_len)
    };
    if payload_offset > rec.len() || payload_offset + payload_len > rec.len() {
        return None;
    }
    Some((payload_offset, payload_len))
}

/// Recomputes both checksums of `rec` with the `crc32c` crate (the reference implementation; the
/// library has its own). Returns false when the header's lengths do not fit, leaving `rec`
/// unchanged.
pub fn reseal(rec: &mut [u8]) -> bool {
    let Some((payload_offset, _)) = layout(rec) else {
        return false;
    };
    let payload_crc = crc32c::crc32c(&rec[payload_offset..]);
    rec[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&rec[HEADER_CRC_START..payload_offset]);
    rec[0..4].copy_from_slice(&header_crc.to_le_bytes());
    true
}

/// Validates the payload of `rec` as an archived [`FuzzEvent`] with rkyv directly (in an aligned
/// copy), and walks every field of an accepted archive so that a validator hole shows up as a
/// sanitizer report or a crash. Returns the deserialized event.
pub fn check_payload(rec: &[u8]) -> Option<FuzzEvent> {
    let (payload_offset, payload_len) = layout(rec)?;
    let mut copy = AlignedVec::<16>::with_capacity(payload_len);
    copy.extend_from_slice(&rec[payload_offset..payload_offset + payload_len]);
    let archived = rkyv::access::<ArchivedFuzzEvent, rancor::Error>(&copy).ok()?;
    let mut acc = archived.name.len() as u64;
    acc = archived
        .values
        .iter()
        .fold(acc, |a, v| a.wrapping_add(v.to_native()));
    for t in archived.tags.iter() {
        acc = acc.wrapping_add(t.as_str().chars().count() as u64);
    }
    if let Some(m) = archived.maybe.as_ref() {
        acc = acc.wrapping_add(u64::from(m.to_native()));
    }
    acc = acc.wrapping_add(u64::from(archived.flag));
    match &archived.kind {
        ArchivedKind::Empty => {}
        ArchivedKind::Number(n) => acc = acc.wrapping_add(u64::from(n.to_native())),
        ArchivedKind::Text { text, mark } => {
            acc = acc.wrapping_add(text.as_str().len() as u64 + u64::from(mark.to_native()));
        }
    }
    std::hint::black_box(acc);
    rkyv::deserialize::<FuzzEvent, rancor::Error>(archived).ok()
}
