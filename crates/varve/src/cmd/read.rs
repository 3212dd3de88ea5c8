//! `varve read PATH STREAM [--type T]... [--from V] [--backward] [--limit N]`, and
//! `varve read PATH --category C... [--type T]... [--from SEQ]`: one stream, or categories and
//! event types read from the label index.

use std::io::Write;
use std::path::Path;

use varvedb::admin::{self, Decoders};
use varvedb::Direction;

use crate::cli::PayloadMode;
use crate::error::{CliError, CliResult};
use crate::output::write_event;
use crate::store::{check_labels, open_existing, parse_stream};

pub struct Args<'a> {
    pub path: &'a Path,
    pub stream: Option<&'a str>,
    pub categories: &'a [String],
    pub types: &'a [String],
    pub from: Option<u64>,
    pub backward: bool,
    pub limit: Option<u64>,
    pub mode: PayloadMode,
}

pub fn run(args: &Args<'_>, json: bool, decoders: &Decoders, out: &mut dyn Write) -> CliResult<u8> {
    let path = args.path;
    let stream = args.stream.map(|s| parse_stream(path, s)).transpose()?;
    check_labels(path, args.categories)?;
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    let (direction, from) = if args.backward {
        (Direction::Backward, args.from.unwrap_or(u64::MAX))
    } else {
        (Direction::Forward, args.from.unwrap_or(1))
    };
    let txn = storage.env.read_txn().map_err(err)?;
    let limit = usize::try_from(args.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    let events = match stream {
        Some(stream) => {
            if storage.stream_version(stream).map_err(err)? == 0 {
                return Err(CliError::new(
                    path,
                    format!("stream {} has no events", args.stream.unwrap_or_default()),
                )
                .hint("list the streams with `varve streams PATH`"));
            }
            admin::stream(&storage, &txn, stream, from, direction).map_err(err)?
        }
        None => admin::filtered(&storage, &txn, args.categories, args.types, from, direction)
            .map_err(err)?,
    };
    let mut shown = 0;
    for event in events {
        if shown == limit {
            break;
        }
        let event = event.map_err(err)?;
        // Types filter a stream's events here; the label index answered them otherwise.
        if !args.types.is_empty() && !args.types.iter().any(|t| t == event.envelope.event_type) {
            continue;
        }
        write_event(out, json, &storage, &event, args.mode, decoders)?;
        shown += 1;
    }
    Ok(0)
}
