//! The store's LMDB environment: opening it, its read transactions, and the write runner that
//! grows the map when it is full (see [`super::gate`] for why that is sound).
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heed::{EnvFlags, EnvOpenOptions, MdbError, RoTxn, WithoutTls};

use super::gate::{Gate, GateGuard};
use super::truncation::truncation;
use super::write::{Attempt, Commit, WriteGuard, WriteKind};
use crate::error::{Error, Result};
use crate::metrics::handles::{ReadCounts, ReadKind, StoreMetrics};

/// How an environment is opened.
pub(crate) struct EnvOptions {
    /// Initial size of the map in bytes.
    pub map_size: usize,
    /// LMDB reader slots.
    pub max_readers: u32,
    /// How long growing the map waits for this process's transactions to end.
    pub resize_timeout: Duration,
    /// Whether commits are synced (`false`: `MDB_NOSYNC`, the store syncs on its own schedule).
    pub sync: bool,
}

/// The store's LMDB environment. Open read transactions with [`Env::read_txn`].
#[derive(Clone)]
pub struct Env {
    pub(crate) heed: heed::Env<WithoutTls>,
    gate: Arc<Gate>,
    resize_timeout: Duration,
    resizes: Arc<AtomicU64>,
    /// The map size as last set by this process, readable without touching the map.
    map_size: Arc<AtomicUsize>,
    /// Poisoning (and, in tests, injected failures) of every write of the store.
    guard: WriteGuard,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A read transaction: a consistent snapshot of the store.
///
/// Event views borrow from it and stay valid while it lives. It is `Send`, so it can move between
/// threads and tokio tasks. Keep it short: while it is open LMDB cannot reuse pages freed after
/// it began, and the map cannot grow (a writer that needs to grow it waits up to
/// [`StorageConfig::resize_timeout`](crate::StorageConfig::resize_timeout)).
pub struct ReadTxn {
    // Field order matters: the transaction ends before the gate guard is released.
    txn: RoTxn<'static, WithoutTls>,
    _guard: GateGuard,
    /// Events read in this transaction, published as metrics when it ends.
    reads: ReadCounts,
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        if self.reads.any() {
            self._guard.0.metrics.reads(&self.reads);
        }
    }
}

impl ReadTxn {
    pub(crate) fn raw(&self) -> &RoTxn<'static> {
        &self.txn
    }

    /// The underlying heed transaction, to read databases of your own in this store, such as
    /// projection databases ([`Storage::projection_database`](crate::Storage::projection_database)).
    pub fn heed(&self) -> &RoTxn<'static> {
        &self.txn
    }

    /// Counts `n` events read in this transaction (published when it ends).
    #[inline]
    pub(crate) fn count_reads(&self, kind: ReadKind, n: u64) {
        self.reads.add(kind, n);
    }

    /// The transaction, after checking that it belongs to `env` (heed panics on a transaction
    /// of another environment; this turns that into an error).
    pub(crate) fn of(&self, env: &Env) -> Result<&RoTxn<'static>> {
        if Arc::ptr_eq(&self._guard.0, &env.gate) {
            Ok(&self.txn)
        } else {
            Err(Error::ForeignTransaction)
        }
    }
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn")
            .field("id", &self.txn.id())
            .finish()
    }
}

impl Env {
    /// Opens (creating if needed) the environment in `dir`, which must exist.
    /// Its writes share `guard` with the store's keystore.
    pub(crate) fn open(dir: &Path, options_in: &EnvOptions, guard: WriteGuard) -> Result<Env> {
        let page = page_size();
        let map_size = options_in.map_size.max(64 * 1024).div_ceil(page) * page;
        let (max_readers, resize_timeout) = (options_in.max_readers, options_in.resize_timeout);
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(map_size)
            .max_dbs(MAX_DBS)
            .max_readers(max_readers);
        // SAFETY: NO_READ_AHEAD only changes the kernel's read-ahead advice on the map; it is not
        // one of the flags (NO_SYNC, NO_META_SYNC, NO_LOCK, WRITE_MAP) that weaken durability or
        // locking, which is what makes `flags` unsafe.
        unsafe {
            options.flags(EnvFlags::NO_READ_AHEAD);
        }
        if !options_in.sync {
            // SAFETY: NO_SYNC makes commits skip fsync; it weakens durability, never memory
            // safety. The caller chose it with `Durability::Relaxed`, whose documentation states
            // what a crash can lose; the store syncs on the caller's interval, on
            // `Storage::sync`, and when it is closed.
            unsafe {
                options.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: opening an LMDB environment is unsafe because the file backs a memory map that
        // must not be modified except through LMDB. We uphold LMDB's rules: the lock file is left
        // to LMDB (no NO_LOCK), WRITE_MAP is never used so stray writes through the map are
        // impossible, the same path is opened at most once per process (the registry in
        // `storage::registry` hands out the existing environment, and heed refuses a second open),
        // and the map is only resized while no transaction of this process is active (see
        // `Gate`). A file cut shorter than the pages its meta names is refused before it is
        // mapped (`truncation`), since reading past its end would be a SIGBUS. The store
        // directory is created 0700 and owned by the caller; a process that rewrites or truncates
        // the file behind LMDB's back while it is open is outside what any mmap-based store can
        // defend.
        if let Some(reason) = truncation(dir)? {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                reason,
            )));
        }
        let heed = unsafe { options.open(dir) }?;
        let map_size = heed.info().map_size;
        Ok(Env {
            heed,
            gate: Arc::new(Gate::new(StoreMetrics::new(dir))),
            resize_timeout,
            resizes: Arc::new(AtomicU64::new(0)),
            map_size: Arc::new(AtomicUsize::new(map_size)),
            guard,
            path: Arc::new(dir.to_owned()),
        })
    }

    /// Begins a read transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Lmdb`] when LMDB cannot begin a transaction, for example when every reader slot
    /// (`max_readers`) is taken.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let storage = varvedb::Storage::open(varvedb::StorageConfig { path: dir.path().into(), ..Default::default() })?;
    /// let txn = storage.env.read_txn()?;
    /// # drop(txn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_txn(&self) -> Result<ReadTxn> {
        loop {
            let guard = self.gate.enter();
            match self.heed.clone().static_read_txn() {
                Ok(txn) => {
                    return Ok(ReadTxn {
                        txn,
                        _guard: guard,
                        reads: ReadCounts::default(),
                    })
                }
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(guard);
                    self.adopt_grown_map()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `f` with a write transaction while holding the gate: the one way the store's data
    /// environment is written. Refuses to start on a poisoned store, poisons it when the write
    /// fails at the I/O level (see [`super::poison`]), and retries after growing the map when
    /// `f` or the commit fails with "map full", and after adopting a map grown by another
    /// process. `f` must be idempotent: it runs again from scratch after such a retry.
    pub(crate) fn write<T>(
        &self,
        kind: WriteKind,
        mut f: impl FnMut(&mut heed::RwTxn<'_>) -> Result<Commit<T>>,
    ) -> Result<T> {
        loop {
            let (gate, wtxn) = self.begin(kind)?;
            let map_size = self.heed.info().map_size;
            let attempt = self.guard.attempt(&self.path, kind, wtxn, &mut f);
            drop(gate);
            match attempt {
                Attempt::Done(value) => return Ok(value),
                Attempt::MapFull(_) => self.grow(map_size)?,
                Attempt::Failed(e) => return Err(e),
            }
        }
    }

    /// The write guard this environment's writes share with the store's keystore.
    pub(crate) fn guard(&self) -> &WriteGuard {
        &self.guard
    }

    /// The environment's directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Doubles the map (at least +64 MiB), unless another writer already grew it past `seen`.
    fn grow(&self, seen: usize) -> Result<()> {
        let _exclusive = self.gate.exclusive(self.resize_timeout).ok_or_else(|| Error::MapFull {
            map_size: seen,
            reason: format!(
                "read transactions of this process stayed open for more than {:?}; end them so the map can grow",
                self.resize_timeout
            ),
        })?;
        let current = self.heed.info().map_size;
        if current > seen {
            return Ok(());
        }
        let page = page_size();
        let new_size = current
            .checked_add(current.max(64 << 20))
            .map(|n| n.div_ceil(page) * page)
            .ok_or_else(|| Error::MapFull {
                map_size: current,
                reason: "map size overflow".into(),
            })?;
        // SAFETY: `_exclusive` guarantees that no transaction of this process is active: every
        // read and write transaction holds a gate guard for its whole life, and the exclusive
        // guard is only granted once all guards have dropped. No new one can start until it ends.
        unsafe { self.heed.resize(new_size) }.map_err(|e| Error::MapFull {
            map_size: current,
            reason: format!("the operating system refused a map of {new_size} bytes: {e}"),
        })?;
        self.resizes.fetch_add(1, Ordering::Relaxed);
        self.map_size.store(new_size, Ordering::Relaxed);
        self.gate.metrics.resized(new_size);
        tracing::info!(from = current, to = new_size, "grew the LMDB map");
        Ok(())
    }

    /// Adopts the map size after another process grew the file past our map.
    fn adopt_grown_map(&self) -> Result<()> {
        let _exclusive =
            self.gate
                .exclusive(self.resize_timeout)
                .ok_or_else(|| {
                    Error::MapFull {
                map_size: self.heed.info().map_size,
                reason:
                    "another process grew the map and read transactions of this process stayed open"
                        .into(),
            }
                })?;
        // SAFETY: as in `grow`, the exclusive gate guarantees no active transaction here. Size 0
        // asks LMDB to adopt the size recorded in the file by the other process.
        unsafe { self.heed.resize(0) }?;
        self.map_size
            .store(self.heed.info().map_size, Ordering::Relaxed);
        Ok(())
    }

    /// LMDB's environment info and page size. Both read the meta pages through the map, so they
    /// run inside the gate: a concurrent resize would unmap them.
    pub(crate) fn info(&self) -> (heed::EnvInfo, u32) {
        let _guard = self.gate.enter();
        (
            self.heed.info(),
            self.heed.unnamed_database_stat().page_size,
        )
    }

    /// Flushes the data file, inside the gate like every other use of the map. A failed flush
    /// poisons the store: what it did not write is lost.
    pub(crate) fn force_sync(&self) -> Result<()> {
        self.guard.poison.check()?;
        let _gate = self.gate.enter();
        self.heed.force_sync().map_err(|e| {
            let e = Error::from(e);
            self.guard
                .poison
                .set(&self.path, "a sync of the data file", &e);
            e
        })
    }

    /// Creates (or opens) a named database of raw bytes. heed creates databases only in a
    /// transaction of its own, so this is the one write besides [`Env::write`]; it keeps the same
    /// rules: refused on a poisoned store, a map grown by another process adopted, and only a
    /// failure of the commit (or of the operating system) poisons. A refusal of the database
    /// itself (LMDB's limit of named databases, say) is the caller's error.
    pub(crate) fn create_database(
        &self,
        name: &str,
    ) -> Result<heed::Database<'static, heed::types::Bytes, heed::types::Bytes>> {
        let kind = WriteKind::CreateDatabase;
        let (gate, wtxn) = self.begin(kind)?;
        // The opener's refusal aborts the transaction and comes back as `Abort`; an error here
        // is the commit's.
        let created = self.heed.create_databases_and_commit(wtxn, |opener, wtxn| {
            Ok::<_, heed::Error>(match opener.create_database(wtxn, Some(name)) {
                Ok(db) => heed::CommitOrAbort::Commit(db),
                Err(e) => heed::CommitOrAbort::Abort(e),
            })
        });
        drop(gate);
        match created {
            Ok(heed::CommitOrAbort::Commit(db)) => Ok(db),
            Ok(heed::CommitOrAbort::Abort(e)) => {
                Err(self.guard.poison.failed(&self.path, kind, e.into(), false))
            }
            Err(e) => Err(self.guard.poison.failed(&self.path, kind, e.into(), true)),
        }
    }

    /// A write transaction begun inside the gate on a store that is not poisoned, with a map
    /// that another process grew adopted first; the gate guard must outlive the transaction.
    fn begin(&self, kind: WriteKind) -> Result<(GateGuard, heed::RwTxn<'_>)> {
        loop {
            self.guard.poison.check()?;
            let gate = self.gate.enter();
            match self.heed.write_txn() {
                Ok(wtxn) => return Ok((gate, wtxn)),
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(gate);
                    self.adopt_grown_map()?;
                }
                Err(e) => return Err(self.guard.poison.failed(&self.path, kind, e.into(), false)),
            }
        }
    }

    /// The store's metric handles.
    pub(crate) fn metrics(&self) -> &StoreMetrics {
        &self.gate.metrics
    }

    /// How many times this process grew the map.
    pub(crate) fn resizes(&self) -> u64 {
        self.resizes.load(Ordering::Relaxed)
    }
}

/// Named databases an environment can hold: VarveDB's own seven, and projections.
const MAX_DBS: u32 = 128;

/// The granularity of map sizes.
pub(crate) fn page_size() -> usize {
    // LMDB requires the map size to be a multiple of the OS page size; 4 KiB is the common case
    // and 64 KiB covers every page size Linux uses, so rounding to 64 KiB is always valid.
    64 * 1024
}
