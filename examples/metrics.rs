//! Serves VarveDB's metrics over HTTP in Prometheus text format, after a small workload: durable
//! appends from two threads (with one concurrency conflict and one deduplicated retry), reads of
//! every kind, a processor that catches up, an open subscription, and an event of the previous
//! version of the event type read from a second store (an upcast).
//!
//! ```text
//! cargo run --release --features prometheus --example metrics -- \
//!     [--addr 127.0.0.1:9898] [--events 20000] [--path DIR] [--serve-secs N | --once]
//! curl http://127.0.0.1:9898/metrics
//! ```
//!
//! Without `--serve-secs` or `--once` it serves until killed; `--once` prints the metrics and
//! exits. `tests/metrics.rs` runs the same workload, scrapes it, checks it with `promtool` and
//! has a real Prometheus server scrape it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use varvedb::error::Error;
use varvedb::{Direction, ExpectedVersion, NewEvent};
use varvedb::{EventHandler, Processor, Reader, Writer};
use varvedb::{Filter, StartFrom, Subscription};
use varvedb::{Storage, StorageConfig, Upcast};

/// The example's event, version 2.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(version = 2, previous = DepositedV1)]
pub struct Deposited {
    /// The account.
    pub account: u64,
    /// Amount in cents.
    pub cents: u64,
}

/// Version 1 of the event, as the previous release wrote it: whole units.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(name = "Deposited", version = 1)]
pub struct DepositedV1 {
    /// The account.
    pub account: u64,
    /// Amount in whole units.
    pub units: u32,
}

impl Upcast<DepositedV1> for Deposited {
    fn upcast(old: DepositedV1) -> Self {
        Deposited {
            account: old.account,
            cents: u64::from(old.units) * 100,
        }
    }
}

/// Streams the workload writes to.
const STREAMS: u64 = 100;
/// Events per batch.
const BATCH: u64 = 50;

/// What the workload left behind: the store (kept open so that its gauges stay live), the
/// number of events written, and an open subscription.
pub struct Summary {
    /// The store.
    pub storage: Storage,
    /// Events appended (the deduplicated retry not counted).
    pub events: u64,
    /// Events the processor handled.
    pub processed: u64,
    /// A subscription kept open, so that the subscription gauge shows 1.
    pub subscription: Subscription<Deposited>,
}

/// Sums the deposits it sees.
struct Total(u64, u64);

impl EventHandler<Deposited> for Total {
    fn handle(&mut self, event: &ArchivedDeposited) -> varvedb::error::Result<()> {
        self.0 += event.cents.to_native();
        self.1 += 1;
        Ok(())
    }
}

/// Writes `events` events (at least 2 × 50) into a store at `path`, reads them back in every
/// way, runs a processor to the head, and opens a subscription.
///
/// # Errors
///
/// Any error of the store.
pub fn workload(path: &Path, events: u64) -> Result<Summary, Box<dyn std::error::Error>> {
    let storage = Storage::open(StorageConfig {
        path: path.into(),
        ..Default::default()
    })?;
    let events = events.max(2 * BATCH) / BATCH * BATCH;

    // Two writers, each on its own half of the streams: their appends share commit groups.
    let writers: Vec<_> = (0..2u64)
        .map(|half| {
            let mut writer = Writer::<Deposited>::new(storage.clone());
            std::thread::spawn(move || -> Result<u64, Error> {
                let mut written = 0;
                let batches = events / BATCH / 2;
                for b in 0..batches {
                    let stream = half * STREAMS / 2 + b % (STREAMS / 2) + 1;
                    let deposits = (0..BATCH).map(|i| Deposited {
                        account: stream,
                        cents: b * BATCH + i,
                    });
                    written += writer
                        .append_batch(stream, ExpectedVersion::Any, deposits)?
                        .positions
                        .len() as u64;
                }
                Ok(written)
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.join().map_err(|_| "a writer thread panicked")??;
    }

    // One concurrency conflict, and one retry that is recognised and writes nothing.
    let mut writer = Writer::<Deposited>::new(storage.clone());
    let conflict = writer.append(
        1,
        1,
        Deposited {
            account: 1,
            cents: 1,
        },
    );
    assert!(matches!(conflict, Err(Error::ConcurrencyConflict { .. })));
    let retried = writer.append_batch(
        1,
        ExpectedVersion::Any,
        [NewEvent::new(Deposited {
            account: 1,
            cents: 0,
        })
        .with_id(first_event_id(&storage)?)],
    );
    assert!(matches!(&retried, Ok(a) if a.deduplicated));

    // Reads of every kind.
    let reader = Reader::<Deposited>::new(storage.clone());
    let scanned = reader.for_each_in_log(1, Direction::Forward, |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    assert_eq!(scanned, written);
    let txn = storage.env.read_txn()?;
    let mut in_streams = 0;
    for stream in 1..=STREAMS {
        in_streams += reader
            .read_stream(&txn, stream, 1, Direction::Forward)?
            .count() as u64;
        reader.last_in_stream(&txn, stream)?;
    }
    assert_eq!(in_streams, written);
    for seq in (1..=written).step_by(7) {
        assert!(reader.get(&txn, seq)?.is_some());
        assert!(reader.envelope(&txn, seq)?.is_some());
    }
    drop(txn);

    // A processor, run until its committed checkpoint is the head.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let head = storage.head();
    let mut processor = Processor::new(reader.clone(), Total(0, 0), "totals", storage.subscribe());
    let stop = processor.stop_handle();
    let task = runtime.spawn(async move { processor.run().await.map(|()| processor) });
    while storage
        .processors()?
        .iter()
        .all(|(name, seq)| name != "totals" || *seq < head)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.stop();
    let processor = runtime.block_on(task)??;
    let processed = processor.handler().1;

    let subscription = reader.subscribe(StartFrom::End, Filter::default())?;
    upcast_from_previous_release(&previous_release(path))?;
    Ok(Summary {
        storage,
        events: written,
        processed,
        subscription,
    })
}

/// Where the workload keeps the store of the previous release: beside `path`.
pub fn previous_release(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("-previous-release");
    path.with_file_name(name)
}

/// A store the previous release wrote (one deposit of version 1), read by this one: the event
/// is upcast to version 2.
fn upcast_from_previous_release(path: &Path) -> Result<(), Error> {
    let storage = Storage::open(StorageConfig {
        path: path.into(),
        ..Default::default()
    })?;
    if storage.head() == 0 {
        Writer::<DepositedV1>::new(storage.clone()).append(
            1,
            1,
            DepositedV1 {
                account: 1,
                units: 12,
            },
        )?;
    }
    let txn = storage.read_txn()?;
    let deposit = Reader::<Deposited>::new(storage.clone())
        .get(&txn, 1)?
        .expect("the previous release's deposit");
    assert!(deposit.is_upcast());
    assert_eq!(deposit.cents, 1200);
    Ok(())
}

/// The id of the first event of the log, for the deduplicated retry.
fn first_event_id(storage: &Storage) -> Result<varvedb::Uuid, Error> {
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.env.read_txn()?;
    let first = reader
        .read_stream(&txn, 1, 1, Direction::Forward)?
        .next()
        .expect("stream 1 has events")?;
    Ok(first.envelope().event_id)
}

struct Options {
    addr: SocketAddr,
    events: u64,
    path: Option<PathBuf>,
    /// `None`: serve until killed; `Some(ZERO)`: print and exit.
    serve: Option<Duration>,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut options = Options {
        addr: "127.0.0.1:9898".parse()?,
        events: 20_000,
        path: None,
        serve: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => options.addr = value()?.parse()?,
            "--events" => options.events = value()?.parse()?,
            "--path" => options.path = Some(value()?.into()),
            "--serve-secs" => options.serve = Some(Duration::from_secs(value()?.parse()?)),
            "--once" => options.serve = Some(Duration::ZERO),
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: metrics [--addr A] [--events N] [--path DIR] [--serve-secs N | --once]"
                )
                .into())
            }
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let handle = varvedb::metrics::serve_prometheus(options.addr)?;
    let temp = tempfile::tempdir()?;
    let path = options.path.clone().unwrap_or_else(|| temp.path().into());
    let summary = workload(&path, options.events)?;
    varvedb::metrics::refresh();
    println!(
        "wrote {} events to {}, a processor handled {}; metrics at http://{}/metrics",
        summary.events,
        summary.storage.path().display(),
        summary.processed,
        options.addr
    );
    match options.serve {
        Some(d) if d.is_zero() => print!("{}", handle.render()),
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    Ok(())
}
