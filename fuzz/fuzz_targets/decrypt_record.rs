//! Fuzzes the encrypted read path (`varvedb::fuzzing::decrypt_record`: checksums, header
//! fields, AES-256-GCM authentication of the sealed metadata and payload, rkyv bytecheck of the
//! decrypted payload). Same input format as `decode_record` (see `src/lib.rs` of this crate), so
//! the two targets share seeds. Invariants checked:
//!
//! - decrypting never panics, on any bytes under any sequence and key;
//! - a freshly sealed record decrypts to its version and its event, and only under its own key
//!   and store id;
//! - a modified record, even with both checksums re-sealed, never decrypts to anything but the
//!   original event and envelope: every change to an authenticated byte (the header fields, the
//!   nonce, the key version, the ciphertext, the tag) is rejected;
//! - errors are only `Corrupted`, `Decryption` or `InvalidPayload`, naming the record's sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varvedb::error::Error;
use varvedb::fuzzing::decrypt_record;
use varvedb_fuzz::{reseal, Cursor, EventSpec, FuzzEvent, Op, MAX_OPS, MODES, MODE_RAW};

const KEY: [u8; 32] = [0x5A; 32];
const STORE: u128 = 0x0123_4567_89AB_CDEF;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % MODES == MODE_RAW {
        let mut c = Cursor::new(rest);
        let seq = c.u64();
        let _ = checked(seq, c.rest(), &KEY, STORE);
        return;
    }
    let mut c = Cursor::new(rest);
    let spec = EventSpec::parse(&mut c);
    let original = spec.encode_sealed(&KEY, STORE);
    match decrypt_record::<FuzzEvent>(spec.seq, &original, &KEY, STORE) {
        Ok(v) => assert_eq!(v, spec.version),
        Err(e) => panic!("valid sealed record rejected: {e:?}\nspec: {spec:?}"),
    }
    assert!(matches!(
        decrypt_record::<FuzzEvent>(spec.seq, &original, &[0xA5; 32], STORE),
        Err(Error::Decryption { .. })
    ));
    assert!(matches!(
        decrypt_record::<FuzzEvent>(spec.seq, &original, &KEY, STORE ^ 1),
        Err(Error::Decryption { .. })
    ));

    let mut rec = original.clone();
    let mut ops = 0;
    while !c.is_empty() && ops < MAX_OPS {
        Op::parse(&mut c).apply(&mut rec);
        ops += 1;
    }
    reseal(&mut rec);
    if checked(spec.seq, &rec, &KEY, STORE).is_ok() {
        // Accepted: it must be the original event at the original place. Bytes outside the
        // authenticated data (zero padding, re-sealed checksums) may differ.
        let same = |r: &[u8], a: std::ops::Range<usize>| r.get(a.clone()) == original.get(a);
        assert!(rec.len() == original.len(), "a resized record was accepted");
        assert!(same(&rec, 8..88), "a changed header was accepted");
        let (po, _) = varvedb_fuzz::layout(&original).expect("a valid layout");
        assert!(
            same(&rec, 88..po - 16),
            "changed ids, nonce or type accepted"
        );
        let sealed_len = u32::from_le_bytes(original[80..84].try_into().unwrap()) as usize;
        assert!(
            same(&rec, po..po + sealed_len),
            "a changed ciphertext was accepted"
        );
    }
});

fn checked(seq: u64, rec: &[u8], key: &[u8; 32], store: u128) -> Result<u64, Error> {
    let res = decrypt_record::<FuzzEvent>(seq, rec, key, store);
    match &res {
        Ok(_) => {}
        Err(Error::Corrupted { seq: s, .. })
        | Err(Error::Decryption { seq: s, .. })
        | Err(Error::InvalidPayload { seq: s, .. }) => {
            assert_eq!(*s, seq, "error names the wrong sequence: {res:?}");
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
    res
}
