//! The deferred flush: the index entries and stream heads of the events after the watermark, and
//! their entries in the label index, written sorted in one durable transaction.

use super::heads::read_head;
use super::tail::merge_head;
use super::StreamIndex;
use crate::env::{Commit, Dbs, Env, WriteKind};
use crate::error::{Error, Result};
use crate::format::index::stream_version_key;
use crate::log::NamedStreams;

impl StreamIndex {
    /// Writes the index entries and stream heads of every event after the watermark, sorted by
    /// stream, and their label index entries, and moves the watermark to the end of the log, in one durable transaction. Returns the
    /// new watermark, or `None` when everything was indexed already.
    ///
    /// Appends of this process must not run meanwhile (the write path calls it holding its commit
    /// lock, or at close); appends of other processes are serialised by LMDB and caught up first.
    pub(crate) fn flush(&self, env: &Env, dbs: &Dbs, named: &NamedStreams) -> Result<Option<u64>> {
        let done = env.write(WriteKind::IndexFlush, |wtxn| {
            let last = dbs.last_seq(wtxn)?;
            let mark = dbs.watermark(wtxn)?;
            if last <= mark {
                return Ok(Commit::Abort(None));
            }
            let unindexed = {
                let mut tail = self.write();
                tail.catch_up(dbs, wtxn, mark, last)?;
                if tail.covered_from() > mark {
                    return Err(Error::corrupted(
                        mark + 1,
                        "the index watermark went back: the store was replaced while open",
                    ));
                }
                if tail.covered_to() < last {
                    return Err(Error::corrupted(
                        tail.covered_to() + 1,
                        "the tail does not reach the end of the log: nothing was flushed",
                    ));
                }
                tail.unindexed(mark, last)
            };
            // Sorted keys: each index and heads page is dirtied once per flush.
            for (stream, entries) in &unindexed {
                for e in entries {
                    dbs.put_index_entry(wtxn, &stream_version_key(*stream, e.version), e.seq)?;
                }
            }
            for (stream, entries) in &unindexed {
                let disk = read_head(dbs, wtxn, *stream)?;
                let range = (entries[0], entries[entries.len() - 1]);
                let head = merge_head(disk, Some(range)).expect("a stream with entries has a head");
                dbs.heads
                    .put(wtxn, &stream.to_key(), &head.encode(*stream))?;
            }
            super::labels::write_entries(dbs, wtxn, named, mark + 1, last)?;
            dbs.set_watermark(wtxn, last)?;
            Ok(Commit::Commit(Some(last)))
        })?;
        if let Some(mark) = done {
            self.write().flushed_to(mark);
        }
        Ok(done)
    }
}
