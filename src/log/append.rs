//! The append transaction: version check, idempotency, sequencing, and the writes to the log and
//! its indexes, all inside one LMDB write transaction.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use heed::PutFlags;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::index::{stream_version_key, Head};
use crate::log::record;
use crate::storage::{Commit, Storage};
use crate::types::{Appended, ExpectedVersion, Position, StreamId};

/// A serialized record waiting for its position, inside a batch buffer.
pub(crate) struct Staged {
    pub start: usize,
    pub len: usize,
    pub payload_offset: usize,
    pub id: Uuid,
}

/// Appends the staged records of `buf` to `stream` atomically. See
/// [`Writer::append_batch`](crate::engine::Writer::append_batch) for the rules.
pub(crate) fn append(
    storage: &Storage,
    stream: StreamId,
    expected: ExpectedVersion,
    buf: &mut [u8],
    staged: &[Staged],
) -> Result<Appended> {
    let shared = &storage.shared;
    shared.check_not_poisoned()?;
    let result = storage
        .env
        .write(|wtxn| write_batch(storage, wtxn, stream, expected, buf, staged));
    match &result {
        Ok(appended) if !appended.deduplicated => storage.publish(appended.last().seq),
        Err(Error::Lmdb(heed::Error::Io(_) | heed::Error::Mdb(heed::MdbError::Panic))) => {
            // A failed commit or fsync leaves the page cache in an unknown state: refuse further
            // writes until the store is reopened.
            tracing::error!(path = %shared.path.display(), "write failed at the I/O level; store poisoned until reopened");
            shared.poisoned.store(true, Ordering::Release);
        }
        _ => {}
    }
    result
}

fn write_batch(
    storage: &Storage,
    wtxn: &mut heed::RwTxn<'_>,
    stream: StreamId,
    expected: ExpectedVersion,
    buf: &mut [u8],
    staged: &[Staged],
) -> Result<Commit<Appended>> {
    let dbs = &storage.shared.dbs;
    let head = storage.head_of(wtxn, stream)?;
    let current = head.map_or(0, |h| h.version);

    // Idempotency: any id already stored makes this either an exact retry or an error.
    let mut found = Vec::with_capacity(staged.len());
    for s in staged {
        found.push(dbs.event_ids.get(wtxn, &s.id.as_u128().to_be_bytes())?);
    }
    if let Some(i) = found.iter().position(Option::is_some) {
        if found.iter().all(Option::is_some) {
            let existing: Vec<u64> = found.into_iter().flatten().collect();
            return retry_of(storage, wtxn, stream, expected, buf, staged, &existing)
                .map(Commit::Abort);
        }
        let seq = found[i].expect("position found a stored id");
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

    if !expected.matches(current) {
        return Err(Error::ConcurrencyConflict {
            stream,
            expected,
            actual: current,
        });
    }

    let (next_seq, last_ts) = match dbs.log.last(wtxn)? {
        Some((seq, rec)) => (seq + 1, record::raw_timestamp(rec)),
        None => (1, 0),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let timestamp = now.max(last_ts);

    let mut positions = Vec::with_capacity(staged.len());
    let mut prev = head.map_or(0, |h| h.last_seq);
    for (i, s) in staged.iter().enumerate() {
        let seq = next_seq + i as u64;
        let version = current + 1 + i as u64;
        let rec = &mut buf[s.start..s.start + s.len];
        record::set_position(rec, s.payload_offset, seq, version, prev, timestamp);
        dbs.log.put_with_flags(wtxn, PutFlags::APPEND, &seq, rec)?;
        dbs.stream_index
            .put(wtxn, &stream_version_key(stream, version), &seq)?;
        dbs.event_ids.put_with_flags(
            wtxn,
            PutFlags::NO_OVERWRITE,
            &s.id.as_u128().to_be_bytes(),
            &seq,
        )?;
        positions.push(Position { seq, version });
        prev = seq;
    }
    let new_head = Head {
        version: current + staged.len() as u64,
        first_seq: head.map_or(next_seq, |h| h.first_seq),
        last_seq: prev,
    };
    dbs.heads
        .put(wtxn, &stream.to_key(), &new_head.encode(stream))?;
    Ok(Commit::Commit(Appended {
        stream,
        positions,
        deduplicated: false,
    }))
}

/// Decides whether a batch whose first ids are stored is an exact retry of stored events.
fn retry_of(
    storage: &Storage,
    txn: &heed::RoTxn<'_>,
    stream: StreamId,
    expected: ExpectedVersion,
    buf: &[u8],
    staged: &[Staged],
    existing: &[u64],
) -> Result<Appended> {
    let dbs = &storage.shared.dbs;
    let mut positions: Vec<Position> = Vec::with_capacity(staged.len());
    for (i, s) in staged.iter().enumerate() {
        let seq = existing[i];
        let bytes = dbs
            .log
            .get(txn, &seq)?
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
        if !record::same_event(&buf[s.start..s.start + s.len], rec.raw()) {
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
        .log
        .get(txn, &seq)?
        .ok_or_else(|| Error::corrupted(seq, "event id index points at a missing record"))?;
    let rec = record::decode(seq, bytes)?;
    Ok((rec.stream(), rec.version()))
}
