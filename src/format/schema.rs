//! The entries of the `schemas` database (`docs/format.md`): for each (event type name, schema
//! version) the log holds events of, the fingerprint of the layout they were written with, or a
//! mark that it is not known (events written before the store kept fingerprints).
//!
//! ```text
//! key:   u16 name_len (big-endian) ‖ name (UTF-8) ‖ u16 schema_version (big-endian)
//! value: u8 kind (0 = layout not known, 1 = fingerprint) ‖ [u8; 16] fingerprint (little-endian;
//!        zero when not known)
//!    or: u8 kind (2 = renamed) ‖ new name (UTF-8, 1 to 1,024 bytes)
//! ```
//!
//! A renamed entry (format 5) says that the events of the key's name, from the key's version
//! on, are stored under the new name: written when a type whose older versions have another
//! name is first written, so that a build that knows only the older name meets the newer events
//! as versions it cannot read instead of as a type it does not know.

use crate::error::{DamagedEntry, Error, Result};
use crate::event::Fingerprint;

/// Length of a value.
pub(crate) const VALUE_LEN: usize = 17;

/// What the store knows of the layout of one (name, version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registered {
    /// Written with this layout.
    Layout(Fingerprint),
    /// Written before the store kept fingerprints, or imported without one: any layout is
    /// taken for it, validated by the archive's own checks only.
    Unknown,
    /// The type's events from this version on are stored under another name (see the module
    /// documentation): no event is stored under this name and version.
    Renamed,
}

/// The key of `name` at `version`.
pub(crate) fn key(name: &[u8], version: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 4);
    key_into(&mut key, name, version);
    key
}

/// Writes the key of `name` at `version` into `key`, replacing what it held.
pub(crate) fn key_into(key: &mut Vec<u8>, name: &[u8], version: u16) {
    key.clear();
    key.extend_from_slice(&(name.len() as u16).to_be_bytes());
    key.extend_from_slice(name);
    key.extend_from_slice(&version.to_be_bytes());
}

/// Splits a key into its name and version.
///
/// # Errors
///
/// [`Error::Damaged`] for a key that is not one.
pub(crate) fn parse_key(key: &[u8]) -> Result<(&[u8], u16)> {
    let damaged = || Error::Damaged {
        entry: DamagedEntry::SchemaKey,
        reason: format!(
            "a key of {} bytes that does not hold a name and a version",
            key.len()
        ),
    };
    let len = u16::from_be_bytes(
        key.get(..2)
            .ok_or_else(damaged)?
            .try_into()
            .unwrap_or([0; 2]),
    );
    let len = len as usize;
    if key.len() != len + 4 {
        return Err(damaged());
    }
    let version = u16::from_be_bytes([key[len + 2], key[len + 3]]);
    Ok((&key[2..2 + len], version))
}

/// Kind byte of a renamed entry.
const KIND_RENAMED: u8 = 2;

/// The value for `registered` (a layout, or one not known).
pub(crate) fn encode(registered: Registered) -> [u8; VALUE_LEN] {
    let mut value = [0u8; VALUE_LEN];
    if let Registered::Layout(fingerprint) = registered {
        value[0] = 1;
        value[1..].copy_from_slice(&fingerprint.to_bytes());
    }
    value
}

/// The value of a renamed entry: the events are stored under `new_name` from its key's version
/// on.
pub(crate) fn encode_renamed(new_name: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + new_name.len());
    value.push(KIND_RENAMED);
    value.extend_from_slice(new_name.as_bytes());
    value
}

/// The new name of a renamed entry's value, `None` for a value of another kind.
///
/// # Errors
///
/// [`Error::Damaged`] for a renamed entry whose name is not one.
pub(crate) fn renamed_to<'v>(
    name: &[u8],
    version: u16,
    value: &'v [u8],
) -> Result<Option<&'v str>> {
    if value.first() != Some(&KIND_RENAMED) {
        return Ok(None);
    }
    let new_name = std::str::from_utf8(&value[1..])
        .ok()
        .filter(|n| !n.is_empty() && n.len() <= crate::format::record::MAX_EVENT_TYPE_LEN)
        .ok_or_else(|| Error::Damaged {
            entry: DamagedEntry::Schema {
                event_type: String::from_utf8_lossy(name).into_owned(),
                version,
            },
            reason: format!(
                "a renamed entry whose new name ({} bytes) is not a valid event type name",
                value.len() - 1
            ),
        })?;
    Ok(Some(new_name))
}

/// Decodes the value of `name` at `version`.
///
/// # Errors
///
/// [`Error::Damaged`] naming the entry, for a value that is not one.
pub(crate) fn decode(name: &[u8], version: u16, value: &[u8]) -> Result<Registered> {
    let damaged = |reason: String| Error::Damaged {
        entry: DamagedEntry::Schema {
            event_type: String::from_utf8_lossy(name).into_owned(),
            version,
        },
        reason,
    };
    if renamed_to(name, version, value)?.is_some() {
        return Ok(Registered::Renamed);
    }
    let value: &[u8; VALUE_LEN] = value
        .try_into()
        .map_err(|_| damaged(format!("a value of {} bytes, not {VALUE_LEN}", value.len())))?;
    let fingerprint: [u8; 16] = value[1..].try_into().unwrap_or([0; 16]);
    match value[0] {
        0 if fingerprint == [0; 16] => Ok(Registered::Unknown),
        1 => Ok(Registered::Layout(Fingerprint::from_bytes(fingerprint))),
        kind => Err(damaged(format!("kind {kind} is not 0, 1 or 2"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_and_damage_is_an_error() {
        let k = key(b"OrderPlaced", 3);
        assert_eq!(parse_key(&k).unwrap(), (&b"OrderPlaced"[..], 3));
        assert!(parse_key(&k[..k.len() - 1]).is_err());
        assert!(parse_key(&[0]).is_err());
        for r in [
            Registered::Unknown,
            Registered::Layout(Fingerprint(0xABCD << 70)),
        ] {
            assert_eq!(decode(b"T", 1, &encode(r)).unwrap(), r);
        }
        let mut bad = encode(Registered::Unknown);
        bad[5] = 1;
        assert!(matches!(decode(b"T", 1, &bad), Err(Error::Damaged { .. })));
        bad[0] = 3;
        assert!(matches!(decode(b"T", 1, &bad), Err(Error::Damaged { .. })));
        let renamed = encode_renamed("LineAdded");
        assert_eq!(decode(b"T", 1, &renamed).unwrap(), Registered::Renamed);
        assert_eq!(renamed_to(b"T", 1, &renamed).unwrap(), Some("LineAdded"));
        assert_eq!(
            renamed_to(b"T", 1, &encode(Registered::Unknown)).unwrap(),
            None
        );
        assert!(matches!(decode(b"T", 1, &[2]), Err(Error::Damaged { .. })));
        assert!(matches!(
            decode(b"T", 1, &[2, 0xFF, 0xFE]),
            Err(Error::Damaged { .. })
        ));
        assert!(matches!(
            decode(b"T", 1, &bad[..3]),
            Err(Error::Damaged { .. })
        ));
    }
}
