//! The raw heed side: the same LMDB databases VarveDB keeps, written and read directly, with
//! opaque values of a VarveDB record's length. No serialization, checksums or validation: this is
//! the floor VarveDB's overhead is measured against.

use std::hint::black_box;
use std::ops::Bound;
use std::time::Duration;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvFlags, EnvOpenOptions, PutFlags, RwTxn, WithoutTls};
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{
    run_writers, stream_key, timed, Appender, Burst, Contention, Rate, Res, RENEW_EVERY,
};

/// Which databases a write transaction maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexes {
    /// Log plus (stream, version) → seq index; versions tracked in memory (DESIGN.md's baseline).
    LogAndIndex,
    /// What VarveDB maintains: log, (stream, version) index, stream heads read and written in the
    /// transaction, and a UUIDv7 event id → seq index written with `NO_OVERWRITE`.
    Full,
}

/// How much of each value a read looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Only its length: the value's bytes are never loaded.
    Length,
    /// Every byte (XOR of its 8-byte words), as a checksum pass would load them.
    EveryByte,
}

impl Touch {
    fn apply(self, value: &[u8]) -> u64 {
        match self {
            Touch::Length => value.len() as u64,
            Touch::EveryByte => value.chunks_exact(8).fold(value.len() as u64, |acc, word| {
                acc ^ u64::from_le_bytes(word.try_into().unwrap_or([0; 8]))
            }),
        }
    }
}

/// A stream head as VarveDB stores it: version, first seq, last seq, 4 bytes of checksum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Head {
    /// The stream's last version, 0 for a new stream.
    pub version: u64,
    /// Sequence of the stream's first event.
    pub first_seq: u64,
    /// Sequence of the stream's last event.
    pub last_seq: u64,
}

impl Head {
    /// The head stored as `bytes` (28 of them).
    pub fn decode(bytes: &[u8]) -> Head {
        let u = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
        Head {
            version: u(0),
            first_seq: u(8),
            last_seq: u(16),
        }
    }

    /// The 28 bytes stored for this head.
    pub fn encode(&self) -> [u8; 28] {
        let mut v = [0u8; 28];
        v[0..8].copy_from_slice(&self.version.to_le_bytes());
        v[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        v[16..24].copy_from_slice(&self.last_seq.to_le_bytes());
        v
    }

    /// The head after appending the event at `seq`.
    pub fn advance(&mut self, seq: u64) {
        self.version += 1;
        if self.first_seq == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
    }
}

/// Key of the (stream, version) index in every key-value engine: stream key, then the
/// big-endian version.
pub fn index_key(stream: u64, version: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&stream_key(stream));
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

/// How many records a stream read steps over in the log rather than looking the next one up
/// (VarveDB's `LogLookup` steps as far).
const STEP_AHEAD: u64 = 16;

/// A fresh LMDB environment with VarveDB's four databases, deleted on drop. Every key and
/// sequence is raw bytes: big-endian arrays from `u64::to_be_bytes`, as VarveDB's own write path
/// passes them, so no encode allocates.
pub struct RawStore {
    env: heed::Env<WithoutTls>,
    log: Database<'static, Bytes, Bytes>,
    index: Database<'static, Bytes, Bytes>,
    heads: Database<'static, Bytes, Bytes>,
    ids: Database<'static, Bytes, Bytes>,
    indexes: Indexes,
    record: Vec<u8>,
    versions: Vec<u64>,
    next_seq: u64,
    _dir: TempDir,
}

impl RawStore {
    /// Opens a new environment, with VarveDB's flags (`NO_READ_AHEAD`, read transactions
    /// without thread-local storage, durable commits), whose writes store values of
    /// `record_len` bytes and maintain `indexes`.
    pub fn open(record_len: usize, indexes: Indexes) -> Res<Self> {
        let dir = tempfile::Builder::new().prefix("heed-bench-").tempdir()?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(32 << 30).max_dbs(8);
        // SAFETY: NO_READ_AHEAD only changes the kernel's read-ahead advice; durability and
        // locking are unchanged.
        unsafe {
            options.flags(EnvFlags::NO_READ_AHEAD);
        }
        // SAFETY: a fresh private directory, opened once in this process, never written outside
        // LMDB, and the map is never resized.
        let env = unsafe { options.open(dir.path()) }?;
        let wtxn = env.write_txn()?;
        let (log, index, heads, ids) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    opener.create_database(wtxn, Some("log"))?,
                    opener.create_database(wtxn, Some("stream_index"))?,
                    opener.create_database(wtxn, Some("heads"))?,
                    opener.create_database(wtxn, Some("event_ids"))?,
                )))
            })?
            .unwrap_commit();
        let record = (0..record_len).map(|i| (i * 7 + 3) as u8).collect();
        Ok(RawStore {
            env,
            log,
            index,
            heads,
            ids,
            indexes,
            record,
            versions: Vec::new(),
            next_seq: 1,
            _dir: dir,
        })
    }

    fn put_record(&mut self, wtxn: &mut RwTxn<'_>) -> Res<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.record[16..24].copy_from_slice(&seq.to_le_bytes());
        self.log
            .put_with_flags(wtxn, PutFlags::APPEND, &seq.to_be_bytes(), &self.record)?;
        Ok(seq)
    }

    fn write_log_and_index(&mut self, wtxn: &mut RwTxn<'_>, streams: &[u64]) -> Res<()> {
        for &stream in streams {
            let seq = self.put_record(wtxn)?;
            let slot = stream as usize;
            if self.versions.len() <= slot {
                self.versions.resize(slot + 1, 0);
            }
            let version = &mut self.versions[slot];
            *version += 1;
            self.index
                .put(wtxn, &index_key(stream, *version), &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Reads a stream's head when the stream changes from the previous event's, writes it back
    /// when it changes again or at the end: once per batch for a one-stream batch, once per event
    /// for events on random streams.
    fn write_full(&mut self, wtxn: &mut RwTxn<'_>, streams: &[u64]) -> Res<()> {
        let mut current: Option<(u64, Head)> = None;
        for &stream in streams {
            let mut head = match current {
                Some((s, head)) if s == stream => head,
                other => {
                    if let Some((s, head)) = other {
                        self.heads.put(wtxn, &stream_key(s), &head.encode())?;
                    }
                    self.heads
                        .get(wtxn, &stream_key(stream))?
                        .map(Head::decode)
                        .unwrap_or_default()
                }
            };
            let seq = self.put_record(wtxn)?;
            head.advance(seq);
            let seq = seq.to_be_bytes();
            self.index
                .put(wtxn, &index_key(stream, head.version), &seq)?;
            let id = Uuid::now_v7().as_u128().to_be_bytes();
            self.ids
                .put_with_flags(wtxn, PutFlags::NO_OVERWRITE, &id, &seq)?;
            current = Some((stream, head));
        }
        if let Some((s, head)) = current {
            self.heads.put(wtxn, &stream_key(s), &head.encode())?;
        }
        Ok(())
    }

    /// `log.get` of each sequence, touching the value as `touch` says.
    pub fn point_reads(&self, seqs: &[u64], touch: Touch) -> Res<Rate> {
        timed(|| {
            let mut sum = 0u64;
            for chunk in seqs.chunks(RENEW_EVERY as usize) {
                let txn = self.env.read_txn()?;
                for &seq in chunk {
                    let value = self
                        .log
                        .get(&txn, &seq.to_be_bytes())?
                        .ok_or("missing event")?;
                    sum = sum.wrapping_add(touch.apply(value));
                }
            }
            black_box(sum);
            Ok(seqs.len() as u64)
        })
    }

    /// Each stream whole: a range over its index entries and, per entry, its record, touching
    /// the value's length. A record at most [`STEP_AHEAD`] on from the last one is stepped to
    /// through a range of the log, as VarveDB's reads do (a stream's events come in runs); once
    /// the lookups met runs, the next far one opens that range at once; others are a
    /// `log.get`. Read transactions renewed as on the VarveDB side.
    pub fn stream_reads(&self, streams: &[u64]) -> Res<Rate> {
        timed(|| {
            let mut sum = 0usize;
            let mut events = 0u64;
            let mut txn = self.env.read_txn()?;
            let mut renewed_at = 0u64;
            for &stream in streams {
                if events - renewed_at >= RENEW_EVERY {
                    drop(txn);
                    txn = self.env.read_txn()?;
                    renewed_at = events;
                }
                let lo = index_key(stream, 1);
                let hi = index_key(stream, u64::MAX);
                let bounds = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
                let (mut last, mut in_runs) = (None::<u64>, false);
                let mut log: Option<heed::RoRange<'_, Bytes, Bytes>> = None;
                for entry in self.index.range(&txn, &bounds)? {
                    let (_, seq_bytes) = entry?;
                    let seq = u64::from_be_bytes(seq_bytes.try_into()?);
                    let near = last.is_some_and(|l| l < seq && seq - l <= STEP_AHEAD);
                    let was_in_runs = std::mem::replace(&mut in_runs, near);
                    last = Some(seq);
                    let value = if !near && !was_in_runs {
                        log = None;
                        self.log.get(&txn, seq_bytes)?.ok_or("missing event")?
                    } else {
                        if !near {
                            log = None;
                        }
                        let range = match &mut log {
                            Some(range) => range,
                            None => log.insert(
                                self.log
                                    .range(&txn, &(Bound::Included(seq_bytes), Bound::Unbounded))?,
                            ),
                        };
                        loop {
                            let (key, value) = range.next().ok_or("missing event")??;
                            if key == seq_bytes {
                                break value;
                            }
                        }
                    };
                    sum += value.len();
                    events += 1;
                }
            }
            black_box(sum);
            Ok(events)
        })
    }

    /// Iterates the whole log in one read transaction, touching each value as `touch` says.
    pub fn scan(&self, touch: Touch) -> Res<Rate> {
        timed(|| {
            let txn = self.env.read_txn()?;
            let mut sum = 0u64;
            let mut events = 0u64;
            for entry in self.log.iter(&txn)? {
                sum = sum.wrapping_add(touch.apply(entry?.1));
                events += 1;
            }
            black_box(sum);
            Ok(events)
        })
    }

    /// One event to `stream` in its own durable write transaction, safe to call from many
    /// threads (LMDB's writer mutex serializes them): the next sequence comes from the log's last
    /// key and the version from the stream's head, both read inside the transaction, so a writer
    /// never conflicts. Writes all four databases, as [`Indexes::Full`] does.
    fn append_one_locked(&self, stream: u64, record: &mut [u8]) -> Res<()> {
        let mut wtxn = self.env.write_txn()?;
        let seq = match self.log.last(&wtxn)? {
            Some((key, _)) => u64::from_be_bytes(key.try_into()?) + 1,
            None => 1,
        };
        let key = stream_key(stream);
        let mut head = self
            .heads
            .get(&wtxn, &key)?
            .map(Head::decode)
            .unwrap_or_default();
        record[16..24].copy_from_slice(&seq.to_le_bytes());
        head.advance(seq);
        let seq = seq.to_be_bytes();
        self.log
            .put_with_flags(&mut wtxn, PutFlags::APPEND, &seq, record)?;
        self.index
            .put(&mut wtxn, &index_key(stream, head.version), &seq)?;
        let id = Uuid::now_v7().as_u128().to_be_bytes();
        self.ids
            .put_with_flags(&mut wtxn, PutFlags::NO_OVERWRITE, &id, &seq)?;
        self.heads.put(&mut wtxn, &key, &head.encode())?;
        wtxn.commit()?;
        Ok(())
    }

    /// `writers` threads, each appending one event per durable transaction for `duration`
    /// (see [`append_one_locked`](Self::append_one_locked)); never conflicts.
    pub fn concurrent(
        &self,
        writers: usize,
        contention: Contention,
        duration: Duration,
    ) -> Res<Burst> {
        run_writers(writers, contention, duration, |stream| {
            let mut record = self.record.clone();
            Ok(move || -> Res<u64> {
                self.append_one_locked(stream, &mut record)?;
                Ok(0)
            })
        })
    }

    /// Events in the log.
    pub fn events(&self) -> Res<u64> {
        let txn = self.env.read_txn()?;
        Ok(self.log.len(&txn)?)
    }

    /// Bytes of the map in use (last used page, times the page size), as VarveDB reports it.
    pub fn used_bytes(&self) -> u64 {
        let page = u64::from(self.env.unnamed_database_stat().page_size);
        (self.env.info().last_page_number as u64 + 1) * page
    }
}

impl Appender for RawStore {
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        let env = self.env.clone();
        let mut wtxn = env.write_txn()?;
        match self.indexes {
            Indexes::LogAndIndex => self.write_log_and_index(&mut wtxn, streams)?,
            Indexes::Full => self.write_full(&mut wtxn, streams)?,
        }
        wtxn.commit()?;
        Ok(())
    }
}
