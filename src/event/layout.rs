//! Fingerprints of archived layouts: what an archive's bytes mean, as a number that changes
//! when the meaning changes.
//!
//! A [`Layout`] is implemented by every type that can appear in an event: by
//! `#[derive(varvedb::Event)]` and `#[derive(varvedb::Layout)]` for the application's types,
//! and here for the standard ones. A type's fingerprint hashes its shape (for a struct: its
//! field names, their order and the fingerprints of their types, recursively; for an enum: its
//! variants, in order, and theirs), the `#[rkyv(...)]` attributes that change how it is
//! archived, and the settings of the rkyv build that change the bytes of every archive (pointer
//! width, alignment). Renaming a type leaves its fingerprint unchanged; renaming, reordering,
//! adding or retyping a field changes it.

/// A 128-bit fingerprint of an archived layout (FNV-1a over a canonical description).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// The fingerprint's 16 bytes, as the store keeps them (little-endian).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// A fingerprint from the 16 bytes [`Fingerprint::to_bytes`] gave.
    pub const fn from_bytes(bytes: [u8; 16]) -> Fingerprint {
        Fingerprint(u128::from_le_bytes(bytes))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::fmt::Display for Fingerprint {
    /// The first 8 bytes in hex: enough to tell two layouts apart in a message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", (self.0 >> 64) as u64)
    }
}

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV_PRIME: u128 = 0x0000000001000000000000000000013b;

/// Builds a [`Fingerprint`] in a `const` context, from a canonical description fed piece by
/// piece. Every piece is length- or tag-prefixed, so that two different descriptions never feed
/// the same bytes.
///
/// ```
/// use varvedb::{Layout, LayoutHasher};
///
/// const PAIR: varvedb::Fingerprint = LayoutHasher::new("struct")
///     .count(2)
///     .str("a")
///     .layout(<u32 as Layout>::LAYOUT)
///     .str("b")
///     .layout(<String as Layout>::LAYOUT)
///     .finish();
/// assert_ne!(PAIR, <u32 as Layout>::LAYOUT);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LayoutHasher(u128);

impl LayoutHasher {
    /// A hasher for a layout of this kind (`"struct"`, `"enum"`, a primitive's name...), seeded
    /// with the rkyv settings that change every archive's bytes.
    pub const fn new(kind: &str) -> LayoutHasher {
        LayoutHasher(FNV_OFFSET)
            .bytes(b"varvedb layout 1")
            .count(std::mem::size_of::<rkyv::Archived<usize>>() as u64)
            .count(std::mem::align_of::<rkyv::Archived<u64>>() as u64)
            .str(kind)
    }

    const fn bytes(mut self, bytes: &[u8]) -> LayoutHasher {
        let mut i = 0;
        while i < bytes.len() {
            self.0 ^= bytes[i] as u128;
            self.0 = self.0.wrapping_mul(FNV_PRIME);
            i += 1;
        }
        self
    }

    /// Feeds a string (a field or variant name, an attribute's text).
    pub const fn str(self, s: &str) -> LayoutHasher {
        self.count(s.len() as u64).bytes(s.as_bytes())
    }

    /// Feeds a number (a count of fields or variants, an array's length).
    pub const fn count(self, n: u64) -> LayoutHasher {
        self.bytes(&n.to_le_bytes())
    }

    /// Feeds the fingerprint of a part (a field's type).
    pub const fn layout(self, part: Fingerprint) -> LayoutHasher {
        self.bytes(b"L").bytes(&part.0.to_le_bytes())
    }

    /// The fingerprint of everything fed.
    pub const fn finish(self) -> Fingerprint {
        Fingerprint(self.0)
    }
}

/// A type whose archived layout has a [`Fingerprint`].
///
/// Derive it (`#[derive(varvedb::Layout)]`) for the application's types that events contain;
/// `#[derive(varvedb::Event)]` derives it for the event itself. For a foreign type, implement it
/// by hand with a [`LayoutHasher`] over a description that changes whenever its archived bytes
/// would.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no layout fingerprint",
    label = "an event's fields must implement `varvedb::Layout`",
    note = "add `#[derive(varvedb::Layout)]` to `{Self}` (or `#[derive(varvedb::Event)]` for an event)"
)]
pub trait Layout {
    /// The fingerprint of `Self`'s archived layout.
    const LAYOUT: Fingerprint;
}

macro_rules! primitive_layouts {
    ($($t:ty),* $(,)?) => {
        $(
            impl Layout for $t {
                const LAYOUT: Fingerprint = LayoutHasher::new(stringify!($t)).finish();
            }
        )*
    };
}

primitive_layouts!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    std::num::NonZeroU8,
    std::num::NonZeroU16,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroU128,
    std::num::NonZeroI8,
    std::num::NonZeroI16,
    std::num::NonZeroI32,
    std::num::NonZeroI64,
    std::num::NonZeroI128,
    std::time::Duration,
    uuid::Uuid,
);

impl Layout for Box<str> {
    const LAYOUT: Fingerprint = LayoutHasher::new("Box<str>").finish();
}

macro_rules! wrapper_layouts {
    ($($name:literal => $t:ty),* $(,)?) => {
        $(
            impl<T: Layout> Layout for $t {
                const LAYOUT: Fingerprint = LayoutHasher::new($name).layout(T::LAYOUT).finish();
            }
        )*
    };
}

wrapper_layouts!(
    "Vec" => Vec<T>,
    "Box<[T]>" => Box<[T]>,
    "VecDeque" => std::collections::VecDeque<T>,
    "Option" => Option<T>,
    "Box" => Box<T>,
    "Rc" => std::rc::Rc<T>,
    "Arc" => std::sync::Arc<T>,
    "BTreeSet" => std::collections::BTreeSet<T>,
    "PhantomData" => std::marker::PhantomData<T>,
);

impl<T: Layout, S> Layout for std::collections::HashSet<T, S> {
    const LAYOUT: Fingerprint = LayoutHasher::new("HashSet").layout(T::LAYOUT).finish();
}

impl<K: Layout, V: Layout> Layout for std::collections::BTreeMap<K, V> {
    const LAYOUT: Fingerprint = LayoutHasher::new("BTreeMap")
        .layout(K::LAYOUT)
        .layout(V::LAYOUT)
        .finish();
}

impl<K: Layout, V: Layout, S> Layout for std::collections::HashMap<K, V, S> {
    const LAYOUT: Fingerprint = LayoutHasher::new("HashMap")
        .layout(K::LAYOUT)
        .layout(V::LAYOUT)
        .finish();
}

impl<T: Layout, E: Layout> Layout for std::result::Result<T, E> {
    const LAYOUT: Fingerprint = LayoutHasher::new("Result")
        .layout(T::LAYOUT)
        .layout(E::LAYOUT)
        .finish();
}

impl<T: Layout, const N: usize> Layout for [T; N] {
    const LAYOUT: Fingerprint = LayoutHasher::new("array")
        .count(N as u64)
        .layout(T::LAYOUT)
        .finish();
}

macro_rules! tuple_layouts {
    ($(($($t:ident),+)),* $(,)?) => {
        $(
            impl<$($t: Layout),+> Layout for ($($t,)+) {
                const LAYOUT: Fingerprint = LayoutHasher::new("tuple")
                    $(.layout($t::LAYOUT))+
                    .finish();
            }
        )*
    };
}

tuple_layouts!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
    (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J),
    (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_shapes_have_different_fingerprints() {
        let all = [
            <u32 as Layout>::LAYOUT,
            <u64 as Layout>::LAYOUT,
            <i32 as Layout>::LAYOUT,
            <String as Layout>::LAYOUT,
            <Vec<u32> as Layout>::LAYOUT,
            <Vec<u64> as Layout>::LAYOUT,
            <Option<u32> as Layout>::LAYOUT,
            <[u32; 2] as Layout>::LAYOUT,
            <[u32; 3] as Layout>::LAYOUT,
            <(u32, u64) as Layout>::LAYOUT,
            <(u64, u32) as Layout>::LAYOUT,
            <std::collections::BTreeMap<u32, String> as Layout>::LAYOUT,
            <std::collections::BTreeMap<String, u32> as Layout>::LAYOUT,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Owned strings and boxed ones archive differently.
        assert_ne!(<Box<str> as Layout>::LAYOUT, <String as Layout>::LAYOUT);
        assert_ne!(<Box<[u8]> as Layout>::LAYOUT, <Vec<u8> as Layout>::LAYOUT);
    }

    #[test]
    fn pieces_are_delimited() {
        // "ab" + "c" and "a" + "bc" feed different bytes.
        let x = LayoutHasher::new("k").str("ab").str("c").finish();
        let y = LayoutHasher::new("k").str("a").str("bc").finish();
        assert_ne!(x, y);
        assert_eq!(Fingerprint::from_bytes(x.to_bytes()), x);
    }
}
