//! Processor checkpoints: the last handled global sequence of each named processor, stored in
//! the store's `checkpoints` database (see `docs/format.md`).

use crate::error::{Error, Result};
use crate::log::checksum::{crc32c, crc32c_append};
use crate::storage::{Commit, Storage};

/// Longest processor name, in bytes.
pub const MAX_PROCESSOR_NAME_LEN: usize = 255;

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_PROCESSOR_NAME_LEN {
        return Err(Error::InvalidProcessorName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// `seq` (u64 LE) then the CRC-32C of the name and those 8 bytes.
fn encode(name: &str, seq: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c_append(crc32c(name.as_bytes()), &v[..8]);
    v[8..].copy_from_slice(&crc.to_le_bytes());
    v
}

fn decode(name: &str, bytes: &[u8]) -> Result<u64> {
    let bad = || Error::corrupted(0, format!("checkpoint of processor {name:?} is damaged"));
    let bytes: &[u8; 12] = bytes.try_into().map_err(|_| bad())?;
    let seq = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
    if crc32c_append(crc32c(name.as_bytes()), &bytes[..8]) != crc {
        return Err(bad());
    }
    Ok(seq)
}

/// The checkpoint of `name`: the last global sequence it handled, 0 when it never ran.
pub(crate) fn load(storage: &Storage, name: &str) -> Result<u64> {
    let txn = storage.env.read_txn()?;
    load_in(storage, txn.raw(), name)
}

/// [`load`] inside a given transaction.
pub(crate) fn load_in(storage: &Storage, txn: &heed::RoTxn<'_>, name: &str) -> Result<u64> {
    match storage.shared.dbs.checkpoints.get(txn, name)? {
        Some(bytes) => decode(name, bytes),
        None => Ok(0),
    }
}

/// Writes the checkpoint of `name` inside a given write transaction.
pub(crate) fn put_in(
    storage: &Storage,
    wtxn: &mut heed::RwTxn<'_>,
    name: &str,
    seq: u64,
) -> Result<()> {
    Ok(storage
        .shared
        .dbs
        .checkpoints
        .put(wtxn, name, &encode(name, seq))?)
}

/// Writes checkpoint `seq` of `name` in a given write transaction unless the stored one is
/// already at or past it, so that a late write never moves a checkpoint back.
pub(crate) fn advance_in(
    storage: &Storage,
    wtxn: &mut heed::RwTxn<'_>,
    name: &str,
    seq: u64,
) -> Result<()> {
    if load_in(storage, wtxn, name)? < seq {
        put_in(storage, wtxn, name, seq)?;
    }
    Ok(())
}

/// Durably advances the checkpoint of `name` to `seq` (never back); no commit when it is
/// already there.
pub(crate) fn advance(storage: &Storage, name: &str, seq: u64) -> Result<()> {
    storage.env.write(|wtxn| {
        if load_in(storage, wtxn, name)? >= seq {
            return Ok(Commit::Abort(()));
        }
        put_in(storage, wtxn, name, seq)?;
        Ok(Commit::Commit(()))
    })
}

/// Stores the checkpoint of `name` durably.
pub(crate) fn store(storage: &Storage, name: &str, seq: u64) -> Result<()> {
    storage.env.write(|wtxn| {
        put_in(storage, wtxn, name, seq)?;
        Ok(Commit::Commit(()))
    })
}

/// Every processor with its checkpoint, ordered by name.
pub(crate) fn list(storage: &Storage) -> Result<Vec<(String, u64)>> {
    let txn = storage.env.read_txn()?;
    let mut out = Vec::new();
    for entry in storage.shared.dbs.checkpoints.iter(txn.raw())? {
        let (name, bytes) = entry?;
        out.push((name.to_string(), decode(name, bytes)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_bound_to_their_name() {
        let v = encode("billing", 42);
        assert_eq!(decode("billing", &v).unwrap(), 42);
        assert!(decode("shipping", &v).is_err());
        let mut bad = v;
        bad[3] ^= 1;
        assert!(decode("billing", &bad).is_err());
        assert!(decode("billing", &v[..8]).is_err());
    }
}
