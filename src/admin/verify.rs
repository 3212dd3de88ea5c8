//! Verification of a whole store: every record's checksums, and every index against the log.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::keycheck::KeyCheck;
use crate::error::{Error, Result};
use crate::format::index::{parse_stream_key, parse_stream_version_key, Head};
use crate::format::record;
use crate::store::Storage;
use crate::subscribe::checkpoint;
use crate::types::StreamId;

/// Most problems a report lists; further ones are only counted.
const MAX_PROBLEMS: usize = 10_000;

/// How often (in items) [`verify`] reports progress.
const PROGRESS_EVERY: u64 = 4096;

const FIX_RECORD: &str = "restore the store from a backup; or export it with `varve export` (which stops at the damaged record) and import the intact events into a new store";
const FIX_INDEX: &str = "the log is the source of truth and this index disagrees with it: rebuild the index by exporting the store (`varve export`) and importing it into a new store (`varve import`)";
const FIX_KEYSTORE: &str = "restore the store together with its keys directory from a backup taken with the same master key (`varve backup` copies both); events of a stream whose key is lost or damaged cannot be decrypted";
const FIX_CHECKPOINT: &str =
    "reset the processor with `varve processors reset` so that it starts again from a known position";

/// What part of the store a [`Problem`] is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record of the log (checksums, header, stub, large record).
    Record,
    /// The log as a whole: missing sequences, timestamps going back, streams whose versions or
    /// `prev_seq` links do not follow each other.
    Log,
    /// The `heads` database.
    StreamHead,
    /// The `stream_index` database.
    StreamIndex,
    /// The `event_ids` database.
    EventIds,
    /// A processor checkpoint.
    Checkpoint,
    /// The keystore of an encrypted store.
    Keystore,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Record => "record",
            ProblemKind::Log => "log",
            ProblemKind::StreamHead => "stream head",
            ProblemKind::StreamIndex => "stream index",
            ProblemKind::EventIds => "event id index",
            ProblemKind::Checkpoint => "checkpoint",
            ProblemKind::Keystore => "keystore",
        })
    }
}

/// One thing [`verify`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Where it is.
    pub kind: ProblemKind,
    /// The global sequence of the record concerned, when there is one.
    pub seq: Option<u64>,
    /// The stream concerned, when known.
    pub stream: Option<StreamId>,
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub fix: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(seq) = self.seq {
            write!(f, " at sequence {seq}")?;
        }
        if let Some(stream) = self.stream {
            write!(f, " (stream {stream})")?;
        }
        write!(f, ": {}; what to do: {}", self.what, self.fix)
    }
}

/// Where [`verify`] is, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// What is being checked: `"log"`, `"heads"`, `"stream index"`, `"event ids"`,
    /// `"checkpoints"`, `"keystore"`.
    pub phase: &'static str,
    /// Items of this phase checked so far.
    pub done: u64,
    /// Items in this phase.
    pub total: u64,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Streams with events in the log.
    pub streams: u64,
    /// Entries of the stream index (the events up to its watermark).
    pub index_entries: u64,
    /// The index watermark: the stream index and heads hold the events up to this sequence, the
    /// later ones are read back from the log when the store opens.
    pub index_watermark: u64,
    /// Entries of the event id index.
    pub event_ids: u64,
    /// Processor checkpoints.
    pub checkpoints: u64,
    /// Last sequence of the log in the verified snapshot.
    pub head: u64,
    /// What was found wrong, in the order found (at most 10,000).
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    pub more_problems: u64,
    /// Whether the store is encrypted (the counts below are 0 otherwise).
    pub encrypted: bool,
    /// Records decrypted and authenticated under their stream's key.
    pub decrypted: u64,
    /// Stream keys in the keystore.
    pub keys: u64,
    /// Shredded streams (tombstones in the keystore).
    pub shredded_streams: u64,
    /// Events of shredded streams in the log: unreadable by design, not problems.
    pub shredded_events: u64,
    /// Keys of streams without events in the log: harmless (a key is created before the
    /// transaction that first writes to its stream, which may then fail; or the stream was
    /// first written after the log was read). Not problems.
    pub keys_without_events: u64,
}

impl VerifyReport {
    /// Whether nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(super) fn push(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        stream: Option<StreamId>,
        what: String,
    ) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.more_problems += 1;
            return;
        }
        let fix = match kind {
            ProblemKind::Record => FIX_RECORD,
            ProblemKind::Checkpoint => FIX_CHECKPOINT,
            ProblemKind::Keystore => FIX_KEYSTORE,
            _ => FIX_INDEX,
        };
        self.problems.push(Problem {
            kind,
            seq,
            stream,
            what,
            fix,
        });
    }
}

/// What the log says about a stream.
#[derive(Clone, Copy)]
struct Seen {
    first_seq: u64,
    last_seq: u64,
    version: u64,
}

/// Checks a whole store in one read transaction (a consistent snapshot, while writers go on):
///
/// - every record: both checksums, its header, its key, the stub of a large record; sequences
///   `1..=head` without a gap; commit timestamps that never go back;
/// - every stream as the log tells it: versions 1, 2, 3, ... in log order, each `prev_seq`
///   naming the stream's previous record;
/// - `heads` against the log up to the index watermark (version, first and last sequence of
///   every stream);
/// - `stream_index`: the versions of every stream up to the watermark, each naming a record of
///   that stream and version, and no entry past it;
/// - `event_ids`: every record's id present and naming it, no entry naming another record;
/// - checkpoints: intact and not past the log's end;
/// - every record's encryption flag against the store's: in an encrypted store every record is
///   sealed, and decrypts and authenticates under its stream's key ([`ProblemKind::Record`]
///   otherwise, naming [`Error::Decryption`] for a tampered one); every stream with events has a
///   key that unwraps under the master key in force, or a tombstone (its events are then counted
///   as [`VerifyReport::shredded_events`], not problems); every key entry and tombstone of the
///   keystore is well formed and every key unwraps ([`ProblemKind::Keystore`] otherwise); keys of
///   streams without events are counted ([`VerifyReport::keys_without_events`]), not problems.
///   The keystore is read in a snapshot taken right after the log's.
///
/// `progress` is called now and then. Problems are collected in the report; a record that
/// fails its checksum is reported once, not again for each index entry that leads to it.
///
/// # Errors
///
/// Only when the store cannot be read at all ([`Error::Lmdb`]); everything wrong with the data
/// is a [`Problem`] in the report.
pub fn verify(storage: &Storage, progress: &mut dyn FnMut(VerifyProgress)) -> Result<VerifyReport> {
    let dbs = &storage.log().dbs;
    let txn = storage.env.read_txn()?;
    let txn = txn.raw();
    let mut report = VerifyReport {
        encrypted: storage.log().crypto.is_some(),
        ..VerifyReport::default()
    };
    let mut keycheck = KeyCheck::new(storage.log().crypto.as_ref())?;
    let mut tick = |phase: &'static str, done: u64, total: u64, force: bool| {
        if force || done.is_multiple_of(PROGRESS_EVERY) {
            progress(VerifyProgress { phase, done, total });
        }
    };

    // The stream index and heads hold the events up to the watermark (format version 3).
    let watermark = match dbs.watermark(txn) {
        Ok(w) => w,
        Err(e) => {
            report.push(ProblemKind::StreamIndex, None, None, reason(&e));
            u64::MAX
        }
    };

    // 1. The log.
    let total = dbs.log.len(txn)?;
    let mut streams: HashMap<StreamId, Seen> = HashMap::new();
    // The streams as the log tells them up to the watermark: what the heads must say.
    let mut indexed_streams: HashMap<StreamId, Seen> = HashMap::new();
    let mut damaged: HashSet<u64> = HashSet::new();
    let mut expected = 1u64;
    let mut last_ts = 0u64;
    tick("log", 0, total, true);
    for entry in dbs.log.iter(txn)? {
        let (seq, value) = entry?;
        report.records += 1;
        tick("log", report.records, total, false);
        if seq != expected {
            let what = if seq == 0 {
                "the log holds a record under sequence 0, which is never assigned".to_string()
            } else if seq == expected + 1 {
                format!("sequence {expected} is missing from the log")
            } else {
                format!(
                    "sequences {expected}..={} are missing from the log",
                    seq - 1
                )
            };
            report.push(ProblemKind::Log, Some(seq), None, what);
        }
        expected = seq.saturating_add(1);
        report.head = seq;
        let bytes = match dbs.record(txn, seq, value) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.push(ProblemKind::Record, Some(seq), None, reason(&e));
                damaged.insert(seq);
                continue;
            }
        };
        let rec = match record::decode(seq, bytes) {
            Ok(rec) => rec,
            Err(e) => {
                report.push(ProblemKind::Record, Some(seq), None, reason(&e));
                damaged.insert(seq);
                continue;
            }
        };
        let env = rec.envelope();
        // The header is intact: the record's place is known even when its payload is damaged.
        let payload_ok = match rec.payload_region() {
            Ok(_) => true,
            Err(e) => {
                report.push(ProblemKind::Record, Some(seq), Some(env.stream), reason(&e));
                false
            }
        };
        keycheck.record(&mut report, &rec, payload_ok)?;
        if env.timestamp_ns < last_ts {
            report.push(
                ProblemKind::Log,
                Some(seq),
                Some(env.stream),
                format!(
                    "commit timestamp {} is earlier than the previous record's {last_ts}",
                    env.timestamp_ns
                ),
            );
        }
        last_ts = last_ts.max(env.timestamp_ns);
        let prev = env.prev_seq.unwrap_or(0);
        match streams.get_mut(&env.stream) {
            None => {
                if env.version != 1 && !damaged.contains(&prev) {
                    report.push(
                        ProblemKind::Log,
                        Some(seq),
                        Some(env.stream),
                        format!(
                            "first record of the stream in the log has version {}, not 1",
                            env.version
                        ),
                    );
                }
                if prev != 0 && !damaged.contains(&prev) {
                    report.push(
                        ProblemKind::Log,
                        Some(seq),
                        Some(env.stream),
                        format!("first record of the stream names previous sequence {prev}"),
                    );
                }
                streams.insert(
                    env.stream,
                    Seen {
                        first_seq: seq,
                        last_seq: seq,
                        version: env.version,
                    },
                );
            }
            Some(seen) => {
                if !damaged.contains(&prev) {
                    if env.version != seen.version + 1 {
                        report.push(
                            ProblemKind::Log,
                            Some(seq),
                            Some(env.stream),
                            format!(
                                "record has version {}, but the stream's previous record in the log (sequence {}) has version {}",
                                env.version, seen.last_seq, seen.version
                            ),
                        );
                    }
                    if prev != seen.last_seq {
                        report.push(
                            ProblemKind::Log,
                            Some(seq),
                            Some(env.stream),
                            format!(
                                "prev_seq is {prev}, but the stream's previous record is at sequence {}",
                                seen.last_seq
                            ),
                        );
                    }
                }
                seen.last_seq = seq;
                seen.version = env.version;
            }
        }
        if seq <= watermark {
            if let Some(seen) = streams.get(&env.stream) {
                indexed_streams.insert(env.stream, *seen);
            }
        }
        match dbs
            .event_ids
            .get(txn, &env.event_id.as_u128().to_be_bytes())?
        {
            Some(found) if found == seq => {}
            Some(found) => report.push(
                ProblemKind::EventIds,
                Some(seq),
                Some(env.stream),
                format!(
                    "event id {} of this record is indexed at sequence {found}",
                    env.event_id
                ),
            ),
            None => report.push(
                ProblemKind::EventIds,
                Some(seq),
                Some(env.stream),
                format!("event id {} of this record is not indexed", env.event_id),
            ),
        }
    }
    tick("log", report.records, total, true);
    for entry in dbs.log_large.iter(txn)? {
        let (seq, _) = entry?;
        let has_stub = dbs
            .log
            .get(txn, &seq)?
            .is_some_and(|v| v.len() == record::STUB_LEN);
        if !has_stub {
            report.push(
                ProblemKind::Record,
                Some(seq),
                None,
                "a large record is stored without a stub in the log".into(),
            );
        }
    }

    if watermark != u64::MAX && watermark > report.head {
        report.push(
            ProblemKind::StreamIndex,
            Some(watermark),
            None,
            format!(
                "the index watermark is at sequence {watermark}, past the end of the log ({})",
                report.head
            ),
        );
    }
    report.index_watermark = watermark.min(report.head);
    let all_streams = std::mem::replace(&mut streams, indexed_streams);
    report.streams = all_streams.len() as u64;
    let mut heads_seen = 0u64;

    // 2. Stream heads against the log (up to the index watermark).
    let total = dbs.heads.len(txn)?;
    let mut heads: HashMap<StreamId, Head> = HashMap::new();
    tick("heads", 0, total, true);
    for entry in dbs.heads.iter(txn)? {
        let (key, value) = entry?;
        heads_seen += 1;
        tick("heads", heads_seen, total, false);
        let stream = match parse_stream_key(key) {
            Ok(stream) => stream,
            Err(_) => {
                report.push(
                    ProblemKind::StreamHead,
                    None,
                    None,
                    format!("a stream head has a key of {} bytes, not 16", key.len()),
                );
                continue;
            }
        };
        let head = match Head::decode(stream, value) {
            Ok(head) => head,
            Err(_) => {
                report.push(
                    ProblemKind::StreamHead,
                    None,
                    Some(stream),
                    "the stream head fails its checksum or is malformed".into(),
                );
                continue;
            }
        };
        heads.insert(stream, head);
        match streams.get(&stream) {
            // Its last record is damaged, and reported as such.
            _ if damaged.contains(&head.last_seq) => {}
            None => report.push(
                ProblemKind::StreamHead,
                Some(head.last_seq),
                Some(stream),
                "a stream head exists for a stream with no record in the log".into(),
            ),
            Some(seen) => {
                if (seen.version, seen.first_seq, seen.last_seq)
                    != (head.version, head.first_seq, head.last_seq)
                {
                    report.push(
                        ProblemKind::StreamHead,
                        Some(head.last_seq),
                        Some(stream),
                        format!(
                            "head says version {} (sequences {}..={}), the log says version {} (sequences {}..={})",
                            head.version,
                            head.first_seq,
                            head.last_seq,
                            seen.version,
                            seen.first_seq,
                            seen.last_seq
                        ),
                    );
                }
            }
        }
    }
    let mut missing: Vec<(&StreamId, &Seen)> = streams
        .iter()
        .filter(|(stream, _)| !heads.contains_key(stream))
        .collect();
    missing.sort_by_key(|(_, seen)| seen.first_seq);
    for (stream, seen) in missing {
        report.push(
            ProblemKind::StreamHead,
            Some(seen.last_seq),
            Some(*stream),
            "the stream has records in the log but no head".into(),
        );
    }

    // 3. The stream index: versions 1..=head of every stream, each naming its record.
    let total = dbs.stream_index.len(txn)?;
    tick("stream index", 0, total, true);
    let mut current: Option<(StreamId, u64)> = None; // stream, last version seen
    let mut indexed: HashSet<StreamId> = HashSet::new();
    let end_stream = |report: &mut VerifyReport, stream: StreamId, last: u64| {
        if let Some(head) = heads.get(&stream) {
            if last != head.version && !damaged.contains(&head.last_seq) {
                report.push(
                    ProblemKind::StreamIndex,
                    Some(head.last_seq),
                    Some(stream),
                    format!(
                        "the index ends at version {last}, the stream head is at version {}",
                        head.version
                    ),
                );
            }
        }
    };
    for entry in dbs.stream_index.iter(txn)? {
        let (key, seq) = entry?;
        report.index_entries += 1;
        tick("stream index", report.index_entries, total, false);
        let Some((stream, version)) = parse_stream_version_key(key) else {
            report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                None,
                format!("an index key has {} bytes, not 24", key.len()),
            );
            continue;
        };
        let expected_version = match current {
            Some((s, last)) if s == stream => last + 1,
            Some((s, last)) => {
                end_stream(&mut report, s, last);
                1
            }
            None => 1,
        };
        if indexed.insert(stream) && !heads.contains_key(&stream) && !streams.contains_key(&stream)
        {
            report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                Some(stream),
                "the index holds entries for a stream with no head and no record".into(),
            );
        }
        if version != expected_version {
            let what = if version > expected_version {
                format!(
                    "versions {expected_version}..={} are missing from the index",
                    version - 1
                )
            } else {
                format!("version {version} is out of order in the index")
            };
            report.push(ProblemKind::StreamIndex, Some(seq), Some(stream), what);
        }
        current = Some((stream, version));
        if seq > watermark {
            report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                Some(stream),
                format!("the index holds sequence {seq}, past its watermark {watermark}"),
            );
        }
        if damaged.contains(&seq) {
            continue;
        }
        match dbs.get_record(txn, seq) {
            Ok(Some(bytes)) => match record::decode(seq, bytes) {
                Ok(rec) => {
                    if rec.stream() != stream || rec.version() != version {
                        report.push(
                            ProblemKind::StreamIndex,
                            Some(seq),
                            Some(stream),
                            format!(
                                "the index names sequence {seq} as version {version}, which holds stream {} version {}",
                                rec.stream(),
                                rec.version()
                            ),
                        );
                    }
                }
                Err(e) => report.push(ProblemKind::Record, Some(seq), Some(stream), reason(&e)),
            },
            Ok(None) => report.push(
                ProblemKind::StreamIndex,
                Some(seq),
                Some(stream),
                format!("version {version} names sequence {seq}, which is not in the log"),
            ),
            Err(e) => report.push(ProblemKind::Record, Some(seq), Some(stream), reason(&e)),
        }
    }
    if let Some((s, last)) = current {
        end_stream(&mut report, s, last);
    }
    let mut unindexed: Vec<(&StreamId, &Head)> = heads
        .iter()
        .filter(|(stream, _)| !indexed.contains(stream))
        .collect();
    unindexed.sort_by_key(|(_, head)| head.first_seq);
    for (stream, head) in unindexed {
        report.push(
            ProblemKind::StreamIndex,
            Some(head.first_seq),
            Some(*stream),
            format!(
                "the stream has a head at version {} but no entry in the index",
                head.version
            ),
        );
    }
    tick("stream index", report.index_entries, total, true);

    // 4. Event ids: each names a record that carries it (the log pass checked the reverse).
    let total = dbs.event_ids.len(txn)?;
    tick("event ids", 0, total, true);
    for entry in dbs.event_ids.iter(txn)? {
        let (key, seq) = entry?;
        report.event_ids += 1;
        tick("event ids", report.event_ids, total, false);
        let Ok(id) = <[u8; 16]>::try_from(key).map(u128::from_be_bytes) else {
            report.push(
                ProblemKind::EventIds,
                Some(seq),
                None,
                format!("an event id key has {} bytes, not 16", key.len()),
            );
            continue;
        };
        if damaged.contains(&seq) {
            continue;
        }
        let id = uuid::Uuid::from_u128(id);
        match dbs.get_record(txn, seq) {
            Ok(Some(bytes)) => match record::decode(seq, bytes) {
                Ok(rec) if rec.envelope().event_id != id => report.push(
                    ProblemKind::EventIds,
                    Some(seq),
                    Some(rec.stream()),
                    format!(
                        "event id {id} names sequence {seq}, whose record has id {}",
                        rec.envelope().event_id
                    ),
                ),
                Ok(_) => {}
                Err(e) => report.push(ProblemKind::Record, Some(seq), None, reason(&e)),
            },
            Ok(None) => report.push(
                ProblemKind::EventIds,
                Some(seq),
                None,
                format!("event id {id} names sequence {seq}, which is not in the log"),
            ),
            Err(e) => report.push(ProblemKind::Record, Some(seq), None, reason(&e)),
        }
    }
    tick("event ids", report.event_ids, total, true);

    // 5. Checkpoints.
    let total = dbs.checkpoints.len(txn)?;
    for entry in dbs.checkpoints.iter(txn)? {
        let (name, _) = entry?;
        report.checkpoints += 1;
        match checkpoint::load_in(&storage.log().dbs, txn, name) {
            Ok(seq) if seq > report.head => report.push(
                ProblemKind::Checkpoint,
                Some(seq),
                None,
                format!(
                    "processor {name:?} is at sequence {seq}, past the end of the log ({})",
                    report.head
                ),
            ),
            Ok(_) => {}
            Err(_) => report.push(
                ProblemKind::Checkpoint,
                None,
                None,
                format!("the checkpoint of processor {name:?} fails its checksum"),
            ),
        }
    }
    tick("checkpoints", report.checkpoints, total, true);

    // 6. The keystore (the records were decrypted in the log pass).
    keycheck.keystore(
        &mut report,
        &|stream| all_streams.contains_key(&stream),
        &mut |done, total, force| tick("keystore", done, total, force),
    )?;

    Ok(report)
}

/// The reason of a corruption or keystore error, without the sequence or path (which the
/// problem and the report carry).
pub(super) fn reason(e: &Error) -> String {
    match e {
        Error::Corrupted { reason, .. } | Error::Keystore { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
