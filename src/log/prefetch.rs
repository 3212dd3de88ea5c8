//! Prefetch hints for a forward scan of the log.
//!
//! A scan is bound by memory latency, not by instructions: a record spans four or five cache
//! lines, and decoding reaches them one after another (the payload's offset depends on header
//! fields), so on a cold record each line's miss is taken in turn. Asking for the next records'
//! lines while this one is decoded lets the misses overlap. Hints only: they change no data and
//! never fault. (Point reads were tried too and measured no faster, so they take no hint.)
#![allow(unsafe_code)]

const LINE: usize = 64;

/// How far ahead of the current record a forward log scan prefetches: about two records of a
/// typical size.
pub(crate) const SCAN_AHEAD: usize = 512;

/// Hints the CPU to load every cache line of `[start, end)`. Any addresses may be given: a
/// prefetch of an unmapped address is dropped, not a fault.
#[inline(always)]
fn lines(start: usize, end: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut line = start & !(LINE - 1);
        while line < end {
            // SAFETY: `prefetcht0` is a hint with no architectural effect: it never faults (on
            // any address, mapped or not), reads nothing into the program and writes nothing.
            // SSE, which the intrinsic requires, is part of the x86_64 baseline. The pointer is
            // never dereferenced.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, end);
}

/// In a forward scan of `log`, starts loading the records that follow `value`. LMDB fills a leaf
/// page from its end downwards, so the records appended after this one (the next ones of the
/// scan) lie in the [`SCAN_AHEAD`] bytes just below it in the map. Near the end of a page the
/// hint also covers the page's node pointers, or the page below it: wasted loads, nothing more.
#[inline(always)]
pub(crate) fn after_in_log(value: &[u8]) {
    let start = value.as_ptr() as usize;
    lines(start.saturating_sub(SCAN_AHEAD), start);
}
