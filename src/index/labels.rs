//! The label index's entries of the events after the watermark, written by the deferred flush
//! with the stream index: each event under its event type and, for a stream created by name,
//! under its stream's category.

use crate::env::Dbs;
use crate::error::Result;
use crate::format::name::{label_index_key, LabelKind};
use crate::format::record;
use crate::types::StreamId;

/// Writes the label index entries of the events with sequences `from..=to`, sorted by key, in
/// `wtxn`: an event type the store has no label for gets one. Each record's header is read
/// (verified) for its type and stream.
///
/// # Errors
///
/// [`Error::Lmdb`](crate::Error::Lmdb), [`Error::Corrupted`](crate::Error::Corrupted) for a
/// record whose header cannot be read (its type is not known), [`Error::Damaged`](crate::Error::Damaged)
/// for a damaged label or stream name.
pub(crate) fn write_entries(
    dbs: &Dbs,
    wtxn: &mut heed::RwTxn<'_>,
    from: u64,
    to: u64,
) -> Result<usize> {
    // The type name and stream of each event, the names kept once.
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut events: Vec<(u64, usize, StreamId)> = Vec::new();
    for entry in dbs.log.range(wtxn, &(from..=to))? {
        let (seq, value) = entry?;
        let rec = record::decode_header(seq, dbs.record(wtxn, seq, value)?)?;
        let name = rec.event_type_bytes();
        let at = match names.iter().rposition(|n| n.as_slice() == name) {
            Some(at) => at,
            None => {
                names.push(name.to_vec());
                names.len() - 1
            }
        };
        events.push((seq, at, rec.stream()));
    }
    let mut types = Vec::with_capacity(names.len());
    for name in &names {
        types.push(dbs.label_or_new(wtxn, LabelKind::EventType, name)?);
    }
    let mut categories: foldhash::HashMap<StreamId, Option<u32>> = foldhash::HashMap::default();
    let mut keys: Vec<[u8; 12]> = Vec::with_capacity(events.len() * 2);
    for (seq, at, stream) in events {
        keys.push(label_index_key(types[at], seq));
        let category = match categories.get(&stream) {
            Some(&category) => category,
            None => {
                let category = dbs.stream_name(wtxn, stream)?.map(|(_, c)| c);
                categories.insert(stream, category);
                category
            }
        };
        if let Some(category) = category {
            keys.push(label_index_key(category, seq));
        }
    }
    // Sorted keys: each page of the index is written once.
    keys.sort_unstable();
    for key in &keys {
        dbs.label_index.put(wtxn, key, &[])?;
    }
    Ok(keys.len())
}
