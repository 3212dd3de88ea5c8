//! The typed reader.

use std::ops::{Bound, ControlFlow};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::events::{check_place, Events, Source};
use super::filter::Filter;
use super::parts;
use super::readable::{wrong_type, Readable, Record};
use super::ViewMemo;
use crate::env::{LogLookup, ReadTxn};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::event::SplitParts;
use crate::format::index::stream_read_keys;
use crate::format::record::{self, DecodedRecord};
use crate::format::Envelope;
use crate::log::{has_name, Log, LogCursor, Scan, Select, Step};
use crate::metrics::handles::ReadKind;
use crate::name::StreamName;
use crate::store::Storage;
use crate::types::{Direction, IntoStreamId, StreamId, StreamInfo};

/// Default longest time a `for_each_*` scan keeps one read transaction open.
pub const DEFAULT_MAX_TXN_AGE: Duration = Duration::from_millis(100);

/// Reads events of type `E`, or of a set of types (see [`Readable`]): point reads, stream and
/// log ranges, stream listings.
///
/// Reads return [`EventView`](crate::EventView)s that deref to `E::Archived`, validated with
/// bytecheck and borrowed from the read transaction without copying (for a set, the view of the
/// record's member). Records whose event type is not one this reader
/// accepts give [`Error::WrongEventType`] (by default a reader accepts the type name its
/// [`Writer`](crate::Writer) stores, [`Event::NAME`](crate::Event::NAME)). Events of that name
/// at another schema version are [`Error::UnknownSchemaVersion`], and those the store recorded
/// with another layout than `E`'s are [`Error::LayoutChanged`], on every read path.
///
/// ```
/// use varvedb::{Storage, StorageConfig};
/// use varvedb::{Reader, Writer};
/// use varvedb::Direction;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
/// #[rkyv(derive(Debug))]
/// pub struct Ping { pub n: u32 }
///
/// let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// let mut writer = Writer::<Ping>::new(storage.clone());
/// for n in 1..=3 {
///     writer.append(1, n as u64, Ping { n })?;
/// }
/// let reader = Reader::<Ping>::new(storage.clone());
/// let txn = storage.env.read_txn()?;
/// let newest_first: Vec<u32> = reader
///     .read_stream(&txn, 1, u64::MAX, Direction::Backward)?
///     .map(|event| event.map(|e| e.n.to_native()))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(newest_first, [3, 2, 1]);
/// # Ok::<(), varvedb::error::Error>(())
/// ```
pub struct Reader<R: Readable> {
    storage: Storage,
    /// Every event type name the reader reads: `R`'s, those accepted as `R`, and those of the
    /// older versions it upcasts.
    accepted: Arc<[String]>,
    /// The names read with the newest version of each, whose renames scans follow.
    follow: Arc<[(String, u16)]>,
    kinds: Arc<R::Kinds>,
    max_txn_age: Duration,
}

impl<R: Readable> Clone for Reader<R> {
    fn clone(&self) -> Self {
        Reader {
            storage: self.storage.clone(),
            accepted: Arc::clone(&self.accepted),
            follow: Arc::clone(&self.follow),
            kinds: Arc::clone(&self.kinds),
            max_txn_age: self.max_txn_age,
        }
    }
}

impl<R: Readable> std::fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.storage.path())
            .field("accepted", &self.accepted)
            .finish()
    }
}

impl<E> Reader<E>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Also accepts records stored under these event type names (written with
    /// [`Writer::with_event_type`](crate::Writer::with_event_type) or
    /// [`NewEvent::with_event_type`](crate::NewEvent::with_event_type)) as archives of `E`, at
    /// `E`'s schema version.
    pub fn accept_event_types<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let kinds = self.kinds.accepting(names.into_iter().map(Into::into));
        self.accepted = E::accepted(&kinds).into();
        self.follow = E::follow(&kinds).into();
        self.kinds = Arc::new(kinds);
        self
    }
}

impl<R: Readable> Reader<R> {
    /// A reader of `R`: of an event type and its older versions, which it upcasts (see
    /// [`Upcast`](crate::Upcast)), or of a set of event types (see
    /// [`EventSet`](crate::EventSet)).
    pub fn new(storage: Storage) -> Self {
        let kinds = R::kinds();
        Reader {
            storage,
            accepted: R::accepted(&kinds).into(),
            follow: R::follow(&kinds).into(),
            kinds: Arc::new(kinds),
            max_txn_age: DEFAULT_MAX_TXN_AGE,
        }
    }

    /// Sets how long a `for_each_*` scan may keep one read transaction open before it renews it
    /// (default [`DEFAULT_MAX_TXN_AGE`]).
    pub fn with_max_txn_age(mut self, age: Duration) -> Self {
        self.max_txn_age = age;
        self
    }

    /// The store this reader reads.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The event at global sequence `seq`, or `None` when there is none (including `seq` 0).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the record fails its checksum, [`Error::WrongEventType`] when it
    /// holds another type, [`Error::InvalidPayload`] when the payload is not a valid archive of
    /// `E`, [`Error::SplitEvent`] when an upcast reads it as several events (read them with
    /// [`Reader::get_parts`]), [`Error::Lmdb`].
    pub fn get<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<R::View<'t>>> {
        match self.at(txn, seq) {
            Err(Error::Split(parts)) => {
                let e = self.split_event(txn, seq, &parts);
                self.read_failed(&e);
                Err(e)
            }
            read => read,
        }
    }

    /// Every event read from the stored event at global sequence `seq`, in order: the event
    /// alone, or the parts an upcast splits it into ([`Split`](crate::Split)); empty when there
    /// is none.
    ///
    /// # Errors
    ///
    /// As [`Reader::get`], without [`Error::SplitEvent`].
    pub fn get_parts<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Vec<R::View<'t>>> {
        match self.at(txn, seq) {
            Ok(view) => Ok(view.into_iter().collect()),
            Err(Error::Split(parts)) => self
                .split_at(self.raw(txn)?, seq, parts, false)
                .inspect_err(|e| self.read_failed(e)),
            Err(e) => Err(e),
        }
    }

    /// The view of the record at `seq`, counted as a read by position; [`Error::Split`] for a
    /// record an upcast splits.
    #[inline]
    fn at<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<R::View<'t>>> {
        let raw = self.raw(txn)?;
        txn.count_reads(ReadKind::Get, 1);
        match self.log().dbs.get_record(raw, seq) {
            Ok(Some(bytes)) => self.view_at(raw, seq, bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
        .inspect_err(|e| self.read_failed(e))
    }

    /// The views of the parts of the record at `seq`, which an upcast split into `parts`.
    #[cold]
    #[inline(never)]
    fn split_at<'t>(
        &self,
        raw: &'t heed::RoTxn<'static>,
        seq: u64,
        parts: SplitParts,
        backward: bool,
    ) -> Result<Vec<R::View<'t>>> {
        let rec = self.split_record(raw, seq)?;
        parts::of(self, rec, Error::Split(parts), backward)
    }

    /// The record at `seq`, read again in `raw` for the parts of its split: its read returned
    /// them as an error, without the record.
    pub(crate) fn split_record<'t>(
        &self,
        raw: &'t heed::RoTxn<'static>,
        seq: u64,
    ) -> Result<DecodedRecord<'t>> {
        let bytes = self
            .log()
            .dbs
            .get_record(raw, seq)?
            .ok_or_else(|| Error::corrupted(seq, "the record vanished from the snapshot"))?;
        record::decode_event(seq, bytes)
    }

    /// The error of [`Reader::get`] for the record at `seq`, which an upcast split.
    #[cold]
    #[inline(never)]
    fn split_event(&self, txn: &ReadTxn, seq: u64, parts: &SplitParts) -> Error {
        let rec = match self.raw(txn).and_then(|raw| self.split_record(raw, seq)) {
            Ok(rec) => rec,
            Err(e) => return e,
        };
        Error::SplitEvent {
            seq,
            event_type: String::from_utf8_lossy(rec.event_type_bytes()).into_owned(),
            version: rec.schema_version(),
            parts: u32::try_from(parts.count()).unwrap_or(u32::MAX),
        }
    }

    /// The envelope of the event at `seq`, without reading its payload and whatever its type.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the record's header fails its checksum, [`Error::Lmdb`].
    pub fn envelope<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<Envelope<'t>>> {
        let raw = self.raw(txn)?;
        txn.count_reads(ReadKind::Envelope, 1);
        match self.log().dbs.get_record(raw, seq) {
            Ok(Some(bytes)) => record::decode(seq, bytes).map(|r| Some(r.envelope())),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
        .inspect_err(|e| self.read_failed(e))
    }

    /// The current version of `stream`: the version of its last event, 0 when it has none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the stream's head is damaged, [`Error::InvalidStreamId`],
    /// [`Error::Lmdb`].
    pub fn stream_version(&self, txn: &ReadTxn, stream: impl IntoStreamId) -> Result<u64> {
        let stream = stream.into_stream_id()?;
        Ok(self
            .storage
            .head_of(self.raw(txn)?, stream)?
            .map_or(0, |h| h.version))
    }

    /// The last event of `stream`, or `None` when the stream has no events. When an upcast
    /// splits the stream's last stored event into several, the last of them.
    ///
    /// # Errors
    ///
    /// As [`Reader::get`], plus [`Error::Corrupted`] when the stream's head is damaged.
    pub fn last_in_stream<'t>(
        &self,
        txn: &'t ReadTxn,
        stream: impl IntoStreamId,
    ) -> Result<Option<R::View<'t>>> {
        let stream = stream.into_stream_id()?;
        let raw = self.raw(txn)?;
        txn.count_reads(ReadKind::LastInStream, 1);
        self.last_in_stream_uncounted(raw, stream)
            .inspect_err(|e| self.read_failed(e))
    }

    fn last_in_stream_uncounted<'t>(
        &self,
        raw: &'t heed::RoTxn<'static>,
        stream: StreamId,
    ) -> Result<Option<R::View<'t>>> {
        let Some(head) = self.storage.head_of(raw, stream)? else {
            return Ok(None);
        };
        let bytes = self
            .log()
            .dbs
            .get_record(raw, head.last_seq)?
            .ok_or_else(|| {
                Error::corrupted(head.last_seq, "stream head points at a missing record")
            })?;
        let view = match self.view_at(raw, head.last_seq, bytes) {
            Err(Error::Split(parts)) => self
                .split_at(raw, head.last_seq, parts, true)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::corrupted(head.last_seq, "a split into no events"))?,
            view => view?,
        };
        let (seq, found_stream, found_version) = R::place(&view);
        check_place(seq, found_stream, found_version, stream, head.version)?;
        Ok(Some(view))
    }

    /// The events of `stream` from version `from` on (inclusive), in `direction`. Use
    /// `u64::MAX` with [`Direction::Backward`] to start at the stream's last event.
    ///
    /// The iterator reads in the caller's transaction; for long reads without holding one
    /// transaction, use [`Reader::for_each_in_stream`].
    ///
    /// # Errors
    ///
    /// The call fails on [`Error::InvalidStreamId`] or [`Error::Lmdb`]; each item fails as
    /// [`Reader::get`] does, or with [`Error::Corrupted`] when the index disagrees with the log.
    pub fn read_stream<'t>(
        &self,
        txn: &'t ReadTxn,
        stream: impl IntoStreamId,
        from: u64,
        direction: Direction,
    ) -> Result<Events<'t, R>> {
        let stream = stream.into_stream_id()?;
        let source = self.stream_source(self.raw(txn)?, stream, from, direction)?;
        Ok(Events::new(self.clone(), txn, source, direction))
    }

    /// Where a read of `stream` from version `from` on in `direction` takes its entries: the
    /// stream index up to the snapshot's watermark, and the unindexed tail's entries.
    pub(super) fn stream_source<'t>(
        &self,
        raw: &'t heed::RoTxn<'static>,
        stream: StreamId,
        from: u64,
        direction: Direction,
    ) -> Result<Source<'t>> {
        let store = &self.storage.store;
        let index = store.log.dbs.stream_index;
        let (lo, hi) = stream_read_keys(stream, from, direction);
        let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
        let tail = store
            .index
            .tail_entries(&store.log.dbs, raw, stream, from, direction)?;
        Ok(match direction {
            Direction::Forward => Source::StreamForward(
                stream,
                index.range(raw, &bounds)?,
                tail.into_iter(),
                LogLookup::new(&store.log.dbs, raw),
            ),
            Direction::Backward => {
                Source::StreamBackward(stream, tail.into_iter(), index.rev_range(raw, &bounds)?)
            }
        })
    }

    /// The events of the global log from sequence `from` on (inclusive), in `direction`. Use
    /// `u64::MAX` with [`Direction::Backward`] to start at the newest event.
    ///
    /// The iterator reads in the caller's transaction; for long reads without holding one
    /// transaction, use [`Reader::for_each_in_log`].
    ///
    /// # Errors
    ///
    /// The call fails on [`Error::Lmdb`]; each item fails as [`Reader::get`] does.
    pub fn read_log<'t>(
        &self,
        txn: &'t ReadTxn,
        from: u64,
        direction: Direction,
    ) -> Result<Events<'t, R>> {
        let scan = Scan::new(
            &self.log().dbs,
            self.raw(txn)?,
            from,
            direction,
            self.select(),
        )?;
        let source = Source::Log(scan);
        Ok(Events::new(self.clone(), txn, source, direction))
    }

    /// The events of the log that `filter` takes, from sequence `from` on (inclusive), in
    /// `direction`: those of its streams and of the streams in its categories, of its event
    /// types (see [`Filter`]). Use `u64::MAX` with [`Direction::Backward`] to start at the
    /// newest event.
    ///
    /// A filter of categories and no stream, or of event types and neither, is answered from
    /// the label index: only the records it lists are read.
    ///
    /// ```
    /// use varvedb::{Direction, ExpectedVersion, Filter, Reader, Storage, StorageConfig, Writer};
    /// let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// let mut writer = Writer::<u64>::new(storage.clone());
    /// writer.append_batch("order-1", ExpectedVersion::NoStream, [10u64, 11])?;
    /// writer.append_batch("invoice-1", ExpectedVersion::NoStream, [20u64])?;
    /// writer.append_batch("order-2", ExpectedVersion::NoStream, [30u64])?;
    /// let reader = Reader::<u64>::new(storage.clone());
    /// let txn = storage.read_txn()?;
    /// let orders: Vec<u64> = reader
    ///     .read_filtered(&txn, &Filter::default().category("order"), 1, Direction::Forward)?
    ///     .map(|e| e.map(|e| e.to_native()))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(orders, [10, 11, 30]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The call fails on [`Error::InvalidStreamId`] or [`Error::InvalidStreamName`] for what the
    /// filter was given, or [`Error::Lmdb`]; each item fails as [`Reader::get`] does, or with
    /// [`Error::Corrupted`] when the label index disagrees with the log.
    pub fn read_filtered<'t>(
        &self,
        txn: &'t ReadTxn,
        filter: &Filter,
        from: u64,
        direction: Direction,
    ) -> Result<Events<'t, R>> {
        let select = filter.clone().select(self)?;
        let scan = Scan::of(&self.log().dbs, self.raw(txn)?, from, direction, select)?;
        Ok(Events::new(self.clone(), txn, Source::Log(scan), direction))
    }

    /// The events of the streams in `category` (the part of their names before the first `-`),
    /// in global order from sequence `from` on (inclusive), in `direction`: a
    /// [`Reader::read_filtered`] of that category alone, answered from the label index.
    ///
    /// # Errors
    ///
    /// As [`Reader::read_filtered`].
    pub fn read_category<'t>(
        &self,
        txn: &'t ReadTxn,
        category: &str,
        from: u64,
        direction: Direction,
    ) -> Result<Events<'t, R>> {
        self.read_filtered(txn, &Filter::default().category(category), from, direction)
    }

    /// The name `stream` was created with, with its parts as the store recorded them; `None`
    /// for a stream created by id, or without events.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStreamId`], [`Error::InvalidStreamName`], [`Error::Lmdb`], and
    /// [`Error::Damaged`] for a damaged name entry.
    pub fn stream_name(
        &self,
        txn: &ReadTxn,
        stream: impl IntoStreamId,
    ) -> Result<Option<StreamName>> {
        let stream = stream.into_stream_id()?;
        Ok(self
            .log()
            .dbs
            .stream_name(self.raw(txn)?, stream)?
            .map(|(name, _)| name))
    }

    /// Every stream, ordered by id, with its current version and first and last sequence.
    ///
    /// # Errors
    ///
    /// The call fails on [`Error::Lmdb`]; an item fails with [`Error::Corrupted`] when a stream
    /// head is damaged.
    pub fn streams<'t>(
        &self,
        txn: &'t ReadTxn,
    ) -> Result<impl Iterator<Item = Result<StreamInfo>> + 't> {
        let store = &self.storage.store;
        store.index.streams(&store.log.dbs, self.raw(txn)?)
    }

    /// Calls `f` with each event of the log from `from` on, in `direction`, until the log ends or
    /// `f` breaks. Returns the number of events visited.
    ///
    /// The scan renews its read transaction whenever one has been open for longer than the
    /// reader's max transaction age, so a long scan (or a slow `f`) never pins old pages. Each
    /// view is valid during its call of `f`. A scan sees events committed while it runs.
    ///
    /// # Errors
    ///
    /// Stops at the first event that fails to read, with the error of [`Reader::get`]: nothing is
    /// skipped silently. Resume after `seq` to skip a damaged record on purpose.
    pub fn for_each_in_log(
        &self,
        from: u64,
        direction: Direction,
        mut f: impl FnMut(R::View<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut cursor = LogCursor::new(from, direction, self.max_txn_age);
        let select = self.select();
        let backward = direction == Direction::Backward;
        let mut visited = 0u64;
        let mut failed = None;
        let mut memo = ViewMemo::default();
        loop {
            let step = cursor.step(
                self.log(),
                &self.storage.store.index,
                &select,
                |txn, rec| {
                    let view = match self.view_of(txn.raw(), rec, &mut memo) {
                        Ok(view) => view,
                        Err(e) => match parts::of(self, rec, e, backward) {
                            // Each part of a split record, in the walk's order.
                            Ok(views) => {
                                for view in views {
                                    visited += 1;
                                    f(view)?;
                                }
                                return ControlFlow::Continue(());
                            }
                            Err(e) => {
                                failed = Some(e);
                                return ControlFlow::Break(());
                            }
                        },
                    };
                    visited += 1;
                    f(view)
                },
            )?;
            let failed = match step {
                Step::Failed(e) => Some(e),
                Step::Renew => failed.take(),
                Step::End | Step::Stopped => match failed.take() {
                    None => return Ok(visited),
                    e => e,
                },
            };
            if let Some(e) = failed {
                self.read_failed(&e);
                return Err(e);
            }
        }
    }

    /// Calls `f` with each event of `stream` from version `from` on, in `direction`, renewing the
    /// read transaction as [`Reader::for_each_in_log`] does. Returns the number of events visited.
    ///
    /// # Errors
    ///
    /// As [`Reader::for_each_in_log`], plus [`Error::InvalidStreamId`].
    pub fn for_each_in_stream(
        &self,
        stream: impl IntoStreamId,
        from: u64,
        direction: Direction,
        mut f: impl FnMut(R::View<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let stream = stream.into_stream_id()?;
        let mut next = from;
        let mut visited = 0u64;
        loop {
            let txn = self.storage.env.read_txn()?;
            let opened = Instant::now();
            let mut events = self.read_stream(&txn, stream, next, direction)?;
            let mut in_txn = 0u32;
            loop {
                let Some(view) = events.next().transpose()? else {
                    return Ok(visited);
                };
                let (_, _, pos) = R::place(&view);
                visited += 1;
                if f(view).is_break() {
                    return Ok(visited);
                }
                next = match direction {
                    Direction::Forward if pos < u64::MAX => pos + 1,
                    Direction::Backward if pos > 1 => pos - 1,
                    // The stream's end: only the rest of this event's parts may follow.
                    _ if events.has_parts() => next,
                    _ => return Ok(visited),
                };
                in_txn += 1;
                // A split record's parts all come from this transaction.
                if in_txn.is_multiple_of(64)
                    && opened.elapsed() > self.max_txn_age
                    && !events.has_parts()
                {
                    break;
                }
            }
        }
    }

    /// Counts a failed read in the store's metrics (damaged records, failed authentication).
    #[cold]
    #[inline(never)]
    pub(crate) fn read_failed(&self, e: &Error) {
        // The parts of a split are handed out, not a failure.
        if !matches!(e, Error::Split(_)) {
            self.storage.env.metrics().read_failed(e);
        }
    }

    /// The read rules of `R` this reader applies.
    pub(crate) fn kinds(&self) -> &R::Kinds {
        &self.kinds
    }

    /// The LMDB transaction of `txn`, refusing a transaction of another store.
    fn raw<'t>(&self, txn: &'t ReadTxn) -> Result<&'t heed::RoTxn<'static>> {
        txn.of(&self.storage.env)
    }

    /// How long one read transaction of a long read stays open at most.
    pub(crate) fn max_txn_age(&self) -> Duration {
        self.max_txn_age
    }

    /// The store's log.
    #[inline]
    pub(crate) fn log(&self) -> &Log {
        &self.storage.store.log
    }

    /// What this reader's scans select: the events of the types it accepts.
    pub(crate) fn select(&self) -> Select {
        Select {
            streams: None,
            categories: None,
            walk_types: false,
            group: None,
            types: Some(Arc::clone(&self.accepted)),
            follow: Some(Arc::clone(&self.follow)),
        }
    }

    /// The names read with the newest version of each (see `Select::follow`).
    pub(crate) fn follow(&self) -> &Arc<[(String, u16)]> {
        &self.follow
    }

    /// The names read as the same type as `name`, none when the reader does not read it.
    pub(crate) fn aliases(&self, name: &str) -> Vec<String> {
        R::aliases(&self.kinds, name)
    }

    /// The names the store keeps newer versions of the reader's types under, renamed by newer
    /// builds, as `txn` sees them.
    pub(crate) fn renamed_in(&self, txn: &heed::RoTxn<'_>) -> Result<Vec<String>> {
        let resolved = self.select().resolved(&self.log().dbs, txn)?;
        Ok(resolved
            .types
            .iter()
            .flat_map(|t| t.iter())
            .filter(|t| !self.accepted.contains(t))
            .cloned()
            .collect())
    }

    /// The error for a record of another type reached by position: a newer version of one of
    /// the reader's types stored under a new name, or another type.
    #[cold]
    #[inline(never)]
    fn foreign(&self, txn: &heed::RoTxn<'_>, other: &DecodedRecord<'_>) -> Error {
        let name = other.event_type_bytes();
        match self.renamed_in(txn) {
            Ok(renamed) if has_name(&renamed, name) => {
                super::readable::renamed(other.seq(), name, other.schema_version())
            }
            Ok(_) => wrong_type(other.seq(), &self.accepted, name),
            Err(e) => e,
        }
    }

    /// The type names this reader accepts.
    pub(crate) fn accepted(&self) -> &Arc<[String]> {
        &self.accepted
    }

    /// Whether `rec` holds an event of a type this reader accepts.
    #[inline]
    pub(crate) fn accepts(&self, rec: &DecodedRecord<'_>) -> bool {
        let found = rec.event_type_bytes();
        has_name(&self.accepted, found)
    }

    /// Verifies a record read by position and makes a typed view of it:
    /// [`Error::WrongEventType`] when it holds another type.
    #[inline]
    pub(crate) fn view_at<'t>(
        &self,
        txn: &heed::RoTxn<'_>,
        seq: u64,
        bytes: &'t [u8],
    ) -> Result<R::View<'t>> {
        match self.decode_own(seq, bytes)? {
            Ok(rec) => self.view_of(txn, rec, &mut ViewMemo::default()),
            Err(other) => Err(self.foreign(txn, &other)),
        }
    }

    /// Decodes a record reached by position or through the stream index: `Ok` with it when it
    /// holds a type this reader accepts (both checksums verified, in one pass), `Err` with its
    /// verified header when it holds another type, whatever the state of its payload (the
    /// payload is not this reader's to judge).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a damaged header, or a damaged payload of an accepted type.
    #[inline]
    pub(crate) fn decode_own<'t>(
        &self,
        seq: u64,
        bytes: &'t [u8],
    ) -> Result<std::result::Result<DecodedRecord<'t>, DecodedRecord<'t>>> {
        match record::decode_event(seq, bytes) {
            Ok(rec) if self.accepts(&rec) => Ok(Ok(rec)),
            Ok(rec) => Ok(Err(rec)),
            Err(e) => self.other_type_despite(seq, bytes, e),
        }
    }

    /// A record that failed to decode in one pass: of another type when its header is intact
    /// and names one, else the error.
    #[cold]
    #[inline(never)]
    fn other_type_despite<'t>(
        &self,
        seq: u64,
        bytes: &'t [u8],
        e: Error,
    ) -> Result<std::result::Result<DecodedRecord<'t>, DecodedRecord<'t>>> {
        match record::decode_header(seq, bytes) {
            Ok(header) if !self.accepts(&header) => Ok(Err(header)),
            _ => Err(e),
        }
    }

    /// The view of a record of an accepted type whose header is verified, read in `txn`, by
    /// the rules of `R` ([`Readable::view_of`]).
    #[inline(always)]
    pub(crate) fn view_of<'t>(
        &self,
        txn: &heed::RoTxn<'_>,
        rec: DecodedRecord<'t>,
        memo: &mut ViewMemo,
    ) -> Result<R::View<'t>> {
        R::view_of(&self.storage, &self.kinds, txn, Record(rec), memo)
    }
}

#[cfg(test)]
mod tests {
    use crate::env::{Commit, WriteKind};
    use crate::error::Error;
    use crate::{Direction, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

    /// A reader of one type is not the judge of another type's payload: a damaged payload of an
    /// event of another type is passed over by a stream read and named by a read by position,
    /// as an intact one would be; the reader of that type gets the damage.
    #[test]
    fn another_types_damaged_payload_is_not_this_readers_error() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig {
            path: dir.path().to_path_buf(),
            map_size: 1 << 20,
            ..Default::default()
        })
        .unwrap();
        Writer::<u64>::new(storage.clone())
            .append_batch(1, ExpectedVersion::Any, [10u64])
            .unwrap();
        Writer::<u32>::new(storage.clone())
            .append_batch(1, ExpectedVersion::Any, [20u32])
            .unwrap();
        Writer::<u64>::new(storage.clone())
            .append_batch(1, ExpectedVersion::Any, [30u64])
            .unwrap();
        // Flip the last byte of the u32 event's record: its payload region, so its payload
        // checksum fails and its header's holds.
        let dbs = storage.log().dbs;
        storage
            .env
            .write(WriteKind::Append, |wtxn| {
                let mut rec = dbs.get_record(wtxn, 2)?.unwrap().to_vec();
                let last = rec.len() - 1;
                rec[last] ^= 0xFF;
                dbs.log.put(wtxn, &2, &rec)?;
                Ok(Commit::Commit(()))
            })
            .unwrap();
        let txn = storage.read_txn().unwrap();
        let longs = Reader::<u64>::new(storage.clone());
        let read: Vec<u64> = longs
            .read_stream(&txn, 1, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().seq())
            .collect();
        assert_eq!(read, [1, 3]);
        assert!(matches!(
            longs.get(&txn, 2),
            Err(Error::WrongEventType { seq: 2, .. })
        ));
        let ints = Reader::<u32>::new(storage.clone());
        assert!(matches!(
            ints.get(&txn, 2),
            Err(Error::Corrupted { seq: 2, .. })
        ));
    }
}
