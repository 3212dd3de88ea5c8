//! Proptest strategies for the ops: in range, weighted towards writes, shrinking towards the
//! first stream, the first pick and fewer events.

use proptest::prelude::*;

use crate::harness::ops::{
    Cat, Dir, ExpSel, Fresh, Mutation, Op, Part, Pick, RetryExp, Reuse, Stream, Ty, VersionSel,
    Via, CATEGORIES, MAX_BATCH, MAX_PARTS, MAX_STOP_AFTER, STREAMS, TYPES,
};

fn pick() -> impl Strategy<Value = Pick> {
    any::<u16>().prop_map(Pick)
}

fn stream() -> impl Strategy<Value = Stream> {
    (0..STREAMS.len() as u8).prop_map(Stream)
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Forward), Just(Dir::Backward)]
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![3 => Just(Via::Sync), 1 => Just(Via::Async)]
}

/// A position to read from; mostly one in range (`None` reads from `u64::MAX`).
fn from() -> impl Strategy<Value = Option<Pick>> {
    proptest::option::weighted(0.85, pick())
}

fn stop_after() -> impl Strategy<Value = u8> {
    0..=MAX_STOP_AFTER
}

fn exp() -> impl Strategy<Value = ExpSel> {
    prop_oneof![
        2 => Just(ExpSel::Any),
        1 => Just(ExpSel::NoStream),
        1 => Just(ExpSel::StreamExists),
        3 => Just(ExpSel::ExactRight),
        1 => (1u8..4).prop_map(ExpSel::ExactWrong),
    ]
}

fn version() -> impl Strategy<Value = VersionSel> {
    prop_oneof![
        8 => Just(VersionSel::Next),
        1 => Just(VersionSel::Zero),
        1 => Just(VersionSel::Current),
        1 => (1u8..4).prop_map(VersionSel::Ahead),
        1 => (1u8..4).prop_map(VersionSel::Behind),
    ]
}

fn fresh() -> impl Strategy<Value = Fresh> {
    (
        stream(),
        exp(),
        prop_oneof![1 => Just(0u8), 30 => 1..=MAX_BATCH],
        proptest::option::weighted(0.1, (pick(), pick())),
    )
        .prop_map(|(stream, expected, n, dup)| Fresh {
            stream,
            expected,
            n,
            dup,
        })
}

fn reuse() -> impl Strategy<Value = Reuse> {
    (
        pick(),
        proptest::bool::weighted(0.85),
        prop_oneof![
            4 => Just(RetryExp::Same),
            1 => Just(RetryExp::Any),
            1 => exp().prop_map(RetryExp::Other),
        ],
        prop_oneof![
            5 => Just(Mutation::None),
            1 => pick().prop_map(Mutation::ChangePayload),
            1 => Just(Mutation::DropFirst),
            1 => Just(Mutation::DropLast),
            1 => Just(Mutation::AddFresh),
            1 => Just(Mutation::Reverse),
        ],
    )
        .prop_map(|(which, same_stream, expected, mutation)| Reuse {
            which,
            same_stream,
            expected,
            mutation,
        })
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        3 => fresh().prop_map(Part::Fresh),
        4 => reuse().prop_map(Part::Retry),
        1 => pick().prop_map(Part::Repeat),
    ]
}

/// The ops of a run on a plain or an encrypted store: shredding, which a plain store refuses
/// (always the same way), is more frequent on an encrypted one.
pub fn op(encrypted: bool) -> impl Strategy<Value = Op> {
    let shred = if encrypted { 3 } else { 1 };
    prop_oneof![
        8 => (stream(), version(), via())
            .prop_map(|(stream, version, via)| Op::Append { stream, version, via }),
        8 => (fresh(), via()).prop_map(|(batch, via)| Op::Batch { batch, via }),
        4 => (reuse(), via()).prop_map(|(reuse, via)| Op::Retry { reuse, via }),
        4 => (proptest::collection::vec(part(), 0..=MAX_PARTS), via())
            .prop_map(|(parts, via)| Op::Transaction { parts, via }),
        1 => Just(Op::FlushIndex),
        shred => stream().prop_map(Op::Shred),
        1 => Just(Op::RotateKey),
        1 => Just(Op::Reopen),
        2 => pick().prop_map(Op::Get),
        1 => pick().prop_map(Op::Envelope),
        2 => (stream(), from(), dir())
            .prop_map(|(stream, from, dir)| Op::ReadStream { stream, from, dir }),
        2 => (from(), dir()).prop_map(|(from, dir)| Op::ReadLog { from, dir }),
        3 => (
            proptest::option::weighted(0.8, (0..CATEGORIES.len() as u8).prop_map(Cat)),
            proptest::option::weighted(0.5, (0..TYPES.len() as u8).prop_map(Ty)),
            from(),
            dir(),
        )
            .prop_map(|(category, event_type, from, dir)| Op::ReadFiltered {
                category,
                event_type,
                from,
                dir,
            }),
        2 => (from(), dir(), stop_after())
            .prop_map(|(from, dir, stop_after)| Op::ForEachLog { from, dir, stop_after }),
        2 => (stream(), from(), dir(), stop_after()).prop_map(
            |(stream, from, dir, stop_after)| Op::ForEachStream { stream, from, dir, stop_after }
        ),
        1 => stream().prop_map(Op::LastInStream),
        1 => stream().prop_map(Op::StreamVersion),
        1 => Just(Op::Streams),
        1 => Just(Op::Snapshot),
        1 => Just(Op::CheckSnapshot),
    ]
}
