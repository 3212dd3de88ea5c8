//! CRC-32C (Castagnoli), the checksum of records and stream heads.
//!
//! Records are checksummed on every read, so this is on the hottest path of a scan. The `crc32c`
//! crate is built for long buffers (three interleaved lanes joined with lookup tables); for the
//! 50–300 byte regions of typical records its set-up cost dominates, and a plain loop of the
//! SSE 4.2 `crc32` instruction over 8-byte words runs about three times fewer instructions.
//! Other CPUs use the crate.
#![allow(unsafe_code)]

/// CRC-32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `crc32c_sse42` only requires SSE 4.2, which the CPU was just checked to
            // support; it reads nothing but `data`.
            return unsafe { crc32c_sse42(data) };
        }
    }
    crc32c::crc32c(data)
}

/// CRC-32C of `a` and of `b`, computed in one interleaved pass. The `crc32` instruction has a
/// latency of three cycles and a throughput of one per cycle, so two independent chains cost
/// little more than one: a full record check (header and payload) runs at nearly the speed of
/// the longer of the two.
#[inline]
pub(crate) fn crc32c_pair(a: &[u8], b: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `crc32c_pair_sse42` only requires SSE 4.2, which the CPU was just checked
            // to support; it reads nothing but `a` and `b`.
            return unsafe { crc32c_pair_sse42(a, b) };
        }
    }
    (crc32c::crc32c(a), crc32c::crc32c(b))
}

/// CRC-32C of `data` followed by `more`.
#[inline]
pub(crate) fn crc32c_append(crc: u32, more: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, more)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let (words, tail) = data.as_chunks::<8>();
    let mut crc = u64::from(u32::MAX);
    for word in words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(*word));
    }
    let mut crc = crc as u32;
    for &byte in tail {
        crc = _mm_crc32_u8(crc, byte);
    }
    !crc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_pair_sse42(a: &[u8], b: &[u8]) -> (u32, u32) {
    use std::arch::x86_64::_mm_crc32_u64;
    let (wa, ta) = a.as_chunks::<8>();
    let (wb, tb) = b.as_chunks::<8>();
    let both = wa.len().min(wb.len());
    let (mut ca, mut cb) = (u64::from(u32::MAX), u64::from(u32::MAX));
    for (x, y) in wa[..both].iter().zip(&wb[..both]) {
        ca = _mm_crc32_u64(ca, u64::from_le_bytes(*x));
        cb = _mm_crc32_u64(cb, u64::from_le_bytes(*y));
    }
    let finish = |mut crc: u64, words: &[[u8; 8]], tail: &[u8]| {
        for word in words {
            crc = _mm_crc32_u64(crc, u64::from_le_bytes(*word));
        }
        let mut crc = crc as u32;
        for &byte in tail {
            crc = std::arch::x86_64::_mm_crc32_u8(crc, byte);
        }
        !crc
    };
    (finish(ca, &wa[both..], ta), finish(cb, &wb[both..], tb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_implementation() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for start in 0..16 {
            for len in [0, 1, 7, 8, 9, 63, 64, 100, 513, 984] {
                let slice = &data[start..start + len];
                assert_eq!(
                    crc32c(slice),
                    crc32c::crc32c(slice),
                    "start {start} len {len}"
                );
            }
        }
        for (x, y) in [(0, 0), (3, 100), (100, 3), (64, 64), (9, 500)] {
            assert_eq!(
                crc32c_pair(&data[..x], &data[1..1 + y]),
                (crc32c::crc32c(&data[..x]), crc32c::crc32c(&data[1..1 + y]))
            );
        }
        assert_eq!(
            crc32c_append(crc32c(&data[..10]), &data[10..100]),
            crc32c(&data[..100])
        );
    }
}
