//! Opening, closing and reopening the store, index flushes, and the checks made after every op.

use varvedb::error::Error;
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

use super::coverage;
use super::crypto::master_key;
use super::Harness;

impl Harness {
    fn config(&self, key_rotations: u32) -> StorageConfig {
        StorageConfig {
            path: self.dir.path().to_path_buf(),
            encryption_enabled: self.encrypted,
            master_key: self.encrypted.then(|| master_key(key_rotations)),
            // Index flushes every few events, so that reads cross the watermark, snapshots
            // outlive flushes and reopening recovers a tail.
            index_interval: if self.encrypted { 16 } else { 3 },
            ..Default::default()
        }
    }

    pub(super) fn open(&mut self) {
        let storage = Storage::open(self.config(self.model.rotations)).expect("open store");
        let len = self.model.log.len() as u64;
        assert_eq!(storage.head(), len, "head after open");
        // Closing indexes the whole log (and so would opening, past the interval).
        assert_eq!(storage.stats().indexed_through, len, "index after open");
        self.model.flushed = len;
        self.writer = Some(Writer::new(storage.clone()));
        // Every third event is stored as `EvB` (see `model::type_of`): the reader reads it as `Ev`.
        self.reader = Some(Reader::new(storage.clone()).accept_event_types(["EvB"]));
        self.storage = Some(storage);
    }

    fn close(&mut self) {
        self.snapshot = None;
        self.writer = None;
        self.reader = None;
        self.storage = None;
    }

    pub(super) fn reopen(&mut self) {
        coverage::hit("reopen");
        self.close();
        let rotations = self.model.rotations;
        if self.encrypted && rotations > 0 {
            // The key in force before the last rotation opens the store no more.
            match Storage::open(self.config(rotations - 1)) {
                Err(Error::WrongMasterKey {
                    path,
                    master_version,
                }) => {
                    assert_eq!(path, self.dir.path().canonicalize().unwrap());
                    assert_eq!(master_version, rotations + 1);
                }
                other => panic!("open with the key rotated away: {other:?}"),
            }
        }
        self.open();
    }

    pub(super) fn flush_index(&mut self) {
        coverage::hit("flush");
        let len = self.model.log.len() as u64;
        let mark = self.storage().flush_index().expect("flush_index");
        assert_eq!(mark, len, "flush_index reaches the end of the log");
        assert_eq!(self.storage().stats().indexed_through, len);
        self.model.flushed = len;
    }

    /// What holds after every op: the head, the index watermark's bounds (background flushes
    /// move it at their own pace, but never back), the key version.
    pub(super) fn check_head(&mut self) {
        let len = self.model.log.len() as u64;
        let storage = self.storage();
        assert_eq!(storage.head(), len, "head");
        let stats = storage.stats();
        assert_eq!(stats.head, len, "stats().head");
        assert_eq!(stats.encrypted, self.encrypted);
        let mark = stats.indexed_through;
        assert!(
            self.model.flushed <= mark && mark <= len,
            "indexed_through {mark}: was {}, head {len}",
            self.model.flushed
        );
        assert_eq!(
            storage.master_key_version(),
            self.encrypted.then_some(self.model.rotations + 1),
            "master key version"
        );
        self.model.flushed = mark;
    }
}
