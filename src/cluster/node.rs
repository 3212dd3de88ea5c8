//! A node of a replicated store: its connection, its replica, and its appends, which go
//! through the cluster's log and return once the local replica applied them.
//!
//! An append reads where its streams stand in the local replica, and sends with its first
//! message on each stream the JetStream sequence of the last message on the stream's subject
//! that this position stands for (`Nats-Expected-Last-Subject-Sequence`): JetStream refuses the
//! commit if another node appended to one of its streams since. The node then waits until its
//! replica has applied the commit, and returns what the replica decided: the positions, or the
//! refusal every replica made alike (a changed layout, a stream name in conflict, reused event
//! ids). When the answer is lost (a timeout, a node of the cluster gone), the node catches up
//! with the log and looks the commit's event ids up: a commit that made it is reported as
//! stored, one that did not as the timeout, which a retry with the same ids settles.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::Client;
use super::config::ClusterConfig;
use super::error::ClusterError;
use super::message;
use super::publish::{publish, Answer};
use super::replica::{complete_batches, Shared};
use crate::error::{Error, Result};
use crate::format::replica;
use crate::format::replica::Origin;
use crate::types::{Appended, ExpectedVersion, StreamId};
use crate::write::{Apply, Outcome, Request, Sequencer, WritePath};

/// How many times an append tries again when a stream it expects to exist (or any version of)
/// moved between its read and its commit.
const MAX_ATTEMPTS: usize = 16;

/// A node's appends and replica (see the module documentation).
pub(crate) struct Node {
    pub(crate) client: Client,
    pub(crate) config: ClusterConfig,
    /// This node's id, on the last message of each commit it publishes.
    pub(crate) id: String,
    pub(crate) writes: Arc<WritePath>,
    pub(crate) shared: Arc<Shared>,
    /// The log the replica follows.
    pub(crate) origin: Origin,
}

/// Where a commit's expectations stand after reading the local replica.
enum Plan {
    /// Publish, with these expectations (one per part).
    Publish(Vec<Option<u64>>),
    /// A part's expectation does not hold in the replica.
    Conflict(Error),
}

impl Node {
    /// The error of a stopped replica.
    fn stopped(&self) -> Option<Error> {
        self.shared.stopped.borrow().as_ref().map(|reason| {
            ClusterError::ReplicaStopped {
                reason: reason.clone(),
            }
            .into()
        })
    }

    /// Waits until the replica applied the log up to `seq`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::ReplicaStopped`], or [`ClusterError::Timeout`] after the request
    /// timeout.
    pub(crate) fn wait_applied(&self, seq: u64, timeout: Duration) -> Result<()> {
        let mut applied = self.shared.applied.subscribe();
        let mut stopped = self.shared.stopped.subscribe();
        let reached = self.client.run(async move {
            tokio::time::timeout(timeout, async {
                tokio::select! {
                    reached = applied.wait_for(|a| *a >= seq) => reached.is_ok(),
                    _ = stopped.wait_for(|s| s.is_some()) => false,
                }
            })
            .await
        })?;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.stopped().unwrap_or_else(|| {
                ClusterError::ReplicaStopped {
                    reason: "the replica ended".into(),
                }
                .into()
            })),
            Err(_) => Err(ClusterError::Timeout {
                operation: "waiting for the replica to apply the log",
                after: timeout,
            }
            .into()),
        }
    }

    /// The JetStream sequence of the log's last message, asked of the cluster.
    pub(crate) fn last_sequence(&self) -> Result<u64> {
        let js = self.client.jetstream.clone();
        let name = self.config.stream.clone();
        let last = self.client.run(async move {
            let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            Ok::<u64, String>(info.state.last_sequence)
        })?;
        last.map_err(|reason| {
            ClusterError::Request {
                operation: "reading the log's last sequence",
                reason,
            }
            .into()
        })
    }

    /// Waits until the replica applied every message the log holds now.
    pub(crate) fn catch_up(&self) -> Result<()> {
        let last = self.last_sequence()?;
        self.wait_applied(last, self.config.request_timeout)
    }

    /// The expectations of `parts` as the replica sees their streams now.
    fn plan(&self, parts: &[Request]) -> Result<Plan> {
        let log = &self.writes.log;
        let txn = log.env.read_txn()?;
        let mut expectations = Vec::with_capacity(parts.len());
        let mut seen: Vec<StreamId> = Vec::new();
        for part in parts {
            if seen.contains(&part.stream) {
                // A stream's later part in the same commit: its first part's expectation
                // covers it, and JetStream takes one per subject and batch.
                expectations.push(None);
                continue;
            }
            seen.push(part.stream);
            if part.expected == ExpectedVersion::Any {
                expectations.push(None);
                continue;
            }
            let current = self
                .writes
                .index
                .head(&log.dbs, txn.raw(), part.stream)?
                .map_or(0, |h| h.version);
            if !part.expected.matches(current) {
                return Ok(Plan::Conflict(Error::ConcurrencyConflict {
                    stream: part.stream,
                    expected: part.expected,
                    actual: current,
                }));
            }
            let subject_seq = log
                .dbs
                .replica_seq(txn.raw(), &replica::stream_key(part.stream))?;
            expectations.push(Some(subject_seq));
        }
        Ok(Plan::Publish(expectations))
    }

    /// What the log holds of `parts` when every event id of theirs is stored: their positions,
    /// as an exact retry reports them, or the error that they are not the stored events.
    /// `None` when some part has an id that is not stored.
    fn stored(&self, parts: &[Request]) -> Result<Option<Result<Vec<Appended>>>> {
        let log = &self.writes.log;
        let txn = log.env.read_txn()?;
        let mut appended = Vec::with_capacity(parts.len());
        for part in parts {
            let mut existing = Vec::with_capacity(part.staged.len());
            for s in &part.staged {
                match log
                    .dbs
                    .event_ids
                    .get(txn.raw(), &s.id.as_u128().to_be_bytes())?
                {
                    Some(seq) => existing.push(seq),
                    None => return Ok(None),
                }
            }
            let retry = crate::write::retry_of(
                log,
                txn.raw(),
                crate::write::RetryOf {
                    stream: part.stream,
                    expected: part.expected,
                    buf: &part.buf,
                    staged: &part.staged,
                    existing: &existing,
                    key: None,
                },
            );
            match retry {
                Ok(a) => appended.push(a),
                Err(e) => return Ok(Some(Err(e))),
            }
        }
        Ok(Some(Ok(appended)))
    }

    /// Applies this node's own commit, stored by the cluster with its last message at `last`,
    /// when the replica applied the log up to just before it: the node holds the very messages
    /// the cluster stored, so it need not wait for them to come back through its consumer
    /// (which the follower then passes over). Returns the commit's outcome, or `None` when the
    /// replica is elsewhere in the log (the follower applies the commit in its turn).
    ///
    /// # Errors
    ///
    /// What applying it met that stops the replica: the replica is stopped with it.
    fn apply_own(&self, sent: Vec<message::Outgoing>, last: u64) -> Result<Option<Outcome>> {
        let first = last + 1 - sent.len() as u64;
        if *self.shared.applied.borrow() + 1 != first {
            return Ok(None);
        }
        let mut pending = Vec::with_capacity(sent.len());
        for (i, m) in sent.into_iter().enumerate() {
            pending.push(message::decode(
                &self.origin.subject_prefix,
                first + i as u64,
                &m.subject,
                Some(&m.headers),
                &m.payload,
            )?);
        }
        let taken = complete_batches(&mut pending)?;
        let mut batches: Vec<_> = taken.batches.into_iter().map(|(b, _)| b).collect();
        if batches.len() != 1 || !pending.is_empty() {
            return Ok(None);
        }
        let mut outcomes = match self.writes.apply_replicated(Apply {
            origin: &self.origin,
            batches: &mut batches,
        }) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.shared.stop(&e);
                return Err(e);
            }
        };
        let outcome = outcomes.pop().flatten();
        if outcome.is_some() {
            self.shared.advance(last);
        }
        Ok(outcome)
    }

    /// The outcome of a commit whose answer was lost or refused as a repeat: stored, or
    /// `otherwise`.
    fn settle(&self, parts: &[Request], otherwise: Error) -> Result<Vec<Appended>> {
        if let Err(e) = self.catch_up() {
            tracing::warn!(error = %e, "catching up after a commit without an answer failed");
        }
        match self.stored(parts)? {
            Some(result) => result,
            None => Err(otherwise),
        }
    }
}

impl Sequencer for Node {
    fn commit(&self, parts: &mut [Request]) -> Result<Vec<Appended>> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        let started = Instant::now();
        let mut caught_up = false;
        for _ in 0..MAX_ATTEMPTS {
            let expectations = match self.plan(parts)? {
                Plan::Publish(expectations) => expectations,
                Plan::Conflict(e) if caught_up => {
                    // A retry of a stored commit fails its expectation too: report it stored.
                    return match self.stored(parts)? {
                        Some(result) => result,
                        None => Err(e),
                    };
                }
                Plan::Conflict(_) => {
                    // The replica may be behind the log: look again once it is not.
                    self.catch_up()?;
                    caught_up = true;
                    continue;
                }
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let messages = message::encode(
                parts,
                &expectations,
                &self.config.subject_prefix,
                self.config.max_message_size,
                &self.id,
                now,
            )?;
            let sent: Vec<message::Outgoing> =
                messages.iter().map(message::Outgoing::copy).collect();
            let nats = self.client.nats.clone();
            let timeout = self.config.request_timeout;
            let answer = self
                .client
                .run(async move { publish(&nats, messages, timeout).await })?;
            match answer {
                Answer::Stored {
                    seq,
                    duplicate: false,
                } => {
                    if let Some(outcome) = self.apply_own(sent, seq)? {
                        return outcome;
                    }
                    self.wait_applied(seq, self.config.request_timeout)?;
                    return match self.shared.take_outcome(seq) {
                        Some(outcome) => outcome,
                        // Published by this node, so the replica kept its outcome: only a
                        // replica opened again since would not have.
                        None => self.settle(
                            parts,
                            ClusterError::Request {
                                operation: "append",
                                reason: format!("the outcome of message {seq} is unknown"),
                            }
                            .into(),
                        ),
                    };
                }
                Answer::Stored {
                    seq,
                    duplicate: true,
                } => {
                    self.wait_applied(seq, self.config.request_timeout)?;
                    return self.settle(
                        parts,
                        ClusterError::Request {
                            operation: "append",
                            reason: format!(
                                "JetStream holds message {seq} under the id of this commit's first event, but not this commit's events"
                            ),
                        }
                        .into(),
                    );
                }
                Answer::WrongLastSequence => {
                    self.catch_up()?;
                    caught_up = true;
                }
                Answer::DuplicateInBatch => {
                    return self.settle(
                        parts,
                        ClusterError::Request {
                            operation: "append",
                            reason: "JetStream refused the commit: it repeats a message id of its deduplication window, but the log does not hold this commit's events".into(),
                        }
                        .into(),
                    );
                }
                Answer::TimedOut | Answer::Unavailable(_) => {
                    return self.settle(
                        parts,
                        ClusterError::Timeout {
                            operation:
                                "append (it may be stored: retry it with the same event ids)",
                            after: started.elapsed(),
                        }
                        .into(),
                    );
                }
                Answer::Failed(reason) => {
                    return Err(ClusterError::Request {
                        operation: "append",
                        reason,
                    }
                    .into())
                }
            }
        }
        // Streams that kept moving under `StreamExists` or a matched version: report where the
        // first one stands.
        let part = &parts[0];
        let txn = self.writes.log.env.read_txn()?;
        let actual = self
            .writes
            .index
            .head(&self.writes.log.dbs, txn.raw(), part.stream)?
            .map_or(0, |h| h.version);
        Err(Error::ConcurrencyConflict {
            stream: part.stream,
            expected: part.expected,
            actual,
        })
    }
}
