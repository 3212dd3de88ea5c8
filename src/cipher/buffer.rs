//! Aligned buffers for decrypted events, reused through a small per-thread pool so that an
//! encrypted read does not allocate once the pool is warm.

use std::cell::RefCell;
use std::ops::Deref;

use rkyv::util::AlignedVec;

/// Alignment of decrypted payloads (rkyv archives need at most 16).
const ALIGN: usize = 16;
/// Buffers kept per thread.
const POOL: usize = 8;
/// Buffers larger than this are freed rather than pooled.
const KEEP_MAX: usize = 1 << 20;

thread_local! {
    static FREE: RefCell<Vec<AlignedVec<ALIGN>>> = const { RefCell::new(Vec::new()) };
}

/// A 16-byte aligned buffer holding one decrypted event; back to its thread's pool on drop.
pub(crate) struct PlainBuf {
    buf: AlignedVec<ALIGN>,
}

impl PlainBuf {
    /// A buffer holding a copy of `bytes`, taken from the pool when one is free.
    pub(crate) fn copy_of(bytes: &[u8]) -> PlainBuf {
        let mut buf = FREE
            .try_with(|f| f.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        PlainBuf { buf }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.buf.resize(len, 0);
    }
}

impl Deref for PlainBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl Drop for PlainBuf {
    fn drop(&mut self) {
        if self.buf.capacity() > KEEP_MAX {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < POOL {
                f.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let a = PlainBuf::copy_of(&[1, 2, 3]);
        assert_eq!(&a[..], &[1, 2, 3]);
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        let ptr = a.as_ptr();
        drop(a);
        let b = PlainBuf::copy_of(&[4, 5]);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer is reused");
        assert_eq!(&b[..], &[4, 5]);
    }
}
