//! Idempotent retries: whether a batch whose event ids are all stored is an exact retry of the
//! stored events (nothing to write, their positions to return) or a conflicting reuse of ids.

use crate::cipher::StreamKey;
use crate::error::{Error, Result};
use crate::format::record;
use crate::log::Log;
use crate::types::{Appended, ExpectedVersion, Position, StreamId};

use super::request::Staged;

/// A batch whose ids are all stored, to compare with the stored events.
pub(crate) struct RetryOf<'a> {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub buf: &'a [u8],
    pub staged: &'a [Staged],
    pub existing: &'a [u64],
    /// The stream's data key in an encrypted store: stored events are compared decrypted.
    pub key: Option<&'a StreamKey>,
}

/// Decides whether a batch whose first ids are stored is an exact retry of stored events.
pub(crate) fn retry_of(log: &Log, txn: &heed::RoTxn<'_>, batch: RetryOf<'_>) -> Result<Appended> {
    let RetryOf {
        stream,
        expected,
        buf,
        staged,
        existing,
        key,
    } = batch;
    let dbs = &log.dbs;
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
                let opened = rec.open(key, log.store_id)?;
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

/// The stream and version of the stored event at `seq`, which the event-id index named.
pub(crate) fn stored_position(
    log: &Log,
    txn: &heed::RoTxn<'_>,
    seq: u64,
) -> Result<(StreamId, u64)> {
    let bytes = log
        .dbs
        .get_record(txn, seq)?
        .ok_or_else(|| Error::corrupted(seq, "event id index points at a missing record"))?;
    let rec = record::decode(seq, bytes)?;
    Ok((rec.stream(), rec.version()))
}
