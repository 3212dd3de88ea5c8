//! What an event type is to the store: a stable name and a schema version chosen by the
//! application, and the fingerprint of its archived layout ([`Layout`]).
//!
//! The store records, for each (name, version) it holds events of, the fingerprint of the
//! layout those events were written with (`docs/format.md`, the `schemas` database), and refuses
//! to write or read them with a type of another layout: a changed type is an error naming the
//! type and its version, never a misread archive.

mod layout;
mod upcast;

pub use layout::{Fingerprint, Layout, LayoutHasher};
pub(crate) use upcast::Parts;
pub use upcast::{Split, SplitParts, Upcast, Upcaster};

use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;

/// The rkyv serializer events are written with; an event type `E` must implement
/// `for<'a> rkyv::Serialize<EventSerializer<'a>>`, which `#[derive(rkyv::Serialize)]` provides.
pub type EventSerializer<'a> = HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>;

/// An event type: its stable name and schema version, and (through [`Layout`]) the fingerprint
/// of its archived layout.
///
/// Derive it with `#[derive(varvedb::Event)]` beside rkyv's derives. The name defaults to the
/// type's name and the version to 1; set them with `#[event(name = "...", version = N)]`. The
/// name is what the store keeps with each event: renaming the Rust type keeps reading its
/// events as long as the name stays.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "OrderPlaced", version = 2)]
/// pub struct OrderPlaced { pub order: u64, pub customer: String }
///
/// use varvedb::Event;
/// assert_eq!(OrderPlaced::NAME, "OrderPlaced");
/// assert_eq!(OrderPlaced::VERSION, 2);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "the store needs the event's name, version and layout",
    note = "add `#[derive(varvedb::Event)]` to `{Self}`, beside `rkyv::Archive`"
)]
pub trait Event: rkyv::Archive + Layout + 'static {
    /// The name stored with each event of this type (at most
    /// [`MAX_EVENT_TYPE_LEN`](crate::MAX_EVENT_TYPE_LEN) bytes of UTF-8).
    const NAME: &'static str;
    /// The schema version stored with each event of this type.
    const VERSION: u16;

    /// How the events of older versions become this type: one [`Upcaster`] per older (name,
    /// version), made by `#[event(previous = ...)]`. None by default.
    #[doc(hidden)]
    fn upcasts() -> Vec<Upcaster<Self>>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// Primitive event types, named as the store named them before event types had names of their
/// own (the Rust type's name): for tests and small tools.
macro_rules! primitive_events {
    ($($t:ty),* $(,)?) => {
        $(
            impl Event for $t {
                const NAME: &'static str = stringify!($t);
                const VERSION: u16 = 1;
            }
        )*
    };
}

primitive_events!(bool, char, u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64, String);
