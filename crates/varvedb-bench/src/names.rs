//! Stream names, categories and the label index (VarveDB only, ratios within this run):
//!
//! - **Appends**: durable transactions of 1,000 events, each to its own random stream of
//!   10,000, by id, by a name formatted for each append, and by a `StreamName` kept per stream
//!   (appends by name record each stream's name with its first event; the flushes that list the
//!   events in the label index, under their type and, for named streams, their category, run
//!   inside the timed span), alternated `reps` times.
//! - **Reads**: one store of `events` events appended ten at a time to one stream, as commands
//!   do, over 10,000 named streams of ten categories and one stream, `long-1`, that gets a
//!   category's share; every tenth event of a second type: a category read, a type read and
//!   `long-1`'s read, each of about a tenth of the log, with the label index flushed, and the same
//!   three before the flush (the label index then lists nothing, and the category and type
//!   reads read the log).
//! - **Processors**: catching up on the same store from the start, one processor with a filter
//!   of one category of the ten, against one without a filter whose handler passes over the
//!   events of other categories (by a field of the payload, the cheapest filter a handler has).
//! - **What LMDB allows**: on a copy of the same store's file, raw heed reads the category's
//!   records as the label walk does (a lookup from the root for each run of them, the next
//!   records stepped to) and, against it, scans the whole log: the most a read of one category
//!   can gain over a scan on LMDB, with each record stored once, in log order.

use std::hint::black_box;
use std::time::Instant;

use tempfile::TempDir;
use varvedb::{
    Direction, Durability, EventHandler, ExpectedVersion, Filter, NewEvent, Processor, Reader,
    Storage, StorageConfig, StreamName, Writer,
};

use crate::common::{median, Res};

/// Sizes of the names rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events of the read store (and of each append run).
    pub events: u64,
    /// Runs of each row (medians reported).
    pub reps: usize,
}

const STREAMS: u64 = 10_000;
const CATEGORIES: u64 = 10;

/// The event of these rows: its category is in the payload too, for the handler that filters.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct Placed {
    pub category: u8,
    pub n: u64,
    pub note: String,
}

fn placed(n: u64, stream: u64) -> Placed {
    Placed {
        category: (stream % CATEGORIES) as u8,
        n,
        note: "placed an order of three items, reference 0123456789".to_owned(),
    }
}

/// The name of stream `stream`: ten categories.
fn name(stream: u64) -> String {
    format!("cat{}-{stream}", stream % CATEGORIES)
}

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn store(prefix: &str, durability: Durability) -> Res<(TempDir, Storage)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        durability,
        ..Default::default()
    })?;
    Ok((dir, storage))
}

/// How the append rows name their streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// By id.
    Id,
    /// By a name formatted for each append, as a service does from a command's data.
    Formatted,
    /// By a `StreamName` made once per stream and kept (cloned for each append).
    Kept,
}

/// Durable transactions of 1,000 events to random streams, named as `naming` says, until
/// `events` are written, the last index flush included: events/s.
fn appends(events: u64, naming: Naming) -> Res<f64> {
    let (_dir, storage) = store("varvedb-bench-names-", Durability::Immediate)?;
    let mut writer = Writer::<Placed>::new(storage.clone());
    let kept: Vec<StreamName> = (0..STREAMS)
        .map(|stream| StreamName::new(name(stream)))
        .collect::<Result<_, _>>()?;
    let mut rng = 0x5EED;
    let mut written = 0u64;
    let started = Instant::now();
    while written < events {
        let mut tx = writer.transaction();
        for _ in 0..1_000 {
            let stream = next(&mut rng) % STREAMS;
            let event = placed(written, stream);
            match naming {
                Naming::Id => tx.append_batch(stream, ExpectedVersion::Any, [event])?,
                Naming::Formatted => {
                    tx.append_batch(name(stream), ExpectedVersion::Any, [event])?
                }
                Naming::Kept => {
                    tx.append_batch(&kept[stream as usize], ExpectedVersion::Any, [event])?
                }
            };
            written += 1;
        }
        tx.commit()?;
    }
    storage.flush_index()?;
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

/// The read store: `events` events appended as commands do, ten events at a time to one stream
/// (so that a stream's, and a category's, events come in runs, as in an application's log), in
/// transactions of 100 such batches. Each batch goes to one of the 10,000 named streams, or,
/// with a category's share (one in ten), to `long-1`, whose events are then as many and as
/// spread out as a category's. Every tenth event is a `PlacedB`.
fn read_store(events: u64) -> Res<(TempDir, Storage)> {
    let (dir, storage) = store(
        "varvedb-bench-names-read-",
        Durability::Relaxed {
            sync_interval: None,
        },
    )?;
    let mut writer = Writer::<Placed>::new(storage.clone());
    let mut rng = 0x1D;
    let mut written = 0u64;
    while written < events {
        let mut tx = writer.transaction();
        for _ in 0..100 {
            let pick = next(&mut rng);
            let (stream, name) = if pick.is_multiple_of(10) {
                (0, "long-1".to_owned())
            } else {
                let stream = (pick >> 8) % STREAMS;
                (stream, name(stream))
            };
            let batch: Vec<NewEvent<Placed>> = (written..written + 10)
                .map(|n| {
                    let event = NewEvent::new(placed(n, stream));
                    if n % 10 == 9 {
                        event.with_event_type("PlacedB")
                    } else {
                        event
                    }
                })
                .collect();
            tx.append_batch(name, ExpectedVersion::Any, batch)?;
            written += 10;
        }
        tx.commit()?;
    }
    storage.sync()?;
    Ok((dir, storage))
}

/// `Placed` under the name `PlacedB`: the type read reads it zero-copy as its own type.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
#[event(name = "PlacedB")]
pub struct PlacedB {
    pub category: u8,
    pub n: u64,
    pub note: String,
}

/// Reads what `read` yields, touching each event's `n` (`n` of the view): events/s and the
/// count.
fn timed_read<V, I>(
    read: impl FnOnce() -> varvedb::Result<I>,
    n: impl Fn(&V) -> u64,
) -> Res<(f64, u64)>
where
    I: Iterator<Item = varvedb::Result<V>>,
{
    let started = Instant::now();
    let mut count = 0u64;
    let mut sum = 0u64;
    for view in read()? {
        sum = sum.wrapping_add(n(&view?));
        count += 1;
    }
    black_box(sum);
    Ok((count as f64 / started.elapsed().as_secs_f64(), count))
}

/// Counts the events of one category, by the payload's field: today's filter in a handler.
struct InHandler {
    category: u8,
    handled: u64,
}

impl EventHandler<Placed> for InHandler {
    fn handle(&mut self, event: &ArchivedPlaced) -> varvedb::Result<()> {
        if event.category == self.category {
            self.handled += 1;
        }
        Ok(())
    }
}

/// A processor from the start to the head: seconds and events handled.
fn catch_up(storage: &Storage, filter: Option<Filter>, name: &str) -> Res<(f64, u64)> {
    storage.reset_processor(name, 0)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let reader = Reader::<Placed>::new(storage.clone());
    let handler = InHandler {
        category: 3,
        handled: 0,
    };
    let mut processor = Processor::new(reader, handler, name, storage.subscribe());
    if let Some(filter) = filter {
        processor = processor.with_filter(filter);
    }
    let started = Instant::now();
    runtime.block_on(processor.run_until_caught_up())?;
    Ok((started.elapsed().as_secs_f64(), processor.handler().handled))
}

/// Runs the rows and returns their table.
pub fn run(s: &Settings) -> Res<String> {
    let mut out = String::from(
        "\n### Stream names, categories and the label index (same run)\n\n| workload | events | events/s | ratio |\n|---|---:|---:|---:|\n",
    );
    let append_events = s.events.min(200_000);
    eprintln!("names: appends by id and by name, {append_events} events each");
    let (mut by_id, mut formatted, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.reps {
        by_id.push(appends(append_events, Naming::Id)?);
        formatted.push(appends(append_events, Naming::Formatted)?);
        kept.push(appends(append_events, Naming::Kept)?);
    }
    let id_rate = median(&mut by_id);
    let (formatted, kept) = (median(&mut formatted), median(&mut kept));
    out.push_str(&format!(
        "| durable transactions of 1,000 events to random streams of 10,000, by id | {append_events} | {id_rate:.0} | 1.00× |\n\
         | the same by name, formatted for each append (names and categories recorded, label index flushed) | {append_events} | {formatted:.0} | {:.2}× of by id |\n\
         | the same by name, a `StreamName` kept per stream | {append_events} | {kept:.0} | {:.2}× of by id |\n",
        formatted / id_rate,
        kept / id_rate
    ));

    eprintln!("names: filling a store of {} events", s.events);
    let (dir, storage) = read_store(s.events)?;
    let reader = Reader::<Placed>::new(storage.clone());
    let typed_b = Reader::<PlacedB>::new(storage.clone());
    for flushed in [false, true] {
        if flushed {
            storage.flush_index()?;
        }
        let (mut stream, mut category, mut event_type) = (Vec::new(), Vec::new(), Vec::new());
        let mut counts = (0, 0, 0);
        for _ in 0..s.reps {
            let txn = storage.read_txn()?;
            let (rate, n) = timed_read(
                || reader.read_stream(&txn, "long-1", 1, Direction::Forward),
                |v| v.n.to_native(),
            )?;
            stream.push(rate);
            counts.0 = n;
            let (rate, n) = timed_read(
                || reader.read_category(&txn, "cat3", 1, Direction::Forward),
                |v| v.n.to_native(),
            )?;
            category.push(rate);
            counts.1 = n;
            let filter = Filter::default().event_type("PlacedB");
            let (rate, n) = timed_read(
                || typed_b.read_filtered(&txn, &filter, 1, Direction::Forward),
                |v| v.n.to_native(),
            )?;
            event_type.push(rate);
            counts.2 = n;
        }
        let stream_rate = median(&mut stream);
        let when = if flushed {
            "after `flush_index`"
        } else {
            "before `flush_index`: the last events read from the log"
        };
        out.push_str(&format!(
            "| stream read of `long-1`, a tenth of the log in runs of 10 ({when}) | {} | {stream_rate:.0} | 1.00× |\n",
            counts.0
        ));
        let category = median(&mut category);
        out.push_str(&format!(
            "| category read of `cat3`, one of ten ({when}) | {} | {category:.0} | {:.2}× of the stream read |\n",
            counts.1,
            category / stream_rate
        ));
        let event_type = median(&mut event_type);
        out.push_str(&format!(
            "| type read of `PlacedB`, every tenth event ({when}) | {} | {event_type:.0} | {:.2}× of the stream read |\n",
            counts.2,
            event_type / stream_rate
        ));
    }

    eprintln!("names: processors of one category");
    let (mut filtered, mut in_handler) = (Vec::new(), Vec::new());
    let mut handled = (0, 0);
    for _ in 0..s.reps {
        let (took, n) = catch_up(
            &storage,
            Some(Filter::default().category("cat3")),
            "by-filter",
        )?;
        filtered.push(took);
        handled.0 = n;
        let (took, n) = catch_up(&storage, None, "in-handler")?;
        in_handler.push(took);
        handled.1 = n;
    }
    if handled.0 != handled.1 {
        return Err(format!(
            "the filtered processor handled {} events, the handler's filter {}",
            handled.0, handled.1
        )
        .into());
    }
    let (f, h) = (median(&mut filtered), median(&mut in_handler));
    out.push_str(&format!(
        "| processor catch-up, handler filters one category of ten | {} | {:.0} | 1.00× |\n| processor catch-up, `with_filter(category)` | {} | {:.0} | {:.1}× faster |\n",
        handled.1,
        handled.1 as f64 / h,
        handled.0,
        handled.0 as f64 / f,
        h / f
    ));

    eprintln!("names: raw heed on a copy of the store");
    let seqs: Vec<u64> = {
        let txn = storage.read_txn()?;
        let seqs = reader
            .read_category(&txn, "cat3", 1, Direction::Forward)?
            .map(|view| view.map(|v| v.seq()))
            .collect::<varvedb::Result<_>>()?;
        seqs
    };
    let (scan, runs) = raw_category_bound(&dir.path().join("store"), &seqs, s.reps)?;
    out.push_str(&format!(
        "| raw heed on a copy of the store: a scan of the whole log, per event of `cat3` | {} | {scan:.0} | 1.00× |\n| raw heed: the events of `cat3` read run by run (a lookup for each run, then the next records) | {} | {runs:.0} | {:.2}× |\n",
        seqs.len(),
        seqs.len(),
        runs / scan
    ));
    Ok(out)
}

/// On a copy of the store's data file at `dir`, raw heed reads the records of `seqs` (ascending)
/// as the label walk does, and scans the whole log touching each record: (events of `seqs` per
/// second of the scan, events per second of the walk), medians of `reps`.
fn raw_category_bound(dir: &std::path::Path, seqs: &[u64], reps: usize) -> Res<(f64, f64)> {
    use heed::byteorder::BigEndian;
    use heed::types::{Bytes, U64};
    let copy = tempfile::Builder::new()
        .prefix("varvedb-bench-names-raw-")
        .tempdir()?;
    // The store is synced and idle: its data file is a consistent LMDB environment.
    std::fs::copy(dir.join("data.mdb"), copy.path().join("data.mdb"))?;
    // SAFETY: the copy is opened once, in this process only, and not changed while open.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .max_dbs(128)
            .map_size(std::fs::metadata(copy.path().join("data.mdb"))?.len() as usize * 2)
            .open(copy.path())?
    };
    let rtxn = env.read_txn()?;
    let log = env
        .open_databases_and_commit(rtxn, |opener, txn| -> Result<_, heed::Error> {
            Ok(heed::CommitOrAbort::<_, ()>::Commit(
                opener.open_database::<U64<BigEndian>, Bytes>(txn, Some("log"))?,
            ))
        })?
        .unwrap_commit()
        .ok_or("the copy has no log database")?;
    let rtxn = env.read_txn()?;
    let (mut scans, mut walks) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let started = Instant::now();
        let mut sum = 0u64;
        for entry in log.iter(&rtxn)? {
            let (_, value) = entry?;
            sum = sum.wrapping_add(u64::from(value[0]) + u64::from(value[value.len() - 1]));
        }
        scans.push(seqs.len() as f64 / started.elapsed().as_secs_f64());
        black_box(sum);

        let started = Instant::now();
        let mut sum = 0u64;
        let mut at: Option<(u64, heed::RoRange<'_, U64<BigEndian>, Bytes>)> = None;
        for &seq in seqs {
            if !matches!(&at, Some((next, _)) if *next == seq) {
                at = Some((seq, log.range(&rtxn, &(seq..))?));
            }
            let (next, range) = at.as_mut().expect("a range of the log");
            let (found, value) = range.next().ok_or("the copy lacks a listed event")??;
            if found != seq {
                return Err(format!("the copy holds {found} where {seq} was listed").into());
            }
            *next = seq + 1;
            sum = sum.wrapping_add(u64::from(value[0]) + u64::from(value[value.len() - 1]));
        }
        walks.push(seqs.len() as f64 / started.elapsed().as_secs_f64());
        black_box(sum);
    }
    Ok((median(&mut scans), median(&mut walks)))
}
