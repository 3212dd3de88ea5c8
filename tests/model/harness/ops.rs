//! The operations a model run is made of.
//!
//! Every field takes any value: the harness reduces numbers to the range it needs (a stream
//! index modulo the number of streams, a count modulo its bound), so that the same types serve
//! the proptest strategies (`tests/model/strategy.rs`, which generate in range and shrink) and
//! the fuzz target (`fuzz/fuzz_targets/model.rs`, which derives them from raw bytes with
//! `arbitrary`).

use arbitrary::Arbitrary;
use varvedb::Direction;

/// The names of the streams the ops pick from that are written by name (`None`: by id): two
/// categories, one with two streams, and a category no stream has (for reads).
pub const NAMES: [Option<&str>; 5] = [
    None,
    Some("order-1"),
    Some("order-2"),
    Some("invoice-1"),
    None,
];

/// The categories reads pick from; `nobody` has no stream.
pub const CATEGORIES: [&str; 3] = ["order", "invoice", "nobody"];

/// The event type names events are stored under (see `model::type_of`).
pub const TYPES: [&str; 2] = ["Ev", "EvB"];

/// The streams the ops pick from: ids, and the ids of the names of [`NAMES`] (one of them beyond
/// u64, to exercise UUID-sized ids and the big-endian listing order; named ones are too).
pub static STREAMS: std::sync::LazyLock<[u128; 5]> = std::sync::LazyLock::new(|| {
    let ids = [0, 0, 0, 0, 1 << 100];
    std::array::from_fn(|i| match NAMES[i] {
        Some(name) => varvedb::StreamName::new(name)
            .expect("a stream name")
            .stream_id()
            .as_u128(),
        None => ids[i],
    })
});

/// The name of stream `id` when it is written by name.
pub fn name_of(id: u128) -> Option<&'static str> {
    STREAMS.iter().position(|s| *s == id).and_then(|i| NAMES[i])
}

/// A stream as the writes name it: by its name when it has one, so that the store records it.
#[derive(Clone, Copy, Debug)]
pub struct Target(pub u128);

impl varvedb::IntoStreamId for Target {
    fn into_stream_id(self) -> varvedb::Result<varvedb::StreamId> {
        Ok(varvedb::StreamId(self.0))
    }

    fn into_named_stream(
        self,
    ) -> varvedb::Result<(varvedb::StreamId, Option<varvedb::StreamName>)> {
        match name_of(self.0) {
            Some(name) => name.into_named_stream(),
            None => Ok((varvedb::StreamId(self.0), None)),
        }
    }
}

/// One of [`CATEGORIES`].
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Cat(pub u8);

impl Cat {
    pub fn name(self) -> &'static str {
        CATEGORIES[usize::from(self.0) % CATEGORIES.len()]
    }
}

/// One of [`TYPES`].
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Ty(pub u8);

impl Ty {
    pub fn name(self) -> &'static str {
        TYPES[usize::from(self.0) % TYPES.len()]
    }
}

/// Most events in a fresh batch (its count is taken modulo this plus one: 0 is an empty batch).
pub const MAX_BATCH: u8 = 4;

/// Most parts of a transaction; further ones are ignored.
pub const MAX_PARTS: usize = 4;

/// Most events a `for_each_*` op lets through before it breaks (0: it never breaks).
pub const MAX_STOP_AFTER: u8 = 5;

/// One of [`STREAMS`].
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Stream(pub u8);

impl Stream {
    pub fn id(self) -> u128 {
        STREAMS[usize::from(self.0) % STREAMS.len()]
    }
}

/// A choice among however many things there are when the op runs (earlier batches, events of a
/// batch, positions in the log): `index(len)` is in `0..len`. 0 picks the first.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Pick(pub u16);

impl Pick {
    pub fn index(self, len: usize) -> usize {
        assert!(len > 0, "a pick among nothing");
        usize::from(self.0) % len
    }
}

#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Forward,
    Backward,
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Direction {
        match d {
            Dir::Forward => Direction::Forward,
            Dir::Backward => Direction::Backward,
        }
    }
}

/// Through which API a write goes.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The blocking call (`append`, `append_batch`, `commit`).
    Sync,
    /// The async call, awaited on the harness's runtime (`append_async`, `append_batch_async`,
    /// `commit_async`).
    Async,
}

/// How `append` picks its version (`k` below is at least 1: 0 counts as 1).
#[derive(Arbitrary, Clone, Debug)]
pub enum VersionSel {
    /// current + 1: succeeds.
    Next,
    /// 0: `InvalidVersion`.
    Zero,
    /// current: a conflict on a stream with events, `InvalidVersion` (version 0) on an empty one.
    Current,
    /// current + 1 + k: conflict.
    Ahead(u8),
    /// current + 1 - k (at least 1).
    Behind(u8),
}

/// How a batch picks its expected version.
#[derive(Arbitrary, Clone, Debug)]
pub enum ExpSel {
    Any,
    NoStream,
    StreamExists,
    /// `Exact(current)`.
    ExactRight,
    /// `Exact(current ± d)`, d at least 1.
    ExactWrong(u8),
}

/// A batch of new events.
#[derive(Arbitrary, Clone, Debug)]
pub struct Fresh {
    pub stream: Stream,
    pub expected: ExpSel,
    /// Number of events, modulo `MAX_BATCH + 1`.
    pub n: u8,
    /// Make event `.1` reuse the id of event `.0` (when the batch has two or more and they differ).
    pub dup: Option<(Pick, Pick)>,
}

/// How a retry of an earlier batch differs from it.
#[derive(Arbitrary, Clone, Debug)]
pub enum Mutation {
    None,
    ChangePayload(Pick),
    DropFirst,
    DropLast,
    AddFresh,
    Reverse,
}

#[derive(Arbitrary, Clone, Debug)]
pub enum RetryExp {
    /// The expected version the original batch named.
    Same,
    Any,
    Other(ExpSel),
}

/// A batch submitted earlier (as a batch or a transaction's part), submitted again.
#[derive(Arbitrary, Clone, Debug)]
pub struct Reuse {
    pub which: Pick,
    /// Otherwise the next stream of [`STREAMS`].
    pub same_stream: bool,
    pub expected: RetryExp,
    pub mutation: Mutation,
}

/// One part of a multi-stream transaction.
#[derive(Arbitrary, Clone, Debug)]
pub enum Part {
    Fresh(Fresh),
    Retry(Reuse),
    /// An earlier part of this transaction again: its ids repeat within the transaction.
    Repeat(Pick),
}

#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    Append {
        stream: Stream,
        version: VersionSel,
        via: Via,
    },
    Batch {
        batch: Fresh,
        via: Via,
    },
    Retry {
        reuse: Reuse,
        via: Via,
    },
    Transaction {
        parts: Vec<Part>,
        via: Via,
    },
    FlushIndex,
    /// Crypto-shreds a stream (`NotEncrypted` on a plain store).
    Shred(Stream),
    /// Rotates the master key to a new one (`NotEncrypted` on a plain store).
    RotateKey,
    Reopen,
    Get(Pick),
    Envelope(Pick),
    ReadStream {
        stream: Stream,
        /// A version (`None`: `u64::MAX`).
        from: Option<Pick>,
        dir: Dir,
    },
    ReadLog {
        /// A sequence (`None`: `u64::MAX`).
        from: Option<Pick>,
        dir: Dir,
    },
    /// `read_filtered` of a category and an event type (`None`: any), through the label index
    /// up to the watermark and the log after it.
    ReadFiltered {
        category: Option<Cat>,
        event_type: Option<Ty>,
        /// A sequence (`None`: `u64::MAX`).
        from: Option<Pick>,
        dir: Dir,
    },
    ForEachLog {
        from: Option<Pick>,
        dir: Dir,
        stop_after: u8,
    },
    ForEachStream {
        stream: Stream,
        from: Option<Pick>,
        dir: Dir,
        stop_after: u8,
    },
    LastInStream(Stream),
    StreamVersion(Stream),
    Streams,
    /// Keeps a read transaction open (replacing the one kept before).
    Snapshot,
    /// Reads through the kept read transaction: it still sees the store as it was.
    CheckSnapshot,
}
