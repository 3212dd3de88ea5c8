//! Corruption of the files on disk: a store is written and closed, then copies of it are damaged
//! byte by byte in `data.mdb` and read back through the public API.
//!
//! - One flipped bit inside one record (found in the raw file by its event id, layout as in
//!   `docs/format.md`) makes every read of that record fail with `Error::Corrupted` naming its
//!   sequence, and nothing else: every other record reads back exactly, no read panics, and no
//!   read returns wrong data. `envelope()` checks only the header checksum, so it must still
//!   return the exact envelope when the flip is in the payload, its padding or its checksum.
//! - A changed format version or rkyv layout in the `meta` database is refused at open.

mod common;

use common::crc32c;
use std::collections::HashMap;
use std::ops::{ControlFlow, Range};
use std::path::Path;

use varvedb::error::Error;
use varvedb::{Direction, Envelope, ExpectedVersion, NewEvent, StreamId, Uuid};
use varvedb::{EventView, Reader, Writer};
use varvedb::{Storage, StorageConfig, FORMAT_VERSION};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Recorded {
    pub n: u64,
    pub label: String,
    pub blob: Vec<u8>,
    pub numbers: Vec<u32>,
}

/// A second event type name stored for some events (the reader accepts it too), so that type
/// names of two lengths are on disk.
const RENAMED: &str = "AccountOpened.v2-with-a-longer-type-name";
const EVENTS: usize = 320;
const FLIPS: usize = 7 * 32;

/// SplitMix64: a small seeded generator, so that every run damages the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

/// An envelope, owned.
#[derive(Debug, Clone, PartialEq)]
struct OwnedEnvelope {
    seq: u64,
    stream: StreamId,
    version: u64,
    prev_seq: Option<u64>,
    timestamp_ns: u64,
    event_id: Uuid,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    event_type: String,
    schema_version: u16,
    metadata: Option<Vec<u8>>,
    payload_len: u32,
}

impl From<&Envelope<'_>> for OwnedEnvelope {
    fn from(e: &Envelope<'_>) -> Self {
        OwnedEnvelope {
            seq: e.seq,
            stream: e.stream,
            version: e.version,
            prev_seq: e.prev_seq,
            timestamp_ns: e.timestamp_ns,
            event_id: e.event_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            event_type: e.event_type.to_string(),
            schema_version: e.schema_version,
            metadata: e.metadata.map(<[u8]>::to_vec),
            payload_len: e.payload_len,
        }
    }
}

/// An event as appended.
struct Sent {
    event: Recorded,
    id: Uuid,
    correlation: Option<Uuid>,
    causation: Option<Uuid>,
    metadata: Option<Vec<u8>>,
    event_type: &'static str,
}

/// What was written, and (after reopening) the envelope read back.
struct Expected {
    event: Recorded,
    envelope: OwnedEnvelope,
}

/// The store as written: every event by sequence (index `seq - 1`) and the streams' sequences in
/// version order.
struct Written {
    events: Vec<Expected>,
    streams: Vec<(StreamId, Vec<u64>)>,
}

fn open(path: &Path) -> varvedb::error::Result<Storage> {
    Storage::open(StorageConfig {
        path: path.to_path_buf(),
        ..Default::default()
    })
}

fn reader(storage: &Storage) -> Reader<Recorded> {
    Reader::new(storage.clone()).accept_event_types([RENAMED])
}

/// Writes `count` events in batches to a few streams (one of them with a UUID-sized id): small
/// and page-sized payloads, payloads of 5 KiB and more (LMDB overflow pages), metadata (some
/// empty), correlation and causation ids, two event type names.
fn write_store(path: &Path, count: usize, rng: &mut Rng) -> Written {
    let streams = [
        StreamId(1),
        StreamId(2),
        StreamId(3),
        StreamId(40),
        StreamId(500),
        StreamId(0xDEAD_BEEF_0000_0000_0000_0000_0000_0001),
    ];
    let storage = open(path).unwrap();
    let mut writer = Writer::<Recorded>::new(storage.clone());
    let mut written: Vec<Sent> = Vec::new();
    let mut positions = Vec::new();
    while written.len() < count {
        let stream = streams[rng.below(streams.len())];
        let size = (1 + rng.below(6)).min(count - written.len());
        let mut batch = Vec::new();
        for _ in 0..size {
            let i = written.len() + batch.len();
            let blob_len = match i % 10 {
                0 => 5 * 1024 + rng.below(600),
                5 => 1500 + rng.below(1500),
                _ => rng.below(200),
            };
            let event = Recorded {
                n: i as u64,
                label: format!("event-{i}"),
                blob: (0..blob_len).map(|_| rng.next() as u8).collect(),
                numbers: (0..i % 17).map(|_| rng.next() as u32).collect(),
            };
            let id = rng.uuid();
            let correlation = i.is_multiple_of(2).then(|| rng.uuid());
            let causation = i.is_multiple_of(5).then(|| rng.uuid());
            let metadata = match i % 7 {
                0 => Some(Vec::new()),
                1 | 3 => Some(
                    format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(rng.below(120)))
                        .into_bytes(),
                ),
                _ => None,
            };
            let event_type = if i % 4 == 1 { RENAMED } else { "Recorded" };
            let mut new = NewEvent::new(event.clone()).with_id(id);
            if let Some(c) = correlation {
                new = new.with_correlation_id(c);
            }
            if let Some(c) = causation {
                new = new.with_causation_id(c);
            }
            if let Some(m) = &metadata {
                new = new.with_metadata(m.clone());
            }
            if event_type == RENAMED {
                new = new.with_event_type(RENAMED);
            }
            batch.push((
                new,
                Sent {
                    event,
                    id,
                    correlation,
                    causation,
                    metadata,
                    event_type,
                },
            ));
        }
        let (batch, info): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let appended = writer
            .append_batch(stream, ExpectedVersion::Any, batch)
            .unwrap();
        for p in &appended.positions {
            positions.push((stream, p.seq, p.version));
        }
        written.extend(info);
    }
    drop(writer);
    drop(storage);

    // Reopen (all handles are dropped, so this opens the files afresh) and read back the
    // envelopes; check them against what was written.
    let storage = open(path).unwrap();
    let reader = reader(&storage);
    let txn = storage.env.read_txn().unwrap();
    let mut events = Vec::new();
    let mut by_stream: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for (i, (sent, (stream, seq, version))) in written.into_iter().zip(positions).enumerate() {
        assert_eq!(seq, i as u64 + 1, "sequences are 1..=count in write order");
        let env = reader.envelope(&txn, seq).unwrap().expect("written event");
        let envelope = OwnedEnvelope::from(&env);
        assert_eq!(envelope.seq, seq);
        assert_eq!(envelope.stream, stream);
        assert_eq!(envelope.version, version);
        assert_eq!(envelope.event_id, sent.id);
        assert_eq!(envelope.correlation_id, sent.correlation);
        assert_eq!(envelope.causation_id, sent.causation);
        assert_eq!(envelope.metadata, sent.metadata);
        assert_eq!(envelope.event_type, sent.event_type);
        let seqs = by_stream.entry(stream).or_default();
        assert_eq!(envelope.prev_seq, seqs.last().copied());
        assert_eq!(version, seqs.len() as u64 + 1);
        seqs.push(seq);
        events.push(Expected {
            event: sent.event,
            envelope,
        });
    }
    drop(txn);
    drop(reader);
    drop(storage);
    let mut streams: Vec<_> = by_stream.into_iter().collect();
    streams.sort();
    assert!(
        count < 100 || streams.len() >= 4,
        "events spread over several streams"
    );
    Written { events, streams }
}

/// One intact copy of a record in `data.mdb`, and the byte ranges of its parts (relative to the
/// record start), derived from its header as `docs/format.md` specifies.
#[derive(Debug, Clone)]
struct Located {
    starts: Vec<usize>,
    len: usize,
    regions: [Range<usize>; 7],
}

const REGION_NAMES: [&str; 7] = [
    "header checksum",
    "payload checksum",
    "fixed header",
    "variable part",
    "padding before the payload",
    "payload",
    "padding after the payload",
];
/// Regions covered by the header checksum: a flip there fails `envelope()` too.
const HEADER_REGIONS: [bool; 7] = [true, false, true, true, true, false, false];

fn u16_at(b: &[u8], off: usize) -> usize {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], off: usize) -> usize {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize
}
fn align16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Parses the record that would start at `start` if the event id found at `start + 64` belongs
/// to one; returns its parts when it is a complete record of sequence `seq` with both checksums
/// intact.
fn parse_record(file: &[u8], start: usize, seq: u64) -> Option<(usize, [Range<usize>; 7])> {
    let b = file.get(start..)?;
    if b.len() < 88 || u64::from_le_bytes(b[16..24].try_into().unwrap()) != seq {
        return None;
    }
    let flags = b[9];
    let ids = 16 * (usize::from(flags & 1) + usize::from((flags >> 1) & 1));
    let type_len = u16_at(b, 12);
    let payload_len = u32_at(b, 80);
    let metadata_len = u32_at(b, 84);
    let var_end = 88 + ids + type_len + metadata_len;
    let payload_offset = align16(var_end);
    let len = align16(payload_offset + payload_len);
    let rec = b.get(..len)?;
    if crc32c(&rec[8..payload_offset]) != u32_at(rec, 0) as u32
        || crc32c(&rec[payload_offset..]) != u32_at(rec, 4) as u32
    {
        return None;
    }
    Some((
        len,
        [
            0..4,
            4..8,
            8..88,
            88..var_end,
            var_end..payload_offset,
            payload_offset..payload_offset + payload_len,
            payload_offset + payload_len..len,
        ],
    ))
}

/// Finds every intact copy of every record in `file` by its event id. LMDB is copy-on-write, so
/// pages freed by later commits may still hold old copies of a record: all of them are returned,
/// and a test damages all of them, the live one among them.
fn locate(file: &[u8], written: &Written) -> Vec<Located> {
    let ids: HashMap<u128, usize> = written
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.envelope.event_id.as_u128(), i))
        .collect();
    let mut found: Vec<Option<Located>> = vec![None; written.events.len()];
    for p in 64..file.len().saturating_sub(16) {
        let id = u128::from_le_bytes(file[p..p + 16].try_into().unwrap());
        let Some(&i) = ids.get(&id) else { continue };
        let start = p - 64;
        let env = &written.events[i].envelope;
        let Some((len, regions)) = parse_record(file, start, env.seq) else {
            continue;
        };
        // The derived length agrees with the envelope the library reports.
        let ids_len = 16
            * (usize::from(env.correlation_id.is_some()) + usize::from(env.causation_id.is_some()));
        let meta_len = env.metadata.as_ref().map_or(0, Vec::len);
        let expected_len = align16(
            align16(88 + ids_len + env.event_type.len() + meta_len) + env.payload_len as usize,
        );
        assert_eq!(len, expected_len, "record length of seq {}", env.seq);
        match &mut found[i] {
            Some(l) => l.starts.push(start),
            slot @ None => {
                *slot = Some(Located {
                    starts: vec![start],
                    len,
                    regions,
                })
            }
        }
    }
    found
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.unwrap_or_else(|| panic!("no intact copy of seq {} in data.mdb", i + 1)))
        .collect()
}

/// Checks a view against what was written.
fn check_view(view: &EventView<'_, Recorded>, expected: &Expected, how: &str) {
    let e = &expected.event;
    let seq = expected.envelope.seq;
    assert_eq!(view.seq(), seq, "{how}: wrong seq");
    assert_eq!(
        OwnedEnvelope::from(&view.envelope()),
        expected.envelope,
        "{how}: wrong envelope of seq {seq}"
    );
    assert_eq!(view.n, e.n, "{how}: wrong payload of seq {seq}");
    assert_eq!(view.label, e.label, "{how}: wrong payload of seq {seq}");
    assert_eq!(
        view.blob.as_slice(),
        &e.blob[..],
        "{how}: wrong payload of seq {seq}"
    );
    assert!(
        view.numbers
            .iter()
            .map(|x| x.to_native())
            .eq(e.numbers.iter().copied()),
        "{how}: wrong payload of seq {seq}"
    );
}

/// Checks that `res` is the read of record `seq`: `Error::Corrupted { seq }` when `seq` is the
/// damaged record, the exact event otherwise.
fn check_item(
    res: varvedb::error::Result<EventView<'_, Recorded>>,
    expected: &Expected,
    bad: Option<u64>,
    how: &str,
) {
    let seq = expected.envelope.seq;
    match res {
        Err(Error::Corrupted { seq: s, .. }) if bad == Some(seq) && s == seq => {}
        Err(e) => panic!("{how}: seq {seq} (damaged: {bad:?}) failed: {e:?}"),
        Ok(_) if bad == Some(seq) => panic!("{how}: damaged record {seq} was returned"),
        Ok(view) => check_view(&view, expected, how),
    }
}

/// Opens the store at `path` and reads every record every way. `bad` is the damaged record and
/// whether its header (checked by `envelope()`) is damaged.
fn check_store(path: &Path, written: &Written, bad: Option<(u64, bool)>) {
    let storage = open(path).unwrap();
    let n = written.events.len() as u64;
    assert_eq!(storage.head(), n);
    let reader = reader(&storage);
    let bad_seq = bad.map(|(seq, _)| seq);
    let txn = storage.env.read_txn().unwrap();

    for expected in &written.events {
        let seq = expected.envelope.seq;
        // get
        let res = reader.get(&txn, seq).map(|v| v.expect("record present"));
        check_item(res, expected, bad_seq, "get");
        // envelope: fails only for a damaged header.
        match (reader.envelope(&txn, seq), bad) {
            (Err(Error::Corrupted { seq: s, .. }), Some((b, true))) if b == seq && s == seq => {}
            (Err(e), _) => panic!("envelope: seq {seq} (damaged: {bad:?}) failed: {e:?}"),
            (Ok(_), Some((b, true))) if b == seq => {
                panic!("envelope: damaged header of {seq} accepted")
            }
            (Ok(env), _) => assert_eq!(
                OwnedEnvelope::from(&env.expect("record present")),
                expected.envelope,
                "envelope: wrong envelope of seq {seq}"
            ),
        }
    }

    // read_log, both directions: every record in order, the damaged one as an error item.
    let forward: Vec<_> = reader
        .read_log(&txn, 1, Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(forward.len() as u64, n, "read_log forward length");
    for (res, expected) in forward.into_iter().zip(&written.events) {
        check_item(res, expected, bad_seq, "read_log forward");
    }
    let backward: Vec<_> = reader
        .read_log(&txn, u64::MAX, Direction::Backward)
        .unwrap()
        .collect();
    assert_eq!(backward.len() as u64, n, "read_log backward length");
    for (res, expected) in backward.into_iter().zip(written.events.iter().rev()) {
        check_item(res, expected, bad_seq, "read_log backward");
    }

    // read_stream, both directions, and the last event of each stream.
    for (stream, seqs) in &written.streams {
        let expected: Vec<&Expected> = seqs
            .iter()
            .map(|&s| &written.events[s as usize - 1])
            .collect();
        let items: Vec<_> = reader
            .read_stream(&txn, *stream, 1, Direction::Forward)
            .unwrap()
            .collect();
        assert_eq!(items.len(), seqs.len(), "read_stream forward length");
        for (res, e) in items.into_iter().zip(&expected) {
            check_item(res, e, bad_seq, "read_stream forward");
        }
        let items: Vec<_> = reader
            .read_stream(&txn, *stream, u64::MAX, Direction::Backward)
            .unwrap()
            .collect();
        assert_eq!(items.len(), seqs.len(), "read_stream backward length");
        for (res, e) in items.into_iter().zip(expected.iter().rev()) {
            check_item(res, e, bad_seq, "read_stream backward");
        }
        let last = reader
            .last_in_stream(&txn, *stream)
            .map(|v| v.expect("stream has events"));
        check_item(
            last,
            expected[expected.len() - 1],
            bad_seq,
            "last_in_stream",
        );
    }
    drop(txn);

    // A scan stops at the damaged record with its error, after visiting exactly the ones
    // before it.
    let mut visited = 0u64;
    let res = reader.for_each_in_log(1, Direction::Forward, |view| {
        visited += 1;
        assert_eq!(view.seq(), visited);
        ControlFlow::Continue(())
    });
    match (res, bad_seq) {
        (Ok(count), None) => assert_eq!(count, n),
        (Err(Error::Corrupted { seq, .. }), Some(b)) if seq == b => assert_eq!(visited, b - 1),
        (other, _) => panic!("for_each_in_log with damaged {bad_seq:?}: {other:?}"),
    }
    drop(reader);
    drop(storage);
}

/// Copies the store's two files into a fresh directory.
fn copy_store(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["data.mdb", "lock.mdb"] {
        std::fs::copy(from.join(name), dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn a_flipped_bit_in_a_record_fails_only_that_record() {
    let original = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5EED_0FC0_2277);
    let written = write_store(original.path(), EVENTS, &mut rng);
    check_store(original.path(), &written, None);

    let file = std::fs::read(original.path().join("data.mdb")).unwrap();
    let located = locate(&file, &written);
    let large = located.iter().filter(|l| l.len > 5 * 1024).count();
    assert!(large >= EVENTS / 10, "records on overflow pages: {large}");

    let mut per_region = [0usize; 7];
    for flip in 0..FLIPS {
        let region = flip % 7;
        // A record that has bytes in this region (padding can be empty).
        let mut tries = 0;
        let i = loop {
            let i = rng.below(located.len());
            if !located[i].regions[region].is_empty() {
                break i;
            }
            tries += 1;
            assert!(tries < 10_000, "no record has a {}", REGION_NAMES[region]);
        };
        let rec = &located[i];
        let range = rec.regions[region].clone();
        let offset = range.start + rng.below(range.len());
        let bit = rng.below(8);
        let seq = i as u64 + 1;

        let copy = copy_store(original.path());
        let path = copy.path().join("data.mdb");
        let mut bytes = std::fs::read(&path).unwrap();
        for &start in &rec.starts {
            bytes[start + offset] ^= 1 << bit;
        }
        std::fs::write(&path, &bytes).unwrap();

        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_store(copy.path(), &written, Some((seq, HEADER_REGIONS[region])));
        }));
        if let Err(panic) = outcome {
            eprintln!(
                "flip {flip}: seq {seq}, {} byte {offset} of {} bit {bit}, {} cop(ies)",
                REGION_NAMES[region],
                rec.len,
                rec.starts.len()
            );
            std::panic::resume_unwind(panic);
        }
        per_region[region] += 1;
    }
    assert!(per_region.iter().all(|&c| c >= 30), "{per_region:?}");
    // The original is untouched and still reads back exactly.
    check_store(original.path(), &written, None);
}

/// Rewrites, in every copy in the raw file, the value stored under `key` in the `meta` database
/// (an LMDB leaf node holds the key immediately followed by the value). Returns how many copies
/// were changed.
fn rewrite_meta(path: &Path, key: &[u8], old: &[u8], new: &[u8]) -> usize {
    assert_eq!(old.len(), new.len());
    let path = path.join("data.mdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut needle = key.to_vec();
    needle.extend_from_slice(old);
    let mut count = 0;
    let mut p = 0;
    while let Some(q) = bytes[p..].windows(needle.len()).position(|w| w == needle) {
        let at = p + q + key.len();
        bytes[at..at + new.len()].copy_from_slice(new);
        count += 1;
        p = at;
    }
    std::fs::write(&path, &bytes).unwrap();
    count
}

#[test]
fn a_changed_format_version_is_refused_at_open() {
    let original = tempfile::tempdir().unwrap();
    let written = write_store(original.path(), 12, &mut Rng(7));

    // Every single-bit flip of the 4-byte version but those giving older versions this build
    // opens and upgrades (1 to 3), and the next version.
    let current = FORMAT_VERSION;
    let mut values: Vec<u32> = (0..32)
        .map(|bit| current ^ (1 << bit))
        .filter(|v| *v > current)
        .collect();
    values.push(0);
    values.push(current + 1);
    for found in values {
        let copy = copy_store(original.path());
        let changed = rewrite_meta(
            copy.path(),
            b"format_version",
            &current.to_le_bytes(),
            &found.to_le_bytes(),
        );
        assert!(changed >= 1, "format_version not found in data.mdb");
        match open(copy.path()) {
            Err(Error::FormatVersion {
                found: f,
                supported,
                path,
            }) => {
                assert_eq!(f, found);
                assert_eq!(supported, current);
                assert_eq!(path, copy.path().canonicalize().unwrap());
            }
            Err(e) => panic!("format version {found}: unexpected error {e:?}"),
            Ok(_) => panic!("format version {found} accepted"),
        }
    }

    // Writing the original value back makes the store readable again: nothing else was touched.
    let copy = copy_store(original.path());
    rewrite_meta(
        copy.path(),
        b"format_version",
        &current.to_le_bytes(),
        &(current + 1).to_le_bytes(),
    );
    assert!(open(copy.path()).is_err());
    rewrite_meta(
        copy.path(),
        b"format_version",
        &(current + 1).to_le_bytes(),
        &current.to_le_bytes(),
    );
    check_store(copy.path(), &written, None);
}

#[test]
fn a_changed_rkyv_layout_is_refused_at_open() {
    let original = tempfile::tempdir().unwrap();
    write_store(original.path(), 3, &mut Rng(8));
    let layout = [0u8, 4, 4, 0];
    for byte in 0..4 {
        for bit in 0..8 {
            let mut changed = layout;
            changed[byte] ^= 1 << bit;
            let copy = copy_store(original.path());
            assert!(rewrite_meta(copy.path(), b"rkyv_layout", &layout, &changed) >= 1);
            match open(copy.path()) {
                Err(Error::LayoutMismatch { found, current, .. }) => {
                    assert_eq!(found, changed);
                    assert_eq!(current, layout);
                }
                Err(e) => panic!("layout {changed:?}: unexpected error {e:?}"),
                Ok(_) => panic!("layout {changed:?} accepted"),
            }
        }
    }
}
