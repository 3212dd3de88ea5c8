//! Rewrites a store of old events with the current type: fills a store with `N` events (default
//! 100,000), half of them of an older version, migrates it, and prints the rate.
//!
//! `cargo run --release --example migrate -- 100000`

use std::time::Instant;

use varvedb::admin::Migration;
use varvedb::{ExpectedVersion, Reader, Storage, StorageConfig, Upcast, Writer};

/// Version 1, frozen.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
#[event(name = "ItemAdded", version = 1)]
pub struct ItemAddedV1 {
    pub sku: String,
    pub qty: u32,
}

/// Version 2, current.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
#[event(name = "ItemAdded", version = 2, previous = ItemAddedV1)]
pub struct ItemAdded {
    pub sku: String,
    pub qty: u64,
    pub note: Option<String>,
}

impl Upcast<ItemAddedV1> for ItemAdded {
    fn upcast(old: ItemAddedV1) -> Self {
        ItemAdded {
            sku: old.sku,
            qty: u64::from(old.qty),
            note: None,
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let source = Storage::open(StorageConfig {
        path: dir.path().join("source"),
        ..Default::default()
    })?;
    let mut old = Writer::<ItemAddedV1>::new(source.clone());
    let mut new = Writer::<ItemAdded>::new(source.clone());
    let batch = 1_000;
    for b in 0..n / batch {
        let stream = b % 100 + 1;
        if b % 2 == 0 {
            old.append_batch(
                stream,
                ExpectedVersion::Any,
                (0..batch).map(|i| ItemAddedV1 {
                    sku: format!("sku-{b}-{i}"),
                    qty: i as u32,
                }),
            )?;
        } else {
            new.append_batch(
                stream,
                ExpectedVersion::Any,
                (0..batch).map(|i| ItemAdded {
                    sku: format!("sku-{b}-{i}"),
                    qty: i,
                    note: Some("current".into()),
                }),
            )?;
        }
    }
    let target = StorageConfig {
        path: dir.path().join("target"),
        ..Default::default()
    };
    let started = Instant::now();
    let report = Migration::new(&source, target.clone())
        .upcast::<ItemAdded>()
        .run()?;
    let took = started.elapsed();
    let upcast: u64 = report.upcast.iter().map(|u| u.events).sum();
    println!(
        "migrated {} events ({upcast} upcast) in {:.2?}: {:.0} events/s",
        report.events,
        took,
        report.events as f64 / took.as_secs_f64()
    );
    let migrated = Storage::open(target)?;
    let txn = migrated.read_txn()?;
    let reader = Reader::<ItemAdded>::new(migrated.clone());
    let first = reader.get(&txn, 1)?.ok_or("the migrated store is empty")?;
    assert!(!first.is_upcast());
    Ok(())
}
