//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Inspect, verify, back up, export and import VarveDB stores.
#[derive(Debug, Parser)]
#[command(name = "varve", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print machine-readable JSON (one document, or one per line for listings).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Format version, counts, head, sizes and processors of a store.
    Info {
        /// The store's directory.
        path: PathBuf,
    },
    /// Every stream with its version and first and last sequence.
    Streams {
        /// The store's directory.
        path: PathBuf,
        /// List at most this many streams.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The events of one stream.
    Read {
        /// The store's directory.
        path: PathBuf,
        /// The stream: an integer or a UUID.
        stream: String,
        /// First version to show (default: the first, or the last with --backward).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// Show at most this many events.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        payload: PayloadArgs,
    },
    /// The last events of the log; with --follow, then every new event, also from other
    /// processes, until interrupted.
    Tail {
        /// The store's directory.
        path: PathBuf,
        /// Keep watching the log for new events.
        #[arg(long, short)]
        follow: bool,
        /// How many of the last events to show first.
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: u64,
        /// How often to look for new events with --follow, in milliseconds.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        interval_ms: u64,
        #[command(flatten)]
        payload: PayloadArgs,
    },
    /// Check every record's checksums and every index against the log; exits with status 1
    /// when anything is wrong.
    Verify {
        /// The store's directory.
        path: PathBuf,
    },
    /// Copy a store, compacted and consistent, while writers go on.
    Backup {
        /// The store's directory.
        path: PathBuf,
        /// A new directory for the copy (missing or empty).
        dest: PathBuf,
    },
    /// Write every event as newline-delimited JSON (envelope and base64 payload).
    Export {
        /// The store's directory.
        path: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read events written by `varve export` into a new or empty store.
    Import {
        /// The target store's directory (created when missing; must hold no events).
        path: PathBuf,
        /// Read from this file instead of standard input.
        #[arg(long, short)]
        input: Option<PathBuf>,
    },
    /// List processors with their checkpoints and lag, or reset one.
    Processors(ProcessorsArgs),
    /// Destroy a stream's key in an encrypted store: its payloads can never be read again.
    Shred {
        /// The store's directory.
        path: PathBuf,
        /// The stream: an integer or a UUID.
        stream: String,
        /// File holding the master key (32 raw bytes or 64 hex characters); default: the
        /// VARVE_MASTER_KEY environment variable (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Re-wrap every stream key of an encrypted store under a new master key.
    RotateKey {
        /// The store's directory.
        path: PathBuf,
        /// File holding the current master key; default: VARVE_MASTER_KEY (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// File holding the new master key; default: VARVE_NEW_MASTER_KEY (hex).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProcessorsArgs {
    /// The store's directory.
    pub path: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<ProcessorsAction>,
}

#[derive(Debug, Subcommand)]
pub enum ProcessorsAction {
    /// Move a processor's checkpoint, so that its next run delivers every event after SEQ
    /// again. Stop the processor first.
    Reset {
        /// The store's directory.
        path: PathBuf,
        /// The processor's name.
        name: String,
        /// The new checkpoint: the last sequence it is to count as handled (0: the start).
        #[arg(long = "to", value_name = "SEQ")]
        to: u64,
    },
}

#[derive(Debug, Args, Clone, Copy)]
pub struct PayloadArgs {
    /// How to show payloads: `auto` shows JSON when a decoder is registered for the event
    /// type and the size otherwise.
    #[arg(long, value_enum, default_value_t = PayloadMode::Auto)]
    pub payload: PayloadMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadMode {
    /// JSON when a decoder is registered, otherwise the size only.
    Auto,
    /// The size only.
    None,
    /// Every byte, in hex.
    Hex,
    /// JSON through the registered decoder (hex, with a note, when there is none).
    Json,
}
