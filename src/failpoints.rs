//! Failure injection for VarveDB's own tests (cargo feature `failpoints`): makes a chosen kind of
//! write transaction fail at its commit as if the disk had failed, so that tests can check what
//! the store does then. Never enable it in an application.

pub use crate::env::WriteKind;
use crate::Storage;

/// Makes the next commit of a `kind` write transaction of `storage` fail as if the disk had
/// failed (LMDB's `EIO`): the transaction is aborted and the write returns the error.
pub fn fail_next_commit(storage: &Storage, kind: WriteKind) {
    storage.env.guard().inject(kind);
}

/// Drops the answer to the next commit this process publishes to a cluster that stores it, as
/// if the connection lost it: the node must find the commit stored (feature `cluster`).
#[cfg(feature = "cluster")]
pub fn drop_next_cluster_answer() {
    crate::cluster::drop_next_answer();
}
