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
    /// Every stream with its version, first and last sequence, and its name and category when
    /// it was created by name.
    Streams {
        /// The store's directory.
        path: PathBuf,
        /// List at most this many streams.
        #[arg(long)]
        limit: Option<u64>,
        /// Only the streams of this category (repeat for several).
        #[arg(long = "category")]
        categories: Vec<String>,
    },
    /// The events of one stream; or, with --category or --type and no stream, the events of
    /// those categories and types in log order.
    Read {
        /// The store's directory.
        path: PathBuf,
        /// The stream: its name (`order-123`), or an id as an integer or a UUID.
        #[arg(required_unless_present_any = ["categories", "types"])]
        stream: Option<String>,
        /// Only events of streams in this category (repeat for several); read from the label
        /// index, in log order.
        #[arg(long = "category", conflicts_with = "stream")]
        categories: Vec<String>,
        /// Only events of this event type (repeat for several).
        #[arg(long = "type")]
        types: Vec<String>,
        /// First version of the stream to show, or first sequence with --category or --type
        /// (default: the first, or the last with --backward).
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
        /// Only events of streams in this category (repeat for several).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Only events of this event type (repeat for several).
        #[arg(long = "type")]
        types: Vec<String>,
        /// How often to look for new events with --follow, in milliseconds.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        interval_ms: u64,
        #[command(flatten)]
        payload: PayloadArgs,
    },
    /// Check every record's checksums and every index against the log; exits with status 1
    /// when anything is wrong.
    ///
    /// In an encrypted store it also decrypts every record, checks that every stream with
    /// events has a key that unwraps under the master key or a tombstone (events of shredded
    /// streams are counted, not problems), and that every keystore entry is well formed.
    Verify {
        /// The store's directory.
        path: PathBuf,
        /// File holding the master key of an encrypted store; default: VARVE_MASTER_KEY (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Copy a store, compacted and consistent, while writers go on, and check the copy.
    ///
    /// The copy is verified as `varve verify` does. When the store is damaged (a record that
    /// fails its checksum, an index that disagrees with the log), the problems are listed, the
    /// copy is removed and the exit status is 1, unless --allow-damaged.
    ///
    /// An encrypted store is copied with its keystore (DEST/keys), the log first, and the copy
    /// is checked by opening it with the master key. The copy holds every stream key that was
    /// live when it was taken: a stream shredded after the backup can still be read from it with
    /// the master key. Shredding erases a stream from the store, not from its backups: to erase
    /// it everywhere, shred it in every backup too (or destroy them), or rotate the master key and
    /// destroy the old one (backups under the old key then open with nothing).
    Backup {
        /// The store's directory.
        path: PathBuf,
        /// A new directory for the copy (missing or empty).
        dest: PathBuf,
        /// File holding the master key of an encrypted store; default: VARVE_MASTER_KEY (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Keep a copy of a damaged store (its problems are still listed, and the exit status
        /// is 0): the copy holds the damage as it is.
        #[arg(long)]
        allow_damaged: bool,
    },
    /// Write every event as newline-delimited JSON (envelope and base64 payload).
    ///
    /// An encrypted store is decrypted: payloads and metadata are plaintext. An event of a
    /// shredded stream is written as a marker line, `"shredded": true` with its envelope and
    /// `payload_len` and `metadata_len`, but no payload or metadata. The export stops with exit
    /// status 1 at a record that cannot be read, unless --skip-damaged.
    Export {
        /// The store's directory.
        path: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// File holding the master key of an encrypted store; default: VARVE_MASTER_KEY (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Leave out records that cannot be read (a failed checksum, a record that does not
        /// decrypt), listing each with its sequence and reason, and exit with status 0.
        #[arg(long)]
        skip_damaged: bool,
    },
    /// Read events written by `varve export` into a new or empty store.
    ///
    /// The input must end with the export's trailer line, and match it (its count of event
    /// lines and the CRC-32C of every byte before it): an input cut short, damaged or edited is
    /// refused before anything is written, unless --allow-truncated.
    ///
    /// With a master key (--key-file or VARVE_MASTER_KEY) the target is an encrypted store and
    /// every event is sealed. Events marked shredded keep their place in an encrypted target and
    /// read as shredded there (their streams are shredded in the target); a target without
    /// encryption refuses them unless --skip-shredded.
    Import {
        /// The target store's directory (created when missing; must hold no events).
        path: PathBuf,
        /// Read from this file instead of standard input.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// File holding the master key: the target is (or is created) encrypted; default:
        /// VARVE_MASTER_KEY (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Leave out events marked shredded. Later events move down to keep the sequence free
        /// of gaps (stream versions, ids and timestamps are kept; global sequences are not, so
        /// rebuild anything kept outside the store that refers to them). In an encrypted
        /// target the left-out streams are shredded, so their ids stay burned.
        #[arg(long)]
        skip_shredded: bool,
        /// Import an input whose trailer is missing or does not match it (an export cut short,
        /// damaged or edited, or events written by hand): what is wrong is said on standard
        /// error, the complete event lines are imported, and an incomplete last line is left
        /// out.
        #[arg(long)]
        allow_truncated: bool,
    },
    /// List processors with their checkpoints and lag, or reset one.
    Processors(ProcessorsArgs),
    /// Destroy a stream's key in an encrypted store: its payloads can never be read again.
    Shred {
        /// The store's directory.
        path: PathBuf,
        /// The stream: its name (`order-123`), or an id as an integer or a UUID.
        stream: String,
        /// File holding the master key (32 raw bytes or 64 hex characters); default: the
        /// VARVE_MASTER_KEY environment variable (hex).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Connect to a NATS JetStream cluster, check its server, and create the JetStream stream
    /// of the log or check an existing one (never changing it).
    ClusterCheck(ClusterArgs),
    /// How far a replica (a store opened with `Storage::open_replicated`) is behind the
    /// cluster's log: messages and seconds. Reads the store, which its node may have open.
    ClusterLag {
        /// The replica's directory.
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
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

/// How to reach a cluster. The password is never taken on the command line, where other users
/// see it: give it in VARVE_NATS_PASSWORD or in a file.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A server URL (`tls://host:4222`); repeat for several.
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
    /// The JetStream stream of the log.
    #[arg(long, default_value = "VARVEDB")]
    pub stream: String,
    /// The subject prefix of the log's messages.
    #[arg(long, default_value = "varvedb")]
    pub subject_prefix: String,
    /// How many servers hold each message.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// How long JetStream drops retried publishes (e.g. `2m`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duplicate_window: std::time::Duration,
    /// The largest message the log's stream takes, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// The user to log in as; the password comes from --password-file or VARVE_NATS_PASSWORD.
    #[arg(long, conflicts_with_all = ["creds", "nkey"])]
    pub user: Option<String>,
    /// File holding the user's password.
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
    /// NATS credentials file (user JWT and nkey seed).
    #[arg(long, conflicts_with = "nkey")]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed.
    #[arg(long)]
    pub nkey: Option<PathBuf>,
    /// Certificate authority (PEM) that signed the servers' certificates.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
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
