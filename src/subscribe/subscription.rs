//! Catch-up subscriptions: history from a position, then live events, with no gap and no
//! duplicate at the switch, woken by the store's head instead of polling.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::{ControlFlow, Deref};

use rkyv::util::AlignedVec;
use rkyv::Archive;
use tokio::sync::watch;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::format::OwnedEnvelope;
use crate::log::{LogCursor, Select, Step};
use crate::read::parts;
use crate::read::view::PAYLOAD_ALIGN;
use crate::read::ViewMemo;
use crate::read::{EventView, Filter, Readable, Reader};
use crate::types::Direction;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event of the log.
    Start,
    /// After the last event committed when the subscription is created: live events only.
    End,
    /// The event with this global sequence (inclusive).
    Seq(u64),
}

/// An event delivered by a [`Subscription`]: its envelope and its validated archive, copied out
/// of the read transaction once (so it can be held across `.await`). Derefs to `E::Archived`.
pub struct RecordedEvent<E: Archive> {
    envelope: OwnedEnvelope,
    payload: AlignedVec<PAYLOAD_ALIGN>,
    _event: PhantomData<fn() -> E>,
}

impl<E: Archive> RecordedEvent<E> {
    pub(crate) fn from_view(view: &EventView<'_, E>) -> Self {
        let bytes = view.payload_bytes();
        let mut payload = AlignedVec::with_capacity(bytes.len());
        payload.extend_from_slice(bytes);
        RecordedEvent {
            envelope: view.envelope().to_owned(),
            payload,
            _event: PhantomData,
        }
    }

    /// The event's envelope.
    pub fn envelope(&self) -> &OwnedEnvelope {
        &self.envelope
    }

    /// Global sequence of the event.
    pub fn seq(&self) -> u64 {
        self.envelope.seq
    }

    /// Deserializes the archived event into an owned `E`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPayload`] if rkyv's deserializer fails; the archive itself was validated
    /// when the event was read.
    pub fn deserialize(&self) -> Result<E>
    where
        E::Archived: rkyv::Deserialize<E, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        rkyv::deserialize::<E, rkyv::rancor::Error>(&**self).map_err(|e| Error::InvalidPayload {
            seq: self.envelope.seq,
            reason: e.to_string(),
        })
    }
}

impl<E: Archive> Deref for RecordedEvent<E> {
    type Target = E::Archived;

    fn deref(&self) -> &E::Archived {
        // SAFETY: `from_view` copied these bytes from an `EventView`, which validated them as an
        // `E::Archived` with bytecheck; the copy is 16-byte aligned (what the archive needs, as
        // for the view) and never mutated afterwards.
        unsafe { rkyv::access_unchecked::<E::Archived>(&self.payload) }
    }
}

impl<E: Archive> std::fmt::Debug for RecordedEvent<E>
where
    E::Archived: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("seq", &self.envelope.seq)
            .field("stream", &self.envelope.stream)
            .field("version", &self.envelope.version)
            .field("event", &**self)
            .finish()
    }
}

/// What a subscription yields.
// Nearly every item is an `Event`: boxing it would add an allocation per event to save moving a
// few hundred bytes on the rare `CaughtUp`.
#[allow(clippy::large_enum_variant)]
pub enum SubscriptionItem<R: Readable> {
    /// The next matching event ([`RecordedEvent`] for one event type).
    Event(R::Recorded),
    /// History is delivered: every event committed before this point was yielded; what follows
    /// is live. Yielded once.
    CaughtUp,
}

impl<R: Readable> std::fmt::Debug for SubscriptionItem<R>
where
    R::Recorded: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscriptionItem::Event(e) => f.debug_tuple("Event").field(e).finish(),
            SubscriptionItem::CaughtUp => f.write_str("CaughtUp"),
        }
    }
}

/// A catch-up subscription to the log (see [`Reader::subscribe`]).
///
/// It reads history in read transactions of at most `batch` events, then waits on the store's
/// head (a `tokio::sync::watch` that moves only after a commit) and reads what was committed.
/// It never holds more than one batch in memory however far it lags, and it never slows
/// writers: it only reads. The filter is applied to each record's header before its payload is
/// read: events of other streams and of types the reader does not accept (or the filter does not
/// name) are passed over without being checksummed or decrypted. An unreadable record it wants,
/// or a shredded one, is an error item (the subscription then goes on after it).
pub struct Subscription<R: Readable> {
    reader: Reader<R>,
    head: watch::Receiver<u64>,
    cursor: LogCursor,
    select: Select,
    memo: ViewMemo,
    batch: usize,
    buffer: VecDeque<Result<R::Recorded>>,
    caught_up_sent: bool,
    _open: OpenSubscription,
}

impl<R: Readable> Reader<R> {
    /// A catch-up subscription from `start`, delivering the events that pass `filter`.
    ///
    /// ```
    /// use varvedb::{Reader, Writer};
    /// use varvedb::{Filter, StartFrom, SubscriptionItem};
    /// use varvedb::{Storage, StorageConfig};
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    /// pub struct Ping { pub n: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// let mut writer = Writer::<Ping>::new(storage.clone());
    /// writer.append(1, 1, Ping { n: 1 })?;
    /// let reader = Reader::<Ping>::new(storage.clone());
    /// let mut sub = reader.subscribe(StartFrom::Start, Filter::default().stream(1))?;
    /// assert!(matches!(sub.next().await, Some(Ok(SubscriptionItem::Event(e))) if e.n == 1));
    /// assert!(matches!(sub.next().await, Some(Ok(SubscriptionItem::CaughtUp))));
    /// writer.append(1, 2, Ping { n: 2 })?;
    /// assert!(matches!(sub.next().await, Some(Ok(SubscriptionItem::Event(e))) if e.n == 2));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStreamId`] when the filter was given an id that is not a stream id.
    pub fn subscribe(&self, start: StartFrom, filter: Filter) -> Result<Subscription<R>> {
        let select = filter.select(self)?;
        let storage = self.storage();
        let head = storage.subscribe();
        let next = match start {
            StartFrom::Start => 1,
            StartFrom::End => storage.head() + 1,
            StartFrom::Seq(seq) => seq.max(1),
        };
        Ok(Subscription {
            reader: self.clone(),
            head,
            cursor: LogCursor::new(next, Direction::Forward, self.max_txn_age()),
            select,
            memo: ViewMemo::default(),
            batch: 256,
            buffer: VecDeque::new(),
            caught_up_sent: false,
            _open: OpenSubscription::new(&storage.env),
        })
    }
}

impl<R: Readable> Subscription<R> {
    /// Reads at most this many events per read transaction and holds at most this many in
    /// memory (default 256, at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The subscription as a [`Stream`](futures_core::Stream) of the items of
    /// [`next`](Subscription::next), for `StreamExt` combinators and `while let` loops over
    /// `stream.next().await`.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// # use varvedb::{Reader, Writer};
    /// # use varvedb::{Filter, StartFrom, SubscriptionItem};
    /// # use varvedb::{Storage, StorageConfig};
    /// # #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
    /// # pub struct Ping { pub n: u32 }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// # let mut writer = Writer::<Ping>::new(storage.clone());
    /// # for n in 1..=3 { writer.append(1, n as u64, Ping { n })?; }
    /// let reader = Reader::<Ping>::new(storage.clone());
    /// let events = reader
    ///     .subscribe(StartFrom::Start, Filter::default())?
    ///     .into_stream()
    ///     .take_while(|item| std::future::ready(!matches!(item, Ok(SubscriptionItem::CaughtUp))))
    ///     .count()
    ///     .await;
    /// assert_eq!(events, 3);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(
        self,
    ) -> impl futures_core::Stream<Item = Result<SubscriptionItem<R>>> + Send {
        futures_util::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
    }

    /// The global sequence the subscription reads next.
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }

    /// The next item: an event, the one-time [`SubscriptionItem::CaughtUp`] marker, or an error
    /// for an unreadable record. `None` once the store is closed.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Result<SubscriptionItem<R>>> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                return Some(item.map(SubscriptionItem::Event));
            }
            // The announced head is read out before the store's: a watch's borrow holds its
            // read lock, and a second borrow of the same lock while a commit waits to publish
            // would wait for that commit forever.
            let announced = *self.head.borrow_and_update();
            let head = announced.max(self.reader.storage().head());
            if self.cursor.position() <= head {
                if let Err(e) = self.fill(head) {
                    return Some(Err(e));
                }
                continue;
            }
            if !self.caught_up_sent {
                self.caught_up_sent = true;
                return Some(Ok(SubscriptionItem::CaughtUp));
            }
            if self.head.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Reads up to one batch of the events from the subscription's position on into the
    /// buffer, in one read transaction. Everything it finds is committed, so it may read past
    /// `head`, the head its watch announced.
    fn fill(&mut self, head: u64) -> Result<()> {
        let Subscription {
            reader,
            cursor,
            select,
            memo,
            batch,
            buffer,
            ..
        } = self;
        let step = cursor.step(
            reader.log(),
            &reader.storage().store.index,
            select,
            |txn, rec| {
                match reader.view_of(txn.raw(), rec, memo) {
                    Ok(view) => buffer.push_back(Ok(R::record(&view))),
                    Err(e) => match parts::of(reader, rec, e, false) {
                        // Each part of a split record, one by one.
                        Ok(views) => buffer.extend(views.iter().map(|view| Ok(R::record(view)))),
                        Err(e) => buffer.push_back(Err(e)),
                    },
                }
                if buffer.len() >= *batch {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        let step = match step {
            // Delivered in order, as an error item; the next fill goes on after it.
            Step::Failed(e) => {
                buffer.push_back(Err(e));
                return Ok(());
            }
            step => step,
        };
        if matches!(step, Step::End) && cursor.position() <= head {
            // Nothing more is stored up to `head`: never spin on an empty range.
            cursor.seek(head + 1);
        }
        Ok(())
    }
}

/// Counts an open subscription in the store's metrics for as long as it lives.
struct OpenSubscription(Env);

impl OpenSubscription {
    fn new(env: &Env) -> OpenSubscription {
        env.metrics().subscriptions(1.0);
        OpenSubscription(env.clone())
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.metrics().subscriptions(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Commit, WriteKind};
    use crate::format::index::stream_version_key;
    use crate::{ExpectedVersion, Storage, StorageConfig, Writer};

    /// The sequences a subscription delivers from the start to `CaughtUp`.
    fn history(reader: &Reader<u64>, filter: Filter) -> Vec<Result<u64>> {
        let mut sub = reader
            .subscribe(StartFrom::Start, filter)
            .unwrap()
            .with_batch(3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            loop {
                match sub.next().await.expect("the store is open") {
                    Ok(SubscriptionItem::Event(e)) => out.push(Ok(e.seq())),
                    Ok(SubscriptionItem::CaughtUp) => return out,
                    Err(e) => out.push(Err(e)),
                }
            }
        })
    }

    /// A subscription to a few streams walks their stream index entries; an entry that does not
    /// lead where it says (or cannot be read at all) must not make it skip or repeat events: it
    /// reads the log instead, which is intact, and delivers exactly what the log holds.
    #[test]
    fn a_damaged_index_entry_neither_skips_nor_repeats_events() {
        for damage in [
            // The entry points at another stream's record, before and after the right one.
            Some(3u64),
            Some(70),
            // The entry is not a sequence at all.
            None,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::open(StorageConfig {
                path: dir.path().to_path_buf(),
                map_size: 1 << 20,
                ..Default::default()
            })
            .unwrap();
            let mut writer = Writer::<u64>::new(storage.clone());
            for n in 0..120u64 {
                writer
                    .append_batch(n % 40, ExpectedVersion::Any, [n])
                    .unwrap();
            }
            storage.flush_index().unwrap();
            let dbs = storage.log().dbs;
            let key = stream_version_key(crate::StreamId(5), 2);
            storage
                .env
                .write(WriteKind::Append, |wtxn| {
                    let value = damage.map(u64::to_be_bytes);
                    let value: &[u8] = value.as_ref().map_or(&[1, 2, 3], |v| &v[..]);
                    dbs.stream_index.put(wtxn, &key, value)?;
                    Ok(Commit::Commit(()))
                })
                .unwrap();
            let reader = Reader::<u64>::new(storage.clone());
            let want: Vec<u64> = (1..=120)
                .filter(|s| matches!((s - 1) % 40, 5 | 7))
                .collect();
            let got: Vec<u64> = history(&reader, Filter::default().stream(5).stream(7))
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, want, "damage {damage:?}");
        }
    }
}
