//! The LMDB environment, its read transactions, and the gate that makes growing the map sound.
//!
//! LMDB may only change the size of its memory map while no transaction of this process is
//! active: remapping moves the pages that open transactions (and the event views borrowed from
//! them) point into. Every transaction VarveDB opens, read or write, therefore holds a
//! [`GateGuard`]; growing the map takes the gate exclusively, waiting for the guards to drop.
//! This module holds the crate's only `unsafe` code.
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use heed::{EnvFlags, EnvOpenOptions, MdbError, RoTxn, WithoutTls};

use super::{Durability, StorageConfig};
use crate::error::{Error, Result};
use crate::metrics::{ReadCounts, ReadKind, StoreMetrics};

/// The store's LMDB environment. Open read transactions with [`Env::read_txn`].
#[derive(Clone)]
pub struct Env {
    pub(crate) heed: heed::Env<WithoutTls>,
    gate: Arc<Gate>,
    resize_timeout: Duration,
    resizes: Arc<AtomicU64>,
    /// The map size as last set by this process, readable without touching the map.
    map_size: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("path", &self.heed.path())
            .finish_non_exhaustive()
    }
}

/// A read transaction: a consistent snapshot of the store.
///
/// Event views borrow from it and stay valid while it lives. It is `Send`, so it can move between
/// threads and tokio tasks. Keep it short: while it is open LMDB cannot reuse pages freed after
/// it began, and the map cannot grow (a writer that needs to grow it waits up to
/// [`StorageConfig::resize_timeout`](crate::storage::StorageConfig::resize_timeout)).
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
    /// projection databases ([`Storage::projection_database`](crate::storage::Storage::projection_database)).
    pub fn heed(&self) -> &RoTxn<'static> {
        &self.txn
    }

    /// The transaction, after checking that it belongs to `env` (heed panics on a transaction
    /// of another environment; this turns that into an error).
    /// Counts `n` events read in this transaction (published when it ends).
    #[inline]
    pub(crate) fn count_reads(&self, kind: ReadKind, n: u64) {
        self.reads.add(kind, n);
    }

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
    pub(crate) fn open(dir: &Path, config: &StorageConfig) -> Result<Env> {
        let page = page_size();
        let map_size = config.map_size.max(64 * 1024).div_ceil(page) * page;
        let (max_readers, resize_timeout) = (config.max_readers, config.resize_timeout);
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
        if let Durability::Relaxed { .. } = config.durability {
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
            gate: Arc::new(Gate {
                metrics: StoreMetrics::new(dir),
                ..Gate::default()
            }),
            resize_timeout,
            resizes: Arc::new(AtomicU64::new(0)),
            map_size: Arc::new(AtomicUsize::new(map_size)),
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
    /// # let storage = varvedb::storage::Storage::open(varvedb::storage::StorageConfig { path: dir.path().into(), ..Default::default() })?;
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

    /// Runs `f` with a write transaction while holding the gate. Retries after growing the map
    /// when `f` or the commit fails with "map full", and after adopting a map grown by another
    /// process. `f` must be idempotent: it runs again from scratch after such a retry.
    pub(crate) fn write<T>(
        &self,
        mut f: impl FnMut(&mut heed::RwTxn<'_>) -> Result<Commit<T>>,
    ) -> Result<T> {
        loop {
            let guard = self.gate.enter();
            let map_size = self.heed.info().map_size;
            let mut wtxn = match self.heed.write_txn() {
                Ok(t) => t,
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(guard);
                    self.adopt_grown_map()?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let outcome = match f(&mut wtxn) {
                Ok(Commit::Abort(value)) => {
                    wtxn.abort();
                    return Ok(value);
                }
                Ok(Commit::Commit(value)) => wtxn.commit().map(|()| value).map_err(Error::from),
                Err(e) => {
                    wtxn.abort();
                    Err(e)
                }
            };
            drop(guard);
            match outcome {
                Err(e) if e.is_map_full() => self.grow(map_size)?,
                other => return other,
            }
        }
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

    /// Flushes the data file, inside the gate like every other use of the map.
    pub(crate) fn force_sync(&self) -> Result<()> {
        let _guard = self.gate.enter();
        Ok(self.heed.force_sync()?)
    }

    /// Creates (or opens) a named database of raw bytes.
    pub(crate) fn create_database(
        &self,
        name: &str,
    ) -> Result<heed::Database<'static, heed::types::Bytes, heed::types::Bytes>> {
        let _guard = self.gate.enter();
        let wtxn = self.heed.write_txn()?;
        Ok(self
            .heed
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit(
                    opener.create_database(wtxn, Some(name))?,
                ))
            })?
            .unwrap_commit())
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

/// Named databases an environment can hold: VarveDB's own six, and projections.
const MAX_DBS: u32 = 128;

/// What a write closure asks [`Env::write`] to do with its transaction.
pub(crate) enum Commit<T> {
    /// Commit, then return the value.
    Commit(T),
    /// Abort (nothing to write), then return the value.
    Abort(T),
}

/// Why the LMDB data file in `dir` cannot be mapped safely, if it cannot: LMDB maps the file and
/// trusts its meta pages, so a file cut shorter than the pages they name would make the first
/// read past its end a `SIGBUS`, not an error. Reads the two meta pages (format of LMDB 0.9:
/// magic `0xBEEFC0DE` at byte 16 of each, page size at 40, last page number at 136, transaction
/// id at 144) and checks that the file holds every page the newer one names. `None` for a file
/// that does not exist yet.
pub(crate) fn truncation(dir: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let path = dir.join("data.mdb");
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut head = vec![0u8; 160];
    if file.read_exact(&mut head).is_err() {
        return Ok(Some(format!(
            "{} is truncated to {len} bytes",
            path.display()
        )));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    if u32_at(&head, 16) != 0xBEEF_C0DE {
        return Ok(Some(format!("{} is not an LMDB data file", path.display())));
    }
    let page = u64::from(u32_at(&head, 40));
    if !(512..=65536).contains(&page) || !page.is_power_of_two() || len < 2 * page {
        return Ok(Some(format!(
            "{} is truncated or damaged: {len} bytes, page size {page}",
            path.display()
        )));
    }
    let mut second = vec![0u8; 160];
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(page))?;
    file.read_exact(&mut second)?;
    let metas = [&head, &second];
    let newest = metas
        .iter()
        .filter(|m| u32_at(m, 16) == 0xBEEF_C0DE)
        .max_by_key(|m| u64_at(m, 144))
        .expect("the first meta page has the magic");
    let needed = (u64_at(newest, 136) + 1).saturating_mul(page);
    if len < needed {
        return Ok(Some(format!(
            "{} is truncated: {len} bytes, its last page ends at byte {needed}",
            path.display()
        )));
    }
    Ok(None)
}

/// Opens (creating if needed) the keystore's environment in `dir`, which must exist: a small
/// environment of its own, so that erasing a key never shares pages with the log (see
/// `crate::crypto`). Its map is fixed (`map_size`, sparse on disk) and never resized, so it needs
/// no gate.
pub(crate) fn open_keystore_env(
    dir: &Path,
    map_size: usize,
    max_readers: u32,
) -> Result<heed::Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(map_size.div_ceil(page_size()) * page_size())
        .max_dbs(8)
        .max_readers(max_readers);
    // SAFETY: as for the store's own environment (`Env::open`): LMDB keeps its lock file, no
    // WRITE_MAP, no flag that weakens syncing, and the keystore directory is opened at most once
    // per process, because it is opened only while the store's registry lock is held for the
    // store that owns it, and heed refuses a second open of the same path. The map is never
    // resized, so no transaction can see it move. The caller checked the file with
    // `truncation` first.
    let env = unsafe { options.open(dir) }?;
    Ok(env)
}

fn page_size() -> usize {
    // LMDB requires the map size to be a multiple of the OS page size; 4 KiB is the common case
    // and 64 KiB covers every page size Linux uses, so rounding to 64 KiB is always valid.
    64 * 1024
}

/// Counts active transactions so that the map is resized only when there are none. Also holds
/// the store's metric handles, which every transaction reaches through its guard.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    metrics: StoreMetrics,
}

#[derive(Default)]
struct GateState {
    active: usize,
    exclusive: bool,
}

/// Held by every transaction for its whole life.
pub(crate) struct GateGuard(Arc<Gate>);

/// Held while the map is resized.
struct ExclusiveGuard<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(self: &Arc<Self>) -> GateGuard {
        let mut state = self.lock();
        while state.exclusive {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.active += 1;
        GateGuard(Arc::clone(self))
    }

    fn exclusive(&self, timeout: Duration) -> Option<ExclusiveGuard<'_>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.exclusive {
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.exclusive = true;
        while state.active > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                state.exclusive = false;
                self.changed.notify_all();
                return None;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(ExclusiveGuard(self))
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.active -= 1;
        if state.active == 0 && state.exclusive {
            self.0.changed.notify_all();
        }
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().exclusive = false;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_waits_for_guards_and_times_out() {
        let gate = Arc::new(Gate::default());
        let g = gate.enter();
        assert!(gate.exclusive(Duration::from_millis(20)).is_none());
        // A failed attempt leaves the gate usable.
        let g2 = gate.enter();
        drop(g);
        drop(g2);
        let ex = gate.exclusive(Duration::from_millis(20));
        assert!(ex.is_some());
        drop(ex);
        let _g3 = gate.enter();
    }

    #[test]
    fn exclusive_granted_once_guard_moves_and_drops_on_other_thread() {
        let gate = Arc::new(Gate::default());
        let g = gate.enter();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(g);
        });
        assert!(gate.exclusive(Duration::from_secs(5)).is_some());
        t.join().unwrap();
    }
}
