//! VarveDB against raw heed (LMDB), SQLite, fjall and PostgreSQL, in one run, one table.
//!
//! ```text
//! cargo run --release -p varvedb-bench [-- --events 500000 --reps 3 --no-sqlite]   # rows 1-8
//! cargo run --release -p varvedb-bench -- --only peers   # rows 1b, 2, 7 (64 writers) and 1d, all engines
//! cargo run --release -p varvedb-bench -- --all   # also the encryption, metrics, filtered and schema rows
//! cargo run --release -p varvedb-bench -- --only concurrent [--concurrent-secs 3]
//! cargo run --release -p varvedb-bench -- --only processor [--live-secs 10 --live-rate 1000]
//! cargo run --release -p varvedb-bench -- --only encryption [--rotate-streams 1000000]
//! cargo run --release -p varvedb-bench -- --only metrics [--metrics-events 100000]
//! cargo run --release -p varvedb-bench -- --only filtered [--filtered-events 1000000]
//! cargo run --release -p varvedb-bench -- --only schema [--schema-events 500000]
//! cargo run --release -p varvedb-bench -- --only names [--names-events 500000]
//! cargo run --release -p varvedb-bench -- --only cluster [--cluster-subjects 50000]   # needs nats-server
//! ```
//!
//! The table goes to stdout and to `target/bench-report.md`; progress goes to stderr. Numbers
//! are events/s of this run on this machine; only the ratios in one run mean anything.
//!
//! # Why the shapes are the same
//!
//! Every engine stores the same events: a [`BenchEvent`](common::BenchEvent) of about 100 bytes
//! archived, which VarveDB wraps into a record of [`record_len`](common::record_len) bytes (its
//! header, event type name and payload, padded to 16). Raw heed, SQLite, fjall and PostgreSQL
//! store opaque values of exactly that length, so each engine moves the same bytes. Streams are drawn from one
//! deterministic generator, so each engine sees the same streams in the same order, and each write
//! workload starts from a fresh store. Every write transaction is durable (fsync on commit).
//!
//! Raw heed keeps VarveDB's four LMDB databases and does their writes in the same transaction:
//! the log (big-endian u64 seq → record, `APPEND`), the (stream, version) → seq index, the
//! stream heads (stream → 28 bytes, read and rewritten per batch), and a UUIDv7 event id → seq
//! index (`NO_OVERWRITE`). It skips what VarveDB adds on top: rkyv serialization, CRC-32C
//! checksums, the idempotency lookups of event ids before writing, validation on read. Its keys
//! and sequences are `u64::to_be_bytes` arrays through heed's `Bytes` codec, as VarveDB's own
//! write path passes them, so no key encode allocates.
//!
//! # The peers
//!
//! The write rows (1, 2 and 7) also run two engines a user would weigh against VarveDB (leave
//! them out with `--no-fjall` and `--no-postgres`, SQLite with `--no-sqlite`):
//!
//! - **fjall** (an LSM tree with a journal; see [`fjall_store`]): one database with the same four
//!   maps as raw heed, each a keyspace, the same keys and values. A transaction is one atomic
//!   `WriteBatch` across the four keyspaces, persisted with `PersistMode::SyncData` (an
//!   `fdatasync` of the journal) before the commit returns; heads changed earlier in the same
//!   batch are kept in memory, since a batch cannot read its own writes. Event ids are written
//!   blind (no uniqueness lookup). Background flushes and compactions use fjall's defaults.
//! - **PostgreSQL** (see [`pg`]): the benchmark makes a throwaway cluster with `initdb` from
//!   Debian's `postgresql` package (the newest `/usr/lib/postgresql/*/bin`; without it the run
//!   fails and says `apt-get install postgresql`, unless `--no-postgres`) in a temporary
//!   directory that also holds its unix socket, starts it with `pg_ctl` on 127.0.0.1 at a free
//!   port with `fsync=on`, `synchronous_commit=on`, `full_page_writes=on`,
//!   `shared_buffers=1GB` and `max_wal_size=8GB` (no forced checkpoint in a run), and stops and
//!   deletes it when the run ends, on error as well. As root, `initdb` and `postgres` run as the
//!   `postgres` user (through `runuser`) in a directory it owns. Each store is a fresh database
//!   with one table like SQLite's (seq primary key, stream, version, UNIQUE(stream, version), a
//!   unique uuid event id, bytea payload), written over loopback TCP with prepared statements in
//!   autocommit, so each statement is one transaction whose commit waits for its WAL flush: one
//!   event is one `INSERT`; a transaction of 10 or 1,000 events is one `INSERT .. SELECT FROM
//!   unnest(..)` with every row in arrays (one statement, one round trip, one commit).
//!
//! # Rows
//!
//! 1. **Batched appends.** `append_batch` appends to one stream: 1,000 events to one random
//!    stream (out of 10,000) per transaction, and 10 events to one random stream per
//!    transaction. Raw heed and the peers run both shapes identically. "1,000 events on 1,000
//!    random streams in one transaction" is a VarveDB multi-stream `transaction()` with one part
//!    per event, against raw heed (log + index as in DESIGN.md, and all four databases) and the
//!    peers.
//! 2. **Single appends.** One event per durable transaction (`append(stream, version)`), in every
//!    engine.
//! 3. **Point reads.** Random sequences over the 1,000-event-batch store; one read transaction
//!    per 10,000 gets in every engine. VarveDB: typed `reader.get` (checksums, event type check,
//!    bytecheck validation, zero-copy view), touching `amount`. Raw heed: `log.get`, touching the
//!    value's length. SQLite: `SELECT payload .. WHERE seq = ?`.
//! 4. **Stream reads.** Random streams read whole by version: `read_stream` against a range over
//!    the index plus each entry's record, stepped to through a range of the log when it is at
//!    most 16 records on from the last, as `read_stream` does, a `log.get` otherwise (SQLite:
//!    `WHERE stream = ? ORDER BY version`). Once on
//!    the 1,000-event-batch store (long, contiguous streams) and once on the 10-event-batch store
//!    (short streams interleaved in the log).
//! 5. **Full scan, warm.** `read_log` over the whole log in one transaction, touching `amount` of
//!    every typed event, and `for_each_in_log` (which renews its transaction every 100 ms), against
//!    raw heed iterating the log's values and SQLite's `SELECT payload ORDER BY seq`.
//! 6. **Reference rows** repeat 3 and 5 with raw heed loading every byte of each value (XOR of its
//!    8-byte words) instead of only its length. Any checksum or validation must load the record, so
//!    this separates the memory traffic of reading a record from VarveDB's per-event CPU work.
//! 7. **Concurrent durable writers** (their own table): 1, 8 and 64 writers appending one event
//!    per call, each to its own stream, and 8 and 64 writers contending for one stream (each
//!    appends at the version it last saw + 1 and retries on a conflict). VarveDB: one thread per
//!    writer, each with its own `Writer` clone calling `append`, which VarveDB groups into shared
//!    transactions; with 64 writers also 64 tokio tasks calling `append_async` on a runtime with
//!    2 workers. Raw heed: one thread per writer, one event per durable write transaction (LMDB's
//!    writer mutex serializes them; the stream head is read inside the transaction, so it never
//!    conflicts). SQLite: one thread and connection per writer, one event per `BEGIN IMMEDIATE`
//!    transaction; a UNIQUE(stream, version) violation is a conflict. fjall: one thread per
//!    writer, one durable batch per event, the head and next seq read under a commit lock (so,
//!    like raw heed, it never conflicts; fjall's journal lock serializes the `fdatasync`s).
//!    PostgreSQL: one thread and connection per writer (64 connections for 64 writers), one
//!    autocommit `INSERT` per event with the seq from an identity column (PostgreSQL's own group
//!    commit shares WAL flushes); a UNIQUE(stream, version) violation is a conflict. These rows
//!    are fsync-bound, so each engine runs for a fixed wall time (`--concurrent-secs`), engine
//!    after engine, the order reversed on every other repetition (`--concurrent-reps`), on fresh
//!    stores per row; the rate is successful appends over wall time. Also shown: per-append latency (retries
//!    included), VarveDB's average commit group from `Stats`, and conflicts.
//! 8. **Processors** (VarveDB only, their own tables; see [`processor`]). Catch-up: a store of
//!    `--events` events (1,000 per `append_batch`) read by a full typed scan (`for_each_in_log`,
//!    the baseline), by a processor from checkpoint 0 to the head (default checkpoint interval,
//!    and a sparse one that leaves out the checkpoint fsyncs) and by a catch-up subscription to
//!    `CaughtUp`, each as events/s and as a ratio to the scan. Live: an open-loop durable load of
//!    `--live-rate` `append_async` calls per second (one event each) for `--live-secs`, while a
//!    processor (then, on a fresh store, a subscription) consumes the log; per event, the wall
//!    time from its envelope's commit timestamp to the handler call (or `next()` returning), next
//!    to the append's own call-to-return latency and its commit-timestamp-to-return time.
//!
//! `--only peers` runs just the comparison with the peers, every engine in one table with
//! VarveDB's ratio to each: 10 events to one stream per transaction (row 1b), 1 event per
//! transaction (row 2), 64 concurrent writers with 1 event per transaction each to its own stream
//! (row 7, VarveDB's threads only; its latencies go to a note), and 1,000 events per transaction
//! each to a random stream (row 1d, raw heed with all four databases).
//!
//! Writes run once per row, interleaved transaction by transaction across the engines (each timed
//! over its own transactions only), so that disk noise falls on all alike. A row stops starting
//! transactions after `--write-budget-secs` of wall time, so a slow disk shortens it rather than
//! the run; row names give the events actually written. After each write row every store is
//! read back (its events counted, fjall's index entries too); a count other than the events
//! written, or than the appends the writers counted, is a warning in the notes. Reads are warmed by a full scan, run
//! interleaved (VarveDB, heed, SQLite, repeated), and report the median of the repetitions; every
//! engine must read the same number of events, else a warning is added to the notes. The notes
//! also give VarveDB's count of payloads copied because they were misaligned (zero-copy evidence),
//! map use per event, the issue targets, and the process's peak memory.

mod common;
mod encryption;
mod filtered;
mod fjall_store;
mod metrics_cost;
mod names;
mod nats;
mod pg;
mod processor;
mod raw;
mod replicated;
mod report;
mod schema;
mod sqlite;
mod varve;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    append_interleaved, interleaved, payload_len, pick_streams, random_seqs, record_len, Appender,
    Burst, Contention, Plan, Rate, Res, Spread,
};
use fjall_store::FjallStore;
use pg::{Cluster, PgStore};
use raw::{Indexes, RawStore, Touch};
use report::{ratio, Concurrent, Report, Workload};
use sqlite::SqliteStore;
use varve::VarveStore;

const USAGE: &str = "usage: varvedb-bench [--events N] [--small-batch-events N] [--random-events N]
                     [--singles N] [--streams N] [--gets N] [--reps N]
                     [--write-budget-secs N] [--concurrent-secs N] [--concurrent-reps N]
                     [--live-secs N] [--live-rate N] [--rotate-streams N]
                     [--all | --only peers|concurrent|classic|processor|encryption|metrics|filtered|schema|names|cluster]
                     [--metrics-events N] [--filtered-events N] [--schema-events N]
                     [--names-events N] [--cluster-messages N] [--cluster-subjects N]
                     [--no-sqlite] [--no-fjall] [--no-postgres]";

/// Sizes of the workloads.
#[derive(Clone, Debug)]
struct Config {
    /// Events of the 1,000-per-batch rows, which also fill the stores for the reads.
    events: u64,
    /// Events of the 10-per-batch rows (one fsync per 10 events).
    small_batch_events: u64,
    /// Events of the 1,000-random-streams-per-transaction reference rows.
    random_events: u64,
    /// Events of the single-append rows (one fsync per event).
    singles: u64,
    /// Number of streams events are drawn over.
    streams: u64,
    /// Point gets per repetition (SQLite does a quarter as many).
    gets: u64,
    /// Repetitions of each read workload.
    reps: usize,
    /// Run SQLite too.
    sqlite: bool,
    /// Run fjall too (write rows).
    fjall: bool,
    /// Run PostgreSQL too (write rows), on a cluster the benchmark starts.
    postgres: bool,
    /// Run only the four peer rows, all engines in one table (`--only peers`).
    peers: bool,
    /// Wall time after which a write row stops starting transactions (all engines together).
    write_budget: Duration,
    /// Run rows 1 to 6.
    classic: bool,
    /// Run the concurrent-writers rows.
    concurrent: bool,
    /// Wall time of each engine's run in a concurrent row.
    concurrent_time: Duration,
    /// Runs of each engine per concurrent row.
    concurrent_reps: usize,
    /// Run the processor rows.
    processor: bool,
    /// Wall time of each live-delivery run of the processor rows.
    live_time: Duration,
    /// Durable appends per second during the live-delivery runs.
    live_rate: u64,
    /// Run the encrypted-versus-plain rows (`--all` or `--only encryption`).
    encryption: bool,
    /// Streams of the master-key rotation row.
    rotate_streams: u64,
    /// Run the metrics-on-versus-off rows (`--all` or `--only metrics`).
    metrics: bool,
    /// Single appends per round of the metrics rows.
    metrics_events: u64,
    /// Run the filtered-subscription rows (`--all` or `--only filtered`).
    filtered: bool,
    /// Events of each store of the filtered rows.
    filtered_events: u64,
    /// Run the schema rows: upcasting and layout checks (`--all` or `--only schema`).
    schema: bool,
    /// Run the stream names and label index rows (`--all` or `--only names`).
    names: bool,
    /// Events of the names rows.
    names_events: u64,
    /// Run the NATS JetStream cluster rows (`--only cluster`; not in `--all`, which starts no
    /// servers).
    cluster: bool,
    /// Messages of the raw publishing row.
    cluster_messages: u64,
    /// New subjects of each step of the memory-per-subject row.
    cluster_subjects: u64,
    /// Events of each store of the upcasting rows.
    schema_events: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            events: 500_000,
            small_batch_events: 50_000,
            random_events: 200_000,
            singles: 2_000,
            streams: 10_000,
            gets: 1_000_000,
            reps: 3,
            sqlite: true,
            fjall: true,
            postgres: true,
            peers: false,
            write_budget: Duration::from_secs(20),
            classic: true,
            concurrent: true,
            concurrent_time: Duration::from_secs(3),
            concurrent_reps: 2,
            processor: true,
            live_time: Duration::from_secs(10),
            live_rate: 1_000,
            encryption: false,
            rotate_streams: 1_000_000,
            metrics: false,
            metrics_events: 100_000,
            filtered: false,
            filtered_events: 1_000_000,
            schema: false,
            schema_events: 500_000,
            names: false,
            names_events: 500_000,
            cluster: false,
            cluster_messages: 20_000,
            cluster_subjects: 50_000,
        }
    }
}

impl Config {
    fn from_args() -> Res<Config> {
        let mut cfg = Config::default();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--no-sqlite" {
                cfg.sqlite = false;
                continue;
            }
            if flag == "--no-fjall" {
                cfg.fjall = false;
                continue;
            }
            if flag == "--no-postgres" {
                cfg.postgres = false;
                continue;
            }
            if flag == "--all" {
                cfg.encryption = true;
                cfg.metrics = true;
                cfg.filtered = true;
                cfg.schema = true;
                cfg.names = true;
                continue;
            }
            if flag == "--only" {
                let only = args.next();
                let only = only.as_deref();
                if !matches!(
                    only,
                    Some(
                        "peers"
                            | "concurrent"
                            | "classic"
                            | "processor"
                            | "encryption"
                            | "metrics"
                            | "filtered"
                            | "schema"
                            | "names"
                            | "cluster"
                    )
                ) {
                    return Err(format!(
                        "--only needs peers, concurrent, classic, processor, encryption, metrics, filtered, schema, names or cluster\n{USAGE}"
                    )
                    .into());
                }
                cfg.peers = only == Some("peers");
                cfg.classic = only == Some("classic");
                cfg.concurrent = only == Some("concurrent");
                cfg.processor = only == Some("processor");
                cfg.encryption = only == Some("encryption");
                cfg.metrics = only == Some("metrics");
                cfg.filtered = only == Some("filtered");
                cfg.schema = only == Some("schema");
                cfg.names = only == Some("names");
                cfg.cluster = only == Some("cluster");
                continue;
            }
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value: u64 = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?
                .replace('_', "")
                .parse()
                .map_err(|e| format!("{flag}: {e}\n{USAGE}"))?;
            let value_at_least_1 = value.max(1);
            match flag.as_str() {
                "--events" => cfg.events = value.max(1_000),
                "--small-batch-events" => cfg.small_batch_events = value.max(10),
                "--random-events" => cfg.random_events = value.max(1_000),
                "--singles" => cfg.singles = value_at_least_1,
                "--streams" => cfg.streams = value_at_least_1,
                "--gets" => cfg.gets = value_at_least_1,
                "--reps" => cfg.reps = value_at_least_1 as usize,
                "--write-budget-secs" => cfg.write_budget = Duration::from_secs(value_at_least_1),
                "--concurrent-secs" => cfg.concurrent_time = Duration::from_secs(value_at_least_1),
                "--concurrent-reps" => cfg.concurrent_reps = value_at_least_1 as usize,
                "--live-secs" => cfg.live_time = Duration::from_secs(value_at_least_1),
                "--metrics-events" => cfg.metrics_events = value.max(1_000),
                "--filtered-events" => cfg.filtered_events = value.max(1_000),
                "--schema-events" => cfg.schema_events = value.max(1_000),
                "--names-events" => cfg.names_events = value.max(10_000),
                "--cluster-messages" => cfg.cluster_messages = value.max(1_000),
                "--cluster-subjects" => cfg.cluster_subjects = value.max(1_000),
                "--live-rate" => cfg.live_rate = value.clamp(1, 1_000_000),
                "--rotate-streams" => cfg.rotate_streams = value_at_least_1,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
            }
        }
        Ok(cfg)
    }
}

/// The peers beside VarveDB and raw heed that this run includes, and the PostgreSQL cluster
/// their stores live in.
struct Peers {
    sqlite: bool,
    fjall: bool,
    /// Started once per run; every PostgreSQL store is a fresh database of it.
    postgres: Option<Cluster>,
}

impl Peers {
    /// Starts PostgreSQL when it runs and a write row needs it.
    fn start(cfg: &Config) -> Res<Peers> {
        let writes = cfg.peers || cfg.classic || cfg.concurrent;
        Ok(Peers {
            sqlite: cfg.sqlite,
            fjall: cfg.fjall,
            postgres: if cfg.postgres && writes {
                Some(Cluster::start()?)
            } else {
                None
            },
        })
    }
}

/// Fresh stores of the peers that run, in the order their rates follow VarveDB's and raw heed's:
/// SQLite, fjall, PostgreSQL.
struct PeerStores {
    sqlite: Option<SqliteStore>,
    fjall: Option<FjallStore>,
    postgres: Option<PgStore>,
}

impl PeerStores {
    fn open(peers: &Peers) -> Res<PeerStores> {
        Ok(PeerStores {
            sqlite: peers
                .sqlite
                .then(|| SqliteStore::open(record_len()))
                .transpose()?,
            fjall: peers
                .fjall
                .then(|| FjallStore::open(record_len()))
                .transpose()?,
            postgres: peers
                .postgres
                .as_ref()
                .map(|c| c.store(record_len()))
                .transpose()?,
        })
    }

    /// Adds the peers to the engines of an interleaved row.
    fn push<'a>(&'a mut self, engines: &mut Vec<&'a mut dyn Appender>) {
        if let Some(db) = self.sqlite.as_mut() {
            engines.push(db);
        }
        if let Some(db) = self.fjall.as_mut() {
            engines.push(db);
        }
        if let Some(db) = self.postgres.as_mut() {
            engines.push(db);
        }
    }

    /// Sets the peers' rates on `row` from `rates`, the rates of the engines [`push`](Self::push)
    /// added, in order.
    fn rates(&self, row: Workload, rates: &[Rate]) -> Workload {
        let mut rates = rates.iter().map(|r| r.per_sec());
        let mut next = |runs: bool| if runs { rates.next() } else { None };
        let sqlite = next(self.sqlite.is_some());
        let fjall = next(self.fjall.is_some());
        let postgres = next(self.postgres.is_some());
        row.sqlite(sqlite).fjall(fjall).postgres(postgres)
    }

    /// Reads back how many events each peer holds, with its name.
    fn stored(&mut self) -> Res<Vec<(&'static str, u64)>> {
        let mut out = Vec::new();
        if let Some(db) = &self.sqlite {
            out.push(("SQLite", db.events()?));
        }
        if let Some(db) = &self.fjall {
            out.push(("fjall", db.events()?));
        }
        if let Some(db) = self.postgres.as_mut() {
            out.push(("PostgreSQL", db.events()?));
        }
        Ok(out)
    }
}

/// Adds a warning to the notes for every engine of a write row that holds other than `expected`
/// events once the row has run.
fn check_stored(
    row: &str,
    expected: u64,
    stored: impl IntoIterator<Item = (&'static str, u64)>,
    report: &mut Report,
) {
    for (engine, events) in stored {
        if events != expected {
            report.note(format!(
                "WARNING: {engine} holds {events} events instead of {expected} after \"{row}\""
            ));
        }
    }
}

/// One store per engine, filled by the same plan.
struct Stores {
    varve: VarveStore,
    heed: RawStore,
    peers: PeerStores,
    /// What was written to each of them.
    plan: Plan,
}

impl Stores {
    /// Fresh stores; raw heed maintains all of VarveDB's databases.
    fn open(peers: &Peers) -> Res<Stores> {
        Ok(Stores {
            varve: VarveStore::open()?,
            heed: RawStore::open(record_len(), Indexes::Full)?,
            peers: PeerStores::open(peers)?,
            plan: Plan::new(0, 1, Spread::OneStream, 1, 0),
        })
    }

    /// Runs `plan` as batched appends on every store, interleaved, checks what each store holds
    /// after it, and adds the row named by `name` (given the number of events that ran).
    fn append_batches(
        &mut self,
        cfg: &Config,
        plan: &Plan,
        name: impl Fn(u64) -> String,
        report: &mut Report,
    ) -> Res<()> {
        let mut varve = self.varve.batch_appender();
        let mut engines: Vec<&mut dyn Appender> = vec![&mut varve, &mut self.heed];
        self.peers.push(&mut engines);
        let (rates, done) = append_interleaved(plan, cfg.write_budget, &mut engines)?;
        let name = name(done.events());
        let mut stored = vec![
            ("VarveDB", self.varve.head()),
            ("raw heed", self.heed.events()?),
        ];
        stored.extend(self.peers.stored()?);
        check_stored(&name, done.events(), stored, report);
        let row = Workload::new(name)
            .varvedb(rates[0].per_sec())
            .heed(rates[1].per_sec());
        report.add(self.peers.rates(row, &rates[2..]));
        self.plan = done;
        Ok(())
    }
}

const SEED_BIG_BATCHES: u64 = 0x5EED_0001;
const SEED_SMALL_BATCHES: u64 = 0x5EED_0002;
const SEED_RANDOM: u64 = 0x5EED_0003;
const SEED_SINGLES: u64 = 0x5EED_0004;
const SEED_READS: u64 = 0x5EED_0005;

/// Rows 1a and 1b; returns the filled stores for the reads.
fn batched_appends(cfg: &Config, peers: &Peers, report: &mut Report) -> Res<(Stores, Stores)> {
    eprintln!("batched appends, 1,000 per txn ...");
    let plan = Plan::new(
        cfg.events,
        1_000,
        Spread::OneStream,
        cfg.streams,
        SEED_BIG_BATCHES,
    );
    let mut big = Stores::open(peers)?;
    big.append_batches(
        cfg,
        &plan,
        |n| {
            format!(
                "Batched append, durable: 1,000 events per txn, all to 1 random stream (of {}); {} events",
                thousands(cfg.streams),
                thousands(n)
            )
        },
        report,
    )?;
    let small = small_batches(cfg, peers, report)?;
    Ok((big, small))
}

/// Row 1b: 10 events to one random stream per transaction; returns the filled stores.
fn small_batches(cfg: &Config, peers: &Peers, report: &mut Report) -> Res<Stores> {
    eprintln!("batched appends, 10 per txn ...");
    let plan = Plan::new(
        cfg.small_batch_events,
        10,
        Spread::OneStream,
        cfg.streams,
        SEED_SMALL_BATCHES,
    );
    let mut small = Stores::open(peers)?;
    small.append_batches(
        cfg,
        &plan,
        |n| {
            format!(
                "Batched append, durable: 10 events per txn, all to 1 random stream; {} events",
                thousands(n)
            )
        },
        report,
    )?;
    Ok(small)
}

/// Rows 1c and 1d: 1,000 events on 1,000 random streams per transaction. VarveDB commits each
/// as one multi-stream transaction (one part per event); raw heed as in DESIGN.md (log and
/// index only, unless `index_only` is false) and with all four databases; the peers as everywhere.
fn random_stream_batches(
    cfg: &Config,
    peers: &Peers,
    index_only: bool,
    report: &mut Report,
) -> Res<()> {
    eprintln!("batched appends, random stream per event ...");
    let plan = Plan::new(
        cfg.random_events,
        1_000,
        Spread::StreamPerEvent,
        cfg.streams,
        SEED_RANDOM,
    );
    let varve = VarveStore::open()?;
    let mut transactions = varve.transaction_appender();
    let mut log_and_index = if index_only {
        Some(RawStore::open(record_len(), Indexes::LogAndIndex)?)
    } else {
        None
    };
    let mut full = RawStore::open(record_len(), Indexes::Full)?;
    let mut others = PeerStores::open(peers)?;
    let mut engines: Vec<&mut dyn Appender> = vec![&mut transactions, &mut full];
    if let Some(heed) = log_and_index.as_mut() {
        engines.push(heed);
    }
    others.push(&mut engines);
    let (rates, done) = append_interleaved(&plan, cfg.write_budget, &mut engines)?;
    let name = |what: &str| {
        format!(
            "Batched append, durable: 1,000 events per txn, each to its own random stream (of {}), {what}; {} events",
            thousands(cfg.streams),
            thousands(done.events())
        )
    };
    let mut stored = vec![("VarveDB", varve.head()), ("raw heed", full.events()?)];
    if let Some(heed) = &log_and_index {
        stored.push(("raw heed, log + index", heed.events()?));
    }
    stored.extend(others.stored()?);
    check_stored(&name(""), done.events(), stored, report);
    let peer_rates = if index_only {
        report.add(
            Workload::new(name(
                "VarveDB `transaction()` against heed log + index only, as DESIGN.md",
            ))
            .varvedb(rates[0].per_sec())
            .heed(rates[2].per_sec()),
        );
        &rates[3..]
    } else {
        &rates[2..]
    };
    let row = Workload::new(name("against heed log + index + heads + ids"))
        .varvedb(rates[0].per_sec())
        .heed(rates[1].per_sec());
    report.add(others.rates(row, peer_rates));
    Ok(())
}

/// Row 2: one event per durable transaction, fresh stores.
fn single_appends(cfg: &Config, peers: &Peers, report: &mut Report) -> Res<()> {
    eprintln!("single appends ...");
    let plan = Plan::new(cfg.singles, 1, Spread::OneStream, cfg.streams, SEED_SINGLES);
    let varve = VarveStore::open()?;
    let mut singles = varve.single_appender();
    let mut heed = RawStore::open(record_len(), Indexes::Full)?;
    let mut others = PeerStores::open(peers)?;
    let mut engines: Vec<&mut dyn Appender> = vec![&mut singles, &mut heed];
    others.push(&mut engines);
    let (rates, done) = append_interleaved(&plan, cfg.write_budget, &mut engines)?;
    let name = format!(
        "Single append, durable: 1 event per txn (`append(stream, version)`), random streams; {} events",
        thousands(done.events())
    );
    let mut stored = vec![("VarveDB", varve.head()), ("raw heed", heed.events()?)];
    stored.extend(others.stored()?);
    check_stored(&name, done.events(), stored, report);
    let row = Workload::new(name)
        .varvedb(rates[0].per_sec())
        .heed(rates[1].per_sec());
    report.add(others.rates(row, &rates[2..]));
    Ok(())
}

/// The concurrent row sets: writers, contention, and whether VarveDB also runs as tokio tasks.
const CONCURRENT: [(usize, Contention, bool); 5] = [
    (1, Contention::OwnStream, false),
    (8, Contention::OwnStream, false),
    (64, Contention::OwnStream, true),
    (8, Contention::OneStream, false),
    (64, Contention::OneStream, true),
];

/// Appends/s of one concurrent row set, for the targets in the notes.
struct ConcurrentRates {
    writers: usize,
    contention: Contention,
    varve: f64,
    varve_tasks: Option<f64>,
    heed: f64,
    sqlite: Option<f64>,
}

/// The contenders of a concurrent row set, in their order on even repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    VarveThreads,
    VarveTasks,
    Heed,
    Sqlite,
    Fjall,
    Postgres,
}

/// How a concurrent row set shows up in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    /// In the concurrent-writers table, with latencies, batches per commit and conflicts.
    Concurrent,
    /// As a plain row of the main table (`--only peers`), the latencies in a note.
    Plain,
}

/// Row 7: every row set of [`CONCURRENT`].
fn concurrent_writers(
    cfg: &Config,
    peers: &Peers,
    report: &mut Report,
) -> Res<Vec<ConcurrentRates>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    CONCURRENT
        .iter()
        .map(|&(writers, contention, tasks)| {
            let set = RowSet {
                writers,
                contention,
                tasks,
                shown: Shown::Concurrent,
            };
            concurrent_row(cfg, peers, &runtime, set, report)
        })
        .collect()
}

/// One set of concurrent rows.
#[derive(Clone, Copy, Debug)]
struct RowSet {
    writers: usize,
    contention: Contention,
    /// Whether VarveDB also runs as tokio tasks.
    tasks: bool,
    shown: Shown,
}

/// One row set of row 7: fresh stores, each contender run `concurrent_reps` times for
/// `concurrent_time`, contender after contender; then each store's events are counted against
/// the appends its writers counted.
fn concurrent_row(
    cfg: &Config,
    peers: &Peers,
    runtime: &tokio::runtime::Runtime,
    set: RowSet,
    report: &mut Report,
) -> Res<ConcurrentRates> {
    let RowSet {
        writers,
        contention,
        tasks,
        shown,
    } = set;
    let what = match contention {
        Contention::OwnStream => "each its own stream",
        Contention::OneStream => "all on one stream",
    };
    eprintln!("concurrent durable writers: {writers}, {what} ...");
    let varve = VarveStore::open()?;
    let varve_tasks = if tasks {
        Some(VarveStore::open()?)
    } else {
        None
    };
    let heed = RawStore::open(record_len(), Indexes::Full)?;
    let mut others = PeerStores::open(peers)?;
    let mut order = vec![Contender::VarveThreads];
    if tasks {
        order.push(Contender::VarveTasks);
    }
    order.push(Contender::Heed);
    for (runs, contender) in [
        (others.sqlite.is_some(), Contender::Sqlite),
        (others.fjall.is_some(), Contender::Fjall),
        (others.postgres.is_some(), Contender::Postgres),
    ] {
        if runs {
            order.push(contender);
        }
    }
    let mut bursts: Vec<Burst> = order.iter().map(|_| Burst::default()).collect();
    let time = cfg.concurrent_time;
    const MISSING: &str = "contender without a store";
    for rep in 0..cfg.concurrent_reps {
        let mut turn: Vec<usize> = (0..order.len()).collect();
        if rep % 2 == 1 {
            turn.reverse();
        }
        for i in turn {
            let burst = match order[i] {
                Contender::VarveThreads => varve.concurrent_threads(writers, contention, time)?,
                Contender::VarveTasks => varve_tasks
                    .as_ref()
                    .ok_or(MISSING)?
                    .concurrent_tasks(runtime, writers, contention, time)?,
                Contender::Heed => heed.concurrent(writers, contention, time)?,
                Contender::Sqlite => {
                    let db = others.sqlite.as_ref().ok_or(MISSING)?;
                    db.concurrent(writers, contention, time)?
                }
                Contender::Fjall => {
                    let db = others.fjall.as_ref().ok_or(MISSING)?;
                    db.concurrent(writers, contention, time)?
                }
                Contender::Postgres => {
                    let db = others.postgres.as_ref().ok_or(MISSING)?;
                    db.concurrent(writers, contention, time)?
                }
            };
            eprintln!(
                "    {:?}: {:.0} appends/s, {} conflicts",
                order[i],
                burst.per_sec(),
                burst.conflicts
            );
            bursts[i].merge(burst);
        }
    }
    for (i, contender) in order.iter().enumerate() {
        let stored = match contender {
            Contender::VarveThreads => Some(varve.head()),
            Contender::VarveTasks => varve_tasks.as_ref().map(VarveStore::head),
            Contender::Heed => Some(heed.events()?),
            Contender::Sqlite => others
                .sqlite
                .as_ref()
                .map(SqliteStore::events)
                .transpose()?,
            Contender::Fjall => others.fjall.as_ref().map(FjallStore::events).transpose()?,
            Contender::Postgres => others.postgres.as_mut().map(PgStore::events).transpose()?,
        };
        if stored != Some(bursts[i].appends) {
            report.note(format!(
                "WARNING: {contender:?} counted {} successful appends with {writers} writers but its store holds {stored:?} events",
                bursts[i].appends
            ));
        }
    }
    let mut take = |c: Contender| {
        order
            .iter()
            .position(|&o| o == c)
            .map(|i| std::mem::take(&mut bursts[i]))
    };
    let mut threads = take(Contender::VarveThreads).unwrap_or_default();
    let mut on_tasks = take(Contender::VarveTasks);
    let mut heed_burst = take(Contender::Heed).unwrap_or_default();
    let mut peer_bursts = [
        take(Contender::Sqlite),
        take(Contender::Fjall),
        take(Contender::Postgres),
    ];
    let [sqlite_rate, fjall_rate, postgres_rate] = peer_bursts
        .each_ref()
        .map(|b| b.as_ref().map(Burst::per_sec));
    let extras = |varve: &mut Burst, heed: &mut Burst, peers: &mut [Option<Burst>; 3]| {
        let [s, f, p] = peers
            .each_mut()
            .map(|b| b.as_mut().and_then(Burst::latency));
        let [cs, cf, cp] = peers.each_ref().map(|b| b.as_ref().map(|b| b.conflicts));
        Concurrent {
            latency: [varve.latency(), heed.latency(), s, f, p],
            conflicts: [Some(varve.conflicts), Some(heed.conflicts), cs, cf, cp],
            group: varve.group_size(),
        }
    };
    let shape = match contention {
        Contention::OwnStream => "each to its own stream, 1 event per append (the peers: 1 event per txn)".to_string(),
        Contention::OneStream => "all to ONE stream: append at the version last seen + 1, retry on conflict (raw heed and fjall read the head inside their commit lock, so never conflict)".to_string(),
    };
    let plural = if writers == 1 { "" } else { "s" };
    let name = format!("{writers} writer thread{plural}, {shape}");
    let extra = extras(&mut threads, &mut heed_burst, &mut peer_bursts);
    let row = Workload::new(name.clone())
        .varvedb(threads.per_sec())
        .heed(heed_burst.per_sec())
        .sqlite(sqlite_rate)
        .fjall(fjall_rate)
        .postgres(postgres_rate);
    match shown {
        Shown::Concurrent => report.add(row.concurrent(extra)),
        Shown::Plain => {
            report.add(row);
            latency_note(&name, &extra, report);
        }
    }
    if let Some(tasks) = on_tasks.as_mut() {
        let extra = extras(tasks, &mut heed_burst, &mut peer_bursts);
        report.add(
            Workload::new(format!(
                "{writers} tokio tasks on 2 runtime workers, `append_async`, {what} (the peers: the {writers} threads above)"
            ))
            .varvedb(tasks.per_sec())
            .heed(heed_burst.per_sec())
            .sqlite(sqlite_rate)
            .fjall(fjall_rate)
            .postgres(postgres_rate)
            .concurrent(extra),
        );
    }
    Ok(ConcurrentRates {
        writers,
        contention,
        varve: threads.per_sec(),
        varve_tasks: on_tasks.as_ref().map(Burst::per_sec),
        heed: heed_burst.per_sec(),
        sqlite: sqlite_rate,
    })
}

/// The per-append latencies of a concurrent row shown in the main table, as a note.
fn latency_note(row: &str, extra: &Concurrent, report: &mut Report) {
    let engines = ["VarveDB", "raw heed", "SQLite", "fjall", "PostgreSQL"];
    let latencies: Vec<String> = engines
        .iter()
        .zip(extra.latency)
        .filter_map(|(engine, l)| l.map(|l| format!("{engine} {}", report::latency(Some(l)))))
        .collect();
    report.note(format!(
        "\"{row}\": per-append latency p50 / p99 (max), ms: {}; VarveDB batches per commit {}.",
        latencies.join(", "),
        extra
            .group
            .map_or_else(|| "–".into(), |g| format!("{g:.1}"))
    ));
}

/// Warms every store with one full scan.
fn warm(stores: &Stores) -> Res<()> {
    stores.varve.scan()?;
    stores.heed.scan(Touch::Length)?;
    if let Some(db) = &stores.peers.sqlite {
        db.scan()?;
    }
    Ok(())
}

/// A read workload's row: its name, repetitions, and the events each engine must read
/// (VarveDB, raw heed, SQLite), which checks that every engine read the same data.
struct ReadSpec {
    name: String,
    reps: usize,
    expected: [u64; 3],
    /// Whether SQLite (when enabled) takes part.
    sqlite: bool,
}

/// Runs one read workload on each engine, interleaved, and adds the row. Closures take the
/// stores so that each engine runs the same code path with its own store. A count that differs
/// from the expected one is reported in the notes, not asserted.
fn read_row(
    spec: ReadSpec,
    stores: &Stores,
    varve: impl Fn(&VarveStore) -> Res<Rate>,
    heed: impl Fn(&RawStore) -> Res<Rate>,
    sqlite: impl Fn(&SqliteStore) -> Res<Rate>,
    report: &mut Report,
) -> Res<()> {
    eprintln!("{} ...", spec.name);
    let mut v = || varve(&stores.varve);
    let mut h = || heed(&stores.heed);
    let measured = match stores.peers.sqlite.as_ref().filter(|_| spec.sqlite) {
        Some(db) => {
            let mut s = || sqlite(db);
            interleaved(spec.reps, &mut [&mut v, &mut h, &mut s])?
        }
        None => interleaved(spec.reps, &mut [&mut v, &mut h])?,
    };
    for ((m, expected), engine) in measured.iter().zip(spec.expected).zip(ENGINES) {
        if m.events != expected {
            report.note(format!(
                "WARNING: {engine} read {} events instead of {expected} in \"{}\"",
                m.events, spec.name
            ));
        }
    }
    report.add(
        Workload::new(spec.name)
            .varvedb(measured[0].median)
            .heed(measured[1].median)
            .sqlite(measured.get(2).map(|m| m.median)),
    );
    Ok(())
}

const ENGINES: [&str; 3] = ["VarveDB", "raw heed", "SQLite"];

/// Rows 3 to 5.
fn reads(cfg: &Config, big: &Stores, small: &Stores, report: &mut Report) -> Res<()> {
    eprintln!("warming up ...");
    warm(big)?;
    warm(small)?;

    let head = big.varve.head();
    let seqs = random_seqs(cfg.gets, head, SEED_READS);
    let sqlite_seqs = &seqs[..seqs.len().div_ceil(4)];
    let gets = seqs.len() as u64;
    read_row(
        ReadSpec {
            name: format!(
                "Point read by seq: random over {} events, 1 thread, txn renewed every 10k gets",
                thousands(head)
            ),
            reps: cfg.reps,
            expected: [gets, gets, sqlite_seqs.len() as u64],
            sqlite: true,
        },
        big,
        |v| v.point_reads(&seqs),
        |h| h.point_reads(&seqs, Touch::Length),
        |s| s.point_reads(sqlite_seqs),
        report,
    )?;
    read_row(
        ReadSpec {
            name: "Reference: point read as above, but raw heed loads every byte of the value (XOR of its words), as VarveDB's checksums must".into(),
            reps: cfg.reps,
            expected: [gets; 3],
            sqlite: false,
        },
        big,
        |v| v.point_reads(&seqs),
        |h| h.point_reads(&seqs, Touch::EveryByte),
        |_| Err("not run".into()),
        report,
    )?;

    for (stores, what) in [
        (big, "streams of ~1,000-event batches"),
        (small, "streams of 10-event batches, interleaved"),
    ] {
        let target = stores.plan.events().min(200_000);
        let (streams, events) = pick_streams(&stores.plan.stream_lengths(), target, SEED_READS);
        read_row(
            ReadSpec {
                name: format!(
                    "Stream read, whole streams by version: {} streams, {} events ({what})",
                    thousands(streams.len() as u64),
                    thousands(events)
                ),
                reps: cfg.reps,
                expected: [events; 3],
                sqlite: true,
            },
            stores,
            |v| v.stream_reads(&streams),
            |h| h.stream_reads(&streams),
            |s| s.stream_reads(&streams),
            report,
        )?;
    }

    let scan_reps = cfg.reps + 2;
    let all = big.plan.events();
    read_row(
        ReadSpec {
            name: format!(
                "Full scan, warm: {} events, typed `read_log` touching a field vs raw values",
                thousands(head)
            ),
            reps: scan_reps,
            expected: [all; 3],
            sqlite: true,
        },
        big,
        VarveStore::scan,
        |h| h.scan(Touch::Length),
        SqliteStore::scan,
        report,
    )?;
    read_row(
        ReadSpec {
            name: format!(
                "Full scan, warm: {} events, typed `for_each_in_log` (renews txn every 100 ms)",
                thousands(head)
            ),
            reps: scan_reps,
            expected: [all; 3],
            sqlite: true,
        },
        big,
        VarveStore::scan_for_each,
        |h| h.scan(Touch::Length),
        SqliteStore::scan,
        report,
    )?;
    read_row(
        ReadSpec {
            name: "Reference: full scan with `read_log` as above, but raw heed loads every byte of each value (XOR of its words)".into(),
            reps: scan_reps,
            expected: [all; 3],
            sqlite: false,
        },
        big,
        VarveStore::scan,
        |h| h.scan(Touch::EveryByte),
        |_| Err("not run".into()),
        report,
    )?;
    Ok(())
}

/// `--only peers`: the four write rows of the comparison with the peers, every engine in the
/// same run and in one table.
fn peer_rows(cfg: &Config, peers: &Peers, report: &mut Report) -> Res<()> {
    small_batches(cfg, peers, report)?;
    single_appends(cfg, peers, report)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let set = RowSet {
        writers: 64,
        contention: Contention::OwnStream,
        tasks: false,
        shown: Shown::Plain,
    };
    concurrent_row(cfg, peers, &runtime, set, report)?;
    random_stream_batches(cfg, peers, false, report)?;
    let mut engines = vec![
        "VarveDB through its public API".to_string(),
        "raw heed writing VarveDB's four LMDB databases".to_string(),
    ];
    if peers.sqlite {
        engines.push("SQLite in WAL mode with synchronous=FULL".into());
    }
    if peers.fjall {
        engines.push(
            "fjall with one `WriteBatch` per txn persisted with `PersistMode::SyncData`".into(),
        );
    }
    if let Some(cluster) = &peers.postgres {
        engines.push(format!(
            "PostgreSQL {} with synchronous_commit=on and fsync=on on a throwaway cluster on loopback, one autocommit statement per txn",
            cluster.version()
        ));
    }
    report.note(format!(
        "Engines: {}. Every engine stores the same {}-byte values and each commit is durable before it counts.",
        engines.join("; "),
        record_len()
    ));
    report.note(format!(
        "Rows 1, 2 and 4: one run each on fresh stores, interleaved transaction by transaction across the engines, each engine timed over its own transactions, capped at {} s of wall time. Row 3: each engine runs {} s of wall time, engine after engine, {} repetitions (order reversed on every other), appends/s = successful appends / wall time. After every row each store's events are counted against what was written.",
        cfg.write_budget.as_secs(),
        cfg.concurrent_time.as_secs(),
        cfg.concurrent_reps
    ));
    Ok(())
}

/// The notes on rows 1 to 6.
fn notes(cfg: &Config, big: &Stores, small: &Stores, report: &mut Report) {
    report.note(format!(
        "Events: {}-byte rkyv payload, {}-byte VarveDB record; raw heed, SQLite, fjall and PostgreSQL store values of the record's length. {} streams. Every write txn is durable (fsync on commit); SQLite: WAL, synchronous=FULL, default cache, no index on id.",
        payload_len(),
        record_len(),
        thousands(cfg.streams)
    ));
    report.note(format!(
        "Writes: one run per row on fresh stores, interleaved per transaction, each row capped at {} s of wall time. Reads: median of {} interleaved repetitions ({} for scans) after a warm-up scan. SQLite point reads do a quarter of the gets.",
        cfg.write_budget.as_secs(),
        cfg.reps,
        cfg.reps + 2
    ));
    let typed = big.varve.typed_reads() + small.varve.typed_reads();
    let copies = big.varve.unaligned_copies() + small.varve.unaligned_copies();
    report.note(format!(
        "Zero-copy: {} payloads copied for misalignment out of {} typed reads (`Stats::unaligned_copies`). A misaligned read cannot be provoked through the public API.",
        thousands(copies),
        thousands(typed)
    ));
    let per_event = |bytes: u64| bytes / big.plan.events().max(1);
    report.note(format!(
        "Map in use after the 1,000-per-batch fill: VarveDB {} bytes/event, raw heed {} bytes/event.",
        per_event(big.varve.used_bytes()),
        per_event(big.heed.used_bytes())
    ));
    let target = |row_prefix: &str, goal: f64| {
        let measured = report.rows_starting(row_prefix).and_then(|r| r.vs_heed());
        let verdict = match measured {
            Some(m) if m >= goal => "met",
            Some(_) => "NOT met",
            None => "not measured",
        };
        format!("{} ({verdict})", ratio(measured))
    };
    let scan = target("Full scan, warm", 0.4);
    let gets = target("Point read", 0.8);
    report.note(format!(
        "Issue targets: full typed scan ≥ 0.4× raw heed scan: measured {scan}; point reads ≥ 0.8× raw heed gets: measured {gets}."
    ));
}

/// The notes on row 7, with the issue's group-commit targets.
fn concurrent_notes(cfg: &Config, rates: &[ConcurrentRates], report: &mut Report) {
    report.note(format!(
        "Concurrent writers: each engine runs {} s of wall time per repetition, one engine after another (VarveDB threads, VarveDB tasks, raw heed, SQLite, fjall, PostgreSQL; reversed on every other repetition), {} repetitions, fresh stores per row. Appends/s = successful appends / wall time, in-flight appends at the deadline included. Latency: from the first attempt of an append to its success, retries included, over all repetitions.",
        cfg.concurrent_time.as_secs(),
        cfg.concurrent_reps
    ));
    report.note("Concurrent writers: VarveDB batches per commit = `committed_batches / commits` from `Storage::stats` (conflicting requests are not counted; on one stream at most one request per version can win a group, so that row stays near 1). Raw heed: one durable write txn per event, threads serialized by LMDB's writer mutex, the stream head and the next seq read inside the txn, so it never conflicts (its one-stream row is a serialized read-modify-write, not optimistic concurrency). SQLite: a connection per thread, WAL, synchronous=FULL, busy_timeout 60 s, `BEGIN IMMEDIATE`, one event per txn; conflicts are UNIQUE(stream, version) violations, after which the writer rolls back and re-reads the stream's version outside the txn. fjall: one durable `WriteBatch` per event, the stream head and the next seq read under a commit lock, so it never conflicts. PostgreSQL: a connection per thread, one autocommit `INSERT` per event with the seq from an identity column; conflicts are UNIQUE(stream, version) violations, after which the writer re-reads the stream's version.");
    let find = |writers: usize| {
        rates
            .iter()
            .find(|r| r.writers == writers && r.contention == Contention::OwnStream)
    };
    let (Some(one), Some(many)) = (find(1), find(64)) else {
        return;
    };
    let check = |varve: f64, base: Option<f64>, goal: f64| match base {
        Some(b) if b > 0.0 => {
            let x = varve / b;
            let verdict = if x >= goal { "met" } else { "NOT met" };
            format!("{x:.1}× ({verdict})")
        }
        _ => "not measured".into(),
    };
    let mut line = |who: &str, varve: f64| {
        report.note(format!(
            "Issue targets, 64 concurrent durable single-event writers ({who}, {} appends/s, each its own stream): ≥ 20× raw heed's one-event-per-txn rate: {} of raw heed with 1 thread ({} txn/s), {} of raw heed with 64 threads ({} txn/s); ≥ 5× SQLite's one-event-per-txn rate: {} of SQLite with 1 thread ({} txn/s), {} of SQLite with 64 threads ({} txn/s). Baselines from the own-stream rows of this run.",
            report::rate(Some(varve)),
            check(varve, Some(one.heed), 20.0),
            report::rate(Some(one.heed)),
            check(varve, Some(many.heed), 20.0),
            report::rate(Some(many.heed)),
            check(varve, one.sqlite, 5.0),
            report::rate(one.sqlite),
            check(varve, many.sqlite, 5.0),
            report::rate(many.sqlite),
        ));
    };
    line("VarveDB, 64 threads with `append`", many.varve);
    if let Some(tasks) = many.varve_tasks {
        line("VarveDB, 64 tokio tasks with `append_async`", tasks);
    }
}

/// The last note: peak memory and wall time.
fn final_note(report: &mut Report, started: Instant) {
    report.note(format!(
        "Peak memory (VmHWM, includes resident pages of the memory-mapped stores): {}; wall time {:.0} s.",
        peak_memory(),
        started.elapsed().as_secs_f64()
    ));
}

/// `VmHWM` from `/proc/self/status`.
fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `target/bench-report.md` next to the binary's `target/<profile>/` directory.
fn report_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench-report.md")
}

fn run() -> Res<()> {
    let cfg = Config::from_args()?;
    let started = Instant::now();
    let mut report = Report::default();
    let peers = Peers::start(&cfg)?;
    if cfg.peers {
        peer_rows(&cfg, &peers, &mut report)?;
    }
    let classic = if cfg.classic {
        let (big, small) = batched_appends(&cfg, &peers, &mut report)?;
        random_stream_batches(&cfg, &peers, true, &mut report)?;
        single_appends(&cfg, &peers, &mut report)?;
        Some((big, small))
    } else {
        None
    };
    let concurrent = if cfg.concurrent {
        concurrent_writers(&cfg, &peers, &mut report)?
    } else {
        Vec::new()
    };
    if let Some((big, small)) = &classic {
        reads(&cfg, big, small, &mut report)?;
        notes(&cfg, big, small, &mut report);
    }
    if cfg.concurrent {
        concurrent_notes(&cfg, &concurrent, &mut report);
    }
    if cfg.processor {
        processor::rows(
            &processor::Settings {
                events: cfg.events,
                streams: cfg.streams,
                reps: cfg.reps,
                write_budget: cfg.write_budget,
                live_time: cfg.live_time,
                live_rate: cfg.live_rate,
            },
            &mut report,
        )?;
    }
    let encrypted = if cfg.encryption {
        encryption::run(&encryption::Settings {
            events: cfg.events.min(200_000),
            gets: cfg.gets.min(300_000),
            reps: cfg.reps,
            rotate_streams: cfg.rotate_streams,
        })?
    } else {
        String::new()
    };
    let metrics_cost = if cfg.metrics {
        metrics_cost::run(&metrics_cost::Settings {
            events: cfg.metrics_events,
            durable: cfg.singles,
            reps: cfg.reps * 7,
        })?
    } else {
        String::new()
    };
    let filtered = if cfg.filtered {
        filtered::run(&filtered::Settings {
            events: cfg.filtered_events,
            streams: cfg.streams,
            reps: cfg.reps,
        })?
    } else {
        String::new()
    };
    let schema = if cfg.schema {
        schema::run(&schema::Settings {
            events: cfg.schema_events,
            types: 1_000,
            reps: cfg.reps,
        })?
    } else {
        String::new()
    };
    let names = if cfg.names {
        names::run(&names::Settings {
            events: cfg.names_events,
            reps: cfg.reps,
        })?
    } else {
        String::new()
    };
    let cluster = if cfg.cluster {
        nats::run(&nats::Settings {
            messages: cfg.cluster_messages,
            subjects: cfg.cluster_subjects,
            record_len: record_len(),
            replicated: replicated::Settings {
                events: cfg.cluster_messages,
                concurrent_secs: 5,
                latency_appends: 1_000,
            },
        })?
    } else {
        String::new()
    };
    final_note(&mut report, started);

    let mut table = report.render();
    table.push_str(&encrypted);
    table.push_str(&metrics_cost);
    table.push_str(&filtered);
    table.push_str(&schema);
    table.push_str(&names);
    table.push_str(&cluster);
    println!("{table}");
    let path = report_path();
    std::fs::write(&path, &table)?;
    eprintln!("written to {}", path.display());
    Ok(())
}

fn main() {
    if let Some(child) = replicated::child_main() {
        if let Err(e) = child {
            eprintln!("varvedb-bench node child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("varvedb-bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
