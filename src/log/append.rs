//! The append transaction: version check, idempotency, sequencing, and the writes to the log and
//! its indexes, all inside one LMDB write transaction.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use std::sync::Arc;

use crate::crypto::aead::Nonces;
use crate::crypto::StreamKey;
use crate::error::{Error, Result};
use crate::index::deferred;
use crate::index::Head;
use crate::log::record::{self, Place, Sealer};
use crate::storage::{Commit, Storage};
use crate::subscribe::checkpoint;
use crate::types::{Appended, ExpectedVersion, Position, StreamId};

/// A serialized record waiting for its position, inside a batch buffer.
pub(crate) struct Staged {
    pub start: usize,
    pub len: usize,
    pub payload_offset: usize,
    pub id: Uuid,
}

/// One caller's batch: staged records for one stream, with the caller's expectation.
pub(crate) struct Request {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub buf: Vec<u8>,
    pub staged: Vec<Staged>,
}

/// Appends a group of batches in one write transaction and one fsync. Each batch is checked on
/// its own, in order, seeing the batches before it: a conflict fails only its own batch. Returns
/// one result per request; every `Ok` is durable.
pub(crate) fn commit_group(storage: &Storage, group: &mut [Request]) -> Vec<Result<Appended>> {
    let started = Instant::now();
    let shared = &storage.shared;
    if shared.check_not_poisoned().is_err() {
        return group.iter().map(|_| Err(Error::Poisoned)).collect();
    }
    // In an encrypted store, the streams' keys, created and made durable in the keystore
    // before the log transaction that first uses them.
    let keys: Vec<Option<Result<Arc<StreamKey>>>> = match &shared.crypto {
        None => group.iter().map(|_| None).collect(),
        Some(crypto) => {
            let streams: Vec<StreamId> = group.iter().map(|r| r.stream).collect();
            match crypto.keys_for_append(&streams) {
                Ok(keys) => keys.into_iter().map(Some).collect(),
                Err(e) => {
                    return group.iter().map(|_| Err(e.duplicate())).collect();
                }
            }
        }
    };
    let checkpoints = shared.committer.pending_checkpoints();
    let outcome = storage.env.write(|wtxn| {
        let mut pending = Pending::start(storage, wtxn)?;
        let mut results = Vec::with_capacity(group.len());
        let mut wrote = false;
        for (req, key) in group.iter_mut().zip(&keys) {
            let key = match key {
                None => None,
                Some(Ok(key)) => Some(&**key),
                Some(Err(e)) => {
                    results.push(Err(e.duplicate()));
                    continue;
                }
            };
            let result = write_batch(storage, wtxn, &mut pending, req, key)?;
            wrote |= matches!(&result, Ok(a) if !a.deduplicated);
            results.push(result);
        }
        if !wrote {
            return Ok(Commit::Abort((results, Pending::default())));
        }
        // Processors' checkpoints ride along: no fsync of their own.
        for (name, seq) in &checkpoints {
            checkpoint::advance_in(storage, wtxn, name, *seq)?;
        }
        Ok(Commit::Commit((results, pending)))
    });
    let outcome = outcome.map(|(results, pending)| {
        pending.committed(storage);
        results
    });
    match outcome {
        Ok(results) => {
            committed(storage, group, &results, &checkpoints, started);
            results
        }
        Err(e) => {
            poison_on_io_error(storage, &e);
            let mut results: Vec<Result<Appended>> =
                group.iter().skip(1).map(|_| Err(e.duplicate())).collect();
            results.insert(0, Err(e));
            results
        }
    }
}

/// Appends the parts of one multi-stream transaction atomically, in one write transaction and
/// one fsync: each part is checked as [`commit_group`] checks a batch, seeing the parts before it,
/// but the first part that fails aborts the transaction and its error is the result. Parts that
/// are exact retries of stored events write nothing and report their original positions.
pub(crate) fn commit_atomic(storage: &Storage, parts: &mut [Request]) -> Result<Vec<Appended>> {
    let started = Instant::now();
    let shared = &storage.shared;
    shared.check_not_poisoned()?;
    let keys: Vec<Option<Arc<StreamKey>>> = match &shared.crypto {
        None => parts.iter().map(|_| None).collect(),
        Some(crypto) => {
            let streams: Vec<StreamId> = parts.iter().map(|r| r.stream).collect();
            crypto
                .keys_for_append(&streams)?
                .into_iter()
                .map(|key| key.map(Some))
                .collect::<Result<_>>()?
        }
    };
    let checkpoints = shared.committer.pending_checkpoints();
    let outcome = storage.env.write(|wtxn| {
        let mut pending = Pending::start(storage, wtxn)?;
        let mut appended = Vec::with_capacity(parts.len());
        let mut wrote = false;
        for (req, key) in parts.iter_mut().zip(&keys) {
            match write_batch(storage, wtxn, &mut pending, req, key.as_deref())? {
                Ok(a) => {
                    wrote |= !a.deduplicated;
                    appended.push(a);
                }
                Err(e) => return Ok(Commit::Abort(Err(e))),
            }
        }
        if !wrote {
            return Ok(Commit::Abort(Ok((appended, Pending::default()))));
        }
        for (name, seq) in &checkpoints {
            checkpoint::advance_in(storage, wtxn, name, *seq)?;
        }
        Ok(Commit::Commit(Ok((appended, pending))))
    });
    let outcome = outcome.map(|result| {
        result.map(|(appended, pending)| {
            pending.committed(storage);
            appended
        })
    });
    match outcome {
        Ok(Ok(appended)) => {
            let results: Vec<Result<Appended>> = appended.into_iter().map(Ok).collect();
            committed(storage, parts, &results, &checkpoints, started);
            Ok(results.into_iter().flatten().collect())
        }
        Ok(Err(e)) => Err(e),
        Err(e) => {
            poison_on_io_error(storage, &e);
            Err(e)
        }
    }
}

/// The bookkeeping after a group or transaction committed (or aborted with nothing to write):
/// stored checkpoints, counters, the published head, metrics.
fn committed(
    storage: &Storage,
    group: &[Request],
    results: &[Result<Appended>],
    checkpoints: &[(String, u64)],
    started: Instant,
) {
    let shared = &storage.shared;
    let written = results
        .iter()
        .filter(|r| matches!(r, Ok(a) if !a.deduplicated))
        .count();
    if written > 0 {
        shared.committer.checkpoints_stored(checkpoints);
    }
    let head = results
        .iter()
        .filter_map(|r| r.as_ref().ok().filter(|a| !a.deduplicated))
        .map(|a| a.last().seq)
        .max();
    if let Some(head) = head {
        shared.commits.fetch_add(1, Ordering::Relaxed);
        shared
            .committed_batches
            .fetch_add(written as u64, Ordering::Relaxed);
        storage.publish(head);
    }
    crate::metrics::group_done(storage, group, results, started);
    if written > 0 {
        crate::metrics::checkpoints_committed(storage, checkpoints);
    }
}

/// A failed commit or fsync leaves the page cache in an unknown state: refuse further writes
/// until the store is reopened.
fn poison_on_io_error(storage: &Storage, e: &Error) {
    if matches!(
        e,
        Error::Lmdb(heed::Error::Io(_) | heed::Error::Mdb(heed::MdbError::Panic))
    ) {
        let shared = &storage.shared;
        tracing::error!(path = %shared.path.display(), error = %e, "write failed at the I/O level; store poisoned until reopened");
        shared.poisoned.store(true, Ordering::Release);
    }
}

/// Commits the pending processor checkpoints in a transaction of their own.
pub(crate) fn commit_checkpoints(storage: &Storage) -> Result<()> {
    let committer = &storage.shared.committer;
    let checkpoints = committer.pending_checkpoints();
    if checkpoints.is_empty() {
        return Ok(());
    }
    storage.env.write(|wtxn| {
        for (name, seq) in &checkpoints {
            checkpoint::advance_in(storage, wtxn, name, *seq)?;
        }
        Ok(Commit::Commit(()))
    })?;
    committer.checkpoints_stored(&checkpoints);
    crate::metrics::checkpoints_committed(storage, &checkpoints);
    Ok(())
}

/// Checks and writes one batch inside the group's transaction. The outer error fails the whole
/// transaction (a failed put: "map full", I/O); the inner one fails only this batch, and is
/// returned before anything of it was written.
fn write_batch(
    storage: &Storage,
    wtxn: &mut heed::RwTxn<'_>,
    pending: &mut Pending,
    req: &mut Request,
    key: Option<&StreamKey>,
) -> Result<Result<Appended>> {
    let plan = match plan(storage, wtxn, pending, req, key) {
        Ok(Plan::Retry(appended)) => return Ok(Ok(appended)),
        Ok(Plan::Write(plan)) => plan,
        Err(e) => return Ok(Err(e)),
    };
    apply(storage, wtxn, pending, req, plan, key).map(Ok)
}

/// Where a stream stands for the write path: its version, checked against the expected one, and
/// the sequence of its last event, the back-pointer of the next record. (The first sequence a
/// [`Head`] also holds is the deferred flush's business.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub version: u64,
    pub last_seq: u64,
}

/// What a write transaction appended so far, beside the log: stream tips for the version checks
/// of later batches in the same transaction, and the events for the tail once it committed.
#[derive(Default)]
pub(crate) struct Pending {
    /// The committed head of the log when the transaction began.
    base: u64,
    tips: foldhash::HashMap<StreamId, Tip>,
    /// The next sequence and the newest commit timestamp in the log, once a batch of this
    /// transaction has been written (before that, read from the log's last record).
    next: Option<(u64, u64)>,
    entries: Vec<(u64, StreamId, u64)>,
    /// Nonces for the records this transaction seals.
    pub(crate) nonces: Nonces,
    /// Where an encrypted record is sealed (its staged plaintext stays as it was).
    sealed: Vec<u8>,
}

impl Pending {
    /// Begins a write transaction: brings the tail up to the committed log (appends of other
    /// processes) so that version checks see every event.
    pub(crate) fn start(storage: &Storage, wtxn: &heed::RwTxn<'_>) -> Result<Pending> {
        let shared = &storage.shared;
        let base = deferred::last_seq(&shared.dbs, wtxn)?;
        if deferred::read(&shared.tail).covered_to() < base {
            let mark = deferred::watermark(&shared.dbs, wtxn)?;
            deferred::write(&shared.tail).catch_up(&shared.dbs, wtxn, mark, base)?;
        }
        Ok(Pending {
            base,
            tips: foldhash::HashMap::default(),
            next: None,
            entries: Vec::new(),
            nonces: Nonces::new(),
            sealed: Vec::new(),
        })
    }

    /// Records an event written in this transaction at `seq`, `version` in `stream`.
    pub(crate) fn appended(&mut self, seq: u64, stream: StreamId, version: u64) {
        self.entries.push((seq, stream, version));
        self.tips.insert(
            stream,
            Tip {
                version,
                last_seq: seq,
            },
        );
    }

    /// Where `stream` stands in this transaction, `None` for a stream without events.
    ///
    /// The tail holds every committed event after the sequence it starts at (`start` brought it
    /// up to `base`), and the heads on disk only events indexed before the watermark, which is
    /// not before that start. So a stream with an entry in the tail has its newest event there,
    /// and only a stream without one needs the head on disk: one B-tree lookup saved per batch
    /// to a recently written stream.
    pub(crate) fn tip(
        &self,
        storage: &Storage,
        wtxn: &heed::RoTxn<'_>,
        stream: StreamId,
    ) -> Result<Option<Tip>> {
        if let Some(tip) = self.tips.get(&stream) {
            return Ok(Some(*tip));
        }
        let shared = &storage.shared;
        if let Some(last) = deferred::read(&shared.tail).last(stream, self.base) {
            return Ok(Some(Tip {
                version: last.version,
                last_seq: last.seq,
            }));
        }
        Ok(Head::read(&shared.dbs, wtxn, stream)?.map(|h| Tip {
            version: h.version,
            last_seq: h.last_seq,
        }))
    }

    /// After the commit: the transaction's events join the tail, and an index flush is asked
    /// for when the tail has grown past the interval.
    pub(crate) fn committed(self, storage: &Storage) {
        if self.entries.is_empty() {
            return;
        }
        let shared = &storage.shared;
        let unflushed = {
            let mut tail = deferred::write(&shared.tail);
            for (seq, stream, version) in self.entries {
                tail.push(seq, stream, version);
            }
            tail.unflushed()
        };
        if unflushed >= shared.config.index_interval {
            shared.committer.request_flush(storage);
        }
    }
}

enum Plan {
    /// The batch is a retry of stored events: nothing to write.
    Retry(Appended),
    Write(Placement),
}

/// Where a batch goes.
struct Placement {
    tip: Option<Tip>,
    next_seq: u64,
    timestamp: u64,
}

/// Everything that can reject a batch, before anything of it is written.
fn plan(
    storage: &Storage,
    wtxn: &heed::RwTxn<'_>,
    pending: &Pending,
    req: &Request,
    key: Option<&StreamKey>,
) -> Result<Plan> {
    let dbs = &storage.shared.dbs;
    let (stream, staged) = (req.stream, &req.staged);
    let tip = pending.tip(storage, wtxn, stream)?;
    let current = tip.map_or(0, |t| t.version);

    // Idempotency: any id already stored makes this either an exact retry or an error. The
    // common case (no id stored) allocates nothing: `existing` grows only with stored ids.
    let mut existing = Vec::new();
    let mut first_found = None;
    for (i, s) in staged.iter().enumerate() {
        if let Some(seq) = dbs.event_ids.get(wtxn, &s.id.as_u128().to_be_bytes())? {
            first_found.get_or_insert((i, seq));
            existing.push(seq);
        }
    }
    if let Some((i, seq)) = first_found {
        if existing.len() == staged.len() {
            return retry_of(
                storage,
                wtxn,
                RetryOf {
                    stream,
                    expected: req.expected,
                    buf: &req.buf,
                    staged,
                    existing: &existing,
                    key,
                },
            )
            .map(Plan::Retry);
        }
        let (existing_stream, existing_version) = stored_position(storage, wtxn, seq)?;
        return Err(Error::EventIdConflict {
            event_id: staged[i].id,
            existing_seq: seq,
            existing_stream,
            existing_version,
            reason:
                "the batch mixes stored event ids with new ones; retry exactly the original batch",
        });
    }

    if !req.expected.matches(current) {
        return Err(Error::ConcurrencyConflict {
            stream,
            expected: req.expected,
            actual: current,
        });
    }

    let (next_seq, last_ts) = match pending.next {
        Some(next) => next,
        None => match dbs.log.last(wtxn)? {
            Some((seq, value)) => (
                seq + 1,
                record::raw_timestamp(dbs.record(wtxn, seq, value)?),
            ),
            None => (1, 0),
        },
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Ok(Plan::Write(Placement {
        tip,
        next_seq,
        timestamp: now.max(last_ts),
    }))
}

/// Writes a checked batch: its records, index entries, ids and the new stream head.
fn apply(
    storage: &Storage,
    wtxn: &mut heed::RwTxn<'_>,
    pending: &mut Pending,
    req: &mut Request,
    at: Placement,
    key: Option<&StreamKey>,
) -> Result<Appended> {
    let store_id = storage.shared.store_id;
    let dbs = &storage.shared.dbs;
    let stream = req.stream;
    let current = at.tip.map_or(0, |t| t.version);
    let mut positions = Vec::with_capacity(req.staged.len());
    let mut prev = at.tip.map_or(0, |t| t.last_seq);
    for (i, s) in req.staged.iter().enumerate() {
        let seq = at.next_seq + i as u64;
        let version = current + 1 + i as u64;
        // An encrypted record is sealed in a copy: the staged plaintext must survive this
        // attempt, since a group that hits a full map is run again after the map grew (and
        // idempotency checks compare staged records).
        let staged = &mut req.buf[s.start..s.start + s.len];
        let rec: &mut [u8] = if key.is_some() {
            pending.sealed.clear();
            pending.sealed.extend_from_slice(staged);
            &mut pending.sealed
        } else {
            staged
        };
        let place = Place {
            seq,
            version,
            prev_seq: prev,
            timestamp_ns: at.timestamp,
        };
        let sealer = key.map(|key| Sealer {
            key,
            store_id,
            nonces: &mut pending.nonces,
        });
        record::set_position(rec, s.payload_offset, place, sealer)?;
        dbs.put_record(wtxn, seq, rec)?;
        dbs.put_event_id(wtxn, s.id.as_u128(), seq)?;
        positions.push(Position { seq, version });
        pending.entries.push((seq, stream, version));
        prev = seq;
    }
    // The stream index and heads on disk are written later, in sorted batches
    // (`index::deferred::flush`); the tail holds these events until then.
    pending.tips.insert(
        stream,
        Tip {
            version: current + req.staged.len() as u64,
            last_seq: prev,
        },
    );
    pending.next = Some((prev + 1, at.timestamp));
    Ok(Appended {
        stream,
        positions,
        deduplicated: false,
    })
}

/// A batch whose ids are all stored, to compare with the stored events.
struct RetryOf<'a> {
    stream: StreamId,
    expected: ExpectedVersion,
    buf: &'a [u8],
    staged: &'a [Staged],
    existing: &'a [u64],
    /// The stream's data key in an encrypted store: stored events are compared decrypted.
    key: Option<&'a StreamKey>,
}

/// Decides whether a batch whose first ids are stored is an exact retry of stored events.
fn retry_of(storage: &Storage, txn: &heed::RoTxn<'_>, batch: RetryOf<'_>) -> Result<Appended> {
    let RetryOf {
        stream,
        expected,
        buf,
        staged,
        existing,
        key,
    } = batch;
    let dbs = &storage.shared.dbs;
    let mut positions: Vec<Position> = Vec::with_capacity(staged.len());
    for (i, s) in staged.iter().enumerate() {
        let seq = existing[i];
        let bytes = dbs
            .get_record(txn, seq)?
            .ok_or_else(|| Error::corrupted(seq, "event id index points at a missing record"))?;
        let rec = record::decode(seq, bytes)?;
        let env = rec.envelope();
        if env.event_id != s.id {
            return Err(Error::corrupted(
                seq,
                "event id index points at a record with another id",
            ));
        }
        let conflict = |reason| Error::EventIdConflict {
            event_id: s.id,
            existing_seq: seq,
            existing_stream: env.stream,
            existing_version: env.version,
            reason,
        };
        if env.stream != stream {
            return Err(conflict("the stored event belongs to another stream"));
        }
        if i > 0 && env.version != positions[i - 1].version + 1 {
            return Err(conflict(
                "the stored events are not at consecutive versions in batch order",
            ));
        }
        let staged_rec = &buf[s.start..s.start + s.len];
        let same = match key {
            None => record::same_event(staged_rec, rec.raw()),
            Some(key) => {
                let opened = rec.open(key, storage.shared.store_id)?;
                record::same_sealed_event(staged_rec, s.payload_offset, rec.raw(), &opened.buf)
            }
        };
        if !same {
            return Err(conflict(
                "the stored event with this id differs in type, metadata, ids or payload",
            ));
        }
        positions.push(Position {
            seq,
            version: env.version,
        });
    }
    let first_version = positions[0].version;
    let consistent = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => first_version == 1,
        ExpectedVersion::StreamExists => first_version > 1,
        ExpectedVersion::Exact(v) => first_version == v + 1,
    };
    if !consistent {
        let first = positions[0];
        return Err(Error::EventIdConflict {
            event_id: staged[0].id,
            existing_seq: first.seq,
            existing_stream: stream,
            existing_version: first.version,
            reason:
                "the stored events were appended at another expected version than this retry names",
        });
    }
    Ok(Appended {
        stream,
        positions,
        deduplicated: true,
    })
}

fn stored_position(storage: &Storage, txn: &heed::RoTxn<'_>, seq: u64) -> Result<(StreamId, u64)> {
    let bytes = storage
        .shared
        .dbs
        .get_record(txn, seq)?
        .ok_or_else(|| Error::corrupted(seq, "event id index points at a missing record"))?;
    let rec = record::decode(seq, bytes)?;
    Ok((rec.stream(), rec.version()))
}
