//! Verification of a whole store: every record's checksums, and every index against the log.
//! One checker per part of the store, run in this order on one read snapshot:
//!
//! - [`records`]: the pass over the log, each record's checksums and header, handing every
//!   intact record to [`log_order`] (gaps, timestamps, each stream's versions and links),
//!   [`keystore`] (decryption under the stream's key), [`payloads`] (the application's
//!   decoders) and [`event_ids`] (its id indexed);
//! - [`heads`], [`stream_index`], [`event_ids`] (each entry names its record) and
//!   [`checkpoints`] against what the log says;
//! - [`keystore`]: every key entry and tombstone.
//!
//! The report, its problems and the progress type are in [`report`].

mod checkpoints;
mod event_ids;
mod heads;
mod keystore;
mod labels;
mod log_order;
mod payloads;
mod records;
mod report;
mod schemas;
mod stream_index;

pub use report::{Problem, ProblemKind, VerifyProgress, VerifyReport};

use crate::admin::Decoders;
use crate::env::Dbs;
use crate::error::Result;
use crate::store::Storage;
use keystore::KeyCheck;
use report::{reason, Tick};

/// The read snapshot every checker reads, and the index watermark in it.
struct Snapshot<'t> {
    dbs: &'t Dbs,
    txn: &'t heed::RoTxn<'static>,
    /// The stream index and heads hold the events up to this sequence (`u64::MAX` when the
    /// watermark itself is damaged, which is reported).
    watermark: u64,
}

/// Checks a whole store in one read transaction (a consistent snapshot, while writers go on):
///
/// - every record: both checksums, its header, its key, the stub of a large record; sequences
///   `1..=head` without a gap; commit timestamps that never go back;
/// - every stream as the log tells it: versions 1, 2, 3, ... in log order, each `prev_seq`
///   naming the stream's previous record;
/// - `heads` against the log up to the index watermark (version, first and last sequence of
///   every stream);
/// - `stream_index`: the versions of every stream up to the watermark, each naming a record of
///   that stream and version, and no entry past it;
/// - `event_ids`: every record's id present and naming it, no entry naming another record;
/// - checkpoints: intact and not past the log's end;
/// - `schemas`: every entry well formed, and an entry for every event type and schema version
///   in the log;
/// - stream names and the label index: every name intact, of a stream with events, with its
///   category's label; every label intact, with an id of its own; every entry of the label
///   index listing an event under its own type or its stream's category, and every event
///   listed under both;
/// - every record's encryption flag against the store's: in an encrypted store every record is
///   sealed, and decrypts and authenticates under its stream's key ([`ProblemKind::Record`]
///   otherwise, naming [`Error::Decryption`](crate::error::Error::Decryption) for a tampered one); every stream with events has a
///   key that unwraps under the master key in force, or a tombstone (its events are then counted
///   as [`VerifyReport::shredded_events`], not problems); every key entry and tombstone of the
///   keystore is well formed and every key unwraps ([`ProblemKind::Keystore`] otherwise); keys of
///   streams without events are counted ([`VerifyReport::keys_without_events`]), not problems.
///   The keystore is read in a snapshot taken right after the log's.
///
/// `progress` is called now and then. Problems are collected in the report; a record that
/// fails its checksum is reported once, not again for each index entry that leads to it.
///
/// # Errors
///
/// Only when the store cannot be read at all ([`Error::Lmdb`](crate::error::Error::Lmdb)); everything wrong with the data
/// is a [`Problem`] in the report.
pub fn verify(storage: &Storage, progress: &mut dyn FnMut(VerifyProgress)) -> Result<VerifyReport> {
    verify_with(storage, &Decoders::new(), progress)
}

/// [`verify`], and every intact, readable payload (decrypted in an encrypted store) of an event
/// type `decoders` has a decoder for is validated with it ([`PayloadDecoder::validate`]): one it
/// refuses is a [`ProblemKind::Payload`], an event the application cannot read. Payloads of
/// other types are counted by type in [`VerifyReport::not_validated`].
///
/// [`PayloadDecoder::validate`]: crate::admin::PayloadDecoder::validate
///
/// # Errors
///
/// As [`verify`].
pub fn verify_with(
    storage: &Storage,
    decoders: &Decoders,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport> {
    let dbs = &storage.log().dbs;
    let txn = storage.env.read_txn()?;
    let txn = txn.raw();
    let mut report = VerifyReport {
        encrypted: storage.log().crypto.is_some(),
        ..VerifyReport::default()
    };
    let mut keys = KeyCheck::new(storage.log().crypto.as_ref())?;
    let mut tick = Tick::new(progress);
    let watermark = match dbs.watermark(txn) {
        Ok(w) => w,
        Err(e) => {
            report.push(ProblemKind::StreamIndex, None, None, reason(&e));
            u64::MAX
        }
    };
    let snap = Snapshot {
        dbs,
        txn,
        watermark,
    };

    let mut types = schemas::LogSchemas::default();
    let log = records::check(
        &snap,
        &mut report,
        &mut keys,
        decoders,
        &mut types,
        &mut tick,
    )?;
    stream_index::watermark_within_log(&snap, &mut report);
    report.streams = log.all.len() as u64;
    let heads = heads::check(&snap, &mut report, &log, &mut tick)?;
    stream_index::check(&snap, &mut report, &log, &heads, &mut tick)?;
    event_ids::check(&snap, &mut report, &log.damaged, &mut tick)?;
    checkpoints::check(storage, txn, &mut report, &mut tick)?;
    schemas::check(&snap, &mut report, &types)?;
    labels::check(
        &snap,
        &mut report,
        &|stream| log.all.contains_key(&stream),
        &log.damaged,
        &mut tick,
    )?;
    // The records were decrypted in the pass over the log; now the keystore's own entries.
    keys.keystore(
        &mut report,
        &|stream| log.all.contains_key(&stream),
        &mut tick,
    )?;
    Ok(report)
}
