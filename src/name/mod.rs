//! Stream names: how a name such as `order-123` parses into its category and id, and the stream
//! id derived from it. Pure functions on strings; the entry that records a name in the store is
//! `format::name`.
//!
//! The rules are Message DB's, so that names written for it mean the same here:
//!
//! | name | category | entity | category types | id | cardinal id |
//! |---|---|---|---|---|---|
//! | `order-123` | `order` | `order` | | `123` | `123` |
//! | `order-7f3e-44d1` | `order` | `order` | | `7f3e-44d1` | `7f3e-44d1` |
//! | `account-123+456` | `account` | `account` | | `123+456` | `123` |
//! | `account:command-123` | `account:command` | `account` | `command` | `123` | `123` |
//! | `account:command+position-1` | `account:command+position` | `account` | `command`, `position` | `1` | `1` |
//! | `order` | `order` | `order` | | | |

mod parse;

pub(crate) use parse::group_member_of;
pub use parse::{StreamName, MAX_STREAM_NAME_LEN};
