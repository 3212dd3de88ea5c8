//! One write transaction of the log: what an append writes, in one place.
//!
//! A [`LogTxn`] begins on a write transaction, sees the stream index's tail brought up to the
//! committed log, and places events one after another at the next global sequence: appends
//! through [`LogTxn::append`] (version check, idempotent retries, then the writes), imports
//! through [`LogTxn::put_event`] with positions of their own. Every event reaches the log through
//! `put_event`, which enforces the gap-free sequence, seals an encrypted record, and writes the
//! record and its event id. The stream index and heads are written later, in sorted batches; the
//! events of the transaction join the index's tail once it committed ([`Written`]).

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::request::Request;
use super::retry::{retry_of, stored_position, RetryOf};
use crate::cipher::aead::Nonces;
use crate::cipher::StreamKey;
use crate::error::{Error, Result};
use crate::event::Fingerprint;
use crate::format::name::LabelKind;
use crate::format::record::{self, Place, Sealer};
use crate::format::schema::{self, Registered};
use crate::index::{read_head, StreamIndex};
use crate::log::Log;
use crate::name::StreamName;
use crate::types::{Appended, Position, StreamId};

/// Where a stream stands for the write path: its version, checked against the expected one, and
/// the sequence of its last event, the back-pointer of the next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub version: u64,
    pub last_seq: u64,
}

/// The events a committed [`LogTxn`] wrote, as (seq, stream, version) in sequence order, the
/// schema entries it recorded, and the streams it found or recorded under their names.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub entries: Vec<(u64, StreamId, u64)>,
    pub schemas: Vec<(Vec<u8>, Registered)>,
    /// Streams found or recorded under their names, with their categories' labels.
    pub named: Vec<(StreamId, Option<u32>)>,
}

impl Written {
    /// The sequence of the last event written.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.entries.last().map(|e| e.0)
    }
}

/// A write transaction of the log (see the module documentation).
pub(crate) struct LogTxn<'a, 'w> {
    log: &'a Log,
    index: &'a StreamIndex,
    wtxn: &'a mut heed::RwTxn<'w>,
    /// The committed head of the log when the transaction began.
    base: u64,
    /// Streams written in this transaction, where they stand now.
    tips: foldhash::HashMap<StreamId, Tip>,
    /// The next sequence and the newest commit timestamp in the log, once known.
    next: Option<(u64, u64)>,
    written: Written,
    /// Nonces for the records this transaction seals.
    nonces: Nonces,
    /// Where an encrypted record is sealed: its staged plaintext stays as it was, since a
    /// transaction that hits a full map runs again after the map grew (and idempotency checks
    /// compare staged records).
    sealed: Vec<u8>,
    /// Schema entries the checks of the batches about to be placed found missing: written by
    /// [`LogTxn::write_planned`] just before they are, dropped with a refused batch.
    planned: Vec<(Vec<u8>, Registered, Option<String>)>,
    /// The schema key of the last event placed, whose entry is known to exist.
    last_schema: Vec<u8>,
    /// Scratch space for a schema key.
    schema_key: Vec<u8>,
}

impl<'a, 'w> LogTxn<'a, 'w> {
    /// Begins on `wtxn`: brings the index's tail up to the committed log (appends of other
    /// processes), so that version checks see every event.
    pub(crate) fn begin(
        log: &'a Log,
        index: &'a StreamIndex,
        wtxn: &'a mut heed::RwTxn<'w>,
    ) -> Result<Self> {
        let base = log.dbs.last_seq(wtxn)?;
        index.catch_up_for_write(&log.dbs, wtxn, base)?;
        Ok(LogTxn {
            log,
            index,
            wtxn,
            base,
            tips: foldhash::HashMap::default(),
            next: None,
            written: Written::default(),
            nonces: Nonces::new(),
            sealed: Vec::new(),
            planned: Vec::new(),
            last_schema: Vec::new(),
            schema_key: Vec::new(),
        })
    }

    /// The schema entry under `key` as this transaction sees it: one it recorded or planned,
    /// or a committed one.
    fn schema_entry(&self, key: &[u8], name: &[u8], version: u16) -> Result<Option<Registered>> {
        if let Some((_, r)) = self.written.schemas.iter().find(|(k, _)| k == key) {
            return Ok(Some(*r));
        }
        if let Some((_, r, _)) = self.planned.iter().find(|(k, ..)| k == key) {
            return Ok(Some(*r));
        }
        if let Some(r) = self.log.schemas.cached(key) {
            return Ok(Some(r));
        }
        let Some(value) = self.log.dbs.schemas.get(self.wtxn, key)? else {
            return Ok(None);
        };
        let found = schema::decode(name, version, value)?;
        // Not recorded by this transaction, so committed: it can be kept.
        self.log.schemas.remember([(key.to_vec(), found)]);
        Ok(Some(found))
    }

    /// Checks that a batch of records (staged in `buf`) of layout `layout` may be written
    /// under the event type names and schema versions they carry, and plans the layout's entry
    /// for those the store has no entry for yet, with a renamed entry under each of
    /// `renamed_from` at that version that has none ([`LogTxn::write_planned`] writes them).
    /// The inner error ([`Error::LayoutChanged`], [`Error::RenamedEventType`]) refuses the
    /// batch, before anything is planned.
    fn check_schemas(
        &mut self,
        buf: &[u8],
        staged: &[super::request::Staged],
        layout: Fingerprint,
        renamed_from: &[String],
    ) -> Result<Result<()>> {
        let mut new: Vec<(Vec<u8>, Registered)> = Vec::new();
        let mut renames: Vec<(Vec<u8>, String)> = Vec::new();
        let mut key = std::mem::take(&mut self.schema_key);
        let mut last: Option<(&[u8], u16)> = None;
        for s in staged {
            let (name, version) = record::staged_schema(&buf[s.start..s.start + s.len]);
            if last == Some((name, version)) {
                continue;
            }
            last = Some((name, version));
            schema::key_into(&mut key, name, version);
            if new.iter().any(|(k, _)| *k == key) {
                continue;
            }
            match self.schema_entry(&key, name, version)? {
                Some(registered) => {
                    if let Err(e) = crate::schema::check(registered, name, version, layout, None) {
                        self.schema_key = key;
                        return Ok(Err(e));
                    }
                }
                None => {
                    new.push((key.clone(), Registered::Layout(layout)));
                    for old in renamed_from {
                        let old_key = schema::key(old.as_bytes(), version);
                        if self
                            .schema_entry(&old_key, old.as_bytes(), version)?
                            .is_none()
                        {
                            let new_name = String::from_utf8_lossy(name).into_owned();
                            renames.push((old_key, new_name));
                        }
                    }
                }
            }
        }
        self.schema_key = key;
        self.planned.extend(
            new.into_iter()
                .map(|(key, registered)| (key, registered, None)),
        );
        self.planned.extend(
            renames
                .into_iter()
                .map(|(key, new_name)| (key, Registered::Renamed, Some(new_name))),
        );
        Ok(Ok(()))
    }

    /// Writes the schema entries the checks planned, before the batches they checked are
    /// placed.
    fn write_planned(&mut self) -> Result<()> {
        for (key, registered, new_name) in std::mem::take(&mut self.planned) {
            let value = match &new_name {
                Some(new_name) => schema::encode_renamed(new_name),
                None => schema::encode(registered).to_vec(),
            };
            self.log.dbs.schemas.put(self.wtxn, &key, &value)?;
            self.written.schemas.push((key, registered));
        }
        Ok(())
    }

    /// Records that the events of `name` at `version` are archived with `layout` (an import
    /// that knows it) when the store has no entry for them yet. The inner error
    /// ([`Error::LayoutChanged`]) means the store's entry names another layout: the event must
    /// not be written under it.
    pub(crate) fn record_layout(
        &mut self,
        name: &[u8],
        version: u16,
        layout: Fingerprint,
    ) -> Result<Result<()>> {
        let key = schema::key(name, version);
        match self.schema_entry(&key, name, version)? {
            Some(registered) => Ok(crate::schema::check(
                registered, name, version, layout, None,
            )),
            None => {
                let registered = Registered::Layout(layout);
                self.log
                    .dbs
                    .schemas
                    .put(self.wtxn, &key, &schema::encode(registered))?;
                self.written.schemas.push((key, registered));
                Ok(Ok(()))
            }
        }
    }

    /// Whether an event of `name` at `version` may be written whatever its layout: the inner
    /// error ([`Error::RenamedEventType`]) when the store keeps that version under a new name.
    pub(crate) fn check_not_renamed(&mut self, name: &[u8], version: u16) -> Result<Result<()>> {
        let key = schema::key(name, version);
        Ok(match self.schema_entry(&key, name, version)? {
            Some(Registered::Renamed) => Err(Error::RenamedEventType {
                event_type: String::from_utf8_lossy(name).into_owned(),
                version,
                seq: None,
            }),
            _ => Ok(()),
        })
    }

    /// Makes sure the store has a schema entry for the event type name and schema version of
    /// a staged record about to be written: one that is not there yet (an import) is recorded
    /// with its layout not known. Cheap for a run of events of one type.
    fn ensure_schema(&mut self, rec: &[u8]) -> Result<()> {
        let (name, version) = record::staged_schema(rec);
        let mut key = std::mem::take(&mut self.schema_key);
        schema::key_into(&mut key, name, version);
        if key != self.last_schema && self.schema_entry(&key, name, version)?.is_none() {
            self.log
                .dbs
                .schemas
                .put(self.wtxn, &key, &schema::encode(Registered::Unknown))?;
            self.written
                .schemas
                .push((key.clone(), Registered::Unknown));
        }
        std::mem::swap(&mut self.last_schema, &mut key);
        self.schema_key = key;
        Ok(())
    }

    /// Where `stream` stands in this transaction, `None` for a stream without events. Looked
    /// up once per transaction and stream, then kept.
    ///
    /// A stream with an entry in the index's tail has its newest event there (see
    /// [`StreamIndex::last_in_tail`]); only a stream without one needs its head on disk.
    pub(crate) fn tip(&mut self, stream: StreamId) -> Result<Option<Tip>> {
        let tip = *self.tip_mut(stream)?;
        Ok((tip.version > 0).then_some(tip))
    }

    /// Where `stream` stands, to update in place: version 0 for a stream without events.
    fn tip_mut(&mut self, stream: StreamId) -> Result<&mut Tip> {
        Ok(match self.tips.entry(stream) {
            std::collections::hash_map::Entry::Occupied(tip) => tip.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let tip = match self.index.last_in_tail(stream, self.base) {
                    Some(last) => Tip {
                        version: last.version,
                        last_seq: last.seq,
                    },
                    None => read_head(&self.log.dbs, self.wtxn, stream)?.map_or(
                        // A stream without events is kept as version 0.
                        Tip {
                            version: 0,
                            last_seq: 0,
                        },
                        |h| Tip {
                            version: h.version,
                            last_seq: h.last_seq,
                        },
                    ),
                };
                slot.insert(tip)
            }
        })
    }

    /// The next global sequence, and the newest commit timestamp in the log (a new event's
    /// timestamp is never older).
    pub(crate) fn next_position(&mut self) -> Result<(u64, u64)> {
        if let Some(next) = self.next {
            return Ok(next);
        }
        let dbs = &self.log.dbs;
        let next = match dbs.log.last(self.wtxn)? {
            Some((seq, value)) => (
                seq + 1,
                record::raw_timestamp(dbs.record(self.wtxn, seq, value)?),
            ),
            None => (1, 0),
        };
        self.next = Some(next);
        Ok(next)
    }

    /// The sequence of the stored event with id `id`, if any.
    pub(crate) fn event_id_seq(&self, id: Uuid) -> Result<Option<u64>> {
        Ok(self
            .log
            .dbs
            .event_ids
            .get(self.wtxn, &id.as_u128().to_be_bytes())?)
    }

    /// Checks one batch and appends it: the version check against where the stream stands
    /// (after the batches before it in this transaction), then its events at consecutive
    /// sequences and versions. A batch whose ids are all stored is an exact retry or an error
    /// ([`RetryOf`]). The outer error fails the whole transaction (a failed put: "map full",
    /// I/O); the inner one fails only this batch, and is returned before anything of it is
    /// written: a refused check, and also what the checks could not read (a damaged stream
    /// head, a damaged record an event id leads to), which concerns this batch alone.
    pub(crate) fn append(
        &mut self,
        req: &mut Request,
        key: Option<&StreamKey>,
    ) -> Result<Result<Appended>> {
        match self.check(req, key) {
            Ok(Ok(())) => {
                self.write_planned()?;
                self.place(req, key).map(Ok)
            }
            Ok(Err(done)) => {
                self.planned.clear();
                Ok(done)
            }
            Err(e) => {
                self.planned.clear();
                Ok(Err(e))
            }
        }
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Applies one batch of a replicated log (the parts of one atomic publish, in order): the
    /// checks of [`LogTxn::append`] on each part but the version check, which the cluster made
    /// when it took the batch, then every part placed, or none. Parts that are exact retries of
    /// stored events write nothing and report their original positions, as in a multi-stream
    /// transaction. The inner error refuses the whole batch, deterministically: every replica
    /// decides it the same way from the same log. The outer error is one the replica cannot
    /// decide on (a failed read or put), which must stop it.
    pub(crate) fn apply_batch(&mut self, parts: &mut [Request]) -> Result<Result<Vec<Appended>>> {
        let mut retried: Vec<Option<Appended>> = Vec::with_capacity(parts.len());
        for part in parts.iter() {
            match self.check(part, None) {
                Ok(Ok(())) => retried.push(None),
                Ok(Err(Ok(appended))) => retried.push(Some(appended)),
                Ok(Err(Err(e))) => {
                    self.planned.clear();
                    return Ok(Err(e));
                }
                Err(e) => {
                    self.planned.clear();
                    return Err(e);
                }
            }
        }
        self.write_planned()?;
        let mut appended = Vec::with_capacity(parts.len());
        for (part, retried) in parts.iter_mut().zip(retried) {
            appended.push(match retried {
                Some(done) => done,
                None => self.place(part, None)?,
            });
        }
        Ok(Ok(appended))
    }

    /// The checks of [`LogTxn::append`]: `Ok` when the batch may be written (its schema
    /// entries planned), or the batch's outcome when it must not be (a retry, a conflict).
    fn check(
        &mut self,
        req: &Request,
        key: Option<&StreamKey>,
    ) -> Result<std::result::Result<(), Result<Appended>>> {
        let stream = req.stream;
        let tip = self.tip(stream)?;
        let current = tip.map_or(0, |t| t.version);

        // Idempotency: any id already stored makes this either an exact retry or an error. The
        // common case (no id stored) allocates nothing: `existing` grows only with stored ids.
        let mut existing = Vec::new();
        let mut first_found = None;
        for (i, s) in req.staged.iter().enumerate() {
            if let Some(seq) = self.event_id_seq(s.id)? {
                first_found.get_or_insert((i, seq));
                existing.push(seq);
            }
        }
        if let Some((i, seq)) = first_found {
            if existing.len() == req.staged.len() {
                return Ok(Err(retry_of(
                    self.log,
                    self.wtxn,
                    RetryOf {
                        stream,
                        expected: req.expected,
                        buf: &req.buf,
                        staged: &req.staged,
                        existing: &existing,
                        key,
                    },
                )));
            }
            let (existing_stream, existing_version) = stored_position(self.log, self.wtxn, seq)?;
            return Ok(Err(Err(Error::EventIdConflict {
                event_id: req.staged[i].id,
                existing_seq: seq,
                existing_stream,
                existing_version,
                reason:
                    "the batch mixes stored event ids with new ones; retry exactly the original batch",
            })));
        }
        if let Some(name) = &req.name {
            if current > 0 {
                if let Err(e) = self.check_name(stream, name)? {
                    return Ok(Err(Err(e)));
                }
            }
        }
        if !req.expected.matches(current) {
            return Ok(Err(Err(Error::ConcurrencyConflict {
                stream,
                expected: req.expected,
                actual: current,
            })));
        }
        if let Err(e) = self.check_schemas(&req.buf, &req.staged, req.layout, &req.renamed_from)? {
            return Ok(Err(Err(e)));
        }
        Ok(Ok(()))
    }

    /// Writes a checked batch at the next sequences, after the stream's last event.
    fn place(&mut self, req: &mut Request, key: Option<&StreamKey>) -> Result<Appended> {
        let stream = req.stream;
        let tip = self.tip(stream)?;
        let current = tip.map_or(0, |t| t.version);

        if current == 0 {
            if let Some(name) = &req.name {
                self.record_name(name)?;
            }
        }
        let (next_seq, last_ts) = self.next_position()?;
        let timestamp_ns = req
            .timestamp_ns
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            })
            .max(last_ts);
        let mut positions = Vec::with_capacity(req.staged.len());
        let mut prev_seq = tip.map_or(0, |t| t.last_seq);
        for (i, s) in req.staged.iter().enumerate() {
            let place = Place {
                seq: next_seq + i as u64,
                version: current + 1 + i as u64,
                prev_seq,
                timestamp_ns,
            };
            let rec = &mut req.buf[s.start..s.start + s.len];
            self.put_event(rec, s.payload_offset, stream, s.id, place, key)?;
            positions.push(Position {
                seq: place.seq,
                version: place.version,
            });
            prev_seq = place.seq;
        }
        Ok(Appended {
            stream,
            positions,
            deduplicated: false,
        })
    }

    /// Writes one finished record (`rec`, its payload at `payload_offset`) of `stream` with id
    /// `event_id` at `place`: the one place where an event enters the log. `place` must be the
    /// next sequence, the stream's next version, and name the stream's last event as previous.
    /// Seals the record under `key` in an encrypted store (in a scratch copy: `rec` is left as
    /// it was), sets its position and header checksum, and writes it and its event id.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when `place` does not follow the log and the stream (a caller's
    /// bug, refused rather than written), [`Error::Lmdb`] for a failed put, [`Error::Crypto`].
    pub(crate) fn put_event(
        &mut self,
        rec: &mut [u8],
        payload_offset: usize,
        stream: StreamId,
        event_id: Uuid,
        place: Place,
        key: Option<&StreamKey>,
    ) -> Result<()> {
        let (next_seq, last_ts) = self.next_position()?;
        let tip = self.tip_mut(stream)?;
        let follows = place.seq == next_seq
            && place.timestamp_ns >= last_ts
            && place.version == tip.version + 1
            && place.prev_seq == tip.last_seq;
        if !follows {
            let tip = *tip;
            return Err(Error::corrupted(
                place.seq,
                format!(
                    "refused to write an event of stream {stream} that does not follow the log (next sequence {next_seq}) and its stream ({tip:?})"
                ),
            ));
        }
        self.ensure_schema(rec)?;
        let tip = self.tip_mut(stream)?;
        // The stream stands here once the event is written; an error below fails the whole
        // transaction, and this with it.
        *tip = Tip {
            version: place.version,
            last_seq: place.seq,
        };
        let rec: &mut [u8] = if key.is_some() {
            self.sealed.clear();
            self.sealed.extend_from_slice(rec);
            &mut self.sealed
        } else {
            rec
        };
        let sealer = key.map(|key| Sealer {
            key,
            store_id: self.log.store_id,
            nonces: &mut self.nonces,
        });
        record::set_position(rec, payload_offset, place, sealer)?;
        let dbs = &self.log.dbs;
        dbs.put_record(self.wtxn, place.seq, rec)?;
        dbs.put_event_id(self.wtxn, event_id.as_u128(), place.seq)?;
        self.written
            .entries
            .push((place.seq, stream, place.version));
        self.next = Some((place.seq + 1, place.timestamp_ns));
        Ok(())
    }

    /// Checks that the name an append gave `stream`, which has events, is the name the store
    /// keeps for it. The inner error ([`Error::StreamNameConflict`]) refuses the batch: the
    /// stream was created under another name that derives the same id, or by id.
    pub(crate) fn check_name(&mut self, stream: StreamId, name: &StreamName) -> Result<Result<()>> {
        if matches!(self.log.named.get(stream), Some(Some(_))) {
            return Ok(Ok(()));
        }
        if self.log.dbs.stream_named(self.wtxn, stream, name)? == Some(true) {
            return Ok(Ok(()));
        }
        let recorded = self.log.dbs.stream_name(self.wtxn, stream)?;
        Ok(match recorded {
            Some((found, _)) if found.as_str() == name.as_str() => Ok(()),
            other => Err(Error::StreamNameConflict {
                stream,
                name: name.as_str().to_owned(),
                existing: other.map(|(found, _)| found.as_str().to_owned()),
            }),
        })
    }

    /// Records the name of a stream about to get its first event, with the label of its
    /// category (a new one for a category the store has not seen): in the transaction of that
    /// event, so that no event of a named stream is ever without its name.
    pub(crate) fn record_name(&mut self, name: &StreamName) -> Result<()> {
        let dbs = &self.log.dbs;
        let category =
            dbs.label_or_new(self.wtxn, LabelKind::Category, name.category().as_bytes())?;
        dbs.put_stream_name(self.wtxn, name, category)?;
        self.written.named.push((name.stream_id(), Some(category)));
        Ok(())
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Checks that the store replicates `origin`, recording it when the store replicates
    /// nothing yet and has no events (a store is a replica of one log from its first event).
    pub(crate) fn check_origin(&mut self, origin: &crate::format::replica::Origin) -> Result<()> {
        match self.log.dbs.replica_origin(self.wtxn)? {
            Some(found) if &found == origin => Ok(()),
            Some(found) => Err(Error::corrupted(
                0,
                format!("the store replicates JetStream stream {found:?}, not {origin:?}"),
            )),
            None if self.base > 0 => Err(Error::corrupted(
                self.base,
                "the store holds events of its own: a replica starts empty, or from a backup of another replica",
            )),
            None => self.log.dbs.set_replica_origin(self.wtxn, origin),
        }
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// A sequence entry of the `replica` database, 0 when it has none.
    pub(crate) fn replica_seq(&self, key: &[u8]) -> Result<u64> {
        self.log.dbs.replica_seq(self.wtxn, key)
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Sets a sequence entry of the `replica` database.
    pub(crate) fn set_replica_seq(&mut self, key: &[u8], seq: u64) -> Result<()> {
        self.log.dbs.set_replica_seq(self.wtxn, key, seq)
    }

    /// Ends the log's part of the transaction: what it wrote, for after the commit. The write
    /// transaction stays open for work that rides along.
    pub(crate) fn finish(self) -> Written {
        self.written
    }
}
