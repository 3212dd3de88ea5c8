//! The store's errors in a form the model can produce and compare.

use std::path::PathBuf;

use varvedb::error::Error;
use varvedb::{ExpectedVersion, StreamId, Uuid};

/// Errors of the API in a comparable form (the `reason` text of `EventIdConflict` is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MErr {
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    IdConflict {
        event_id: Uuid,
        seq: u64,
        stream: StreamId,
        version: u64,
    },
    DupInBatch {
        event_id: Uuid,
    },
    InvalidVersion {
        stream: StreamId,
        version: u64,
    },
    Empty {
        stream: StreamId,
    },
    /// A read of an event of a shredded stream.
    Shredded {
        stream: StreamId,
        seq: u64,
    },
    /// A write to a shredded stream.
    StreamShredded {
        stream: StreamId,
    },
    NotEncrypted {
        path: PathBuf,
    },
}

/// The comparable form of an error of the store; any error the model has no rule for fails the
/// run.
pub fn to_merr(e: Error) -> MErr {
    match e {
        Error::ConcurrencyConflict {
            stream,
            expected,
            actual,
        } => MErr::Conflict {
            stream,
            expected,
            actual,
        },
        Error::EventIdConflict {
            event_id,
            existing_seq,
            existing_stream,
            existing_version,
            reason,
        } => {
            assert!(!reason.is_empty());
            MErr::IdConflict {
                event_id,
                seq: existing_seq,
                stream: existing_stream,
                version: existing_version,
            }
        }
        Error::DuplicateEventIdInBatch { event_id } => MErr::DupInBatch { event_id },
        Error::InvalidVersion { stream, version } => MErr::InvalidVersion { stream, version },
        Error::EmptyBatch { stream } => MErr::Empty { stream },
        Error::Shredded { stream, seq } => MErr::Shredded { stream, seq },
        Error::StreamShredded { stream } => MErr::StreamShredded { stream },
        Error::NotEncrypted { path } => MErr::NotEncrypted { path },
        other => panic!("unexpected error from the store: {other:?}"),
    }
}
