//! [`Filter`]: which events a read, a subscription or a processor takes.

use std::collections::HashSet;
use std::sync::Arc;

use super::readable::Readable;
use super::reader::Reader;
use crate::error::{Error, Result};
use crate::log::Select;
use crate::name::StreamName;
use crate::types::{IntoStreamId, StreamId};

/// Which events a read ([`Reader::read_filtered`]), a subscription or a processor takes:
/// **(categories ∪ streams) AND event types**, and, for a member of a consumer group
/// ([`Filter::group`]), the streams of that member. An empty set means "all".
///
/// Streams are named as everywhere else in the API ([`IntoStreamId`]): a name such as
/// `"order-123"`, a bare integer literal, an unsigned integer, a [`StreamId`] or a UUID. A
/// category is the part of a stream name before its first `-` ([`StreamName::category`]); only
/// streams created by name have one. A stream or a category that is not one (a negative id, a
/// name that does not parse) is reported when the filter is used, as
/// [`Error::InvalidStreamId`] or [`Error::InvalidStreamName`].
///
/// A filter of categories and no stream, or of event types and neither, is answered from the
/// label index, which lists the events of each category and type: a read of one category among
/// ten reads that category's records only. Progress is a global position either way, so a
/// consumer can change its filter and keep its checkpoint.
///
/// ```
/// use varvedb::Filter;
/// let filter = Filter::default().stream(3).stream(4u64).event_type("Deposited");
/// assert_eq!(filter.streams().len(), 2);
/// let orders = Filter::default().category("order").stream("invoice-7");
/// assert_eq!(orders.categories().len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    streams: HashSet<StreamId>,
    categories: HashSet<String>,
    event_types: HashSet<String>,
    /// Member `.0` of a consumer group of `.1`.
    group: Option<(u32, u32)>,
    /// The first stream or category given that is not one (a negative id, a name that does not
    /// parse), reported when the filter is used.
    invalid: Option<Invalid>,
}

/// A stream or category given to a [`Filter`] that names none.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Invalid {
    Id(i128),
    Name(String, &'static str),
    Group(u32, u32),
}

impl Filter {
    /// Only events of `stream`, or of the other streams and categories given (adds to the stream
    /// set).
    pub fn stream(mut self, stream: impl IntoStreamId) -> Self {
        match stream.into_stream_id() {
            Ok(stream) => {
                self.streams.insert(stream);
            }
            Err(Error::InvalidStreamId { value }) => {
                self.invalid.get_or_insert(Invalid::Id(value));
            }
            Err(Error::InvalidStreamName { name, reason }) => {
                self.invalid.get_or_insert(Invalid::Name(name, reason));
            }
            // `into_stream_id` fails only on streams that are not stream ids or names.
            Err(_) => {}
        }
        self
    }

    /// Only events of streams in `category`, or of the other streams and categories given (adds
    /// to the category set). A category is named as it is in stream names: `order`, or
    /// `account:command` for a category with types.
    pub fn category(mut self, category: impl Into<String>) -> Self {
        let category = category.into();
        // A category is a name without an id: it must parse as one, to itself.
        match StreamName::new(&category) {
            Ok(name) if name.id().is_none() => {
                self.categories.insert(category);
            }
            Ok(_) => {
                self.invalid.get_or_insert(Invalid::Name(
                    category,
                    "a category cannot hold '-': it is the part of a name before the first '-'",
                ));
            }
            Err(Error::InvalidStreamName { name, reason }) => {
                self.invalid.get_or_insert(Invalid::Name(name, reason));
            }
            Err(_) => {}
        }
        self
    }

    /// Only events of type `name` (adds to the type set): of the reader's type stored under that
    /// name, and of its older versions under the names they had.
    pub fn event_type(mut self, name: impl Into<String>) -> Self {
        self.event_types.insert(name.into());
        self
    }

    /// Only events of the streams that member `member` of a consumer group of `members` handles
    /// (members are numbered from 0): each stream goes to the member its cardinal id hashes to
    /// ([`StreamName::group_member`]; a stream created by id is hashed by its id), so all its
    /// events go to one member, in order. Combines with the rest of the filter: give each
    /// member the same categories, streams and types.
    ///
    /// Each member is a processor (or subscription) of its own, with a checkpoint of its own
    /// (give each a name of its own, such as `billing-2-of-4`), in this process or another; a
    /// member that restarts goes on after its own checkpoint.
    ///
    /// **Changing the number of members** moves streams between members: a stream's events
    /// after the change go to the member its hash now names. To change it without losing an
    /// event, stop every member, start the new members each from the lowest checkpoint of the
    /// old ones (`Storage::reset_processor`), and let them go: events between that checkpoint
    /// and a stream's old member's checkpoint are handled again (at least once, as after any
    /// restart), none is passed over.
    ///
    /// ```
    /// use varvedb::Filter;
    /// let member = Filter::default().category("account").group(2, 4);
    /// assert_eq!(member.group_of(), Some((2, 4)));
    /// ```
    pub fn group(mut self, member: u32, members: u32) -> Self {
        if member >= members {
            self.invalid.get_or_insert(Invalid::Group(member, members));
        } else {
            self.group = Some((member, members));
        }
        self
    }

    /// The consumer group member this filter takes the streams of, and the group's size.
    pub fn group_of(&self) -> Option<(u32, u32)> {
        self.group
    }

    /// The streams this filter names (with the categories empty too: every stream).
    pub fn streams(&self) -> &HashSet<StreamId> {
        &self.streams
    }

    /// The categories this filter names.
    pub fn categories(&self) -> &HashSet<String> {
        &self.categories
    }

    /// The event type names this filter delivers (empty: every type).
    pub fn event_types(&self) -> &HashSet<String> {
        &self.event_types
    }

    /// What a scan by `reader` selects with this filter: its streams and categories, and the
    /// types it names among the reader's. Or the error of a stream or category given to it that
    /// is not one.
    pub(crate) fn select<R: Readable>(self, reader: &Reader<R>) -> Result<Select> {
        match self.invalid {
            Some(Invalid::Id(value)) => return Err(Error::InvalidStreamId { value }),
            Some(Invalid::Name(name, reason)) => {
                return Err(Error::InvalidStreamName { name, reason })
            }
            Some(Invalid::Group(member, members)) => {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "consumer group member {member} of {members}: members are numbered from 0 to {}",
                        members.saturating_sub(1)
                    ),
                })
            }
            None => {}
        }
        let accepted = reader.accepted();
        let walk_types = !self.event_types.is_empty();
        let (types, follow) = if self.event_types.is_empty() {
            (Arc::clone(accepted), Arc::clone(reader.follow()))
        } else {
            // A name the filter gives stands for its type: the names of its older versions too.
            let named: HashSet<String> = self
                .event_types
                .iter()
                .flat_map(|t| reader.aliases(t))
                .collect();
            let types: Arc<[String]> = accepted
                .iter()
                .filter(|t| named.contains(*t))
                .cloned()
                .collect();
            let follow = reader
                .follow()
                .iter()
                .filter(|(t, _)| named.contains(t))
                .cloned()
                .collect();
            (types, follow)
        };
        let mut categories: Vec<String> = self.categories.into_iter().collect();
        categories.sort();
        Ok(Select {
            streams: (!self.streams.is_empty())
                .then(|| Arc::new(self.streams.into_iter().collect())),
            categories: (!categories.is_empty()).then(|| categories.into()),
            walk_types,
            group: self.group,
            types: Some(types),
            follow: Some(follow),
        })
    }
}
