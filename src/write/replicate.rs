//! Applying a replicated log: batches of a cluster's log placed in the local store in the
//! cluster's order, with how far the log is applied, in one write transaction.
//!
//! The store of a replica is written only here: every other write of events is refused
//! ([`Error::ReplicaNotWritable`]), since an event that did not come through the cluster's log
//! would give this store positions no other replica has.

use std::sync::atomic::Ordering;

use super::{Request, WritePath};
use crate::env::{Commit, WriteKind};
use crate::error::{Error, Result};
use crate::format::replica::{self, Origin};
use crate::types::{Appended, StreamId};

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
/// One batch of the cluster's log: the parts of one publish, in order, each a run of records
/// of one stream (their version check was the cluster's).
pub(crate) struct ReplicatedBatch {
    pub parts: Vec<Request>,
    /// The sequences of the batch's first and last messages in the cluster's log.
    pub first: u64,
    pub last: u64,
    /// For each stream its messages are on, the sequence of the last one.
    pub subjects: Vec<(StreamId, u64)>,
}

/// What became of a batch of the log: its positions, or the error every replica refused it
/// with.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) type Outcome = Result<Vec<Appended>>;

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
/// What a replica applies in one transaction.
pub(crate) struct Apply<'a> {
    /// The log's origin, recorded by the first apply into a store.
    pub origin: &'a Origin,
    /// Consecutive batches of the log, in order.
    pub batches: &'a mut [ReplicatedBatch],
}

impl WritePath {
    /// Marks this store as a replica of `stream`: from now on it refuses every write of events
    /// but [`WritePath::apply_replicated`].
    pub(crate) fn set_replica_of(&self, stream: &str) {
        let mut replica = self
            .replica_of
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *replica = Some(stream.to_owned());
        self.is_replica.store(true, Ordering::Release);
    }

    /// The error for a write of events to a replica, `None` when this store is not one.
    pub(crate) fn refuse_on_replica(&self, kind: WriteKind) -> Option<Error> {
        if kind == WriteKind::Replicate || !self.is_replica.load(Ordering::Acquire) {
            return None;
        }
        if !matches!(
            kind,
            WriteKind::Append
                | WriteKind::Transaction
                | WriteKind::Import
                | WriteKind::Shred
                | WriteKind::KeyRotation
        ) {
            return None;
        }
        let stream = self
            .replica_of
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Some(Error::ReplicaNotWritable { stream })
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Applies the batches of `apply` in one write transaction, between commit groups, with the
    /// replica's entries (`format::replica`): the last applied sequence, the last sequence on
    /// each subject touched, and the origin. Batches the store applied already (the node that
    /// published one may have applied it first, see `cluster::node`) are passed over: their
    /// outcome is `None`. Returns each other batch's outcome: its positions, or the error that
    /// refused it on every replica alike.
    ///
    /// # Errors
    ///
    /// A failed read or write of the store (the replica must stop: it cannot decide on the
    /// batch); [`Error::Corrupted`] for an origin that is not the store's, or batches that do
    /// not follow the last one applied.
    pub(crate) fn apply_replicated(&self, apply: Apply<'_>) -> Result<Vec<Option<Outcome>>> {
        let Apply { origin, batches } = apply;
        let guard = self.committer.lock_commits();
        let result = self.run(WriteKind::Replicate, |txn| {
            txn.check_origin(origin)?;
            let mut applied = txn.replica_seq(replica::APPLIED_KEY)?;
            let mut outcomes = Vec::with_capacity(batches.len());
            for batch in batches.iter_mut() {
                if batch.last <= applied {
                    outcomes.push(None);
                    continue;
                }
                if batch.first != applied + 1 {
                    return Err(Error::corrupted(
                        0,
                        format!(
                            "the replica was asked to apply messages {} to {} of the cluster's log, but it is applied up to {applied}",
                            batch.first, batch.last
                        ),
                    ));
                }
                outcomes.push(Some(txn.apply_batch(&mut batch.parts)?));
                for &(stream, seq) in &batch.subjects {
                    txn.set_replica_seq(&replica::stream_key(stream), seq)?;
                }
                applied = batch.last;
            }
            if outcomes.iter().all(Option::is_none) {
                return Ok(Commit::Abort(outcomes));
            }
            txn.set_replica_seq(replica::APPLIED_KEY, applied)?;
            Ok(Commit::Commit(outcomes))
        });
        drop(guard);
        self.committer.wake_if_queued();
        result
    }
}
