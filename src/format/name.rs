//! The layouts of stream names and labels (`docs/format.md`): the `stream_names` entry that
//! records a stream's name and its parse, the `labels` entries that give each category and event
//! type a dense id, and the keys of the `label_index`, which lists the events of each label by
//! global sequence.

use super::checksum::crc32c;
use crate::error::{DamagedEntry, Error, Result};
use crate::name::StreamName;
use crate::types::StreamId;

/// Version of the `stream_names` entry layout.
const NAME_ENTRY_VERSION: u8 = 1;
/// Bytes of a `stream_names` entry before the name.
const NAME_HEAD: usize = 13;

/// What a label names: a category or an event type. The first byte of its `labels` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LabelKind {
    /// A stream category (`order` of `order-123`).
    Category,
    /// An event type name.
    EventType,
}

impl LabelKind {
    fn byte(self) -> u8 {
        match self {
            LabelKind::Category => b'c',
            LabelKind::EventType => b't',
        }
    }

    fn of(byte: u8) -> Option<LabelKind> {
        match byte {
            b'c' => Some(LabelKind::Category),
            b't' => Some(LabelKind::EventType),
            _ => None,
        }
    }
}

/// The `stream_names` value of a stream named `name`, whose category has label id `category`.
pub(crate) fn encode_name(name: &StreamName, category: u32) -> Vec<u8> {
    let text = name.as_str().as_bytes();
    let (c, e, k) = name.recorded_parts();
    let mut out = Vec::with_capacity(NAME_HEAD + text.len() + 4);
    out.push(NAME_ENTRY_VERSION);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&c.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&k.to_le_bytes());
    out.extend_from_slice(&category.to_le_bytes());
    out.extend_from_slice(text);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the `stream_names` value of `stream`: its name, with the parts recorded, and the label
/// id of its category.
///
/// # Errors
///
/// [`Error::Damaged`] naming the stream's name entry when the bytes fail their checksum, are cut,
/// or record parts that do not fit the name, or when the name does not derive `stream`.
pub(crate) fn decode_name(stream: StreamId, bytes: &[u8]) -> Result<(StreamName, u32)> {
    let damaged = |reason: String| Error::Damaged {
        entry: DamagedEntry::StreamName { stream },
        reason,
    };
    if bytes.len() < NAME_HEAD + 4 {
        return Err(damaged(format!("{} bytes, too short", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c(body) != crc {
        return Err(damaged("checksum mismatch".into()));
    }
    if body[0] != NAME_ENTRY_VERSION {
        return Err(damaged(format!("unknown entry version {}", body[0])));
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let len = usize::from(u16_at(1));
    if body.len() != NAME_HEAD + len {
        return Err(damaged(format!(
            "a name of {len} bytes in an entry of {} bytes",
            bytes.len()
        )));
    }
    let category = u32::from_le_bytes(body[9..13].try_into().expect("4 bytes"));
    let text = std::str::from_utf8(&body[NAME_HEAD..])
        .map_err(|_| damaged("the name is not UTF-8".into()))?;
    let name = StreamName::from_recorded(text, u16_at(3), u16_at(5), u16_at(7))
        .ok_or_else(|| damaged(format!("the recorded parts do not fit the name {text:?}")))?;
    if name.stream_id() != stream {
        return Err(damaged(format!(
            "the name {text:?} belongs to stream {}",
            name.stream_id()
        )));
    }
    Ok((name, category))
}

/// Whether a `stream_names` value holds `name` (its bytes, where the layout puts them, and the
/// length it records), without checking the rest of the entry: a fast test for an append that
/// names a stream the store knows. A name that derives the stream's id and equals the recorded
/// one is that stream's name whatever else the entry holds; `verify` and the readers check the
/// rest.
pub(crate) fn names_equal(bytes: &[u8], name: &StreamName) -> bool {
    let text = name.as_str().as_bytes();
    bytes.len() == NAME_HEAD + text.len() + 4
        && bytes[1..3] == (text.len() as u16).to_le_bytes()
        && &bytes[NAME_HEAD..NAME_HEAD + text.len()] == text
}

/// The `labels` key of a category or event type.
pub(crate) fn label_key(kind: LabelKind, text: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + text.len());
    key.push(kind.byte());
    key.extend_from_slice(text);
    key
}

/// What a `labels` key names.
pub(crate) fn parse_label_key(key: &[u8]) -> Option<(LabelKind, &str)> {
    let (&kind, text) = key.split_first()?;
    Some((LabelKind::of(kind)?, std::str::from_utf8(text).ok()?))
}

/// The `labels` value under `key`: the id, and a checksum of the key and the id.
pub(crate) fn encode_label(key: &[u8], id: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&id.to_le_bytes());
    let crc = super::checksum::crc32c_append(crc32c(key), &out[..4]);
    out[4..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the `labels` value under `key`: the label's id.
///
/// # Errors
///
/// [`Error::Damaged`] naming the label when the value is not 8 bytes or fails its checksum.
pub(crate) fn decode_label(key: &[u8], value: &[u8]) -> Result<u32> {
    let damaged = |reason: &str| Error::Damaged {
        entry: DamagedEntry::Label {
            what: label_description(key),
        },
        reason: reason.to_owned(),
    };
    let value: [u8; 8] = value
        .try_into()
        .map_err(|_| damaged("a value that is not 8 bytes"))?;
    let id = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
    if encode_label(key, id) != value {
        return Err(damaged("checksum mismatch"));
    }
    Ok(id)
}

/// How a `labels` key reads in a message: `category "order"`.
pub(crate) fn label_description(key: &[u8]) -> String {
    match parse_label_key(key) {
        Some((LabelKind::Category, text)) => format!("category {text:?}"),
        Some((LabelKind::EventType, text)) => format!("event type {text:?}"),
        None => format!("the key {key:?}"),
    }
}

/// Key of a `label_index` entry: label id (big-endian u32), then the first global sequence of
/// its run (big-endian u64), so that a label's runs are adjacent and in log order.
#[inline]
pub(crate) fn label_index_key(label: u32, seq: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&label.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Splits a `label_index` key into its label id and first sequence.
///
/// # Errors
///
/// [`Error::Damaged`] for a key that is not 12 bytes.
#[inline]
pub(crate) fn parse_label_index_key(key: &[u8]) -> Result<(u32, u64)> {
    let key: &[u8; 12] = key
        .try_into()
        .map_err(|_| damaged_run(format!("a key of {} bytes, not 12", key.len())))?;
    Ok((
        u32::from_be_bytes(key[..4].try_into().expect("4 bytes")),
        u64::from_be_bytes(key[4..].try_into().expect("8 bytes")),
    ))
}

/// Most sequences in one `label_index` entry: 500 sequences and the checksum (4,004 bytes) fill
/// one LMDB overflow page.
pub(crate) const LABEL_RUN: usize = 500;

fn damaged_run(reason: String) -> Error {
    Error::Damaged {
        entry: DamagedEntry::Label {
            what: "the label index".into(),
        },
        reason,
    }
}

/// The value of a `label_index` entry listing `seqs` (ascending, at most [`LABEL_RUN`], the
/// first being the key's): each sequence as a little-endian u64, then the CRC-32C of the key and
/// those bytes.
pub(crate) fn encode_label_run(key: &[u8; 12], seqs: &[u64]) -> Vec<u8> {
    debug_assert!(!seqs.is_empty() && seqs.len() <= LABEL_RUN);
    let mut value = Vec::with_capacity(seqs.len() * 8 + 4);
    for seq in seqs {
        value.extend_from_slice(&seq.to_le_bytes());
    }
    let crc = crc32c_of(key, &value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

fn crc32c_of(key: &[u8], seqs: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c(key), seqs)
}

/// A checked `label_index` entry: one label's events from its first sequence on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LabelRun<'a> {
    pub label: u32,
    /// The sequences, 8 bytes each.
    seqs: &'a [u8],
}

impl<'a> LabelRun<'a> {
    /// Decodes and checks an entry: its checksum, and sequences that ascend from the key's.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when any of that fails.
    pub(crate) fn decode(key: &[u8], value: &'a [u8]) -> Result<LabelRun<'a>> {
        let (label, first) = parse_label_index_key(key)?;
        let n = value.len().saturating_sub(4) / 8;
        if value.len() != n * 8 + 4 || n == 0 || n > LABEL_RUN {
            return Err(damaged_run(format!(
                "the entry of label {label} at {first} has {} bytes, not 8 per sequence (1 to {LABEL_RUN}) and 4",
                value.len()
            )));
        }
        let (seqs, crc) = value.split_at(n * 8);
        if crc32c_of(key, seqs).to_le_bytes() != crc {
            return Err(damaged_run(format!(
                "the entry of label {label} at {first}: checksum mismatch"
            )));
        }
        let run = LabelRun { label, seqs };
        if run.seq(0) != first || (1..n).any(|i| run.seq(i) <= run.seq(i - 1)) {
            return Err(damaged_run(format!(
                "the entry of label {label} at {first} does not list ascending sequences from {first}"
            )));
        }
        Ok(run)
    }

    /// The number of sequences.
    pub(crate) fn len(&self) -> usize {
        self.seqs.len() / 8
    }

    /// The `i`-th sequence.
    #[inline]
    pub(crate) fn seq(&self, i: usize) -> u64 {
        u64::from_le_bytes(self.seqs[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    }

    /// The index of the first sequence `>= seq` (the length when there is none).
    pub(crate) fn position(&self, seq: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.seq(mid) < seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Whether the run lists `seq`.
    pub(crate) fn contains(&self, seq: u64) -> bool {
        let at = self.position(seq);
        at < self.len() && self.seq(at) == seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_entry_round_trips_and_every_flipped_bit_is_caught() {
        let name = StreamName::new("account:command-12+3").unwrap();
        let stream = name.stream_id();
        let bytes = encode_name(&name, 7);
        let (back, category) = decode_name(stream, &bytes).unwrap();
        assert_eq!(back, name);
        assert_eq!(back.cardinal_id(), Some("12"));
        assert_eq!(category, 7);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_name(stream, &bad).is_err(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(decode_name(stream, &bytes[..len]).is_err(), "cut at {len}");
        }
        // An intact entry under another stream's key is refused too.
        assert!(decode_name(StreamId(1), &bytes).is_err());
    }

    #[test]
    fn a_label_round_trips_and_is_bound_to_its_key() {
        let key = label_key(LabelKind::Category, b"order");
        let value = encode_label(&key, 42);
        assert_eq!(decode_label(&key, &value).unwrap(), 42);
        let other = label_key(LabelKind::EventType, b"order");
        assert!(decode_label(&other, &value).is_err());
        for bit in 0..64 {
            let mut bad = value;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_label(&key, &bad).is_err(), "bit {bit}");
        }
        assert_eq!(parse_label_key(&key), Some((LabelKind::Category, "order")));
        assert_eq!(label_description(&other), "event type \"order\"");
    }

    #[test]
    fn a_label_run_round_trips_finds_its_sequences_and_every_flipped_bit_is_caught() {
        let seqs = [7u64, 9, 10, 400, 401];
        let key = label_index_key(3, 7);
        let value = encode_label_run(&key, &seqs);
        assert_eq!(value.len(), 5 * 8 + 4);
        let run = LabelRun::decode(&key, &value).unwrap();
        assert_eq!((run.label, run.len()), (3, 5));
        assert_eq!((0..5).map(|i| run.seq(i)).collect::<Vec<_>>(), seqs);
        assert_eq!(run.position(0), 0);
        assert_eq!(run.position(10), 2);
        assert_eq!(run.position(11), 3);
        assert_eq!(run.position(402), 5);
        assert!(run.contains(400) && !run.contains(399));
        for bit in 0..value.len() * 8 {
            let mut bad = value.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(LabelRun::decode(&key, &bad).is_err(), "bit {bit}");
        }
        // Bound to its key: another label or first sequence fails the checksum.
        assert!(LabelRun::decode(&label_index_key(4, 7), &value).is_err());
        assert!(LabelRun::decode(&label_index_key(3, 8), &value).is_err());
        // Sequences that do not ascend from the key's, correctly checksummed, are refused.
        for wrong in [&[7u64, 7][..], &[7, 5], &[8, 9]] {
            let value = encode_label_run(&key, wrong);
            assert!(LabelRun::decode(&key, &value).is_err(), "{wrong:?}");
        }
        assert!(LabelRun::decode(&key, &value[..4]).is_err());
    }

    #[test]
    fn label_index_keys_sort_by_label_then_sequence() {
        let a = label_index_key(1, 500);
        let b = label_index_key(2, 3);
        let c = label_index_key(2, 256);
        assert!(a < b && b < c);
        assert_eq!(parse_label_index_key(&c).unwrap(), (2, 256));
        assert!(parse_label_index_key(&c[..11]).is_err());
    }
}
