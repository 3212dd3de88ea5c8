//! What [`verify`](super::verify) reports: the problems it found, the counts of what it checked,
//! and where it is while it runs.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::Error;
use crate::types::StreamId;

/// Most problems a report lists; further ones are only counted.
const MAX_PROBLEMS: usize = 10_000;

/// How often (in items) [`verify`](super::verify) reports progress.
const PROGRESS_EVERY: u64 = 4096;

const FIX_RECORD: &str = "restore the store from a backup; to recover the readable events, `varve export --skip-damaged` writes every other event and lists the damaged records";
const FIX_INDEX: &str = "the log is the source of truth and this index disagrees with it: rebuild the index by exporting the store (`varve export`) and importing it into a new store (`varve import`)";
const FIX_KEYSTORE: &str = "restore the store together with its keys directory from a backup taken with the same master key (`varve backup` copies both); events of a stream whose key is lost or damaged cannot be decrypted";
const FIX_CHECKPOINT: &str =
    "reset the processor with `varve processors reset` so that it starts again from a known position";
const FIX_SCHEMA: &str = "the store's record of the layouts of its event types is damaged or incomplete: the events are intact, but readers cannot check that their types match; export the store (`varve export`) and import it into a new store, which records the event types again";
const FIX_PAYLOAD: &str = "the application cannot read this event: its payload is intact on disk but not one its event type's decoder accepts (written by a program that does not match the application, or imported without validation); restore the store from a backup taken before it was written, or export it and import a corrected file into a new store";

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
    /// A payload, intact on disk, that the decoder registered for its event type refuses: the
    /// application cannot read the event ([`verify_with`](super::verify_with)).
    Payload,
    /// The `schemas` database: the recorded layout of each event type and schema version in
    /// the log.
    Schema,
    /// Stream names and the label index: the recorded name of each stream created by name, the
    /// ids of categories and event types, and the entries that list each event under its type
    /// and its stream's category.
    Labels,
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
            ProblemKind::Payload => "payload",
            ProblemKind::Schema => "schema registry",
            ProblemKind::Labels => "names and label index",
        })
    }
}

/// One thing [`verify`](super::verify) found wrong.
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

/// Where [`verify`](super::verify) is, for progress displays.
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

/// The outcome of [`verify`](super::verify).
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
    /// Payloads checked by the decoder registered for their event type
    /// ([`verify_with`](super::verify_with)); those it refused are problems.
    pub payloads_validated: u64,
    /// Intact, readable payloads that no decoder checked, counted by event type: no decoder is
    /// registered for the type (for [`verify`](super::verify), every type). Nothing is known of
    /// them beyond their checksums.
    pub not_validated: BTreeMap<String, u64>,
    /// Event types and schema versions whose layout the store recorded.
    pub schemas: u64,
    /// Of those, the ones whose layout is not known (written before the store recorded
    /// layouts, or imported).
    pub schemas_unknown: u64,
    /// Renamed entries of the `schemas` database: event types whose newer versions are stored
    /// under a new name (not counted in `schemas`).
    pub schemas_renamed: u64,
    /// Streams with a recorded name.
    pub named_streams: u64,
    /// Categories and event types with an id.
    pub labels: u64,
    /// Entries of the label index checked.
    pub label_entries: u64,
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
            ProblemKind::Payload => FIX_PAYLOAD,
            ProblemKind::Schema => FIX_SCHEMA,
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

/// Passes progress on to the caller's callback, every [`PROGRESS_EVERY`] items and when asked.
pub(super) struct Tick<'p> {
    progress: &'p mut dyn FnMut(VerifyProgress),
}

impl<'p> Tick<'p> {
    pub(super) fn new(progress: &'p mut dyn FnMut(VerifyProgress)) -> Self {
        Tick { progress }
    }

    /// Reports `done` of `total` items of `phase` when `done` is a multiple of the interval.
    pub(super) fn every(&mut self, phase: &'static str, done: u64, total: u64) {
        if done.is_multiple_of(PROGRESS_EVERY) {
            self.now(phase, done, total);
        }
    }

    /// Reports `done` of `total` items of `phase`.
    pub(super) fn now(&mut self, phase: &'static str, done: u64, total: u64) {
        (self.progress)(VerifyProgress { phase, done, total });
    }
}

/// The reason of a corruption or keystore error, without the sequence or path (which the
/// problem and the report carry).
pub(super) fn reason(e: &Error) -> String {
    match e {
        Error::Corrupted { reason, .. } | Error::Keystore { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
