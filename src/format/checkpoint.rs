//! The layout of a processor checkpoint: the last global sequence a named processor handled,
//! bound to its name by a checksum (`docs/format.md`, "checkpoints").

use crate::error::{DamagedEntry, Error, Result};
use crate::format::checksum::{crc32c, crc32c_append};

/// Longest processor name, in bytes.
pub const MAX_PROCESSOR_NAME_LEN: usize = 255;

/// Checks a processor name: 1 to [`MAX_PROCESSOR_NAME_LEN`] bytes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_PROCESSOR_NAME_LEN {
        return Err(Error::InvalidProcessorName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// `seq` (u64 LE) then the CRC-32C of the name and those 8 bytes.
pub(crate) fn encode(name: &str, seq: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c_append(crc32c(name.as_bytes()), &v[..8]);
    v[8..].copy_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes the checkpoint of processor `name`.
pub(crate) fn decode(name: &str, bytes: &[u8]) -> Result<u64> {
    let bad = |reason: &str| Error::Damaged {
        entry: DamagedEntry::Checkpoint {
            processor: name.to_string(),
        },
        reason: reason.to_string(),
    };
    let bytes: &[u8; 12] = bytes.try_into().map_err(|_| bad("not 12 bytes long"))?;
    let seq = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
    if crc32c_append(crc32c(name.as_bytes()), &bytes[..8]) != crc {
        return Err(bad("checksum mismatch (or it belongs to another name)"));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_bound_to_their_name() {
        let v = encode("billing", 42);
        assert_eq!(decode("billing", &v).unwrap(), 42);
        assert!(matches!(
            decode("shipping", &v),
            Err(Error::Damaged { entry: DamagedEntry::Checkpoint { processor }, .. }) if processor == "shipping"
        ));
        let mut bad = v;
        bad[3] ^= 1;
        assert!(decode("billing", &bad).is_err());
        assert!(decode("billing", &v[..8]).is_err());
    }
}
