//! `varve tail PATH [--follow]`

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use varvedb::admin::{self, Decoders};
use varvedb::Direction;

use crate::cli::PayloadMode;
use crate::error::{CliError, CliResult};
use crate::output::write_event;
use crate::store::open_existing;

#[allow(clippy::too_many_arguments)]
pub fn run(
    path: &Path,
    follow: bool,
    limit: u64,
    interval_ms: u64,
    mode: PayloadMode,
    json: bool,
    decoders: &Decoders,
    out: &mut dyn Write,
) -> CliResult<u8> {
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    // The last `limit` events, oldest first.
    let mut shown = {
        let txn = storage.env.read_txn().map_err(err)?;
        let last = admin::last_seq(&storage, &txn).map_err(err)?;
        let first = last.saturating_sub(limit) + 1;
        for event in admin::log(&storage, &txn, first, Direction::Forward).map_err(err)? {
            let event = event.map_err(err)?;
            if event.envelope.seq > last {
                break;
            }
            write_event(out, json, &storage, &event, mode, decoders)?;
        }
        last
    };
    out.flush()?;
    if !follow {
        return Ok(0);
    }
    // Appends of other processes do not reach this process's head watch: poll the log's last
    // key with short read transactions.
    let interval = Duration::from_millis(interval_ms);
    loop {
        std::thread::sleep(interval);
        let txn = storage.env.read_txn().map_err(err)?;
        let last = admin::last_seq(&storage, &txn).map_err(err)?;
        if last <= shown {
            continue;
        }
        for event in admin::log(&storage, &txn, shown + 1, Direction::Forward).map_err(err)? {
            let event = event.map_err(err)?;
            if event.envelope.seq > last {
                break;
            }
            write_event(out, json, &storage, &event, mode, decoders)?;
            shown = event.envelope.seq;
        }
        drop(txn);
        out.flush()?;
    }
}
