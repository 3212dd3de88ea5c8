//! The label index's entries of the events after the watermark, written by the deferred flush
//! with the stream index: each event under its event type and, for a stream created by name,
//! under its stream's category.

use crate::env::Dbs;
use crate::error::Result;
use crate::format::name::LabelKind;
use crate::format::record;
use crate::log::NamedStreams;
use crate::types::StreamId;

/// Lists the events with sequences `from..=to` in the label index in `wtxn`, label by label in
/// key order, each label's in runs that follow its older ones: an event type the store has no
/// label for gets one. Returns the number of events listed, under all their labels. Each record's header is read (verified) for its type and stream;
/// a stream's category comes from `named`, or from its name entry (then remembered there).
///
/// # Errors
///
/// [`Error::Lmdb`](crate::Error::Lmdb), [`Error::Corrupted`](crate::Error::Corrupted) for a
/// record whose header cannot be read (its type is not known), [`Error::Damaged`](crate::Error::Damaged)
/// for a damaged label or stream name.
pub(crate) fn write_entries(
    dbs: &Dbs,
    wtxn: &mut heed::RwTxn<'_>,
    named: &NamedStreams,
    from: u64,
    to: u64,
) -> Result<usize> {
    // The type name and stream of each event, in sequence order, the names kept once.
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
    // Each label's sequences, ascending as the log is.
    let mut lists: foldhash::HashMap<u32, Vec<u64>> = foldhash::HashMap::default();
    let mut last: Option<(StreamId, Option<u32>)> = None;
    for (seq, at, stream) in events {
        lists.entry(types[at]).or_default().push(seq);
        let category = match last {
            Some((s, category)) if s == stream => category,
            _ => match named.get(stream) {
                Some(category) => category,
                None => {
                    let category = dbs.stream_name(wtxn, stream)?.map(|(_, c)| c);
                    named.remember(&[(stream, category)]);
                    category
                }
            },
        };
        last = Some((stream, category));
        if let Some(category) = category {
            lists.entry(category).or_default().push(seq);
        }
    }
    let mut labels: Vec<u32> = lists.keys().copied().collect();
    labels.sort_unstable();
    let mut written = 0;
    for label in labels {
        let seqs = &lists[&label];
        dbs.put_label_runs(wtxn, label, seqs)?;
        written += seqs.len();
    }
    Ok(written)
}
