//! Typed upcasting: the events of an older schema version read as the current type, through
//! steps the application writes between frozen types.
//!
//! Each version of an event type is a Rust type of its own, kept unchanged once its events are
//! stored. The type of version `n + 1` names its previous version with
//! `#[event(previous = TypeOfVersionN)]` and implements [`Upcast`] from it; the previous type may
//! name its own, and so on. A reader of the newest type then reads every older version: the
//! stored archive is validated as the version it was written with, deserialized, and taken
//! through each step to the reader's type (which may also rename an event type: the previous
//! type keeps its own name). A step may split one event into several ([`Split`]).

use std::sync::Arc;

use rkyv::api::high::{HighDeserializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::{Event, EventSerializer, Fingerprint};
use crate::format::record::Opened;

/// One step up: the value of this version made from the value of the previous one.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "ItemAdded", version = 1)]
/// pub struct ItemAddedV1 { pub sku: String, pub qty: u32 }
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "ItemAdded", version = 2, previous = ItemAddedV1)]
/// pub struct ItemAdded { pub sku: String, pub qty: u32, pub note: Option<String> }
///
/// impl varvedb::Upcast<ItemAddedV1> for ItemAdded {
///     fn upcast(old: ItemAddedV1) -> Self {
///         ItemAdded { sku: old.sku, qty: old.qty, note: None }
///     }
/// }
/// ```
pub trait Upcast<Previous>: Sized {
    /// This version's value for `previous`.
    fn upcast(previous: Previous) -> Self;
}

/// One step up that splits: the values of this version that one value of the previous version
/// becomes, in order. Declared with `#[event(previous = Type, split)]`.
///
/// A reader of the newest type reads each stored event of the previous version (or of any
/// version before it) as the events the split makes. They all stand at the stored event's place
/// in the log: they share its global sequence, stream version, event id, timestamp and
/// metadata, and their envelopes tell them apart by [`Part`](crate::Part). Scans,
/// subscriptions, processors and projectors hand them out one after another, in order (the last
/// first when reading backwards); a processor's checkpoint passes the stored event only once all
/// of them are handled. A split that makes no events is an error
/// ([`Error::InvalidPayload`](crate::Error::InvalidPayload)), never an event passed over.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "ItemsAdded", version = 1)]
/// pub struct ItemsAddedV1 { pub lines: Vec<(String, u32)> }
///
/// // Version 2 is one event per line, under a name of its own.
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "ItemAdded", version = 2, previous = ItemsAddedV1, split)]
/// pub struct ItemAdded { pub sku: String, pub qty: u32 }
///
/// impl varvedb::Split<ItemsAddedV1> for ItemAdded {
///     fn split(old: ItemsAddedV1) -> Vec<Self> {
///         old.lines.into_iter().map(|(sku, qty)| ItemAdded { sku, qty }).collect()
///     }
/// }
/// ```
pub trait Split<Previous>: Sized {
    /// This version's values for `previous`, in order; at least one.
    fn split(previous: Previous) -> Vec<Self>;
}

/// What one stored event becomes: one value, or several when a step of its chain splits.
pub(crate) enum Parts<T> {
    /// The common case, without a vector.
    One(T),
    /// The values of a split, in order.
    Many(Vec<T>),
}

impl<T> Parts<T> {
    /// Each value taken through `f`, whose results are concatenated in order.
    fn flat_map<U>(
        self,
        mut f: impl FnMut(T) -> Result<Parts<U>, String>,
    ) -> Result<Parts<U>, String> {
        match self {
            Parts::One(value) => f(value),
            Parts::Many(values) => {
                let mut out = Vec::with_capacity(values.len());
                for value in values {
                    match f(value)? {
                        Parts::One(v) => out.push(v),
                        Parts::Many(vs) => out.extend(vs),
                    }
                }
                Ok(Parts::Many(out))
            }
        }
    }
}

/// The events an upcast split one stored event into, on their way from the read of the record
/// to the path that hands them out one by one (`read/parts.rs`). They travel as the error of
/// the record's read ([`Error::Split`](crate::Error::Split)), so that the read paths test
/// nothing more than they do for an event that is not split: the error branch is there already.
#[doc(hidden)]
pub struct SplitParts {
    /// The stored event's sequence.
    pub(crate) seq: u64,
    /// The archives of the parts, in order, each validated as the reader's type.
    pub(crate) archives: Vec<AlignedVec<16>>,
    /// The decrypted record, for its metadata.
    pub(crate) opened: Option<Arc<Opened>>,
    /// For a read that hands the parts out one per call (`Events`): the part to hand out next,
    /// once the first is out.
    pub(crate) next: Option<usize>,
}

impl SplitParts {
    /// The parts of the stored event at `seq`, whose archives are `archives`.
    pub(crate) fn new(
        seq: u64,
        archives: Vec<AlignedVec<16>>,
        opened: Option<Arc<Opened>>,
    ) -> Self {
        SplitParts {
            seq,
            archives,
            opened,
            next: None,
        }
    }

    /// How many events the stored event is read as.
    pub(crate) fn count(&self) -> usize {
        self.archives.len()
    }
}

impl std::fmt::Debug for SplitParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SplitParts(seq {}, {} parts)", self.seq, self.count())
    }
}

/// The archived bytes of the reader's type, made from a stored payload of an older version.
type Convert = dyn Fn(&[u8]) -> Result<Parts<AlignedVec<16>>, String> + Send + Sync;
/// The values of a version, made from a stored payload of an older one.
type ToValue<E> = Arc<dyn Fn(&[u8]) -> Result<Parts<E>, String> + Send + Sync>;

/// How events of one older (name, version) become `E`: the layout they must have been written
/// with, and the conversion of their payload into an archive of `E`. Made by
/// `#[derive(varvedb::Event)]` for a type with `#[event(previous = ...)]`; not for applications
/// to build.
pub struct Upcaster<E> {
    pub(crate) name: &'static str,
    pub(crate) version: u16,
    pub(crate) layout: Fingerprint,
    /// The stored payload (aligned) to the values of each step, the last one `E`'s.
    convert: ToValue<E>,
    /// `convert`, then each value archived: what a reader views.
    archive: Arc<Convert>,
}

impl<E> Clone for Upcaster<E> {
    fn clone(&self) -> Self {
        Upcaster {
            name: self.name,
            version: self.version,
            layout: self.layout,
            convert: Arc::clone(&self.convert),
            archive: Arc::clone(&self.archive),
        }
    }
}

impl<E> std::fmt::Debug for Upcaster<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upcaster({} v{})", self.name, self.version)
    }
}

impl<E> Upcaster<E>
where
    E: Event + for<'a> rkyv::Serialize<EventSerializer<'a>>,
{
    /// The upcasters of `E` from its previous version `P` ([`Upcast`]) and every version
    /// before it.
    #[doc(hidden)]
    pub fn chain<P>() -> Vec<Upcaster<E>>
    where
        P: Event,
        P::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<P, HighDeserializer<rancor::Error>>,
        E: Upcast<P>,
    {
        Self::steps::<P>(|previous| Parts::One(E::upcast(previous)))
    }

    /// The upcasters of `E` from its previous version `P` through a [`Split`], and every version
    /// before it.
    #[doc(hidden)]
    pub fn split_chain<P>() -> Vec<Upcaster<E>>
    where
        P: Event,
        P::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<P, HighDeserializer<rancor::Error>>,
        E: Split<P>,
    {
        Self::steps::<P>(|previous| Parts::Many(E::split(previous)))
    }

    /// The upcasters of `E` through `step` from `P`, and through `P`'s own upcasters from every
    /// version before it.
    fn steps<P>(step: fn(P) -> Parts<E>) -> Vec<Upcaster<E>>
    where
        P: Event,
        P::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<P, HighDeserializer<rancor::Error>>,
    {
        let from_previous: ToValue<E> = Arc::new(move |bytes: &[u8]| {
            let archived = rkyv::access::<P::Archived, rancor::Error>(bytes)
                .map_err(|e| format!("not a valid archive of {} v{}: {e}", P::NAME, P::VERSION))?;
            let previous =
                rkyv::deserialize::<P, rancor::Error>(archived).map_err(|e| e.to_string())?;
            Ok(step(previous))
        });
        let mut steps = vec![Upcaster::new(P::NAME, P::VERSION, P::LAYOUT, from_previous)];
        for older in P::upcasts() {
            let to_previous = older.convert;
            steps.push(Upcaster::new(
                older.name,
                older.version,
                older.layout,
                Arc::new(move |bytes: &[u8]| {
                    to_previous(bytes)?.flat_map(|previous| Ok(step(previous)))
                }),
            ));
        }
        steps
    }

    fn new(
        name: &'static str,
        version: u16,
        layout: Fingerprint,
        convert: ToValue<E>,
    ) -> Upcaster<E> {
        let to_value = Arc::clone(&convert);
        let archive: Arc<Convert> = Arc::new(move |bytes: &[u8]| {
            to_value(bytes)?.flat_map(|value| archive(&value).map(Parts::One))
        });
        Upcaster {
            name,
            version,
            layout,
            convert,
            archive,
        }
    }
}

impl<E> Upcaster<E> {
    /// The archives of `E` for a stored payload (16-byte aligned) of this upcaster's version:
    /// one, or the parts of a split (at least two; a split into one event is that event).
    pub(crate) fn archive(&self, payload: &[u8]) -> Result<Parts<AlignedVec<16>>, String> {
        match (self.archive)(payload)? {
            Parts::Many(archives) if archives.is_empty() => Err(format!(
                "the split of {} v{} made no events",
                self.name, self.version
            )),
            Parts::Many(mut archives) if archives.len() == 1 => {
                Ok(Parts::One(archives.pop().expect("one archive")))
            }
            parts => Ok(parts),
        }
    }
}

/// `value` archived as the writer archives events, in a 16-byte aligned buffer.
fn archive<E>(value: &E) -> Result<AlignedVec<16>, String>
where
    E: for<'a> rkyv::Serialize<EventSerializer<'a>>,
{
    thread_local! {
        /// The serializer's scratch space, kept between events of a thread.
        static ARENA: std::cell::RefCell<rkyv::ser::allocator::Arena> =
            std::cell::RefCell::new(rkyv::ser::allocator::Arena::new());
    }
    let bytes = ARENA
        .with(|arena| {
            // A nested use (an upcaster that reads events itself) gets an arena of its own.
            match arena.try_borrow_mut() {
                Ok(mut arena) => rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                    value,
                    Vec::new(),
                    arena.acquire(),
                ),
                Err(_) => rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                    value,
                    Vec::new(),
                    rkyv::ser::allocator::Arena::new().acquire(),
                ),
            }
        })
        .map_err(|e| e.to_string())?;
    // Positions in an archive are relative to its start, which the copy puts at a multiple of
    // 16, as the serializer assumed.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(&bytes);
    Ok(aligned)
}
