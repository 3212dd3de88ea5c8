//! [`StreamName`]: a stream's name, parsed once into its parts.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::types::StreamId;

/// Longest stream name, in bytes of UTF-8.
pub const MAX_STREAM_NAME_LEN: usize = 1024;

/// What the id of a named stream is derived from: this prefix, then the name's bytes. Part of the
/// format: changing it would move every named stream.
const ID_DOMAIN: &[u8] = b"varvedb stream name\0";

/// The name of a stream, such as `order-123`, parsed into its parts (see the table in the
/// [module documentation](crate::StreamName#parts)).
///
/// # Parts
///
/// - The **category** is the part before the first `-` (the whole name when it has none); the id
///   after it may hold more dashes (`order-7f3e-44d1`: category `order`, id `7f3e-44d1`).
/// - A category may carry **types** after a `:`, joined by `+` (`account:command+position`):
///   the **entity** is the part before the `:`.
/// - An id may be **compound**, its parts joined by `+` (`account-123+456`); the first part is the
///   **cardinal id**, which consumer groups hash so that related streams go to one member.
///
/// A store records these parts with the stream's first event and keeps them: a later change of
/// the rules never moves a stream to another category.
///
/// Every API that takes a stream takes a name too, as a `StreamName`, a `&str` or a `String`.
/// An append by name records the name with the stream's first event; the stream's id is derived
/// from the name ([`StreamName::stream_id`]), so an append needs no lookup.
///
/// ```
/// use varvedb::StreamName;
/// let name = StreamName::new("account:command-123+456")?;
/// assert_eq!(name.category(), "account:command");
/// assert_eq!(name.entity(), "account");
/// assert_eq!(name.category_types().collect::<Vec<_>>(), ["command"]);
/// assert_eq!(name.id(), Some("123+456"));
/// assert_eq!(name.cardinal_id(), Some("123"));
/// assert_eq!(name.stream_id(), StreamName::new("account:command-123+456")?.stream_id());
/// assert!(StreamName::new("-123").is_err());
/// # Ok::<(), varvedb::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamName {
    text: Arc<str>,
    /// The id the name derives, computed once.
    id: StreamId,
    /// End of the category: the first `-`, or the end of the name.
    category_end: u16,
    /// End of the entity: the `:` in the category, or the end of the category.
    entity_end: u16,
    /// End of the cardinal id: the first `+` of the id, or the end of the name.
    cardinal_end: u16,
}

impl StreamName {
    /// Parses a stream name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStreamName`] for an empty name, one longer than
    /// [`MAX_STREAM_NAME_LEN`] bytes, one with a control character, and one whose category,
    /// entity, a category type, id or cardinal id is empty (`-1`, `:command-1`, `order:-1`,
    /// `order-`, `order-+1`).
    pub fn new(name: impl AsRef<str>) -> Result<StreamName> {
        let name = name.as_ref();
        let invalid = |reason: &'static str| Error::InvalidStreamName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("a stream name cannot be empty"));
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(invalid("a stream name is at most 1024 bytes long"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("a stream name cannot hold control characters"));
        }
        let category_end = name.find('-').unwrap_or(name.len());
        let category = &name[..category_end];
        if category.is_empty() {
            return Err(invalid(
                "the category (the part before the first '-') is empty",
            ));
        }
        let entity_end = category.find(':').unwrap_or(category_end);
        if entity_end == 0 {
            return Err(invalid(
                "the category's entity (the part before ':') is empty",
            ));
        }
        if entity_end < category_end && category[entity_end + 1..].split('+').any(|t| t.is_empty())
        {
            return Err(invalid(
                "a category type (after ':', joined by '+') is empty",
            ));
        }
        let cardinal_end = if category_end < name.len() {
            let id = &name[category_end + 1..];
            if id.is_empty() {
                return Err(invalid("the id after the '-' is empty"));
            }
            let cardinal = id.find('+').unwrap_or(id.len());
            if cardinal == 0 {
                return Err(invalid(
                    "the cardinal id (the id's part before '+') is empty",
                ));
            }
            category_end + 1 + cardinal
        } else {
            name.len()
        };
        Ok(StreamName {
            text: Arc::from(name),
            id: stream_id_of(name),
            category_end: category_end as u16,
            entity_end: entity_end as u16,
            cardinal_end: cardinal_end as u16,
        })
    }

    /// A name with the parts a store recorded for it, checked to be in bounds and on character
    /// boundaries; `None` when they are not.
    pub(crate) fn from_recorded(
        text: &str,
        category_end: u16,
        entity_end: u16,
        cardinal_end: u16,
    ) -> Option<StreamName> {
        let (c, e, k) = (
            usize::from(category_end),
            usize::from(entity_end),
            usize::from(cardinal_end),
        );
        let fits = !text.is_empty()
            && text.len() <= MAX_STREAM_NAME_LEN
            && 0 < e
            && e <= c
            && c <= text.len()
            && k <= text.len()
            && (c == text.len() || (c < k))
            && [c, e, k].iter().all(|&i| text.is_char_boundary(i));
        fits.then(|| StreamName {
            text: Arc::from(text),
            id: stream_id_of(text),
            category_end,
            entity_end,
            cardinal_end,
        })
    }

    /// The parts as recorded: ends of the category, the entity and the cardinal id.
    pub(crate) fn recorded_parts(&self) -> (u16, u16, u16) {
        (self.category_end, self.entity_end, self.cardinal_end)
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The category: the part before the first `-`, or the whole name.
    pub fn category(&self) -> &str {
        &self.text[..usize::from(self.category_end)]
    }

    /// The category without its types: the part before the `:`.
    pub fn entity(&self) -> &str {
        &self.text[..usize::from(self.entity_end)]
    }

    /// The category's types: after the `:`, joined by `+`. None when the category has no `:`.
    pub fn category_types(&self) -> impl Iterator<Item = &str> {
        let (c, e) = (usize::from(self.category_end), usize::from(self.entity_end));
        let types = if e < c { &self.text[e + 1..c] } else { "" };
        types.split('+').filter(|t| !t.is_empty())
    }

    /// The id: the part after the first `-`. `None` for a name that is only a category.
    pub fn id(&self) -> Option<&str> {
        let c = usize::from(self.category_end);
        (c < self.text.len()).then(|| &self.text[c + 1..])
    }

    /// The parts of a compound id (joined by `+`); one part for a simple id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.id().into_iter().flat_map(|id| id.split('+'))
    }

    /// The cardinal id: the id's first part (before a `+`). `None` for a name without an id.
    pub fn cardinal_id(&self) -> Option<&str> {
        let c = usize::from(self.category_end);
        (c < self.text.len()).then(|| &self.text[c + 1..usize::from(self.cardinal_end)])
    }

    /// The id of the stream this name names: the first 128 bits of SHA-256 over a fixed prefix
    /// and the name. The same name gives the same id on every machine and in every release (the
    /// derivation is part of the format).
    pub fn stream_id(&self) -> StreamId {
        self.id
    }
}

/// What consumer groups hash a stream by: the domain of the hash.
const GROUP_DOMAIN: &[u8] = b"varvedb consumer group\0";

impl StreamName {
    /// The member of a consumer group of `members` that handles this stream's events (see
    /// [`Filter::group`](crate::Filter::group)): its cardinal id (its whole name when it has no
    /// id) hashed, modulo `members`. Streams that share a cardinal id (`account-123` and
    /// `account:command-123+9`) go to the same member.
    ///
    /// ```
    /// use varvedb::StreamName;
    /// let a = StreamName::new("account-123")?;
    /// let b = StreamName::new("account:command-123+9")?;
    /// assert_eq!(a.group_member(4), b.group_member(4));
    /// assert!(a.group_member(4) < 4);
    /// # Ok::<(), varvedb::Error>(())
    /// ```
    pub fn group_member(&self, members: u32) -> u32 {
        let cardinal = self.cardinal_id().unwrap_or(self.as_str());
        group_member_of(cardinal.as_bytes(), members)
    }
}

/// The member of a group of `members` for a stream whose cardinal bytes are `cardinal`: the
/// first 8 bytes (big-endian) of SHA-256 over a fixed prefix and them, modulo `members`. A
/// stream created by id is hashed by its id's 16 big-endian bytes. Part of the format of a
/// group's checkpoints: changing it would move streams between members.
pub(crate) fn group_member_of(cardinal: &[u8], members: u32) -> u32 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(GROUP_DOMAIN);
    ctx.update(cardinal);
    let digest = ctx.finish();
    let hash = u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"));
    (hash % u64::from(members.max(1))) as u32
}

/// The id a stream name derives (see [`StreamName::stream_id`]).
pub(crate) fn stream_id_of(name: &str) -> StreamId {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(ID_DOMAIN);
    ctx.update(name.as_bytes());
    let digest = ctx.finish();
    let bytes: [u8; 16] = digest.as_ref()[..16]
        .try_into()
        .expect("SHA-256 is 32 bytes");
    StreamId(u128::from_be_bytes(bytes))
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({:?})", self.as_str())
    }
}

impl std::str::FromStr for StreamName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        StreamName::new(s)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, category, entity, category types, id, cardinal id)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
        Option<&'static str>,
    );

    const ROWS: &[Row] = &[
        ("order-123", "order", "order", &[], Some("123"), Some("123")),
        ("order", "order", "order", &[], None, None),
        // A UUID with its dashes: the category ends at the first dash only.
        (
            "account-7f3e2a1c-44d1-4b7e-9a2b-0c1d2e3f4a5b",
            "account",
            "account",
            &[],
            Some("7f3e2a1c-44d1-4b7e-9a2b-0c1d2e3f4a5b"),
            Some("7f3e2a1c-44d1-4b7e-9a2b-0c1d2e3f4a5b"),
        ),
        // What bites users of stores that split on the last dash.
        (
            "user-v1-54",
            "user",
            "user",
            &[],
            Some("v1-54"),
            Some("v1-54"),
        ),
        // Compound ids: the cardinal id is the part before the first '+'.
        (
            "account-123+456",
            "account",
            "account",
            &[],
            Some("123+456"),
            Some("123"),
        ),
        (
            "account-a+b+c",
            "account",
            "account",
            &[],
            Some("a+b+c"),
            Some("a"),
        ),
        // Category types.
        (
            "account:command-123",
            "account:command",
            "account",
            &["command"],
            Some("123"),
            Some("123"),
        ),
        (
            "account:command+position-123+9",
            "account:command+position",
            "account",
            &["command", "position"],
            Some("123+9"),
            Some("123"),
        ),
        (
            "account:position",
            "account:position",
            "account",
            &["position"],
            None,
            None,
        ),
        // A tenant prefix is part of the category unless it is written after the first dash.
        (
            "acme.order-42",
            "acme.order",
            "acme.order",
            &[],
            Some("42"),
            Some("42"),
        ),
        (
            "order-acme/42",
            "order",
            "order",
            &[],
            Some("acme/42"),
            Some("acme/42"),
        ),
        // Colons and pluses after the first dash belong to the id.
        (
            "order-a:b+c-d",
            "order",
            "order",
            &[],
            Some("a:b+c-d"),
            Some("a:b"),
        ),
        ("Ordre-é1", "Ordre", "Ordre", &[], Some("é1"), Some("é1")),
    ];

    #[test]
    fn the_table_of_names() {
        for &(text, category, entity, types, id, cardinal) in ROWS {
            let name = StreamName::new(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(name.as_str(), text);
            assert_eq!(name.category(), category, "{text}");
            assert_eq!(name.entity(), entity, "{text}");
            assert_eq!(name.category_types().collect::<Vec<_>>(), types, "{text}");
            assert_eq!(name.id(), id, "{text}");
            assert_eq!(name.cardinal_id(), cardinal, "{text}");
            let (c, e, k) = name.recorded_parts();
            assert_eq!(StreamName::from_recorded(text, c, e, k), Some(name.clone()));
        }
    }

    #[test]
    fn names_that_parse_to_nothing_are_refused() {
        for bad in [
            "",
            "-123",
            "-",
            ":command-1",
            "order:-1",
            "order:a+-1",
            "order-",
            "order-+1",
            "order\n-1",
            "order-1\u{0}",
        ] {
            let e = StreamName::new(bad).expect_err(bad);
            assert!(
                matches!(&e, Error::InvalidStreamName { name, .. } if name == bad),
                "{bad}: {e}"
            );
        }
        let long = format!("order-{}", "x".repeat(MAX_STREAM_NAME_LEN));
        assert!(StreamName::new(long).is_err());
        let longest = format!("o-{}", "x".repeat(MAX_STREAM_NAME_LEN - 2));
        assert!(StreamName::new(longest).is_ok());
    }

    #[test]
    fn recorded_parts_out_of_bounds_are_refused() {
        assert!(StreamName::from_recorded("order-1", 5, 5, 7).is_some());
        assert!(StreamName::from_recorded("order-1", 8, 5, 7).is_none());
        assert!(StreamName::from_recorded("order-1", 5, 6, 7).is_none());
        assert!(StreamName::from_recorded("order-1", 5, 0, 7).is_none());
        assert!(StreamName::from_recorded("order-1", 5, 5, 5).is_none());
        assert!(StreamName::from_recorded("é-1", 1, 1, 4).is_none());
        assert!(StreamName::from_recorded("", 0, 0, 0).is_none());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = StreamName::new("order-1").unwrap().stream_id();
        assert_eq!(a, stream_id_of("order-1"));
        assert_ne!(a, stream_id_of("order-2"));
        // The derivation is part of the format: this value must never change.
        assert_eq!(format!("{:032x}", a.as_u128()), EXPECTED_ORDER_1);
    }

    #[test]
    fn group_members_follow_the_cardinal_id_and_spread() {
        let member = |n: &str| StreamName::new(n).unwrap().group_member(4);
        assert_eq!(member("account-123"), member("account-123+456"));
        assert_eq!(member("account-123"), member("account:command-123"));
        // The hash is part of the format: this value must never change.
        assert_eq!(group_member_of(b"123", 1 << 31), EXPECTED_123 % (1 << 31));
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[member(&format!("order-{i}")) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    /// SHA-256("varvedb consumer group\0123"), first 8 bytes, as an integer modulo 2^31.
    const EXPECTED_123: u32 = 2_143_515_673;

    /// SHA-256("varvedb stream name\0order-1"), first 16 bytes.
    const EXPECTED_ORDER_1: &str = "be557f64e36bd378b393cd8776dca4e3";
}
