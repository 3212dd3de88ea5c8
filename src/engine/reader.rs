//! The typed reader.

use std::marker::PhantomData;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, U64};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::Archive;

use crate::crypto::KeyMemo;
use crate::engine::view::EventView;
use crate::error::{Error, Result};
use crate::index::deferred;
use crate::index::tail::Entry;
use crate::index::{parse_stream_version_key, stream_read_keys};
use crate::log::{prefetch, record, Envelope};
use crate::metrics::ReadKind;
use crate::storage::{ReadTxn, Storage};
use crate::types::{default_event_type, Direction, IntoStreamId, StreamId, StreamInfo};

/// Default longest time a `for_each_*` scan keeps one read transaction open.
pub const DEFAULT_MAX_TXN_AGE: Duration = Duration::from_millis(100);

/// Reads events of type `E`: point reads, stream and log ranges, stream listings.
///
/// Reads return [`EventView`]s that deref to `E::Archived`, validated with bytecheck and borrowed
/// from the read transaction without copying. Records whose event type is not one this reader
/// accepts give [`Error::WrongEventType`] (by default a reader accepts the type name its
/// [`Writer`](crate::engine::Writer) stores, [`default_event_type::<E>()`](crate::default_event_type)).
///
/// ```
/// use varvedb::storage::{Storage, StorageConfig};
/// use varvedb::engine::{Reader, Writer};
/// use varvedb::Direction;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
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
    accepted: Arc<[String]>,
    max_txn_age: Duration,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for Reader<E> {
    fn clone(&self) -> Self {
        Reader {
            storage: self.storage.clone(),
            accepted: Arc::clone(&self.accepted),
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

/// An iterator over events, borrowing the caller's read transaction.
pub struct Events<'t, E: Archive> {
    reader: Reader<E>,
    txn: &'t ReadTxn,
    source: Source<'t>,
    /// The stream key of the last encrypted record, for the next one.
    memo: KeyMemo,
    /// Items yielded, added to the transaction's read counts when the iterator is dropped.
    read: u64,
}

impl<E: Archive> Drop for Events<'_, E> {
    fn drop(&mut self) {
        let kind = match self.source {
            Source::LogForward(_) | Source::LogBackward(_) => ReadKind::Log,
            Source::StreamForward(..) | Source::StreamBackward(..) => ReadKind::Stream,
        };
        self.txn.count_reads(kind, self.read);
    }
}

enum Source<'t> {
    LogForward(heed::RoRange<'t, U64<BigEndian>, Bytes>),
    LogBackward(heed::RoRevRange<'t, U64<BigEndian>, Bytes>),
    /// The index on disk, then the unindexed tail's entries.
    StreamForward(
        StreamId,
        heed::RoRange<'t, Bytes, U64<BigEndian>>,
        std::vec::IntoIter<Entry>,
    ),
    /// The unindexed tail's entries (newest first), then the index on disk.
    StreamBackward(
        StreamId,
        std::vec::IntoIter<Entry>,
        heed::RoRevRange<'t, Bytes, U64<BigEndian>>,
    ),
}

impl<'t, E> Iterator for Events<'t, E>
where
    E: Archive + 'static,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    type Item = Result<EventView<'t, E>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_item();
        if let Some(result) = &item {
            self.read += 1;
            if let Err(e) = result {
                self.reader.read_failed(e);
            }
        }
        item
    }
}

impl<'t, E> Events<'t, E>
where
    E: Archive + 'static,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    #[inline]
    fn next_item(&mut self) -> Option<Result<EventView<'t, E>>> {
        let (stream, entry) = match &mut self.source {
            Source::LogForward(range) => {
                return range.next().map(|entry| {
                    entry.map_err(Error::from).and_then(|(seq, value)| {
                        prefetch::after_in_log(value);
                        self.reader
                            .view_value(self.txn.raw(), seq, value, &mut self.memo)
                    })
                });
            }
            Source::LogBackward(range) => {
                return range.next().map(|entry| {
                    entry.map_err(Error::from).and_then(|(seq, value)| {
                        self.reader
                            .view_value(self.txn.raw(), seq, value, &mut self.memo)
                    })
                });
            }
            Source::StreamForward(stream, range, tail) => {
                (*stream, index_or_tail(range.next(), || tail.next())?)
            }
            Source::StreamBackward(stream, tail, range) => match tail.next() {
                Some(e) => (*stream, Ok((e.version, e.seq))),
                None => (*stream, index_or_tail(range.next(), || None)?),
            },
        };
        Some(entry.and_then(|(version, seq)| {
            let bytes = self
                .reader
                .storage
                .shared
                .dbs
                .get_record(self.txn.raw(), seq)?
                .ok_or_else(|| Error::corrupted(seq, "stream index points at a missing record"))?;
            let view = self.reader.view_with(seq, bytes, &mut self.memo)?;
            check_place(&view, stream, version)?;
            Ok(view)
        }))
    }
}

/// The next (version, seq) of a stream: from the index on disk while it has entries, then from
/// the unindexed tail.
#[inline]
fn index_or_tail(
    index: Option<heed::Result<(&[u8], u64)>>,
    tail: impl FnOnce() -> Option<Entry>,
) -> Option<Result<(u64, u64)>> {
    match index {
        Some(Ok((key, seq))) => Some(
            parse_stream_version_key(key)
                .map(|(_, version)| (version, seq))
                .ok_or_else(|| Error::corrupted(seq, "malformed stream index key")),
        ),
        Some(Err(e)) => Some(Err(e.into())),
        None => tail().map(|e| Ok((e.version, e.seq))),
    }
}

type Opener<'a, E> = dyn for<'t> Fn(&'t ReadTxn, u64) -> Result<Events<'t, E>> + 'a;

impl<E> Reader<E>
where
    E: Archive + 'static,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// A reader for events of type `E`.
    pub fn new(storage: Storage) -> Self {
        Reader {
            storage,
            accepted: vec![default_event_type::<E>()].into(),
            max_txn_age: DEFAULT_MAX_TXN_AGE,
            _event: PhantomData,
        }
    }

    /// Also accepts records stored under these event type names (written with
    /// [`Writer::with_event_type`](crate::engine::Writer::with_event_type) or
    /// [`NewEvent::with_event_type`](crate::NewEvent::with_event_type)) as archives of `E`.
    pub fn accept_event_types<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all: Vec<String> = self.accepted.to_vec();
        all.extend(names.into_iter().map(Into::into));
        self.accepted = all.into();
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
        match self.storage.shared.dbs.get_record(raw, seq) {
            Ok(Some(bytes)) => self.view(seq, bytes).map(Some),
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
        match self.storage.shared.dbs.get_record(raw, seq) {
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
            .storage
            .shared
            .dbs
            .get_record(raw, head.last_seq)?
            .ok_or_else(|| {
                Error::corrupted(head.last_seq, "stream head points at a missing record")
            })?;
        let view = self.view(head.last_seq, bytes)?;
        check_place(&view, stream, head.version)?;
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
        let index = self.storage.shared.dbs.stream_index;
        let (lo, hi) = stream_read_keys(stream, from, direction);
        let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
        let raw = self.raw(txn)?;
        let tail = deferred::tail_entries(&self.storage.shared, raw, stream, from, direction)?;
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
            memo: KeyMemo::default(),
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
        let log = self.storage.shared.dbs.log;
        let source = match direction {
            Direction::Forward => Source::LogForward(log.range(self.raw(txn)?, &(from..))?),
            Direction::Backward => Source::LogBackward(log.rev_range(self.raw(txn)?, &(..=from))?),
        };
        Ok(Events {
            reader: self.clone(),
            txn,
            source,
            memo: KeyMemo::default(),
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
        deferred::streams(&self.storage.shared, self.raw(txn)?)
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
        f: impl FnMut(EventView<'_, E>) -> ControlFlow<()>,
    ) -> Result<u64> {
        self.renewing(
            from,
            direction,
            &|txn, next| self.read_log(txn, next, direction),
            |v| v.seq(),
            f,
        )
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
        f: impl FnMut(EventView<'_, E>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let stream = stream.into_stream_id()?;
        self.renewing(
            from,
            direction,
            &|txn, next| self.read_stream(txn, stream, next, direction),
            |v| v.version(),
            f,
        )
    }

    /// Drives a scan in read transactions of bounded age. `open` starts the range at a position,
    /// `position` tells where a view is, so the next transaction resumes right after it.
    fn renewing(
        &self,
        from: u64,
        direction: Direction,
        open: &Opener<'_, E>,
        position: fn(&EventView<'_, E>) -> u64,
        mut f: impl FnMut(EventView<'_, E>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut next = from;
        let mut visited = 0u64;
        loop {
            let txn = self.storage.env.read_txn()?;
            let opened = Instant::now();
            let mut events = open(&txn, next)?;
            let mut in_txn = 0u32;
            loop {
                let Some(view) = events.next().transpose()? else {
                    return Ok(visited);
                };
                let pos = position(&view);
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
    fn read_failed(&self, e: &Error) {
        self.storage.env.metrics().read_failed(e);
    }

    /// The LMDB transaction of `txn`, refusing a transaction of another store.
    fn raw<'t>(&self, txn: &'t ReadTxn) -> Result<&'t heed::RoTxn<'static>> {
        txn.of(&self.storage.env)
    }

    /// [`Reader::view`] of a `log` value, which may be the stub of a large record.
    #[inline]
    fn view_value<'t>(
        &self,
        txn: &'t heed::RoTxn<'_>,
        seq: u64,
        value: &'t [u8],
        memo: &mut KeyMemo,
    ) -> Result<EventView<'t, E>> {
        self.view_with(seq, self.storage.shared.dbs.record(txn, seq, value)?, memo)
    }

    /// Verifies a record and makes a typed view of it.
    #[inline]
    pub(crate) fn view<'t>(&self, seq: u64, bytes: &'t [u8]) -> Result<EventView<'t, E>> {
        self.view_with(seq, bytes, &mut KeyMemo::default())
    }

    /// [`Reader::view`], reusing the stream key in `memo` when the record has the same one.
    #[inline]
    pub(crate) fn view_with<'t>(
        &self,
        seq: u64,
        bytes: &'t [u8],
        memo: &mut KeyMemo,
    ) -> Result<EventView<'t, E>> {
        let rec = record::decode_event(seq, bytes)?;
        let found = rec.event_type_bytes();
        if !self.accepted.iter().any(|a| bytes_eq(a.as_bytes(), found)) {
            return Err(wrong_type(seq, &self.accepted, found));
        }
        if self.storage.shared.crypto.is_none() {
            if let Some(view) = rec
                .verified_plain_payload()
                .and_then(|payload| EventView::borrowed(rec, payload))
            {
                return Ok(view);
            }
        }
        let (view, copied) = EventView::new(rec, self.storage.shared.crypto.as_ref(), memo)?;
        if copied {
            self.storage
                .shared
                .unaligned_copies
                .fetch_add(1, Ordering::Relaxed);
        }
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

/// Checks that a record reached through an index is the one the index names.
fn check_place<E: Archive>(view: &EventView<'_, E>, stream: StreamId, version: u64) -> Result<()> {
    if view.stream() != stream || view.version() != version {
        return Err(Error::corrupted(
            view.seq(),
            format!(
                "index says stream {stream} version {version}, record says stream {} version {}",
                view.stream(),
                view.version()
            ),
        ));
    }
    Ok(())
}

/// Byte equality for short strings such as event type names, without a call into libc's
/// `memcmp` (which dominated typed scans in profiles).
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return false;
        }
        i += 8;
    }
    a[i..].iter().zip(&b[i..]).all(|(x, y)| x == y)
}
