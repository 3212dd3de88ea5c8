//! `varve tail PATH [--follow] [--category C]... [--type T]...`

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use varvedb::admin::{self, Decoders, RawEvents};
use varvedb::{Direction, ReadTxn, Storage};

use crate::cli::PayloadMode;
use crate::error::{CliError, CliResult};
use crate::output::write_event;
use crate::store::{check_labels, open_existing};

pub struct Args<'a> {
    pub path: &'a Path,
    pub follow: bool,
    pub limit: u64,
    pub categories: &'a [String],
    pub types: &'a [String],
    pub interval_ms: u64,
}

/// The events of the tail's filter from `from` on, in `direction`: the log, or the label index
/// for categories and types.
fn events<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    args: &Args<'_>,
    from: u64,
    direction: Direction,
) -> varvedb::Result<RawEvents<'t>> {
    if args.categories.is_empty() && args.types.is_empty() {
        admin::log(storage, txn, from, direction)
    } else {
        admin::filtered(storage, txn, args.categories, args.types, from, direction)
    }
}

pub fn run(
    args: &Args<'_>,
    mode: PayloadMode,
    json: bool,
    decoders: &Decoders,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let path = args.path;
    check_labels(path, args.categories)?;
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    // The last `limit` events, oldest first.
    let mut shown = {
        let txn = storage.env.read_txn().map_err(err)?;
        let last = admin::last_seq(&storage, &txn).map_err(err)?;
        let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
        let mut newest = Vec::new();
        for event in events(&storage, &txn, args, last, Direction::Backward).map_err(err)? {
            if newest.len() == limit {
                break;
            }
            newest.push(event.map_err(err)?);
        }
        for event in newest.iter().rev() {
            write_event(out, json, &storage, event, mode, decoders)?;
        }
        last
    };
    out.flush()?;
    if !args.follow {
        return Ok(0);
    }
    // Appends of other processes do not reach this process's head watch: poll the log's last
    // key with short read transactions.
    let interval = Duration::from_millis(args.interval_ms);
    loop {
        std::thread::sleep(interval);
        let txn = storage.env.read_txn().map_err(err)?;
        let last = admin::last_seq(&storage, &txn).map_err(err)?;
        if last <= shown {
            continue;
        }
        for event in events(&storage, &txn, args, shown + 1, Direction::Forward).map_err(err)? {
            let event = event.map_err(err)?;
            if event.envelope.seq > last {
                break;
            }
            write_event(out, json, &storage, &event, mode, decoders)?;
        }
        shown = last;
        drop(txn);
        out.flush()?;
    }
}
