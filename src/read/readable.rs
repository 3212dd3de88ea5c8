//! What a reader reads: one event type, or a set of event types read together in log order.
//!
//! [`Readable`] is the one place where a record of an accepted type becomes what a read yields.
//! Every [`Event`] is readable as itself (its views deref to its archived type); an enum with
//! `#[derive(varvedb::EventSet)]`, whose variants each hold an event type, is readable as a set:
//! a record is read as the member whose names it carries, by that member's rules (its schema
//! checks, its upcasts), and handed out as the matching variant.

use std::sync::atomic::{AtomicBool, Ordering};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::view::EventView;
use super::ViewMemo;
use crate::error::{Error, Result};
use crate::event::SplitParts;
use crate::event::{Event, Upcaster};
use crate::format::record::DecodedRecord;
use crate::format::Envelope;
use crate::log::{bytes_eq, has_name};
use crate::store::Storage;
use crate::subscribe::RecordedEvent;
use crate::types::StreamId;

/// What a [`Reader`](crate::Reader), a subscription, a processor or a projector reads: one
/// event type (every [`Event`] is readable as itself) or a set of event types (an enum with
/// `#[derive(varvedb::EventSet)]`, see [`EventSet`](crate::EventSet)).
///
/// The associated types are what each read path hands out: a borrowed view for reads
/// ([`EventView`] for one type), a reference for handlers and projections (`&E::Archived` for
/// one type), and an owned copy for subscriptions ([`RecordedEvent`] for one type). The hidden
/// items are VarveDB's; implement the trait through the derives only.
///
/// # Sets of event types
///
/// `#[derive(varvedb::EventSet)]` on an enum whose variants each hold one event type makes the
/// enum readable as the set of those types, in log order. Each member keeps its own name,
/// version and upcasts: a record is read by the member whose names it carries, so adding a
/// member anywhere in the enum never changes how stored records are read. The derive writes
/// three enums beside the set, with one variant per member: `<Set>View<'t>` (what reads yield),
/// `<Set>Ref<'a>` (what handlers and projections get: a reference to the member's archived type)
/// and `<Set>Recorded` (what subscriptions yield); each has `seq`, `envelope`, `event` and
/// `deserialize` into the set. A type in no member is passed over by scans and is
/// [`Error::WrongEventType`] when read by position, as for a reader of one type.
///
/// ```
/// use varvedb::{Direction, EventSet, Reader, Storage, StorageConfig, Writer};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// pub struct Opened { pub owner: String }
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// pub struct Deposited { pub cents: u64 }
///
/// #[derive(EventSet)]
/// pub enum Account {
///     Opened(Opened),
///     Deposited(Deposited),
/// }
///
/// let dir = tempfile::tempdir()?;
/// let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
/// Writer::<Opened>::new(storage.clone()).append(1, 1, Opened { owner: "ada".into() })?;
/// Writer::<Deposited>::new(storage.clone()).append(1, 2, Deposited { cents: 500 })?;
///
/// let reader = Reader::<Account>::new(storage.clone());
/// let txn = storage.read_txn()?;
/// let mut balance = 0;
/// for event in reader.read_stream(&txn, 1, 1, Direction::Forward)? {
///     match event?.event() {
///         AccountRef::Opened(o) => assert_eq!(o.owner, "ada"),
///         AccountRef::Deposited(d) => balance += d.cents.to_native(),
///     }
/// }
/// assert_eq!(balance, 500);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Two members that store the same name are refused when the set is compiled:
///
/// ```compile_fail
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "Deposited")]
/// pub struct A { pub cents: u64 }
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "Deposited")]
/// pub struct B { pub cents: u32 }
///
/// #[derive(varvedb::EventSet)]
/// pub enum Both { A(A), B(B) }
/// ```
pub trait Readable: Sized + 'static {
    /// One event as reads yield it, borrowed from the read transaction.
    type View<'t>;
    /// One event as a handler or projection gets it.
    type Ref<'a>;
    /// One event as a subscription yields it: owned, so it can be held across `.await`.
    type Recorded: Send + 'static;
    /// How a reader reads each name and version, and what it verified of each.
    #[doc(hidden)]
    type Kinds: Send + Sync + 'static;

    /// The read rules of a new reader.
    #[doc(hidden)]
    fn kinds() -> Self::Kinds;

    /// Every event type name the rules read, each once, the main ones first.
    #[doc(hidden)]
    fn accepted(kinds: &Self::Kinds) -> Vec<String>;

    /// Every name the rules read, with the newest version read under it: the types whose
    /// renames by newer builds a reader follows (see `Select::follow`).
    #[doc(hidden)]
    fn follow(kinds: &Self::Kinds) -> Vec<(String, u16)>;

    /// The names a filter on `name` stands for: the type's own name stands for the names of its
    /// older versions too; another name the rules read, for itself; none when the rules do not
    /// read `name`.
    #[doc(hidden)]
    fn aliases(kinds: &Self::Kinds, name: &str) -> Vec<String>;

    /// The view of a record of an accepted name whose header is verified, read in `txn`.
    #[doc(hidden)]
    fn view_of<'t>(
        storage: &Storage,
        kinds: &Self::Kinds,
        txn: &heed::RoTxn<'_>,
        record: Record<'t>,
        memo: &mut ViewMemo,
    ) -> Result<Self::View<'t>>;

    /// The envelope of a view.
    #[doc(hidden)]
    fn envelope<'a>(view: &'a Self::View<'_>) -> Envelope<'a>;

    /// A view's sequence, stream and version.
    #[doc(hidden)]
    fn place(view: &Self::View<'_>) -> (u64, StreamId, u64);

    /// The event of a view, as a handler gets it.
    #[doc(hidden)]
    fn event<'a>(view: &'a Self::View<'_>) -> Self::Ref<'a>;

    /// An owned copy of a view.
    #[doc(hidden)]
    fn record(view: &Self::View<'_>) -> Self::Recorded;

    /// The view of part `index` of a record that an upcast split into `parts` (the error of
    /// [`Readable::view_of`] for it), its archive taken out of `parts`.
    #[doc(hidden)]
    fn split_view<'t>(
        kinds: &Self::Kinds,
        record: Record<'t>,
        parts: &mut SplitParts,
        index: usize,
    ) -> Result<Self::View<'t>>;

    /// The views of every part of a record that an upcast split into `parts`, in order.
    #[doc(hidden)]
    fn split_views<'t>(
        kinds: &Self::Kinds,
        record: Record<'t>,
        mut parts: SplitParts,
    ) -> Result<Vec<Self::View<'t>>> {
        (0..parts.count())
            .map(|index| Self::split_view(kinds, record, &mut parts, index))
            .collect()
    }
}

/// A record of an accepted type, its header verified: what [`Readable::view_of`] reads.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Record<'t>(pub(crate) DecodedRecord<'t>);

impl Record<'_> {
    /// The event type name the record is stored under.
    #[inline]
    pub fn event_type_bytes(&self) -> &[u8] {
        self.0.event_type_bytes()
    }

    /// The error for a record that no member of a set reads: scans select one only when the
    /// store recorded its name as the new name of newer versions of a member's type.
    #[cold]
    pub fn not_read(&self) -> Error {
        renamed(
            self.0.seq(),
            self.0.event_type_bytes(),
            self.0.schema_version(),
        )
    }
}

impl<E> Readable for E
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    type View<'t> = EventView<'t, E>;
    type Ref<'a> = &'a E::Archived;
    type Recorded = RecordedEvent<E>;
    type Kinds = Kinds<E>;

    fn kinds() -> Kinds<E> {
        Kinds::new(vec![E::NAME.to_string()], E::upcasts())
    }

    fn accepted(kinds: &Kinds<E>) -> Vec<String> {
        kinds.accepted.clone()
    }

    fn follow(kinds: &Kinds<E>) -> Vec<(String, u16)> {
        kinds.follow()
    }

    fn aliases(kinds: &Kinds<E>, name: &str) -> Vec<String> {
        if name == E::NAME {
            // The type's own name stands for the type: with the names of its older versions.
            let mut names = vec![name.to_string()];
            for (upcaster, _) in &kinds.upcasters {
                if !names.iter().any(|n| n == upcaster.name) {
                    names.push(upcaster.name.to_string());
                }
            }
            names
        } else if kinds.accepted.iter().any(|a| a == name) {
            vec![name.to_string()]
        } else {
            Vec::new()
        }
    }

    /// The typed view of a record of an accepted type whose header is verified, read in `txn`
    /// (where the store's record of its type's layout is looked up, once): its payload
    /// checksummed (unless done already), decrypted in an encrypted store (reusing the stream
    /// key in `memo` when the record has the same one), and validated as an archived `E`.
    /// Always inlined: it is the per-record work of every typed scan, and a record moved through
    /// memory on its way into a view stalls the loop.
    #[inline(always)]
    fn view_of<'t>(
        storage: &Storage,
        kinds: &Kinds<E>,
        txn: &heed::RoTxn<'_>,
        record: Record<'t>,
        memo: &mut ViewMemo,
    ) -> Result<EventView<'t, E>> {
        let rec = record.0;
        let version = rec.schema_version();
        // The memo spares the records after the first of a scan even the reader's flag; a
        // point read, with a memo of its own, reads the flag.
        if !(version == E::VERSION
            && (kinds.single || bytes_eq(rec.event_type_bytes(), E::NAME.as_bytes()))
            && (memo.schema_checked || {
                memo.schema_checked = kinds.own_checked();
                memo.schema_checked
            }))
        {
            // One call for everything the first record of a kind needs: the fewer calls this
            // function holds, the fewer registers the loop around it saves on every record.
            if let Some(view) = kinds.unchecked(storage, txn, rec, memo)? {
                return Ok(view);
            }
        }
        let log = storage.log();
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
            storage
                .store
                .unaligned_copies
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(view)
    }

    #[inline]
    fn envelope<'a>(view: &'a EventView<'_, E>) -> Envelope<'a> {
        view.envelope()
    }

    #[inline]
    fn place(view: &EventView<'_, E>) -> (u64, StreamId, u64) {
        (view.seq(), view.stream(), view.version())
    }

    #[inline]
    fn event<'a>(view: &'a EventView<'_, E>) -> &'a E::Archived {
        view.archived()
    }

    fn record(view: &EventView<'_, E>) -> RecordedEvent<E> {
        RecordedEvent::from_view(view)
    }

    fn split_view<'t>(
        _kinds: &Kinds<E>,
        record: Record<'t>,
        parts: &mut SplitParts,
        index: usize,
    ) -> Result<Self::View<'t>> {
        EventView::split_part(record.0, parts, index)
    }
}

/// How a reader of `E` reads each name and version, and what it verified of each: whether the
/// store's entry for it was found to take the layout the reader reads it with (entries never
/// change, so once is enough).
#[doc(hidden)]
pub struct Kinds<E> {
    /// Every name read: `E::NAME` first, then those accepted, then those of older versions.
    accepted: Vec<String>,
    /// Whether `accepted` holds one name only.
    single: bool,
    /// The names read as `E` at `E::VERSION`: `E::NAME` first, then those accepted.
    direct: Vec<(String, AtomicBool)>,
    /// The older (name, version)s read through an upcaster.
    upcasters: Vec<(Upcaster<E>, AtomicBool)>,
}

/// How an event is read, once checked.
enum Verdict {
    /// As `E`, straight from its payload.
    Current,
    /// Through the upcaster at this index.
    Upcast(usize),
}

impl<E> Kinds<E> {
    fn new(direct: Vec<String>, upcasters: Vec<Upcaster<E>>) -> Kinds<E> {
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
        Kinds {
            single: accepted.len() == 1,
            accepted,
            direct: direct
                .into_iter()
                .map(|n| (n, AtomicBool::new(false)))
                .collect(),
            upcasters: upcasters
                .into_iter()
                .map(|u| (u, AtomicBool::new(false)))
                .collect(),
        }
    }

    /// These rules, also reading `names` as `E` at `E`'s version.
    pub(crate) fn accepting(&self, names: impl IntoIterator<Item = String>) -> Kinds<E> {
        let mut direct: Vec<String> = self.direct.iter().map(|(n, _)| n.clone()).collect();
        direct.extend(names);
        let upcasters = self.upcasters.iter().map(|(u, _)| u.clone()).collect();
        Kinds::new(direct, upcasters)
    }
}

impl<E> Kinds<E>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Every name read, with the newest version read under it.
    fn follow(&self) -> Vec<(String, u16)> {
        self.accepted
            .iter()
            .map(|name| {
                let newest = if self.direct.iter().any(|(n, _)| n == name) {
                    E::VERSION
                } else {
                    self.upcasters
                        .iter()
                        .filter(|(u, _)| u.name == name)
                        .map(|(u, _)| u.version)
                        .max()
                        .unwrap_or(0)
                };
                (name.clone(), newest)
            })
            .collect()
    }

    /// How an event of type `name` at `version` is read as `E`: straight, when `version` is
    /// `E`'s and the name one read as `E`; through an upcaster, when the reader has one for
    /// them; and in either case only when the store recorded for them the layout the reader
    /// reads them with, or none that is known.
    #[cold]
    #[inline(never)]
    fn check_schema(
        &self,
        storage: &Storage,
        txn: &heed::RoTxn<'_>,
        seq: u64,
        name: &[u8],
        version: u16,
    ) -> Result<Verdict> {
        let direct = (version == E::VERSION)
            .then(|| {
                self.direct
                    .iter()
                    .position(|(n, _)| bytes_eq(n.as_bytes(), name))
            })
            .flatten();
        let (verdict, layout, verified) =
            match direct {
                Some(i) => (Verdict::Current, E::LAYOUT, &self.direct[i].1),
                None => {
                    let Some(i) = self.upcasters.iter().position(|(u, _)| {
                        u.version == version && bytes_eq(u.name.as_bytes(), name)
                    }) else {
                        if !has_name(&self.accepted, name) {
                            // Scans select another name only when the store recorded it as
                            // the new name of newer versions of one the reader reads.
                            return Err(renamed(seq, name, version));
                        }
                        return Err(Error::UnknownSchemaVersion {
                            seq,
                            event_type: String::from_utf8_lossy(name).into_owned(),
                            stored: version,
                            current: E::VERSION,
                        });
                    };
                    let (upcaster, verified) = &self.upcasters[i];
                    (Verdict::Upcast(i), upcaster.layout, verified)
                }
            };
        if verified.load(Ordering::Relaxed) {
            return Ok(verdict);
        }
        let log = storage.log();
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

    /// Whether the store's entry for `E::NAME` at `E::VERSION` was found to take `E`'s layout.
    #[inline(always)]
    fn own_checked(&self) -> bool {
        self.direct
            .first()
            .is_some_and(|(_, checked)| checked.load(Ordering::Relaxed))
    }

    /// A record that the reader's memo does not let through unchecked: checked against the
    /// store's record of its layout, then `None` when it reads straight as `E` (the memo notes
    /// it), or its view through an upcaster.
    #[cold]
    #[inline(never)]
    fn unchecked<'t>(
        &self,
        storage: &Storage,
        txn: &heed::RoTxn<'_>,
        rec: DecodedRecord<'t>,
        memo: &mut ViewMemo,
    ) -> Result<Option<EventView<'t, E>>> {
        let name = rec.event_type_bytes();
        match self.check_schema(storage, txn, rec.seq(), name, rec.schema_version())? {
            Verdict::Current => {
                memo.schema_checked = bytes_eq(name, E::NAME.as_bytes());
                Ok(None)
            }
            Verdict::Upcast(i) => self.upcast(storage, rec, i, memo).map(Some),
        }
    }

    /// The view of an event of an older version, through upcaster `i`, counted in the
    /// store's metrics.
    #[cold]
    #[inline(never)]
    fn upcast<'t>(
        &self,
        storage: &Storage,
        rec: DecodedRecord<'t>,
        i: usize,
        memo: &mut ViewMemo,
    ) -> Result<EventView<'t, E>> {
        if let Some(parts) = memo.pending.take_if(|p| p.seq == rec.seq()) {
            // The rest of a split being handed out one part per call: no second upcast.
            return Err(Error::Split(parts));
        }
        let log = storage.log();
        let upcaster = &self.upcasters[i].0;
        let view = EventView::upcast(rec, log.crypto.as_ref(), &mut memo.keys, upcaster)?;
        log.env
            .metrics()
            .upcast(upcaster.name, upcaster.version, E::VERSION);
        Ok(view)
    }
}

/// One member of a set of event types: its read rules and its place in the set. Sets of more
/// than 64 members are refused by the derive: `ViewMemo` keeps one bit per member.
#[doc(hidden)]
pub struct Member<E> {
    kinds: Kinds<E>,
    bit: u64,
}

impl<E> Member<E>
where
    E: Event,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Member `index` of a set.
    pub fn new(index: u32) -> Self {
        assert!(index < 64, "a set of event types has at most 64 members");
        Member {
            kinds: <E as Readable>::kinds(),
            bit: 1 << index,
        }
    }

    /// Adds the names this member reads, with the newest version of each, to `follow`.
    pub fn follow_into(&self, follow: &mut Vec<(String, u16)>) {
        for pair in self.kinds.follow() {
            if !follow.contains(&pair) {
                follow.push(pair);
            }
        }
    }

    /// The names read as the same type as `name`, or none when this member does not read it.
    pub fn aliases(&self, name: &str) -> Vec<String> {
        <E as Readable>::aliases(&self.kinds, name)
    }

    /// Adds the names this member reads to `names`, each once.
    pub fn names_into(&self, names: &mut Vec<String>) {
        for name in &self.kinds.accepted {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }

    /// The view of part `index` of a record this member split, by the member's own rules.
    pub fn split_view<'t>(
        &self,
        record: Record<'t>,
        parts: &mut SplitParts,
        index: usize,
    ) -> Result<EventView<'t, E>> {
        <E as Readable>::split_view(&self.kinds, record, parts, index)
    }

    /// Whether this member reads records stored under the record's name.
    #[inline]
    pub fn reads(&self, record: &Record<'_>) -> bool {
        has_name(&self.kinds.accepted, record.event_type_bytes())
    }

    /// The view of the record as this member, by the member's own rules.
    #[inline]
    pub fn view_of<'t>(
        &self,
        storage: &Storage,
        txn: &heed::RoTxn<'_>,
        record: Record<'t>,
        memo: &mut ViewMemo,
    ) -> Result<EventView<'t, E>> {
        // The memo's schema flag is the member's own: one member's check is not another's.
        memo.schema_checked = memo.members_checked & self.bit != 0;
        let view = <E as Readable>::view_of(storage, &self.kinds, txn, record, memo);
        if memo.schema_checked {
            memo.members_checked |= self.bit;
        }
        view
    }
}

/// Whether two names are the same: for the derive's compile-time check that no two members of a
/// set share a name.
#[doc(hidden)]
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The error for an event stored under the new name of a type the reader reads older versions
/// of.
#[cold]
#[inline(never)]
pub(crate) fn renamed(seq: u64, name: &[u8], version: u16) -> Error {
    Error::RenamedEventType {
        event_type: String::from_utf8_lossy(name).into_owned(),
        version,
        seq: Some(seq),
    }
}

#[cold]
#[inline(never)]
pub(crate) fn wrong_type(seq: u64, accepted: &[String], found: &[u8]) -> Error {
    Error::WrongEventType {
        seq,
        expected: accepted.join(" | "),
        found: String::from_utf8_lossy(found).into_owned(),
    }
}
