//! Fuzzes the payload of an event of an older version read through upcasting, and of the current
//! version read directly (`varvedb::fuzzing::read_payload`): arbitrary bytes stored as the
//! payload of a record under a known (name, version), read by a reader of that version or of a
//! newer one. See `src/upcast.rs` of this crate for the types and the input format. Invariants:
//!
//! - reading never panics;
//! - it yields a value exactly when the bytes are a valid archive (rkyv's bytecheck) of the type
//!   of the version they are stored under; never a value otherwise, and a valid archive is never
//!   refused;
//! - the values are the archive's value taken through the same `Upcast` and `Split` steps up to
//!   the reader's version (several when a step splits), and they are upcast exactly when it was
//!   stored at an older version;
//! - the only error is `InvalidPayload` for the record's sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varvedb::error::Error;
use varvedb::fuzzing::read_payload;
use varvedb_fuzz::upcast::{check_as, name_of, AnyUp, UpV2, UpV3, UpV4, CASES};

fuzz_target!(|data: &[u8]| {
    let [select, flags, payload @ ..] = data else {
        return;
    };
    let case = CASES[usize::from(*select) % CASES.len()];
    let misalign = flags & 1 == 1;
    let name = name_of(case.stored);
    let read = match case.reader {
        2 => read_payload::<UpV2>(name, case.stored, payload, misalign).map(|r| {
            r.map(|(v, upcast)| (v.into_iter().map(AnyUp::V2).collect::<Vec<_>>(), upcast))
        }),
        3 => read_payload::<UpV3>(name, case.stored, payload, misalign).map(|r| {
            r.map(|(v, upcast)| (v.into_iter().map(AnyUp::V3).collect::<Vec<_>>(), upcast))
        }),
        _ => read_payload::<UpV4>(name, case.stored, payload, misalign).map(|r| {
            r.map(|(v, upcast)| (v.into_iter().map(AnyUp::V4).collect::<Vec<_>>(), upcast))
        }),
    }
    .unwrap_or_else(|| panic!("{case:?}: the reader has no way to read it"));
    let valid = check_as(case.stored, payload);
    match (read, valid) {
        (Ok((value, upcast)), Some(stored)) => {
            assert_eq!(upcast, case.stored < case.reader, "{case:?}: upcast flag");
            assert_eq!(value, stored.at(case.reader), "{case:?}: value");
        }
        (Ok((value, _)), None) => panic!(
            "{case:?}: a value from bytes that are not a valid archive of v{}: {value:?}",
            case.stored
        ),
        (Err(Error::InvalidPayload { seq: 1, .. }), None) => {}
        (Err(e), Some(stored)) => {
            panic!(
                "{case:?}: a valid archive of v{} refused: {e:?}\n{stored:?}",
                case.stored
            )
        }
        (Err(e), None) => panic!("{case:?}: unexpected error: {e:?}"),
    }
});
