//! Event types that change: what reading older versions costs, and what checking the recorded
//! layouts costs.
//!
//! - Upcasting: two stores of `events` events each, one written with version 3 of an event type
//!   (read zero-copy by a reader of version 3), one with version 1 (read by the same reader
//!   through two steps, 1 → 2 → 3: each event validated as version 1, deserialized, taken
//!   through both steps and archived again as version 3). A full typed scan
//!   (`for_each_in_log`) of each, alternating, median of `reps`.
//! - Layout checks: a store with `types` event type names (one event each) is opened, then one
//!   reader per name reads its event: the first read of a name checks the store's record of its
//!   layout (read from the store by the first reader of it, from memory by the next); a reader
//!   that checked reads without checking. The open, and each first read against a read without
//!   a check, are the cost of the checks.

use std::ops::ControlFlow;
use std::time::Instant;

use tempfile::TempDir;
use varvedb::{
    Direction, Durability, ExpectedVersion, Reader, Storage, StorageConfig, Upcast, Writer,
};

use crate::common::{median, Res};

/// Sizes of the schema rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events in each upcasting store.
    pub events: u64,
    /// Event type names in the layout-check store.
    pub types: u64,
    /// Runs of each scan.
    pub reps: usize,
}

/// Version 1 of the event: about 100 bytes archived, as `BenchEvent`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
#[event(name = "Ordered", version = 1)]
pub struct OrderedV1 {
    pub id: u64,
    pub customer: String,
    pub amount: u32,
}

/// Version 2: the amount widened, a currency.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
#[event(name = "Ordered", version = 2, previous = OrderedV1)]
pub struct OrderedV2 {
    pub id: u64,
    pub customer: String,
    pub amount: u64,
    pub currency: String,
}

impl Upcast<OrderedV1> for OrderedV2 {
    fn upcast(old: OrderedV1) -> Self {
        OrderedV2 {
            id: old.id,
            customer: old.customer,
            amount: u64::from(old.amount),
            currency: "EUR".into(),
        }
    }
}

/// Version 3, the current one: amounts in cents, a channel.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
#[event(name = "Ordered", version = 3, previous = OrderedV2)]
pub struct Ordered {
    pub id: u64,
    pub customer: String,
    pub cents: u64,
    pub currency: String,
    pub channel: Option<String>,
}

impl Upcast<OrderedV2> for Ordered {
    fn upcast(old: OrderedV2) -> Self {
        Ordered {
            id: old.id,
            customer: old.customer,
            cents: old.amount * 100,
            currency: old.currency,
            channel: None,
        }
    }
}

fn customer(n: u64) -> String {
    format!("customer-{:060}", n % 10_000)
}

/// A store that the benchmark fills without syncing each append (filling is not measured).
fn store(prefix: &str) -> Res<(Storage, TempDir)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        durability: Durability::Relaxed {
            sync_interval: None,
        },
        ..Default::default()
    })?;
    Ok((storage, dir))
}

/// Scans `storage` with a reader of the current version touching two fields; returns the
/// seconds and the events read.
fn scan(storage: &Storage) -> Res<(f64, u64)> {
    let reader = Reader::<Ordered>::new(storage.clone());
    let started = Instant::now();
    let mut sum = 0u64;
    let read = reader.for_each_in_log(1, Direction::Forward, |e| {
        sum = sum.wrapping_add(e.cents.to_native() + e.id.to_native());
        ControlFlow::Continue(())
    })?;
    std::hint::black_box(sum);
    Ok((started.elapsed().as_secs_f64(), read))
}

/// Runs the rows and returns their table.
pub fn run(s: &Settings) -> Res<String> {
    eprintln!("schema: {} events of version 1 and of version 3", s.events);
    let (current, _d1) = store("varvedb-bench-schema-v3-")?;
    let (old, _d2) = store("varvedb-bench-schema-v1-")?;
    let mut w3 = Writer::<Ordered>::new(current.clone());
    let mut w1 = Writer::<OrderedV1>::new(old.clone());
    let per_batch = 1_000u64;
    let mut written = 0u64;
    while written < s.events {
        let n = per_batch.min(s.events - written);
        let stream = written / per_batch;
        w3.append_batch(
            stream,
            ExpectedVersion::Any,
            (written..written + n).map(|id| Ordered {
                id,
                customer: customer(id),
                cents: id * 100,
                currency: "EUR".into(),
                channel: None,
            }),
        )?;
        w1.append_batch(
            stream,
            ExpectedVersion::Any,
            (written..written + n).map(|id| OrderedV1 {
                id,
                customer: customer(id),
                amount: id as u32,
            }),
        )?;
        written += n;
    }
    // Warm both maps.
    scan(&current)?;
    scan(&old)?;
    let (mut zero_copy, mut upcast) = (Vec::new(), Vec::new());
    for _ in 0..s.reps {
        let (t, n) = scan(&current)?;
        assert_eq!(n, s.events, "the scan of version 3 read every event");
        zero_copy.push(n as f64 / t);
        let (t, n) = scan(&old)?;
        assert_eq!(n, s.events, "the scan of version 1 read every event");
        upcast.push(n as f64 / t);
    }
    let zero_copy = median(&mut zero_copy);
    let upcast = median(&mut upcast);

    eprintln!("schema: {} event type names", s.types);
    let (checks, checks_dir) = store("varvedb-bench-schema-types-")?;
    let names: Vec<String> = (0..s.types).map(|i| format!("Ordered.{i:04}")).collect();
    for (i, name) in names.iter().enumerate() {
        Writer::<Ordered>::new(checks.clone())
            .with_event_type(name.clone())
            .append(
                i as u64,
                1,
                Ordered {
                    id: i as u64,
                    customer: customer(i as u64),
                    cents: 0,
                    currency: "EUR".into(),
                    channel: None,
                },
            )?;
    }
    let path = checks.path().to_path_buf();
    drop(checks);
    let started = Instant::now();
    let checks = Storage::open(StorageConfig {
        path,
        ..Default::default()
    })?;
    let open_secs = started.elapsed().as_secs_f64();
    // One reader per name, each reading its one event: the first read of a name checks the
    // store's record of its layout (read from the store by the first reader, from memory by
    // later ones); a reader that checked reads without checking again.
    let readers = |checks: &Storage| -> Vec<Reader<Ordered>> {
        names
            .iter()
            .map(|n| Reader::<Ordered>::new(checks.clone()).accept_event_types([n.clone()]))
            .collect()
    };
    let read_all = |readers: &[Reader<Ordered>]| -> Res<f64> {
        let txn = checks.read_txn()?;
        let started = Instant::now();
        for (i, reader) in readers.iter().enumerate() {
            let event = reader.get(&txn, i as u64 + 1)?.ok_or("missing event")?;
            std::hint::black_box(event.cents.to_native());
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let fresh = readers(&checks);
    let from_store = read_all(&fresh)?;
    let again = readers(&checks);
    let from_memory = read_all(&again)?;
    let checked = read_all(&again)?;
    drop((fresh, again, checks, checks_dir));
    let per_type = |secs: f64| (secs - checked).max(0.0) * 1e6 / s.types as f64;

    Ok(format!(
        "\n### Event types that change (same run)\n\n\
         | workload | events/s | ÷ zero-copy scan |\n|---|---:|---:|\n\
         | full typed scan of version-3 events by a version-3 reader (zero-copy) | {zero_copy:.0} | 1.00× |\n\
         | full typed scan of version-1 events by the same reader: upcast 1 → 2 → 3 | {upcast:.0} | {:.2}× |\n\n\
         Layout checks, with {} event types recorded: opening the store took {:.2} ms (nothing is \
         checked at open: a reader checks each type and version on its first event of it). A \
         first check took {:.2} µs when it read the store's record, {:.2} µs when another reader \
         had read it before (from memory); {} reads that needed no check took {:.2} ms in all.\n",
        upcast / zero_copy,
        s.types,
        open_secs * 1e3,
        per_type(from_store),
        per_type(from_memory),
        s.types,
        checked * 1e3,
    ))
}
