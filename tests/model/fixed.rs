//! Hand-written sequences that the random search might reach only rarely.

use crate::harness::ops::{
    Dir, ExpSel, Fresh, Mutation, Op, Part, Pick, RetryExp, Reuse, Stream, VersionSel, Via,
};
use crate::run;

fn append(stream: u8, version: VersionSel) -> Op {
    Op::Append {
        stream: Stream(stream),
        version,
        via: Via::Sync,
    }
}

fn fresh(stream: u8, expected: ExpSel, n: u8) -> Fresh {
    Fresh {
        stream: Stream(stream),
        expected,
        n,
        dup: None,
    }
}

fn batch(stream: u8, expected: ExpSel, n: u8) -> Op {
    Op::Batch {
        batch: fresh(stream, expected, n),
        via: Via::Sync,
    }
}

/// The `which`-th batch submitted (a transaction's parts count one each).
fn again(which: u16, expected: RetryExp, mutation: Mutation, same_stream: bool) -> Reuse {
    Reuse {
        which: Pick(which),
        same_stream,
        expected,
        mutation,
    }
}

fn retry(which: u16, expected: RetryExp, mutation: Mutation, same_stream: bool) -> Op {
    Op::Retry {
        reuse: again(which, expected, mutation, same_stream),
        via: Via::Sync,
    }
}

fn exact_retry(which: u16) -> Part {
    Part::Retry(again(which, RetryExp::Same, Mutation::None, true))
}

fn tx(parts: Vec<Part>) -> Op {
    Op::Transaction {
        parts,
        via: Via::Sync,
    }
}

fn read_all() -> Vec<Op> {
    let mut ops = vec![
        Op::Streams,
        Op::ReadLog {
            from: None,
            dir: Dir::Backward,
        },
        Op::ForEachLog {
            from: Some(Pick(0)),
            dir: Dir::Forward,
            stop_after: 0,
        },
    ];
    for s in 0..5 {
        ops.push(Op::ReadStream {
            stream: Stream(s),
            from: Some(Pick(0)),
            dir: Dir::Forward,
        });
        ops.push(Op::ForEachStream {
            stream: Stream(s),
            from: None,
            dir: Dir::Backward,
            stop_after: 0,
        });
        ops.push(Op::LastInStream(Stream(s)));
    }
    ops.extend((0..12).map(|i| Op::Get(Pick(i))));
    ops
}

#[test]
fn model_fixed_sequences() {
    use Op::*;
    let plain: Vec<Vec<Op>> = vec![
        // A batch, its exact retry before and after a reopen and after other writes.
        vec![
            batch(1, ExpSel::NoStream, 3),
            retry(0, RetryExp::Same, Mutation::None, true),
            append(1, VersionSel::Next),
            retry(0, RetryExp::Same, Mutation::None, true),
            Reopen,
            retry(0, RetryExp::Any, Mutation::None, true),
            retry(0, RetryExp::Other(ExpSel::NoStream), Mutation::None, true),
            retry(
                0,
                RetryExp::Other(ExpSel::StreamExists),
                Mutation::None,
                true,
            ),
            retry(0, RetryExp::Same, Mutation::DropFirst, true),
            retry(0, RetryExp::Same, Mutation::DropLast, true),
            retry(0, RetryExp::Same, Mutation::Reverse, true),
            retry(0, RetryExp::Same, Mutation::AddFresh, true),
            retry(0, RetryExp::Same, Mutation::None, false),
            Streams,
        ],
        // Conflicts of every kind on empty and non-empty streams, then reads.
        vec![
            batch(0, ExpSel::StreamExists, 2),
            batch(0, ExpSel::ExactWrong(1), 2),
            batch(0, ExpSel::NoStream, 0),
            append(0, VersionSel::Zero),
            append(0, VersionSel::Ahead(2)),
            batch(0, ExpSel::ExactRight, 4),
            batch(0, ExpSel::NoStream, 1),
            batch(0, ExpSel::ExactWrong(2), 1),
            append(0, VersionSel::Current),
            Snapshot,
            batch(4, ExpSel::Any, 2),
            CheckSnapshot,
            Streams,
        ],
        // Transactions: parts that see the parts before them, an exact retry of a whole
        // transaction, a conflict that leaves nothing, a part refused for reusing ids, empty
        // transactions, a retried part followed by a failing one.
        vec![
            tx(vec![
                Part::Fresh(fresh(0, ExpSel::NoStream, 2)),
                Part::Fresh(fresh(1, ExpSel::NoStream, 1)),
                Part::Fresh(fresh(0, ExpSel::ExactRight, 1)),
            ]),
            tx(vec![exact_retry(0), exact_retry(1), exact_retry(2)]),
            tx(vec![
                Part::Fresh(fresh(2, ExpSel::NoStream, 1)),
                Part::Fresh(fresh(0, ExpSel::NoStream, 1)),
            ]),
            StreamVersion(Stream(2)),
            tx(vec![
                Part::Fresh(fresh(3, ExpSel::Any, 2)),
                Part::Repeat(Pick(0)),
            ]),
            tx(vec![]),
            tx(vec![Part::Fresh(fresh(4, ExpSel::Any, 0))]),
            Op::Transaction {
                parts: vec![Part::Fresh(fresh(4, ExpSel::NoStream, 1)), exact_retry(1)],
                via: Via::Async,
            },
            tx(vec![
                exact_retry(0),
                Part::Fresh(fresh(1, ExpSel::ExactWrong(1), 1)),
            ]),
            tx(vec![Part::Retry(again(
                0,
                RetryExp::Same,
                Mutation::DropLast,
                true,
            ))]),
            Reopen,
        ],
        // Index flushes between writes, a snapshot that outlives them, async writes.
        vec![
            batch(0, ExpSel::NoStream, 4),
            FlushIndex,
            FlushIndex,
            Snapshot,
            Op::Batch {
                batch: fresh(1, ExpSel::Any, 2),
                via: Via::Async,
            },
            Op::Append {
                stream: Stream(1),
                version: VersionSel::Next,
                via: Via::Async,
            },
            Op::Append {
                stream: Stream(1),
                version: VersionSel::Zero,
                via: Via::Async,
            },
            Op::Retry {
                reuse: again(0, RetryExp::Same, Mutation::None, true),
                via: Via::Async,
            },
            FlushIndex,
            CheckSnapshot,
            Reopen,
            FlushIndex,
        ],
        // Shredding and key rotation are refused on a plain store.
        vec![batch(0, ExpSel::Any, 1), Shred(Stream(0)), RotateKey],
        // Reopening right after a batch of `index_interval` events, which has the store's
        // background thread flush the index (and then, holding the last handle, close the
        // store): opening must wait for that store to close, whatever it is writing meanwhile.
        // The first two ops are the fuzz target's input `fuzz/seeds/model/reopen-while-closing`.
        [CheckSnapshot, batch(4, ExpSel::Any, 4)]
            .into_iter()
            .chain((0..20).flat_map(|_| [Reopen, batch(4, ExpSel::Any, 3)]))
            .collect(),
    ];
    for ops in &plain {
        run(ops, false);
    }
    let mut shredding = vec![
        append(1, VersionSel::Next),
        batch(2, ExpSel::Any, 2),
        batch(1, ExpSel::ExactRight, 2),
        append(2, VersionSel::Next),
        Snapshot,
        Shred(Stream(1)),
        Shred(Stream(1)),
        // A stream without events is burned too.
        Shred(Stream(3)),
        CheckSnapshot,
    ];
    shredding.extend(read_all());
    shredding.extend([
        Envelope(Pick(1)),
        append(1, VersionSel::Next),
        append(1, VersionSel::Zero),
        batch(3, ExpSel::NoStream, 1),
        batch(1, ExpSel::Any, 0),
        retry(1, RetryExp::Same, Mutation::None, true),
        retry(0, RetryExp::Same, Mutation::None, true),
        // A shredded stream fails a transaction before its parts are checked.
        tx(vec![
            Part::Fresh(fresh(2, ExpSel::ExactWrong(1), 1)),
            Part::Fresh(fresh(1, ExpSel::Any, 1)),
        ]),
        RotateKey,
        batch(4, ExpSel::Any, 1),
        RotateKey,
        Reopen,
        Shred(Stream(1)),
        append(2, VersionSel::Next),
    ]);
    shredding.extend(read_all());
    run(&shredding, true);
}
