//! `varve read PATH STREAM [--from V] [--backward] [--limit N]`

use std::io::Write;
use std::path::Path;

use varvedb::admin::{self, Decoders};
use varvedb::Direction;

use crate::cli::PayloadMode;
use crate::error::{CliError, CliResult};
use crate::output::write_event;
use crate::store::{open_existing, parse_stream};

pub struct Args<'a> {
    pub path: &'a Path,
    pub stream: &'a str,
    pub from: Option<u64>,
    pub backward: bool,
    pub limit: Option<u64>,
    pub mode: PayloadMode,
}

pub fn run(args: &Args<'_>, json: bool, decoders: &Decoders, out: &mut dyn Write) -> CliResult<u8> {
    let path = args.path;
    let stream = parse_stream(path, args.stream)?;
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    let (direction, from) = if args.backward {
        (Direction::Backward, args.from.unwrap_or(u64::MAX))
    } else {
        (Direction::Forward, args.from.unwrap_or(1))
    };
    let txn = storage.env.read_txn().map_err(err)?;
    if storage.stream_version(stream).map_err(err)? == 0 {
        return Err(
            CliError::new(path, format!("stream {stream} has no events"))
                .hint("list the streams with `varve streams PATH`"),
        );
    }
    let limit = usize::try_from(args.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    for event in admin::stream(&storage, &txn, stream, from, direction)
        .map_err(err)?
        .take(limit)
    {
        let event = event.map_err(err)?;
        write_event(out, json, &storage, &event, args.mode, decoders)?;
    }
    Ok(0)
}
