//! The entries of stream names and labels (`docs/format.md`): a stream's recorded name, the dense
//! id of a category or an event type, and the entries of the label index.

use super::Dbs;
use crate::error::{DamagedEntry, Error, Result};
use crate::format::name::{
    decode_label, decode_name, encode_label, encode_label_run, encode_name, label_index_key,
    label_key, LabelKind, LabelRun, LABEL_RUN,
};
use crate::name::StreamName;
use crate::types::StreamId;

/// The `meta` key of the next label id to give.
const NEXT_LABEL_KEY: &str = "next_label_id";

impl Dbs {
    /// The recorded name of `stream`, with its category's label id; `None` for a stream without
    /// a name (created by id, or without events).
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged entry.
    pub(crate) fn stream_name(
        &self,
        txn: &heed::RoTxn<'_>,
        stream: StreamId,
    ) -> Result<Option<(StreamName, u32)>> {
        self.stream_names
            .get(txn, &stream.to_key())?
            .map(|bytes| decode_name(stream, bytes))
            .transpose()
    }

    /// Whether the recorded name of `stream` is `name`, compared as bytes without decoding the
    /// entry: `None` when the stream has no name entry. A `false` (another name, or an entry
    /// too damaged to hold one) is for [`Dbs::stream_name`] to explain.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`].
    pub(crate) fn stream_named(
        &self,
        txn: &heed::RoTxn<'_>,
        stream: StreamId,
        name: &StreamName,
    ) -> Result<Option<bool>> {
        Ok(self
            .stream_names
            .get(txn, &stream.to_key())?
            .map(|bytes| crate::format::name::names_equal(bytes, name)))
    }

    /// Records the name of `stream`, whose category has label id `category`.
    pub(crate) fn put_stream_name(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        name: &StreamName,
        category: u32,
    ) -> Result<()> {
        self.stream_names.put(
            wtxn,
            &name.stream_id().to_key(),
            &encode_name(name, category),
        )?;
        Ok(())
    }

    /// The id of a category or event type, `None` when the store has not given it one.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged entry.
    pub(crate) fn label(
        &self,
        txn: &heed::RoTxn<'_>,
        kind: LabelKind,
        text: &[u8],
    ) -> Result<Option<u32>> {
        let key = label_key(kind, text);
        self.labels
            .get(txn, &key)?
            .map(|value| decode_label(&key, value))
            .transpose()
    }

    /// The id of a category or event type, given a new one (the next of the store's ids) when it
    /// has none.
    ///
    /// # Errors
    ///
    /// As [`Dbs::label`]; [`Error::Damaged`] when the store's next id is damaged or spent.
    pub(crate) fn label_or_new(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        kind: LabelKind,
        text: &[u8],
    ) -> Result<u32> {
        if let Some(id) = self.label(wtxn, kind, text)? {
            return Ok(id);
        }
        let damaged = |reason: String| Error::Damaged {
            entry: DamagedEntry::Label {
                what: "the next label id".into(),
            },
            reason,
        };
        let id = match self.meta.get(wtxn, NEXT_LABEL_KEY)? {
            None => 1,
            Some(bytes) => u32::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| damaged(format!("{} bytes, not 4", bytes.len())))?,
            ),
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| damaged("every label id is given".into()))?;
        let key = label_key(kind, text);
        self.labels.put(wtxn, &key, &encode_label(&key, id))?;
        self.meta.put(wtxn, NEXT_LABEL_KEY, &next.to_le_bytes())?;
        Ok(id)
    }

    /// Lists the events at `seqs` (ascending, after every event listed under `label` so far)
    /// under `label` in the label index, in entries of at most [`LABEL_RUN`] sequences.
    pub(crate) fn put_label_runs(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        label: u32,
        seqs: &[u64],
    ) -> Result<()> {
        for run in seqs.chunks(LABEL_RUN) {
            let key = label_index_key(label, run[0]);
            self.label_index
                .put(wtxn, &key, &encode_label_run(&key, run))?;
        }
        Ok(())
    }

    /// The label index entry of `label` whose run would hold `seq`: the last one starting at or
    /// before it. `None` when `label` lists nothing up to `seq`.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged entry.
    pub(crate) fn label_run_at<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        label: u32,
        seq: u64,
    ) -> Result<Option<LabelRun<'t>>> {
        let Some((key, value)) = self
            .label_index
            .get_lower_than_or_equal_to(txn, &label_index_key(label, seq))?
        else {
            return Ok(None);
        };
        let run = LabelRun::decode(key, value)?;
        Ok((run.label == label).then_some(run))
    }

    /// Every label of the store: kind, text and id, in the order of their keys (categories
    /// first, by name).
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`], [`Error::Damaged`] for a damaged entry.
    pub(crate) fn labels(&self, txn: &heed::RoTxn<'_>) -> Result<Vec<(LabelKind, String, u32)>> {
        let mut out = Vec::new();
        for entry in self.labels.iter(txn)? {
            let (key, value) = entry?;
            let (kind, text) =
                crate::format::name::parse_label_key(key).ok_or_else(|| Error::Damaged {
                    entry: DamagedEntry::Label {
                        what: crate::format::name::label_description(key),
                    },
                    reason: "a key that names no label".into(),
                })?;
            out.push((kind, text.to_owned(), decode_label(key, value)?));
        }
        Ok(out)
    }
}
