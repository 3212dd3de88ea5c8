//! What this process knows of the names of streams: for each stream it met, the label of its
//! category when it is recorded under a name, or that it has none. A name entry never changes,
//! and a stream created by id never gets one, so what is known stays true: an append by name to
//! a known stream needs no read of its name entry, and the index flush no read to list an event
//! under its category.

use std::sync::{Mutex, PoisonError};

use crate::types::StreamId;

/// Most streams remembered; past it the map starts again (it only saves reads).
const MAX_REMEMBERED: usize = 1 << 20;

/// The category label of each stream met (`None`: a stream without a name). A stream is
/// remembered as named only under the name that derives its id (two names deriving one id would
/// take a collision of SHA-256's first 128 bits, on which the ids of names rest anyway).
#[derive(Debug, Default)]
pub(crate) struct NamedStreams {
    known: Mutex<foldhash::HashMap<StreamId, Option<u32>>>,
}

impl NamedStreams {
    /// What is known of `stream`: `Some(Some(label))` for a stream recorded under its name in
    /// the category with that label, `Some(None)` for one without a name, `None` when not known.
    pub(crate) fn get(&self, stream: StreamId) -> Option<Option<u32>> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream)
            .copied()
    }

    /// Remembers what committed transactions found or recorded.
    pub(crate) fn remember(&self, streams: &[(StreamId, Option<u32>)]) {
        if streams.is_empty() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() + streams.len() > MAX_REMEMBERED {
            known.clear();
        }
        known.extend(streams.iter().copied());
    }
}
