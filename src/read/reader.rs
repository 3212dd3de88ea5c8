//! The typed reader.

use std::marker::PhantomData;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::events::{check_place, Events, Source};
use super::view::EventView;
use super::ViewMemo;
use crate::env::ReadTxn;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::event::Upcaster;
use crate::format::index::stream_read_keys;
use crate::format::record::{self, DecodedRecord};
use crate::format::Envelope;
use crate::log::{bytes_eq, Log, LogCursor, Scan, Select, Step};
use crate::metrics::handles::ReadKind;
use crate::store::Storage;
use crate::types::{Direction, IntoStreamId, StreamId, StreamInfo};

/// Default longest time a `for_each_*` scan keeps one read transaction open.
pub const DEFAULT_MAX_TXN_AGE: Duration = Duration::from_millis(100);

/// Reads events of type `E`: point reads, stream and log ranges, stream listings.
///
/// Reads return [`EventView`]s that deref to `E::Archived`, validated with bytecheck and borrowed
/// from the read transaction without copying. Records whose event type is not one this reader
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
pub struct Reader<E> {
    storage: Storage,
    /// Every event type name the reader reads: `E`'s, those accepted as `E`, and those of the
    /// older versions it upcasts.
    accepted: Arc<[String]>,
    kinds: Arc<Kinds<E>>,
    max_txn_age: Duration,
    _event: PhantomData<fn() -> E>,
}

/// How a reader reads each name and version, and what it verified of each: whether the store's
/// entry for it was found to take the layout the reader reads it with (entries never change, so
/// once is enough).
struct Kinds<E> {
    /// The names read as `E` at `E::VERSION`: `E::NAME` first, then those accepted.
    direct: Vec<(String, AtomicBool)>,
    /// The older (name, version)s read through an upcaster.
    upcasters: Vec<(Upcaster<E>, AtomicBool)>,
}

impl<E> Kinds<E> {
    fn new(direct: Vec<String>, upcasters: Vec<Upcaster<E>>) -> (Arc<[String]>, Arc<Kinds<E>>) {
        let mut accepted: Vec<String> = Vec::new();
        for name in direct
            .iter()
            .map(String::as_str)
            .chain(upcasters.iter().map(|u| u.name))
        {
            if !accepted.iter().any(|a| a == name) {
                accepted.push(name.to_string());
            }
        }
        let kinds = Kinds {
            direct: direct
                .into_iter()
                .map(|n| (n, AtomicBool::new(false)))
                .collect(),
            upcasters: upcasters
                .into_iter()
                .map(|u| (u, AtomicBool::new(false)))
                .collect(),
        };
        (accepted.into(), Arc::new(kinds))
    }
}

/// How an event is read, once checked.
enum Verdict {
    /// As `E`, straight from its payload.
    Current,
    /// Through the upcaster at this index.
    Upcast(usize),
}

impl<E> Clone for Reader<E> {
    fn clone(&self) -> Self {
        Reader {
            storage: self.storage.clone(),
            accepted: Arc::clone(&self.accepted),
            kinds: Arc::clone(&self.kinds),
            max_txn_age: self.max_txn_age,
            _event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for Reader<E> {
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
    /// A reader for events of type `E`, and of its older versions, which it upcasts (see
    /// [`Upcast`](crate::Upcast)).
    pub fn new(storage: Storage) -> Self {
        let (accepted, kinds) = Kinds::new(vec![E::NAME.to_string()], E::upcasts());
        Reader {
            storage,
            accepted,
            kinds,
            max_txn_age: DEFAULT_MAX_TXN_AGE,
            _event: PhantomData,
        }
    }

    /// Also accepts records stored under these event type names (written with
    /// [`Writer::with_event_type`](crate::Writer::with_event_type) or
    /// [`NewEvent::with_event_type`](crate::NewEvent::with_event_type)) as archives of `E`, at
    /// `E`'s schema version.
    pub fn accept_event_types<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut direct: Vec<String> = self.kinds.direct.iter().map(|(n, _)| n.clone()).collect();
        direct.extend(names.into_iter().map(Into::into));
        let upcasters = self
            .kinds
            .upcasters
            .iter()
            .map(|(u, _)| u.clone())
            .collect();
        (self.accepted, self.kinds) = Kinds::new(direct, upcasters);
        self
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
    /// `E`, [`Error::Lmdb`].
    pub fn get<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<EventView<'t, E>>> {
        let raw = self.raw(txn)?;
        txn.count_reads(ReadKind::Get, 1);
        match self.log().dbs.get_record(raw, seq) {
            Ok(Some(bytes)) => self.view_at(raw, seq, bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
        .inspect_err(|e| self.read_failed(e))
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

    /// The last event of `stream`, or `None` when the stream has no events.
    ///
    /// # Errors
    ///
    /// As [`Reader::get`], plus [`Error::Corrupted`] when the stream's head is damaged.
    pub fn last_in_stream<'t>(
        &self,
        txn: &'t ReadTxn,
        stream: impl IntoStreamId,
    ) -> Result<Option<EventView<'t, E>>> {
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
    ) -> Result<Option<EventView<'t, E>>> {
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
        let view = self.view_at(raw, head.last_seq, bytes)?;
        check_place(
            view.seq(),
            view.stream(),
            view.version(),
            stream,
            head.version,
        )?;
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
    ) -> Result<Events<'t, E>> {
        let stream = stream.into_stream_id()?;
        let store = &self.storage.store;
        let index = store.log.dbs.stream_index;
        let (lo, hi) = stream_read_keys(stream, from, direction);
        let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
        let raw = self.raw(txn)?;
        let tail = store
            .index
            .tail_entries(&store.log.dbs, raw, stream, from, direction)?;
        let source = match direction {
            Direction::Forward => {
                Source::StreamForward(stream, index.range(raw, &bounds)?, tail.into_iter())
            }
            Direction::Backward => {
                Source::StreamBackward(stream, tail.into_iter(), index.rev_range(raw, &bounds)?)
            }
        };
        Ok(Events {
            reader: self.clone(),
            txn,
            source,
            memo: ViewMemo::default(),
            read: 0,
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
    ) -> Result<Events<'t, E>> {
        let scan = Scan::new(
            &self.log().dbs,
            self.raw(txn)?,
            from,
            direction,
            self.select(),
        )?;
        let source = Source::Log(scan);
        Ok(Events {
            reader: self.clone(),
            txn,
            source,
            memo: ViewMemo::default(),
            read: 0,
        })
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
        mut f: impl FnMut(EventView<'_, E>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut cursor = LogCursor::new(from, direction, self.max_txn_age);
        let select = self.select();
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
                        Err(e) => {
                            failed = Some(e);
                            return ControlFlow::Break(());
                        }
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
        mut f: impl FnMut(EventView<'_, E>) -> ControlFlow<()>,
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
                let pos = view.version();
                visited += 1;
                if f(view).is_break() {
                    return Ok(visited);
                }
                next = match direction {
                    Direction::Forward if pos < u64::MAX => pos + 1,
                    Direction::Backward if pos > 1 => pos - 1,
                    _ => return Ok(visited),
                };
                in_txn += 1;
                if in_txn.is_multiple_of(64) && opened.elapsed() > self.max_txn_age {
                    break;
                }
            }
        }
    }

    /// Counts a failed read in the store's metrics (damaged records, failed authentication).
    #[cold]
    #[inline(never)]
    pub(crate) fn read_failed(&self, e: &Error) {
        self.storage.env.metrics().read_failed(e);
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
            types: Some(Arc::clone(&self.accepted)),
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
        self.accepted.iter().any(|a| bytes_eq(a.as_bytes(), found))
    }

    /// Verifies a record read by position and makes a typed view of it:
    /// [`Error::WrongEventType`] when it holds another type.
    #[inline]
    pub(crate) fn view_at<'t>(
        &self,
        txn: &heed::RoTxn<'_>,
        seq: u64,
        bytes: &'t [u8],
    ) -> Result<EventView<'t, E>> {
        match self.decode_own(seq, bytes)? {
            Ok(rec) => self.view_of(txn, rec, &mut ViewMemo::default()),
            Err(other) => Err(wrong_type(seq, &self.accepted, other.event_type_bytes())),
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

    /// The typed view of a record of an accepted type whose header is verified, read in `txn`
    /// (where the store's record of its type's layout is looked up, once): its payload
    /// checksummed (unless done already), decrypted in an encrypted store (reusing the stream
    /// key in `memo` when the record has the same one), and validated as an archived `E`.
    /// Always inlined: it is the per-record work of every typed scan, and a record moved through
    /// memory on its way into a view stalls the loop.
    #[inline(always)]
    pub(crate) fn view_of<'t>(
        &self,
        txn: &heed::RoTxn<'_>,
        rec: DecodedRecord<'t>,
        memo: &mut ViewMemo,
    ) -> Result<EventView<'t, E>> {
        let version = rec.schema_version();
        if !(memo.schema_checked
            && version == E::VERSION
            && (self.accepted.len() == 1 || bytes_eq(rec.event_type_bytes(), E::NAME.as_bytes())))
        {
            // Scalars, not `&rec`: taking the record's address would make it go through memory
            // on every record, a store-forwarding stall in the hot loop.
            let name = rec.event_type_bytes();
            match self.check_schema(txn, rec.seq(), name, version)? {
                Verdict::Current => memo.schema_checked = bytes_eq(name, E::NAME.as_bytes()),
                Verdict::Upcast(i) => return self.upcast(rec, i, memo),
            }
        }
        let log = self.log();
        if log.crypto.is_none() {
            if let Some(view) = rec
                .verified_plain_payload()
                .and_then(|payload| EventView::borrowed(rec, payload))
            {
                return Ok(view);
            }
        }
        let (view, copied) = EventView::new(rec, log.crypto.as_ref(), &mut memo.keys)?;
        if copied {
            self.storage
                .store
                .unaligned_copies
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(view)
    }
}

impl<E> Reader<E>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// How an event of type `name` at `version` is read as `E`: straight, when `version` is
    /// `E`'s and the name one read as `E`; through an upcaster, when the reader has one for
    /// them; and in either case only when the store recorded for them the layout the reader
    /// reads them with, or none that is known.
    #[cold]
    #[inline(never)]
    fn check_schema(
        &self,
        txn: &heed::RoTxn<'_>,
        seq: u64,
        name: &[u8],
        version: u16,
    ) -> Result<Verdict> {
        let kinds = &self.kinds;
        let direct = (version == E::VERSION)
            .then(|| {
                kinds
                    .direct
                    .iter()
                    .position(|(n, _)| bytes_eq(n.as_bytes(), name))
            })
            .flatten();
        let (verdict, layout, verified) =
            match direct {
                Some(i) => (Verdict::Current, E::LAYOUT, &kinds.direct[i].1),
                None => {
                    let Some(i) = kinds.upcasters.iter().position(|(u, _)| {
                        u.version == version && bytes_eq(u.name.as_bytes(), name)
                    }) else {
                        if !self.accepted.iter().any(|a| bytes_eq(a.as_bytes(), name)) {
                            return Err(wrong_type(seq, &self.accepted, name));
                        }
                        return Err(Error::UnknownSchemaVersion {
                            seq,
                            event_type: String::from_utf8_lossy(name).into_owned(),
                            stored: version,
                            current: E::VERSION,
                        });
                    };
                    let (upcaster, verified) = &kinds.upcasters[i];
                    (Verdict::Upcast(i), upcaster.layout, verified)
                }
            };
        if verified.load(Ordering::Relaxed) {
            return Ok(verdict);
        }
        let log = &self.storage.store.log;
        let registered = log
            .schemas
            .committed(&log.dbs, txn, name, version)
            .map_err(|e| match e {
                Error::Damaged { entry, reason } => Error::corrupted(
                    seq,
                    format!("the store's record of its layout ({entry}) is damaged: {reason}"),
                ),
                e => e,
            })?
            .ok_or_else(|| {
                Error::corrupted(
                    seq,
                    format!(
                        "the store has no record of the layout of {} v{version}, which every event has",
                        String::from_utf8_lossy(name)
                    ),
                )
            })?;
        crate::schema::check(registered, name, version, layout, Some(seq))?;
        verified.store(true, Ordering::Relaxed);
        Ok(verdict)
    }

    /// The view of an event of an older version, through upcaster `i`, counted in the
    /// store's metrics.
    #[cold]
    #[inline(never)]
    fn upcast<'t>(
        &self,
        rec: DecodedRecord<'t>,
        i: usize,
        memo: &mut ViewMemo,
    ) -> Result<EventView<'t, E>> {
        let log = &self.storage.store.log;
        let upcaster = &self.kinds.upcasters[i].0;
        let view = EventView::upcast(rec, log.crypto.as_ref(), &mut memo.keys, upcaster)?;
        log.env
            .metrics()
            .upcast(upcaster.name, upcaster.version, E::VERSION);
        Ok(view)
    }
}

#[cold]
#[inline(never)]
fn wrong_type(seq: u64, accepted: &[String], found: &[u8]) -> Error {
    Error::WrongEventType {
        seq,
        expected: accepted.join(" | "),
        found: String::from_utf8_lossy(found).into_owned(),
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
