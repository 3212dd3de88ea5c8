//! Every read path of a `Reader<E>` over a whole store, turned into values that compare with
//! `==` against what the reader must make of each event of the log: `get`, `last_in_stream`,
//! `read_stream` and `read_log` both ways, `for_each_in_log` and `for_each_in_stream` both ways,
//! a subscription from the start, a processor and two projectors (one event per transaction, and
//! the whole log in one). Shared by `tests/golden.rs` and `tests/upcast_model.rs`.
//!
//! What each path must give follows from one description per event ([`Want`]) and the rules of
//! `src/read/mod.rs`: an event the reader reads is a value with its stored envelope on every
//! path; one an upcast splits is each of its parts, in the order of the read, on every path but
//! `get` (an error naming the split; `get_parts` reads them); an event of an accepted type it cannot read is an error item on every path (the walks,
//! processors and projectors stop there); an event of another type is passed over by every scan
//! and named by the reads by position.
#![allow(dead_code)]

use std::fmt::Debug;
use std::ops::ControlFlow;

use heed::types::Bytes;
use rkyv::api::high::{HighDeserializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use varvedb::{
    Direction, Envelope, Error, Event, EventHandler, EventView, Filter, OwnedEnvelope, Part,
    Processor, Projection, Projector, Reader, StartFrom, Storage, SubscriptionItem, Uuid,
};

/// An event as a path delivers it: every field of its envelope but the payload's address, and
/// its value as the reader's type.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen<T> {
    pub seq: u64,
    pub stream: u128,
    pub version: u64,
    pub prev_seq: Option<u64>,
    pub timestamp_ns: u64,
    pub event_id: Uuid,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// The stored name: the name of the version the event was written with.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u16,
    pub metadata: Option<Vec<u8>>,
    /// Length of the stored (plaintext) archive.
    pub payload_len: u32,
    pub encrypted: bool,
    /// Which of the parts of a split the event is.
    pub part: Part,
    pub value: T,
}

impl<T> Seen<T> {
    pub fn of(env: &Envelope<'_>, value: T) -> Seen<T> {
        Seen {
            seq: env.seq,
            stream: env.stream.as_u128(),
            version: env.version,
            prev_seq: env.prev_seq,
            timestamp_ns: env.timestamp_ns,
            event_id: env.event_id,
            correlation_id: env.correlation_id,
            causation_id: env.causation_id,
            event_type: env.event_type.to_string(),
            schema_version: env.schema_version,
            metadata: env.metadata.map(<[u8]>::to_vec),
            payload_len: env.payload_len,
            encrypted: env.encrypted,
            part: env.part,
            value,
        }
    }

    pub fn of_owned(env: &OwnedEnvelope, value: T) -> Seen<T> {
        Seen {
            seq: env.seq,
            stream: env.stream.as_u128(),
            version: env.version,
            prev_seq: env.prev_seq,
            timestamp_ns: env.timestamp_ns,
            event_id: env.event_id,
            correlation_id: env.correlation_id,
            causation_id: env.causation_id,
            event_type: env.event_type.clone(),
            schema_version: env.schema_version,
            metadata: env.metadata.clone(),
            payload_len: env.payload_len,
            encrypted: env.encrypted,
            part: env.part,
            value,
        }
    }
}

/// An error, reduced to what identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    UnknownSchemaVersion {
        seq: u64,
        event_type: String,
        stored: u16,
        current: u16,
    },
    WrongEventType {
        seq: u64,
        found: String,
    },
    RenamedEventType {
        seq: Option<u64>,
        event_type: String,
        version: u16,
    },
    LayoutChanged {
        seq: Option<u64>,
        event_type: String,
        version: u16,
    },
    SplitEvent {
        seq: u64,
        event_type: String,
        version: u16,
        parts: u32,
    },
    /// Any other error: none is expected.
    Other(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::UnknownSchemaVersion {
                seq,
                event_type,
                stored,
                current,
            } => Failure::UnknownSchemaVersion {
                seq,
                event_type,
                stored,
                current,
            },
            Error::WrongEventType { seq, found, .. } => Failure::WrongEventType { seq, found },
            Error::RenamedEventType {
                seq,
                event_type,
                version,
            } => Failure::RenamedEventType {
                seq,
                event_type,
                version,
            },
            Error::LayoutChanged {
                seq,
                event_type,
                version,
                ..
            } => Failure::LayoutChanged {
                seq,
                event_type,
                version,
            },
            Error::SplitEvent {
                seq,
                event_type,
                version,
                parts,
            } => Failure::SplitEvent {
                seq,
                event_type,
                version,
                parts,
            },
            e => Failure::Other(format!("{e:?}")),
        }
    }
}

/// What the reader must make of one event of the log.
#[derive(Clone, Debug)]
pub enum Want<T> {
    /// Read as this value with this envelope on every path; `upcast`: through an upcaster.
    Read { seen: Seen<T>, upcast: bool },
    /// Split by an upcast into these events, in order (at least two): each of them on every
    /// path, [`Failure::SplitEvent`] from `get`.
    Split { parts: Vec<Seen<T>> },
    /// An event of an accepted type the reader cannot read: this error on every path.
    Fails {
        seq: u64,
        stream: u128,
        failure: Failure,
    },
    /// An event of another type: passed over by scans, this error from reads by position.
    Other {
        seq: u64,
        stream: u128,
        failure: Failure,
    },
}

impl<T: Clone> Want<T> {
    fn seq(&self) -> u64 {
        match self {
            Want::Read { seen, .. } => seen.seq,
            Want::Split { parts } => parts[0].seq,
            Want::Fails { seq, .. } | Want::Other { seq, .. } => *seq,
        }
    }

    fn stream(&self) -> u128 {
        match self {
            Want::Read { seen, .. } => seen.stream,
            Want::Split { parts } => parts[0].stream,
            Want::Fails { stream, .. } | Want::Other { stream, .. } => *stream,
        }
    }

    /// What `get` gives.
    fn point(&self) -> Item<T> {
        match self {
            Want::Read { seen, upcast } => Ok((seen.clone(), *upcast)),
            Want::Split { parts } => Err(Failure::SplitEvent {
                seq: parts[0].seq,
                event_type: parts[0].event_type.clone(),
                version: parts[0].schema_version,
                parts: parts.len() as u32,
            }),
            Want::Fails { failure, .. } | Want::Other { failure, .. } => Err(failure.clone()),
        }
    }

    /// What `get_parts` gives.
    fn all_parts(&self) -> Parts<T> {
        match self {
            Want::Split { parts } => Ok(parts.iter().map(|p| (p.clone(), true)).collect()),
            other => other.point().map(|item| vec![item]),
        }
    }

    /// What `last_in_stream` gives when this is the stream's last event.
    fn last(&self) -> Item<T> {
        match self {
            Want::Split { parts } => Ok((parts.last().unwrap().clone(), true)),
            other => other.point(),
        }
    }

    /// What a scan gives, in its direction: nothing when it passes over the event.
    fn scanned(&self, backward: bool) -> Vec<Item<T>> {
        match self {
            Want::Other { .. } => Vec::new(),
            Want::Split { parts } => {
                let mut items: Vec<Item<T>> = parts.iter().map(|p| Ok((p.clone(), true))).collect();
                if backward {
                    items.reverse();
                }
                items
            }
            _ => vec![self.point()],
        }
    }
}

type Item<T> = Result<(Seen<T>, bool), Failure>;
/// What `get_parts` gives.
type Parts<T> = Result<Vec<(Seen<T>, bool)>, Failure>;

/// The events of stream `s`, in log order.
fn of_stream<T>(want: &[Want<T>], s: u128) -> Vec<&Want<T>>
where
    T: Clone,
{
    want.iter().filter(|w| w.stream() == s).collect()
}

/// What a scan over `ws`, in `ws`'s order, gives.
fn scanned<'w, T: Clone + 'w>(
    ws: impl Iterator<Item = &'w Want<T>>,
    backward: bool,
) -> Vec<Item<T>> {
    ws.flat_map(|w| w.scanned(backward)).collect()
}

/// What an iterator of views gives.
fn collect<E>(events: varvedb::Events<'_, E>) -> Vec<Item<E>>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<E, HighDeserializer<rancor::Error>>,
{
    events.map(view_item).collect()
}

/// The items of a walk that stops at the first error, with the error.
fn walk<T: Clone>(items: &[Item<T>]) -> Vec<Item<T>> {
    let mut out = Vec::new();
    for item in items {
        out.push(item.clone());
        if item.is_err() {
            break;
        }
    }
    out
}

/// Items without the upcast flag (subscriptions, processors and projectors do not show it).
fn values<T: Clone>(items: &[Item<T>]) -> Vec<Result<Seen<T>, Failure>> {
    items
        .iter()
        .map(|i| i.clone().map(|(seen, _)| seen))
        .collect()
}

fn view_item<E>(view: Result<EventView<'_, E>, Error>) -> Item<E>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<E, HighDeserializer<rancor::Error>>,
{
    let view = view?;
    assert!(!view.is_copied(), "seq {}: payload copied", view.seq());
    let value = view.deserialize().map_err(Failure::from)?;
    Ok((Seen::of(&view.envelope(), value), view.is_upcast()))
}

/// The envelopes as stored, read without the payload (so without metadata in an encrypted
/// store), whatever their type: where a test takes the commit timestamps from.
pub fn stored_envelopes(storage: &Storage) -> Vec<OwnedEnvelope> {
    let reader = Reader::<u64>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let out: Vec<OwnedEnvelope> = (1..=storage.head())
        .map(|seq| reader.envelope(&txn, seq).unwrap().unwrap().to_owned())
        .collect();
    for pair in out.windows(2) {
        assert!(
            pair[0].timestamp_ns <= pair[1].timestamp_ns,
            "timestamps go back: {pair:?}"
        );
    }
    assert!(out.iter().all(|e| e.timestamp_ns > 0));
    out
}

/// Checks every read path of a `Reader<E>` against `want`, one entry per event of the log in
/// order. `label` names the reader in failure messages and its processors' names (so that one
/// store can be read by several readers).
pub fn check_every_path<E>(storage: &Storage, want: &[Want<E>], label: &str)
where
    E: Event + Clone + PartialEq + Debug + Send,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<E, HighDeserializer<rancor::Error>>,
{
    let head = storage.head();
    assert_eq!(head, want.len() as u64, "{label}: the log");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(w.seq(), i as u64 + 1, "{label}: want is in log order");
    }
    let mut streams: Vec<u128> = want.iter().map(Want::stream).collect();
    streams.sort_unstable();
    streams.dedup();
    let log_forward = scanned(want.iter(), false);
    let log_backward = scanned(want.iter().rev(), true);

    let reader = Reader::<E>::new(storage.clone());
    let txn = storage.read_txn().unwrap();

    // Reads by position.
    let got: Vec<Item<E>> = (1..=head)
        .map(|seq| {
            view_item(
                reader
                    .get(&txn, seq)
                    .map(|v| v.expect("an event at every seq")),
            )
        })
        .collect();
    let points: Vec<Item<E>> = want.iter().map(Want::point).collect();
    assert_eq!(got, points, "{label}: get");
    let got: Vec<Parts<E>> = (1..=head)
        .map(|seq| match reader.get_parts(&txn, seq) {
            Ok(views) => views.into_iter().map(|v| view_item(Ok(v))).collect(),
            Err(e) => Err(e.into()),
        })
        .collect();
    let parts: Vec<_> = want.iter().map(Want::all_parts).collect();
    assert_eq!(got, parts, "{label}: get_parts");
    assert!(
        reader.get_parts(&txn, head + 1).unwrap().is_empty(),
        "{label}: get_parts past the head"
    );
    assert!(reader.get(&txn, 0).unwrap().is_none(), "{label}: get(0)");
    assert!(
        reader.get(&txn, head + 1).unwrap().is_none(),
        "{label}: get past the head"
    );
    for &s in &streams {
        let last = view_item(
            reader
                .last_in_stream(&txn, s)
                .map(|v| v.expect("a last event")),
        );
        assert_eq!(
            last,
            of_stream(want, s).last().unwrap().last(),
            "{label}: last_in_stream({s})"
        );
    }

    // Iterators in the caller's transaction.
    for &s in &streams {
        let forward = scanned(of_stream(want, s).into_iter(), false);
        let backward = scanned(of_stream(want, s).into_iter().rev(), true);
        assert_eq!(
            collect(reader.read_stream(&txn, s, 1, Direction::Forward).unwrap()),
            forward,
            "{label}: read_stream({s}) forward"
        );
        assert_eq!(
            collect(
                reader
                    .read_stream(&txn, s, u64::MAX, Direction::Backward)
                    .unwrap()
            ),
            backward,
            "{label}: read_stream({s}) backward"
        );
    }
    assert_eq!(
        collect(reader.read_log(&txn, 1, Direction::Forward).unwrap()),
        log_forward,
        "{label}: read_log forward"
    );
    assert_eq!(
        collect(
            reader
                .read_log(&txn, u64::MAX, Direction::Backward)
                .unwrap()
        ),
        log_backward,
        "{label}: read_log backward"
    );
    drop(txn);

    // Walks, which stop at the first event they cannot read.
    for (direction, from, want_items) in [
        (Direction::Forward, 1, &log_forward),
        (Direction::Backward, u64::MAX, &log_backward),
    ] {
        let items = walked(label, |f| reader.for_each_in_log(from, direction, f));
        assert_eq!(
            items,
            walk(want_items),
            "{label}: for_each_in_log {direction:?}"
        );
    }
    for &s in &streams {
        for (direction, from) in [(Direction::Forward, 1), (Direction::Backward, u64::MAX)] {
            let mut ws = of_stream(want, s);
            if direction == Direction::Backward {
                ws.reverse();
            }
            let want_items = scanned(ws.into_iter(), direction == Direction::Backward);
            let items = walked(label, |f| reader.for_each_in_stream(s, from, direction, f));
            assert_eq!(
                items,
                walk(&want_items),
                "{label}: for_each_in_stream({s}) {direction:?}"
            );
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // A subscription from the start: every item up to `CaughtUp`, errors included.
    let mut sub = reader
        .subscribe(StartFrom::Start, Filter::default())
        .unwrap();
    let delivered = rt.block_on(async {
        let mut out = Vec::new();
        loop {
            match sub.next().await.expect("a subscription does not end") {
                Ok(SubscriptionItem::Event(e)) => {
                    let value = e.deserialize().map_err(Failure::from);
                    out.push(value.map(|v| Seen::of_owned(e.envelope(), v)));
                }
                Ok(SubscriptionItem::CaughtUp) => return out,
                Err(e) => out.push(Err(e.into())),
            }
        }
    });
    assert_eq!(delivered, values(&log_forward), "{label}: subscription");

    // Where a processor or projector stops: the first event it cannot read, else the head.
    let stop = walk(&log_forward).last().and_then(|i| i.clone().err());
    let stop_seq = match &stop {
        Some(Failure::UnknownSchemaVersion { seq, .. }) => Some(*seq),
        Some(Failure::LayoutChanged { seq, .. } | Failure::RenamedEventType { seq, .. }) => *seq,
        Some(other) => panic!("{label}: a scan cannot stop at {other:?}"),
        None => None,
    };
    let handled: Vec<Result<Seen<E>, Failure>> = values(&walk(&log_forward))
        .into_iter()
        .filter(Result::is_ok)
        .collect();
    let checkpoint = stop_seq.map_or(head, |s| s - 1);

    // A processor, seeing each envelope.
    let name = format!("{label}-processor");
    let mut processor = Processor::new(
        reader.clone(),
        Collect::<E>(Vec::new()),
        name.as_str(),
        storage.subscribe(),
    );
    let run = rt.block_on(processor.run_until_caught_up());
    match &stop {
        None => assert_eq!(run.unwrap(), head, "{label}: processor"),
        Some(f) => assert_eq!(
            &Failure::from(run.unwrap_err()),
            f,
            "{label}: processor's error"
        ),
    }
    let got: Vec<Result<Seen<E>, Failure>> =
        processor.handler().0.iter().cloned().map(Ok).collect();
    assert_eq!(got, handled, "{label}: processor's events");
    assert_eq!(
        processor.checkpoint().unwrap(),
        checkpoint,
        "{label}: processor's checkpoint"
    );

    // Projectors: one event per transaction, and every event in one transaction (nothing of a
    // failed transaction is kept). The projection keeps what it saw in its database.
    for batch in [1, 1_000] {
        let name = format!("{label}-projection-{batch}");
        let db = storage.projection_database(&name).unwrap();
        let mut projector = Projector::new(
            reader.clone(),
            Record::<E> {
                db,
                _event: std::marker::PhantomData,
            },
            name.as_str(),
            storage.subscribe(),
        )
        .with_batch(batch);
        let run = rt.block_on(projector.run_until_caught_up());
        let (kept, at) = match (&stop, batch) {
            (None, _) => {
                assert_eq!(run.unwrap(), head, "{label}: projector {batch}");
                (handled.clone(), head)
            }
            (Some(f), _) => {
                assert_eq!(
                    &Failure::from(run.unwrap_err()),
                    f,
                    "{label}: projector {batch}'s error"
                );
                if batch == 1 {
                    (handled.clone(), checkpoint)
                } else {
                    (Vec::new(), 0)
                }
            }
        };
        let txn = storage.read_txn().unwrap();
        let stored: Vec<String> = db
            .iter(txn.heed())
            .unwrap()
            .map(|entry| String::from_utf8(entry.unwrap().1.to_vec()).unwrap())
            .collect();
        let kept: Vec<String> = kept
            .iter()
            .map(|s| format!("{:?}", s.as_ref().unwrap()))
            .collect();
        assert_eq!(stored, kept, "{label}: projection {batch}");
        let position = storage
            .processors()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, s)| s);
        assert_eq!(position, at, "{label}: projector {batch}'s checkpoint");
    }
}

/// The items a walk (`for_each_*`) hands over, then its error.
fn walked<E>(
    label: &str,
    run: impl FnOnce(&mut dyn FnMut(EventView<'_, E>) -> ControlFlow<()>) -> Result<u64, Error>,
) -> Vec<Item<E>>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<E, HighDeserializer<rancor::Error>>,
{
    let mut items = Vec::new();
    let result = run(&mut |view| {
        items.push(view_item(Ok(view)));
        ControlFlow::Continue(())
    });
    match result {
        Ok(n) => assert_eq!(n, items.len() as u64, "{label}: events visited"),
        Err(e) => items.push(Err(e.into())),
    }
    items
}

/// A processor's handler that keeps what it is handed.
struct Collect<E>(Vec<Seen<E>>);

impl<E> EventHandler<E> for Collect<E>
where
    E: Event,
    E::Archived: rkyv::Deserialize<E, HighDeserializer<rancor::Error>>
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    fn handle(&mut self, _event: &E::Archived) -> varvedb::Result<()> {
        unreachable!("handle_envelope is implemented")
    }

    fn handle_envelope(
        &mut self,
        envelope: &Envelope<'_>,
        event: &E::Archived,
    ) -> varvedb::Result<()> {
        let value = rkyv::deserialize::<E, rancor::Error>(event).unwrap();
        self.0.push(Seen::of(envelope, value));
        Ok(())
    }
}

/// A projection that writes what it is handed into its database, under the event's sequence and
/// part.
struct Record<E> {
    db: heed::Database<'static, Bytes, Bytes>,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<E> Projection<E> for Record<E>
where
    E: Event + Debug,
    E::Archived: rkyv::Deserialize<E, HighDeserializer<rancor::Error>>
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: &E::Archived,
    ) -> varvedb::Result<()> {
        let value = rkyv::deserialize::<E, rancor::Error>(event).unwrap();
        let seen = format!("{:?}", Seen::of(envelope, value));
        let mut key = envelope.seq.to_be_bytes().to_vec();
        key.extend_from_slice(&envelope.part.index.to_be_bytes());
        self.db.put(txn, &key, seen.as_bytes())?;
        Ok(())
    }
}
