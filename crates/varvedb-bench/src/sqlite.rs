//! The SQLite side: one table with a (stream, version) unique index, WAL, `synchronous=FULL`.
//! Payloads are blobs of a VarveDB record's length; versions are tracked in memory.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{
    run_writers, stream_key, timed, Appender, Burst, Contention, Rate, Res, RENEW_EVERY,
};

const SCHEMA: &str = "CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    stream BLOB NOT NULL,
    version INTEGER NOT NULL,
    id BLOB NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (stream, version)
)";
const INSERT: &str =
    "INSERT INTO events (seq, stream, version, id, payload) VALUES (?1, ?2, ?3, ?4, ?5)";
/// The concurrent rows let SQLite pick the sequence (rowid).
const INSERT_AUTO_SEQ: &str =
    "INSERT INTO events (stream, version, id, payload) VALUES (?1, ?2, ?3, ?4)";
const VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?1";
/// How long a concurrent writer waits for the write lock before SQLite gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
const GET: &str = "SELECT payload FROM events WHERE seq = ?1";
const STREAM: &str = "SELECT payload FROM events WHERE stream = ?1 ORDER BY version";
const SCAN: &str = "SELECT payload FROM events ORDER BY seq";

/// A fresh SQLite database in a temporary directory, deleted on drop.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    payload: Vec<u8>,
    versions: Vec<u64>,
    next_seq: u64,
    _dir: TempDir,
}

impl SqliteStore {
    /// Creates the database in WAL mode with `synchronous=FULL` (every commit fsyncs the WAL).
    pub fn open(record_len: usize) -> Res<Self> {
        let dir = tempfile::Builder::new().prefix("sqlite-bench-").tempdir()?;
        let path = dir.path().join("events.db");
        let conn = Connection::open(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode ({mode})").into());
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn,
            path,
            payload: (0..record_len).map(|i| (i * 7 + 3) as u8).collect(),
            versions: Vec::new(),
            next_seq: 1,
            _dir: dir,
        })
    }

    /// `writers` threads, each with its own connection (`synchronous=FULL`, a busy timeout),
    /// appending one event per `BEGIN IMMEDIATE` transaction for `duration`. A writer inserts at
    /// the version it last saw + 1; a UNIQUE(stream, version) violation is a conflict: it rolls
    /// back, re-reads the stream's version and retries.
    pub fn concurrent(
        &self,
        writers: usize,
        contention: Contention,
        duration: Duration,
    ) -> Res<Burst> {
        run_writers(writers, contention, duration, |stream| {
            let stream = stream_key(stream);
            let mut conn = writer_connection(&self.path)?;
            let mut known = stream_version(&conn, &stream)?;
            let payload = self.payload.clone();
            Ok(move || -> Res<u64> {
                let mut conflicts = 0;
                loop {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let id = Uuid::now_v7().as_u128().to_be_bytes();
                    let inserted = tx.prepare_cached(INSERT_AUTO_SEQ)?.execute(params![
                        &stream[..],
                        (known + 1) as i64,
                        &id[..],
                        &payload[..],
                    ]);
                    match inserted {
                        Ok(_) => {
                            tx.commit()?;
                            known += 1;
                            return Ok(conflicts);
                        }
                        Err(rusqlite::Error::SqliteFailure(f, _))
                            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                        {
                            tx.rollback()?;
                            conflicts += 1;
                            known = stream_version(&conn, &stream)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            })
        })
    }

    /// Rows in the table.
    pub fn events(&self) -> Res<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))?;
        Ok(n as u64)
    }

    /// A `SELECT` by primary key per sequence, in read transactions of [`RENEW_EVERY`] gets.
    pub fn point_reads(&self, seqs: &[u64]) -> Res<Rate> {
        timed(|| {
            let mut get = self.conn.prepare_cached(GET)?;
            let mut sum = 0usize;
            for chunk in seqs.chunks(RENEW_EVERY as usize) {
                self.conn.execute_batch("BEGIN")?;
                for &seq in chunk {
                    sum +=
                        get.query_row([seq as i64], |row| Ok(row.get_ref(0)?.as_blob()?.len()))?;
                }
                self.conn.execute_batch("COMMIT")?;
            }
            black_box(sum);
            Ok(seqs.len() as u64)
        })
    }

    /// Each stream whole, ordered by version through the unique index.
    pub fn stream_reads(&self, streams: &[u64]) -> Res<Rate> {
        timed(|| {
            let mut select = self.conn.prepare_cached(STREAM)?;
            let mut sum = 0usize;
            let mut events = 0u64;
            let mut renewed_at = 0u64;
            self.conn.execute_batch("BEGIN")?;
            for &stream in streams {
                if events - renewed_at >= RENEW_EVERY {
                    self.conn.execute_batch("COMMIT; BEGIN")?;
                    renewed_at = events;
                }
                let mut rows = select.query([&stream_key(stream)[..]])?;
                while let Some(row) = rows.next()? {
                    sum += row.get_ref(0)?.as_blob()?.len();
                    events += 1;
                }
            }
            self.conn.execute_batch("COMMIT")?;
            black_box(sum);
            Ok(events)
        })
    }

    /// The whole table in sequence order, touching each payload's length.
    pub fn scan(&self) -> Res<Rate> {
        timed(|| {
            let mut scan = self.conn.prepare_cached(SCAN)?;
            let mut rows = scan.query([])?;
            let mut sum = 0usize;
            let mut events = 0u64;
            while let Some(row) = rows.next()? {
                sum += row.get_ref(0)?.as_blob()?.len();
                events += 1;
            }
            black_box(sum);
            Ok(events)
        })
    }
}

/// Another connection to the database at `path`, set up like the first one.
fn writer_connection(path: &Path) -> Res<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous = FULL;")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The stream's current version, 0 when it has no events.
fn stream_version(conn: &Connection, stream: &[u8]) -> Res<u64> {
    let version: i64 = conn
        .prepare_cached(VERSION)?
        .query_row([stream], |row| row.get(0))?;
    Ok(version as u64)
}

impl Appender for SqliteStore {
    /// One transaction, one INSERT per event.
    fn append_txn(&mut self, streams: &[u64]) -> Res<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for &stream in streams {
                let slot = stream as usize;
                if self.versions.len() <= slot {
                    self.versions.resize(slot + 1, 0);
                }
                self.versions[slot] += 1;
                let id = Uuid::now_v7().as_u128().to_be_bytes();
                insert.execute(params![
                    self.next_seq as i64,
                    &stream_key(stream)[..],
                    self.versions[slot] as i64,
                    &id[..],
                    &self.payload[..],
                ])?;
                self.next_seq += 1;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
