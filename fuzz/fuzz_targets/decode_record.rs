//! Fuzzes the record decoder (`varvedb::fuzzing::decode_record`: header and payload checksums,
//! header fields, rkyv bytecheck of the payload). See `src/lib.rs` of this crate for the input
//! format. Invariants checked:
//!
//! - the decoder never panics, on any bytes under any sequence;
//! - a valid record decodes to its version, and its payload deserializes to the event encoded;
//! - a modified record (bit flips, overwrites, copies, truncation, extension) is never accepted:
//!   it decodes to `Error::Corrupted` under its sequence unless it is byte-identical to the
//!   original;
//! - with checksums re-sealed, the decoder accepts a payload only when rkyv's own validator does,
//!   and a record whose header is untouched is never reported as corrupted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varvedb::error::Error;
use varvedb::fuzzing::decode_record;
use varvedb_fuzz::{
    check_payload, reseal, Cursor, EventSpec, FuzzEvent, Op, MAX_OPS, MODES, MODE_CORRUPT, MODE_RAW,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % MODES {
        MODE_RAW => raw(rest),
        MODE_CORRUPT => structured(rest, false),
        _ => structured(rest, true),
    }
});

/// Arbitrary bytes under an arbitrary sequence, and under the sequence they claim to hold.
fn raw(data: &[u8]) {
    let mut c = Cursor::new(data);
    let seq = c.u64();
    let rec = c.rest();
    let _ = decode_checked(seq, rec);
    if rec.len() >= 24 {
        let stored = u64::from_le_bytes(rec[16..24].try_into().expect("8 bytes"));
        let _ = decode_checked(stored, rec);
    }
}

/// Decodes; whenever the decoder accepts the payload, rkyv's validator must accept it too.
fn decode_checked(seq: u64, rec: &[u8]) -> Result<u64, Error> {
    let res = decode_record::<FuzzEvent>(seq, rec);
    match &res {
        Ok(_) => assert!(
            check_payload(rec).is_some(),
            "decoder accepted a payload rkyv rejects"
        ),
        Err(Error::Corrupted { seq: s, .. }) | Err(Error::InvalidPayload { seq: s, .. }) => {
            assert_eq!(*s, seq, "error names the wrong sequence: {res:?}");
        }
        Err(other) => panic!("unexpected error kind from the decoder: {other:?}"),
    }
    res
}

fn structured(data: &[u8], reseal_after: bool) {
    let mut c = Cursor::new(data);
    let spec = EventSpec::parse(&mut c);
    let original = spec.encode();
    // A record fresh from the encoder must decode, to its version and to the event.
    match decode_record::<FuzzEvent>(spec.seq, &original) {
        Ok(v) => assert_eq!(v, spec.version, "decoded the wrong version"),
        Err(e) => panic!("valid record rejected: {e:?}\nspec: {spec:?}"),
    }
    assert_eq!(
        check_payload(&original).as_ref(),
        Some(&spec.event),
        "payload does not round-trip"
    );

    let mut rec = original.clone();
    let mut ops = 0;
    while !c.is_empty() && ops < MAX_OPS {
        Op::parse(&mut c).apply(&mut rec);
        ops += 1;
    }

    if !reseal_after {
        let res = decode_record::<FuzzEvent>(spec.seq, &rec);
        if rec == original {
            assert_eq!(res.ok(), Some(spec.version));
        } else {
            assert!(
                matches!(res, Err(Error::Corrupted { seq, .. }) if seq == spec.seq),
                "modified record not reported as corrupted: {res:?}\noriginal: {original:?}\nmodified: {rec:?}"
            );
        }
        return;
    }

    reseal(&mut rec);
    let res = decode_checked(spec.seq, &rec);
    let header_intact = rec.len() == original.len()
        && varvedb_fuzz::layout(&original).is_some_and(|(po, _)| rec[8..po] == original[8..po]);
    if header_intact {
        assert!(
            !matches!(res, Err(Error::Corrupted { .. })),
            "re-sealed record with an intact header reported as corrupted: {res:?}"
        );
        if let Ok(v) = res {
            assert_eq!(v, spec.version);
        }
    }
}
