//! The model harness: runs [`Op`]s against a store and against the in-memory [`Model`] and
//! compares every result exactly, errors included.
//!
//! One source for two runners: the `model` test (`tests/model/main.rs`, ops from proptest) and
//! the `model` fuzz target (`fuzz/fuzz_targets/model.rs`, ops decoded from the fuzzer's bytes),
//! which includes this directory with `#[path]`. So nothing here depends on proptest, and the
//! submodules name each other through `super::`, never `crate::`.

pub mod coverage;
mod crypto;
mod errors;
mod expect;
mod lifecycle;
pub mod model;
pub mod ops;
mod reads;
mod writes;

use std::path::Path;

use varvedb::Uuid;
use varvedb::{ReadTxn, Storage};
use varvedb::{Reader, Writer};

use model::{payload, Ev, Model, Submitted};
use ops::Op;

pub struct Harness {
    // Field order: the snapshot and the handles drop before the storage, and the storage before
    // its directory.
    snapshot: Option<(ReadTxn, usize)>,
    writer: Option<Writer<Ev>>,
    reader: Option<Reader<Ev>>,
    storage: Option<Storage>,
    model: Model,
    /// Every batch submitted, alone or as a transaction's part, for retries.
    history: Vec<Submitted>,
    /// Events made so far: the source of fresh ids and payloads.
    counter: u64,
    /// Whether the store is encrypted (the model is the same: encryption must not show, but for
    /// shredding, which only an encrypted store does).
    encrypted: bool,
    /// Runs the async writes: one current-thread runtime for the harness's life.
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

/// Runs `ops` on a new store in a directory under `parent`, then compares the whole store with
/// the model before and after a reopen.
pub fn run_case(ops: &[Op], encrypted: bool, parent: &Path) {
    let mut h = Harness::new(encrypted, parent);
    for op in ops {
        h.run(op);
    }
    h.check_all();
    h.reopen();
    h.check_all();
}

impl Harness {
    pub fn new(encrypted: bool, parent: &Path) -> Harness {
        let mut h = Harness {
            snapshot: None,
            writer: None,
            reader: None,
            storage: None,
            model: Model::default(),
            history: Vec::new(),
            counter: 0,
            encrypted,
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime"),
            dir: tempfile::Builder::new()
                .prefix("varvedb-model-")
                .tempdir_in(parent)
                .expect("tempdir"),
        };
        h.open();
        h
    }

    pub fn run(&mut self, op: &Op) {
        match op {
            Op::Append {
                stream,
                version,
                via,
            } => self.append(*stream, version, *via),
            Op::Batch { batch, via } => self.batch(batch, *via),
            Op::Retry { reuse, via } => self.retry(reuse, *via),
            Op::Transaction { parts, via } => self.transaction(parts, *via),
            Op::FlushIndex => self.flush_index(),
            Op::Shred(stream) => self.shred(*stream),
            Op::RotateKey => self.rotate_key(),
            Op::Reopen => self.reopen(),
            Op::Get(seq) => self.get(*seq),
            Op::Envelope(seq) => self.envelope(*seq),
            Op::ReadStream { stream, from, dir } => self.read_stream(*stream, *from, *dir),
            Op::ReadLog { from, dir } => self.read_log(*from, *dir),
            Op::ReadFiltered {
                category,
                event_type,
                from,
                dir,
            } => self.read_filtered(*category, *event_type, *from, *dir),
            Op::ForEachLog {
                from,
                dir,
                stop_after,
            } => self.for_each_in_log(*from, *dir, *stop_after),
            Op::ForEachStream {
                stream,
                from,
                dir,
                stop_after,
            } => self.for_each_in_stream(*stream, *from, *dir, *stop_after),
            Op::LastInStream(stream) => self.last_in_stream(*stream),
            Op::StreamVersion(stream) => self.stream_version(*stream),
            Op::Streams => self.streams(),
            Op::Snapshot => self.snapshot(),
            Op::CheckSnapshot => self.check_snapshot(),
        }
        self.check_head();
    }

    fn storage(&self) -> &Storage {
        self.storage.as_ref().expect("open store")
    }

    fn reader(&self) -> &Reader<Ev> {
        self.reader.as_ref().expect("open store")
    }

    /// A new event: an id and a payload never used before.
    fn fresh(&mut self) -> (Uuid, Ev) {
        self.counter += 1;
        (
            Uuid::from_u128(0x5eed_u128 << 100 | u128::from(self.counter)),
            payload(self.counter),
        )
    }
}
