//! An exactly-once projection: account balances kept in the store's own LMDB environment,
//! updated in the same transaction as the projector's checkpoint, fed live while a writer
//! appends, and checked against a rebuild from the log.
//!
//! ```text
//! cargo run --release --example projection
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use varvedb::heed::{self, types::Bytes};
use varvedb::{Direction, Envelope, ExpectedVersion};
use varvedb::{Projection, Projector};
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

/// Money moved into (or out of) an account; the stream is the account.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
pub struct Moved {
    pub cents: i64,
}

/// The read model: account id (big-endian) to balance (little-endian i64).
struct Balances {
    db: heed::Database<'static, Bytes, Bytes>,
}

impl Projection<Moved> for Balances {
    fn apply(
        &mut self,
        txn: &mut heed::RwTxn<'_>,
        envelope: &Envelope<'_>,
        event: &ArchivedMoved,
    ) -> varvedb::error::Result<()> {
        let key = envelope.stream.as_u128().to_be_bytes();
        let balance = self
            .db
            .get(txn, &key)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, i64::from_le_bytes);
        self.db.put(
            txn,
            &key,
            &(balance + event.cents.to_native()).to_le_bytes(),
        )?;
        Ok(())
    }
}

fn balances(storage: &Storage, db: heed::Database<'static, Bytes, Bytes>) -> BTreeMap<u128, i64> {
    let txn = storage.env.read_txn().expect("read transaction");
    db.iter(txn.heed())
        .expect("iterate the read model")
        .map(|entry| {
            let (k, v) = entry.expect("read model entry");
            (
                u128::from_be_bytes(k.try_into().expect("16-byte key")),
                i64::from_le_bytes(v.try_into().expect("8-byte value")),
            )
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().join("store"),
        ..Default::default()
    })?;
    let db = storage.projection_database("balances")?;
    let mut projector = Projector::new(
        Reader::<Moved>::new(storage.clone()),
        Balances { db },
        "balances",
        storage.subscribe(),
    );
    let stop = projector.stop_handle();
    let running = tokio::spawn(async move { projector.run().await });

    // 20,000 transfers between 100 accounts, appended while the projection runs.
    let mut writer = Writer::<Moved>::new(storage.clone());
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (from, to, cents) = (x % 100, (x >> 8) % 100, (x >> 16) as i64 % 10_000);
        writer
            .append_batch_async(from, ExpectedVersion::Any, [Moved { cents: -cents }])
            .await?;
        writer
            .append_batch_async(to, ExpectedVersion::Any, [Moved { cents }])
            .await?;
    }
    let head = storage.head();
    while storage.processors()?.iter().all(|(_, seq)| *seq < head) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    running.await??;

    // Rebuild from the log and compare.
    let reader = Reader::<Moved>::new(storage.clone());
    let mut rebuilt = BTreeMap::new();
    let txn = storage.env.read_txn()?;
    for event in reader.read_log(&txn, 1, Direction::Forward)? {
        let event = event?;
        *rebuilt.entry(event.stream().as_u128()).or_insert(0) += event.cents.to_native();
    }
    drop(txn);
    let projected = balances(&storage, db);
    assert_eq!(projected, rebuilt, "the read model matches a rebuild");
    let total: i64 = projected.values().sum();
    println!(
        "projected {head} events into {} balances (sum {total}, as money only moves), identical to a rebuild from the log",
        projected.len()
    );
    Ok(())
}
