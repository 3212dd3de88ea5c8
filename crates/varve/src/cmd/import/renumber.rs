//! Shredded events left out with `--skip-shredded`, and how the events after them move down.

use std::collections::BTreeSet;

use varvedb::admin::ImportEvent;
use varvedb::StreamId;

use super::failure::LineError;

/// Shredded events left out with `--skip-shredded`, and how later sequences move down.
#[derive(Default)]
pub struct Skipped {
    /// Original sequences of the events left out, ascending.
    pub seqs: Vec<u64>,
    pub streams: BTreeSet<StreamId>,
}

impl Skipped {
    /// Moves `event` down past the events left out before it.
    pub fn renumber(&self, event: &mut ImportEvent) -> Result<(), LineError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        if self.seqs.last().is_some_and(|&last| last >= event.seq) {
            return Err(LineError(format!(
                "sequence {} comes after the left-out shredded event at sequence {}: events must come in log order",
                event.seq,
                self.seqs.last().copied().unwrap_or(0)
            )));
        }
        event.seq -= self.seqs.len() as u64;
        if let Some(prev) = event.prev_seq {
            if self.seqs.binary_search(&prev).is_ok() {
                return Err(LineError(format!(
                    "prev_seq {prev} names a shredded event that was left out, but this event of the same stream is not shredded; a stream's events after a shredded one cannot be readable"
                )));
            }
            event.prev_seq = Some(prev - self.seqs.partition_point(|&s| s < prev) as u64);
        }
        Ok(())
    }
}
