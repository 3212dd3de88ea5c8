//! The fjall side: an LSM-tree key-value store with a write-ahead journal, holding the same four
//! maps as raw heed (log, (stream, version) index, stream heads, event ids) with opaque values of
//! a VarveDB record's length. Every commit is one atomic `WriteBatch` across the four keyspaces,
//! persisted with `PersistMode::SyncData` (an `fdatasync` of the journal) before it returns.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{run_writers, stream_key, Appender, Burst, Contention, Res};
use crate::raw::{index_key, Head};

/// A fresh fjall database (one journal, four keyspaces), deleted on drop.
pub struct FjallStore {
    db: Database,
    log: Keyspace,
    index: Keyspace,
    heads: Keyspace,
    ids: Keyspace,
    record: Vec<u8>,
    /// The next sequence. Held while a commit is built and persisted, so that sequences commit
    /// in order and a stream's head is read after every earlier commit, as LMDB's writer mutex
    /// does for raw heed.
    next_seq: Mutex<u64>,
    _dir: TempDir,
}

impl FjallStore {
    /// Opens a new database with fjall's defaults, whose writes store values of `record_len`
    /// bytes.
    pub fn open(record_len: usize) -> Res<Self> {
        let dir = tempfile::Builder::new().prefix("fjall-bench-").tempdir()?;
        let db = Database::builder(dir.path()).open()?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(FjallStore {
            log: keyspace("log")?,
            index: keyspace("stream_index")?,
            heads: keyspace("heads")?,
            ids: keyspace("event_ids")?,
            db,
            record: (0..record_len).map(|i| (i * 7 + 3) as u8).collect(),
            next_seq: Mutex::new(1),
            _dir: dir,
        })
    }

    /// One event to each stream of `streams` in one batch, persisted with `SyncData` before it
    /// returns. A stream's head is read once per batch (a batch cannot read its own writes, so
    /// heads changed earlier in the batch are kept in `changed`) and written once at the end.
    fn commit(&self, streams: &[u64], record: &mut [u8]) -> Res<()> {
        let mut next_seq = self.next_seq.lock().map_err(|_| "fjall writer poisoned")?;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut changed: HashMap<u64, Head> = HashMap::with_capacity(streams.len());
        for &stream in streams {
            let head = match changed.entry(stream) {
                Entry::Occupied(head) => head.into_mut(),
                Entry::Vacant(slot) => {
                    let stored = self.heads.get(stream_key(stream))?;
                    slot.insert(stored.map(|h| Head::decode(&h)).unwrap_or_default())
                }
            };
            let seq = *next_seq;
            head.advance(seq);
            let seq_key = seq.to_be_bytes();
            record[16..24].copy_from_slice(&seq.to_le_bytes());
            batch.insert(&self.log, seq_key, &*record);
            batch.insert(&self.index, index_key(stream, head.version), seq_key);
            batch.insert(&self.ids, Uuid::now_v7().as_u128().to_be_bytes(), seq_key);
            *next_seq += 1;
        }
        for (stream, head) in &changed {
            batch.insert(&self.heads, stream_key(*stream), head.encode());
        }
        if let Err(e) = batch.commit() {
            *next_seq -= streams.len() as u64;
            return Err(e.into());
        }
        Ok(())
    }

    /// `writers` threads, each appending one event per durable batch for `duration`. The stream
    /// head and the next sequence are read under the commit lock, so a writer never conflicts
    /// (as with raw heed).
    pub fn concurrent(
        &self,
        writers: usize,
        contention: Contention,
        duration: Duration,
    ) -> Res<Burst> {
        run_writers(writers, contention, duration, |stream| {
            let mut record = self.record.clone();
            Ok(move || -> Res<u64> {
                self.commit(&[stream], &mut record)?;
                Ok(0)
            })
        })
    }

    /// Events in the log, counted by iterating it; the index must hold as many entries.
    pub fn events(&self) -> Res<u64> {
        let log = self.log.len()? as u64;
        let index = self.index.len()? as u64;
        if log != index {
            return Err(format!("fjall holds {log} events but {index} index entries").into());
        }
        Ok(log)
    }
}

impl Appender for FjallStore {
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        let mut record = std::mem::take(&mut self.record);
        let done = self.commit(streams, &mut record);
        self.record = record;
        done
    }
}
