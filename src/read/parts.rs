//! The events of one record: the record's event, or the parts an upcast split it into
//! ([`Split`](crate::Split)), handed out in the order of a read's direction.

use std::ops::ControlFlow;

use super::readable::Readable;

/// Calls `f` with each event read from one record, in `backward`'s order: the view itself, or,
/// when an upcast split the record, each of its parts (the last first when `backward`). Stops
/// at the first break of `f`, with it.
#[inline(always)]
pub(crate) fn each<'t, R: Readable, B>(
    view: R::View<'t>,
    backward: bool,
    mut f: impl FnMut(R::View<'t>) -> ControlFlow<B>,
) -> ControlFlow<B> {
    if !R::is_split(&view) {
        return f(view);
    }
    for part in all::<R>(view, backward) {
        f(part)?;
    }
    ControlFlow::Continue(())
}

/// Every part of a split record's first view, in `backward`'s order.
#[cold]
#[inline(never)]
pub(crate) fn all<'t, R: Readable>(mut first: R::View<'t>, backward: bool) -> Vec<R::View<'t>> {
    let rest = R::split_off(&mut first);
    let mut parts = Vec::with_capacity(rest.len() + 1);
    parts.push(first);
    parts.extend(rest);
    if backward {
        parts.reverse();
    }
    parts
}
