//! The LMDB databases of a store, and the reads and writes of their entries that every layer
//! above shares: a record by sequence (inline, or behind a stub in `log_large`), an event id, an
//! index entry, the watermark.

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, PutFlags};

use crate::error::{DamagedEntry, Error, Result};
use crate::format::index::{
    decode_watermark, encode_watermark, parse_index_seq, stream_version_key, WATERMARK_KEY,
};
use crate::format::record;
use crate::types::StreamId;

/// The LMDB databases of a store (see `docs/format.md`): handles, cheap to copy.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub meta: Database<'static, Str, Bytes>,
    pub log: Database<'static, U64<BigEndian>, Bytes>,
    pub heads: Database<'static, Bytes, Bytes>,
    /// Values are read with `format::index::parse_index_seq`: a damaged one is an error that
    /// names its entry, not a codec failure.
    pub stream_index: Database<'static, Bytes, Bytes>,
    pub event_ids: Database<'static, Bytes, U64<BigEndian>>,
    pub checkpoints: Database<'static, Str, Bytes>,
    pub log_large: Database<'static, U64<BigEndian>, Bytes>,
    /// The recorded layout of each (event type, schema version) in the log
    /// (`format::schema`).
    pub schemas: Database<'static, Bytes, Bytes>,
    /// The name of each stream created by name, with its parse (`format::name`, version 6).
    pub stream_names: Database<'static, Bytes, Bytes>,
    /// The dense id of each category and event type (`format::name`).
    pub labels: Database<'static, Bytes, Bytes>,
    /// The events of each category and event type, by label id and sequence.
    pub label_index: Database<'static, Bytes, Bytes>,
    /// Where a replica of a cluster's log stands in it (`format::replica`, version 8); empty
    /// in a store that replicates nothing.
    pub replica: Database<'static, Bytes, Bytes>,
    /// Records longer than this go to `log_large` (see `record::inline_limit`).
    pub inline_limit: usize,
}

impl Dbs {
    /// The record a `log` value stands for: the value itself, or the large record its stub
    /// points at.
    #[inline]
    pub(crate) fn record<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
        value: &'t [u8],
    ) -> Result<&'t [u8]> {
        if !record::is_stub(seq, value)? {
            return Ok(value);
        }
        by_bytes(self.log_large)
            .get(txn, &seq.to_be_bytes())?
            .ok_or_else(|| Error::corrupted(seq, "large record missing behind its stub"))
    }

    /// The record with global sequence `seq`.
    #[inline]
    pub(crate) fn get_record<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
    ) -> Result<Option<&'t [u8]>> {
        match by_bytes(self.log).get(txn, &seq.to_be_bytes())? {
            Some(value) => self.record(txn, seq, value).map(Some),
            None => Ok(None),
        }
    }

    /// The log from sequence `seq` on, its keys as the big-endian bytes they are stored as:
    /// a range opened without allocating for its bound.
    #[inline]
    pub(crate) fn log_from<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
    ) -> Result<heed::RoRange<'t, Bytes, Bytes>> {
        let key = seq.to_be_bytes();
        let bounds = (
            std::ops::Bound::Included(&key[..]),
            std::ops::Bound::Unbounded,
        );
        Ok(by_bytes(self.log).range(txn, &bounds)?)
    }

    /// Stores a record at the end of the log: inline, or in `log_large` behind a stub.
    pub(crate) fn put_record(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        seq: u64,
        rec: &[u8],
    ) -> Result<()> {
        let key = seq.to_be_bytes();
        if rec.len() <= self.inline_limit {
            by_bytes(self.log).put_with_flags(wtxn, PutFlags::APPEND, &key, rec)?;
        } else {
            by_bytes(self.log_large).put_with_flags(wtxn, PutFlags::APPEND, &key, rec)?;
            by_bytes(self.log).put_with_flags(wtxn, PutFlags::APPEND, &key, &record::stub(seq))?;
        }
        Ok(())
    }

    /// Stores `id → seq` in `event_ids`, refusing an id already there (LMDB's `KeyExist`).
    pub(crate) fn put_event_id(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        id: u128,
        seq: u64,
    ) -> Result<()> {
        self.event_ids.remap_data_type::<Bytes>().put_with_flags(
            wtxn,
            PutFlags::NO_OVERWRITE,
            &id.to_be_bytes(),
            &seq.to_be_bytes(),
        )?;
        Ok(())
    }

    /// The JetStream stream this store replicates, if it replicates one.
    pub(crate) fn replica_origin(
        &self,
        txn: &heed::RoTxn<'_>,
    ) -> Result<Option<crate::format::replica::Origin>> {
        use crate::format::replica::{decode_origin, ORIGIN_KEY};
        self.replica
            .get(txn, ORIGIN_KEY)?
            .map(decode_origin)
            .transpose()
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Records the JetStream stream this store replicates.
    pub(crate) fn set_replica_origin(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        origin: &crate::format::replica::Origin,
    ) -> Result<()> {
        use crate::format::replica::{encode_origin, ORIGIN_KEY};
        self.replica.put(wtxn, ORIGIN_KEY, &encode_origin(origin))?;
        Ok(())
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// A sequence entry of the `replica` database (the last applied JetStream sequence, or the
    /// last one on a stream's subject), 0 when it has none.
    pub(crate) fn replica_seq(&self, txn: &heed::RoTxn<'_>, key: &[u8]) -> Result<u64> {
        use crate::format::replica::decode_seq;
        Ok(match self.replica.get(txn, key)? {
            Some(bytes) => decode_seq(key, bytes)?,
            None => 0,
        })
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Sets a sequence entry of the `replica` database.
    pub(crate) fn set_replica_seq(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        key: &[u8],
        seq: u64,
    ) -> Result<()> {
        use crate::format::replica::encode_seq;
        self.replica.put(wtxn, key, &encode_seq(key, seq))?;
        Ok(())
    }

    /// Stores `(stream, version) → seq` in `stream_index`.
    pub(crate) fn put_index_entry(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        key: &[u8],
        seq: u64,
    ) -> Result<()> {
        self.stream_index.put(wtxn, key, &seq.to_be_bytes())?;
        Ok(())
    }

    /// The sequence the stream index names for `version` of `stream`, if it has an entry.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], or [`Error::Damaged`] for an entry that is not a sequence.
    pub(crate) fn get_index_seq(
        &self,
        txn: &heed::RoTxn<'_>,
        stream: StreamId,
        version: u64,
    ) -> Result<Option<u64>> {
        self.stream_index
            .get(txn, &stream_version_key(stream, version))?
            .map(|value| parse_index_seq(stream, version, value))
            .transpose()
    }
}

/// A `log` or `log_large` handle taking its keys as the big-endian bytes `U64<BigEndian>` would
/// encode. Hot paths use it: heed's integer codecs allocate a `Vec` for every encoded key or
/// value. The bytes stored are the same.
#[inline]
fn by_bytes(db: Database<'static, U64<BigEndian>, Bytes>) -> Database<'static, Bytes, Bytes> {
    db.remap_key_type::<Bytes>()
}

impl Dbs {
    /// The last sequence of the log in `txn` (0 when empty).
    pub(crate) fn last_seq(&self, txn: &heed::RoTxn<'_>) -> Result<u64> {
        Ok(self.log.last(txn)?.map_or(0, |(seq, _)| seq))
    }

    /// The index watermark in `txn`: the stream index and heads hold every event up to it.
    pub(crate) fn watermark(&self, txn: &heed::RoTxn<'_>) -> Result<u64> {
        match self.meta.get(txn, WATERMARK_KEY)? {
            Some(bytes) => decode_watermark(bytes),
            None => Err(Error::Damaged {
                entry: DamagedEntry::IndexWatermark,
                reason: "missing from meta".into(),
            }),
        }
    }

    /// Stores the index watermark.
    pub(crate) fn set_watermark(&self, wtxn: &mut heed::RwTxn<'_>, seq: u64) -> Result<()> {
        set_watermark(self.meta, wtxn, seq)
    }
}

/// Stores the index watermark in `meta` (also at open, before the other databases are known).
pub(crate) fn set_watermark(
    meta: Database<'_, Str, Bytes>,
    wtxn: &mut heed::RwTxn<'_>,
    seq: u64,
) -> Result<()> {
    meta.put(wtxn, WATERMARK_KEY, &encode_watermark(seq))?;
    Ok(())
}
