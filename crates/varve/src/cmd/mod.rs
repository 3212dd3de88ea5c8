//! One module per command.

mod backup;
mod cluster;
mod export;
mod format;
mod import;
mod info;
mod keys;
mod processors;
mod read;
mod streams;
mod tail;
mod verify;

use std::io::Write;

use varvedb::admin::Decoders;

use crate::cli::{Cli, Command, ProcessorsAction};
use crate::error::{CliError, CliResult};

/// Runs a parsed command line; returns the exit status.
pub fn dispatch(cli: Cli, decoders: &Decoders, out: &mut dyn Write) -> CliResult<u8> {
    let json = cli.json;
    match cli.command {
        Command::Info { path } => info::run(&path, json, out),
        Command::Streams {
            path,
            limit,
            categories,
        } => streams::run(&path, limit, &categories, json, out),
        Command::Read {
            path,
            stream,
            categories,
            types,
            from,
            backward,
            limit,
            payload,
        } => read::run(
            &read::Args {
                path: &path,
                stream: stream.as_deref(),
                categories: &categories,
                types: &types,
                from,
                backward,
                limit,
                mode: payload.payload,
            },
            json,
            decoders,
            out,
        ),
        Command::Tail {
            path,
            follow,
            limit,
            categories,
            types,
            interval_ms,
            payload,
        } => tail::run(
            &tail::Args {
                path: &path,
                follow,
                limit,
                categories: &categories,
                types: &types,
                interval_ms,
            },
            payload.payload,
            json,
            decoders,
            out,
        ),
        Command::ClusterCheck(args) => cluster::check(&args, json, out),
        Command::ClusterLag { path, cluster } => cluster::lag(&path, &cluster, json, out),
        Command::Verify { path, key_file } => {
            verify::run(&path, key_file.as_deref(), decoders, json, out)
        }
        Command::Backup {
            path,
            dest,
            key_file,
            allow_damaged,
        } => backup::run(
            &backup::Args {
                path: &path,
                dest: &dest,
                key_file: key_file.as_deref(),
                allow_damaged,
            },
            decoders,
            json,
            out,
        ),
        Command::Export {
            path,
            output,
            key_file,
            skip_damaged,
        } => export::run(
            &export::Args {
                path: &path,
                output: output.as_deref(),
                key_file: key_file.as_deref(),
                skip_damaged,
            },
            json,
            out,
        ),
        Command::Import {
            path,
            input,
            key_file,
            skip_shredded,
            allow_truncated,
        } => import::run(
            &import::Args {
                path: &path,
                input: input.as_deref(),
                key_file: key_file.as_deref(),
                skip_shredded,
                allow_truncated,
            },
            decoders,
            json,
            out,
        ),
        Command::Shred {
            path,
            stream,
            key_file,
        } => keys::shred(&path, &stream, key_file.as_deref(), json, out),
        Command::RotateKey {
            path,
            key_file,
            new_key_file,
        } => keys::rotate(&path, key_file.as_deref(), new_key_file.as_deref(), json, out),
        Command::Processors(args) => match (args.action, args.path) {
            (Some(ProcessorsAction::Reset { path, name, to }), _) => {
                processors::reset(&path, &name, to, json, out)
            }
            (None, Some(path)) => processors::list(&path, json, out),
            (None, None) => Err(CliError::usage(
                "give a store: `varve processors PATH` or `varve processors reset PATH NAME --to SEQ`",
            )),
        },
    }
}
