//! The environment and its databases: the LMDB environment of a store (opening it, read
//! transactions, the one write runner with map growth and poisoning), the handles of its
//! databases with the entry reads and writes every layer above shares, and the format checks at
//! open. Depends only on the bytes format (`crate::format`).

mod dbs;
#[allow(clippy::module_inception)]
mod env;
mod gate;
mod lookup;
mod meta;
mod names;
mod poison;
mod truncation;
mod write;

pub(crate) use dbs::Dbs;
pub(crate) use env::{page_size, EnvOptions};
pub use env::{Env, ReadTxn};
pub(crate) use lookup::LogLookup;
pub use meta::FORMAT_VERSION;
pub(crate) use meta::{open_databases, Opened};
pub(crate) use truncation::truncation;
pub use write::WriteKind;
pub(crate) use write::{Attempt, Commit, WriteGuard};
