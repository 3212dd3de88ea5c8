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
use super::keys::Keys;
use super::message;
use super::publish::{publish, Answer};
use super::replica::{complete_batches, Shared};
use crate::cipher::aead::SealingKey;
use crate::cipher::StreamKey;
use crate::crypto::{keystore::Entry, Crypto, Learned};
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
    /// The key bucket of an encrypted log.
    pub(crate) keys: Option<Arc<Keys>>,
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
                self.keys.is_some(),
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

    /// The key bucket and the keys of an encrypted log's node.
    ///
    /// # Errors
    ///
    /// [`Error::NotEncrypted`] for a node of a plain log.
    fn encrypted(&self) -> Result<(Arc<Keys>, &Crypto)> {
        match (&self.keys, &self.writes.log.crypto) {
            (Some(keys), Some(crypto)) => Ok((Arc::clone(keys), crypto)),
            _ => Err(Error::NotEncrypted {
                path: self.writes.log.env.path().to_path_buf(),
            }),
        }
    }

    /// The data key of each part's stream, for sealing a commit of an encrypted log: the
    /// local keystore's, or the key bucket's (learned by the keystore first), or a new one
    /// put in the bucket for a stream that has none.
    ///
    /// # Errors
    ///
    /// [`Error::StreamShredded`] for a shredded stream; the bucket's and the keystore's errors.
    fn sealing_keys(&self, parts: &[Request]) -> Result<Vec<Arc<StreamKey>>> {
        let (keys, crypto) = self.encrypted()?;
        let keys = &keys;
        let mut out: Vec<Arc<StreamKey>> = Vec::with_capacity(parts.len());
        for part in parts {
            let stream = part.stream;
            if let Some(key) = crypto.known_key(stream)? {
                out.push(key);
                continue;
            }
            // The bucket's key for the stream, or this new one where it has none; and the
            // bucket's master key version, both in one round trip.
            let entry = crypto.new_entry(stream)?;
            let (get, create) = (Arc::clone(keys), Arc::clone(keys));
            let (master, learned) = self
                .client
                .run(async move { tokio::join!(get.master(), create.create(stream, entry)) })?;
            let learned = learned?;
            // A node whose master key the log has rotated away from uses no new key: one it
            // made would be wrapped under the key being retired (its own rotation re-wraps it).
            if let Some((version, ..)) = master? {
                if version != crypto.master_version() {
                    return Err(ClusterError::EncryptionMismatch {
                        reason: format!(
                            "the log's master key is at version {version}, this node's at {}: rotate this node (Storage::rotate_master_key) before it starts streams",
                            crypto.master_version()
                        ),
                    }
                    .into());
                }
            }
            crypto.learn(&[(stream, learned)])?;
            match learned {
                Learned::Key(e) => out.push(crypto.unwrap_for_check(stream, &e)?),
                Learned::Shredded => return Err(Error::StreamShredded { stream }),
            }
        }
        Ok(out)
    }

    /// Shreds `stream` on every node: purges its key from the cluster's bucket, puts the shred
    /// marker in the log, and returns once the local replica applied it. `false` when this node
    /// had applied the stream's shredding already.
    pub(crate) fn shred(&self, stream: StreamId) -> Result<bool> {
        let (keys, crypto) = self.encrypted()?;
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if matches!(crypto.local_entry(stream)?, Entry::Shredded) {
            return Ok(false);
        }
        let purge = Arc::clone(&keys);
        self.client
            .run(async move { purge.purge(stream).await })??;
        let marker = message::shred_marker(&self.config.subject_prefix, stream, &self.id);
        let nats = self.client.nats.clone();
        let timeout = self.config.request_timeout;
        let answer = self
            .client
            .run(async move { publish(&nats, vec![marker], timeout).await })?;
        match answer {
            Answer::Stored { seq, .. } => {
                self.wait_applied(seq, self.config.request_timeout)?;
                drop(self.shared.take_outcome(seq));
                Ok(true)
            }
            Answer::TimedOut | Answer::Unavailable(_) => Err(ClusterError::Timeout {
                operation: "shredding a stream (its key is gone from the cluster's bucket: shred it again to put the marker in the log)",
                after: timeout,
            }
            .into()),
            other => Err(ClusterError::Request {
                operation: "shredding a stream",
                reason: format!("JetStream answered {other:?}"),
            }
            .into()),
        }
    }

    /// Rotates the master key of an encrypted log on this node (see
    /// [`crate::Storage::rotate_master_key`]): re-wraps the keys of the cluster's bucket
    /// still under the master key this node holds, moves the bucket's master key version (the
    /// first node to rotate does), re-wraps what another node created meanwhile, then rotates
    /// the local keystore. Every node rotates with the same new key; each one's pass leaves no
    /// key of the bucket under the old master key that it could still unwrap.
    pub(crate) fn rotate(&self, new_key: &[u8; 32]) -> Result<u64> {
        let (keys, crypto) = self.encrypted()?;
        let new = SealingKey::new(new_key);
        let local = crypto.master_version();
        let target = local + 1;
        let get = Arc::clone(&keys);
        let Some((version, check, revision)) =
            self.client.run(async move { get.master().await })??
        else {
            return Err(ClusterError::BadKey {
                key: "master".into(),
                reason: "the key bucket of an encrypted log holds no master key check value".into(),
            }
            .into());
        };
        let wrong = |version| Error::WrongMasterKey {
            path: self.writes.log.env.path().to_path_buf(),
            master_version: version,
        };
        if version == local {
            if !crypto.opens_check(version, &check) {
                return Err(wrong(version));
            }
            self.rewrap_bucket(&keys, crypto, &new, target)?;
            let check = crypto.check_of(&new, target)?;
            let put = Arc::clone(&keys);
            let moved = self
                .client
                .run(async move { put.put_master(target, &check, revision).await })??;
            if !moved {
                // Another node rotated at the same moment: to the same key, or this one fails.
                let get = Arc::clone(&keys);
                match self.client.run(async move { get.master().await })?? {
                    Some((v, check, _))
                        if v == target && crypto.check_opens_under(&new, v, &check) => {}
                    Some((v, ..)) => return Err(wrong(v)),
                    None => return Err(wrong(target)),
                }
            }
        } else if version == target {
            if !crypto.check_opens_under(&new, target, &check) {
                return Err(wrong(target));
            }
        } else {
            return Err(ClusterError::EncryptionMismatch {
                reason: format!(
                    "the log's master key is at version {version}, this store's at {local}: a rotation moves one version at a time"
                ),
            }
            .into());
        }
        // Keys another node created under the old master key while the version moved.
        self.rewrap_bucket(&keys, crypto, &new, target)?;
        crypto.rotate(new_key)
    }

    /// Re-wraps every key of the bucket under `new` as master key version `target`, but those
    /// re-wrapped already and those shredded meanwhile.
    fn rewrap_bucket(
        &self,
        keys: &Arc<Keys>,
        crypto: &Crypto,
        new: &SealingKey,
        target: u32,
    ) -> Result<u64> {
        let list = Arc::clone(keys);
        let streams = self.client.run(async move { list.streams().await })??;
        let mut rewrapped = 0;
        for stream in streams {
            loop {
                let get = Arc::clone(keys);
                let Some((Learned::Key(e), revision)) = self
                    .client
                    .run(async move { get.fetch_revision(stream).await })??
                else {
                    break;
                };
                if e.master_version == target && crypto.entry_opens(stream, &e, new) {
                    break;
                }
                let entry = crypto.rewrap(stream, &e, new, target)?;
                let put = Arc::clone(keys);
                if self
                    .client
                    .run(async move { put.replace(stream, entry, revision).await })??
                {
                    rewrapped += 1;
                    break;
                }
            }
        }
        Ok(rewrapped)
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
    fn shred(&self, stream: StreamId) -> Result<bool> {
        Node::shred(self, stream)
    }

    fn rotate_master_key(&self, new_key: &[u8; 32]) -> Result<u64> {
        Node::rotate(self, new_key)
    }

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
            let sealing_keys = match self.keys {
                Some(_) => Some(self.sealing_keys(parts)?),
                None => None,
            };
            let messages = message::encode(
                parts,
                &expectations,
                &self.config.subject_prefix,
                self.config.max_message_size,
                &self.id,
                now,
                sealing_keys.as_deref().map(|keys| message::Sealing {
                    keys,
                    store_id: self.writes.log.store_id,
                }),
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
