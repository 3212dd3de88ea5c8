//! The log as a whole, record after record: sequences `1..=head` without a gap, commit
//! timestamps that never go back, and every stream's versions 1, 2, 3, ... with each `prev_seq`
//! naming the stream's previous record ([`ProblemKind::Log`]).

use std::collections::{HashMap, HashSet};

use super::report::{ProblemKind, VerifyReport};
use crate::format::Envelope;
use crate::types::StreamId;

/// What the log says about a stream.
#[derive(Clone, Copy)]
pub(super) struct Seen {
    pub first_seq: u64,
    pub last_seq: u64,
    pub version: u64,
}

/// The streams as the whole log tells them: what the indexes are checked against.
pub(super) struct LogStreams {
    /// Every stream with records in the log.
    pub all: HashMap<StreamId, Seen>,
    /// The streams as the log tells them up to the index watermark: what the heads must say.
    pub indexed: HashMap<StreamId, Seen>,
    /// Records that cannot be read (reported once): the checks of entries leading to them pass
    /// over them.
    pub damaged: HashSet<u64>,
}

/// The checks that follow the log's order.
pub(super) struct LogOrder {
    watermark: u64,
    expected: u64,
    last_ts: u64,
    streams: LogStreams,
}

impl LogOrder {
    pub(super) fn new(watermark: u64) -> Self {
        LogOrder {
            watermark,
            expected: 1,
            last_ts: 0,
            streams: LogStreams {
                all: HashMap::new(),
                indexed: HashMap::new(),
                damaged: HashSet::new(),
            },
        }
    }

    /// Checks that the record at `seq` follows the previous one without a gap.
    pub(super) fn sequence(&mut self, report: &mut VerifyReport, seq: u64) {
        let expected = self.expected;
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
        self.expected = seq.saturating_add(1);
    }

    /// Takes note of a record that cannot be read (its problem is reported by the caller).
    pub(super) fn damaged(&mut self, seq: u64) {
        self.streams.damaged.insert(seq);
    }

    /// Checks an intact record's timestamp and its place in its stream.
    pub(super) fn record(&mut self, report: &mut VerifyReport, env: &Envelope<'_>) {
        let seq = env.seq;
        if env.timestamp_ns < self.last_ts {
            report.push(
                ProblemKind::Log,
                Some(seq),
                Some(env.stream),
                format!(
                    "commit timestamp {} is earlier than the previous record's {}",
                    env.timestamp_ns, self.last_ts
                ),
            );
        }
        self.last_ts = self.last_ts.max(env.timestamp_ns);
        let prev = env.prev_seq.unwrap_or(0);
        let damaged = &self.streams.damaged;
        match self.streams.all.get_mut(&env.stream) {
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
                self.streams.all.insert(
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
        if seq <= self.watermark {
            if let Some(seen) = self.streams.all.get(&env.stream) {
                self.streams.indexed.insert(env.stream, *seen);
            }
        }
    }

    /// The streams as the whole log told them.
    pub(super) fn finish(self) -> LogStreams {
        self.streams
    }
}
