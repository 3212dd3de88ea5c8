//! Stream heads: reading one from disk, and listing every stream with the heads on disk
//! merged with those of the unindexed tail.

use super::tail::{merge_head, Entry};
use crate::env::Dbs;
use crate::error::Result;
use crate::format::index::Head;
use crate::types::{StreamId, StreamInfo};

/// The head of `stream` in the `heads` database as `txn` sees it (complete only up to the index
/// watermark).
pub(crate) fn read_head(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    stream: StreamId,
) -> Result<Option<Head>> {
    dbs.heads
        .get(txn, &stream.to_key())?
        .map(|bytes| Head::decode(stream, bytes))
        .transpose()
}

/// The stream heads on disk merged with those of the unindexed tail, in stream order.
pub(super) struct MergedHeads<D: Iterator<Item = Result<(StreamId, Head)>>> {
    disk: std::iter::Peekable<D>,
    tail: std::iter::Peekable<std::vec::IntoIter<(StreamId, Entry, Entry)>>,
}

impl<D: Iterator<Item = Result<(StreamId, Head)>>> Iterator for MergedHeads<D> {
    type Item = Result<StreamInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let next_tail = self.tail.peek().map(|(s, _, _)| *s);
        let next_disk = match self.disk.peek() {
            Some(Ok((s, _))) => Some(*s),
            Some(Err(_)) => return self.disk.next().map(|r| r.map(|(s, h)| h.info(s))),
            None => None,
        };
        let (stream, disk, tail) = match (next_disk, next_tail) {
            (None, None) => return None,
            (Some(d), Some(t)) if d == t => {
                let disk = self.disk.next().and_then(Result::ok).map(|(_, h)| h);
                let (_, first, last) = self.tail.next().expect("peeked");
                (d, disk, Some((first, last)))
            }
            (Some(d), t) if t.is_none_or(|t| d < t) => {
                let disk = self.disk.next().and_then(Result::ok).map(|(_, h)| h);
                (d, disk, None)
            }
            _ => {
                let (s, first, last) = self.tail.next().expect("peeked");
                (s, None, Some((first, last)))
            }
        };
        merge_head(disk, tail).map(|h| Ok(h.info(stream)))
    }
}

impl<D: Iterator<Item = Result<(StreamId, Head)>>> MergedHeads<D> {
    pub(super) fn new(disk: D, tail: Vec<(StreamId, Entry, Entry)>) -> Self {
        MergedHeads {
            disk: disk.peekable(),
            tail: tail.into_iter().peekable(),
        }
    }
}
