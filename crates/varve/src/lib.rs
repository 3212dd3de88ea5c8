//! `varve`: inspect, verify, back up, export and import VarveDB stores without knowing the
//! application's event types.
//!
//! The binary calls [`run`] with no decoders, so payloads show as sizes and hex. An application
//! builds its own tool that shows its payloads as JSON by registering a decoder per event type:
//!
//! ```no_run
//! use varve::Decoders;
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
//! pub struct Deposited { pub cents: u64 }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut decoders = Decoders::new();
//!     decoders.register_archived::<Deposited, _>("Deposited", |d| {
//!         Ok(format!("{{\"cents\":{}}}", d.cents))
//!     });
//!     varve::run(&decoders)
//! }
//! ```

mod cli;
mod cmd;
mod error;
mod keys;
mod output;
mod progress;
mod store;
mod target;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use varvedb::admin::{DecodeError, Decoders, PayloadDecoder};

/// Exit status when a command failed or `verify` found problems.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line that does not parse.
pub const EXIT_USAGE: u8 = 2;

/// Runs the tool with the process's arguments, writing results to standard output and errors
/// and progress to standard error.
pub fn run(decoders: &Decoders) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ExitCode::from(run_from(std::env::args_os(), decoders, &mut out))
}

/// Runs the tool with `args` (the first one is the program name), writing results to `out`.
/// Returns the exit status: 0, [`EXIT_FAILURE`] or [`EXIT_USAGE`].
pub fn run_from<I, T>(args: I, decoders: &Decoders, out: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with(args, decoders, out, &mut std::io::stderr())
}

/// [`run_from`], writing the error that ends a failed command to `err` rather than standard
/// error (progress, warnings and usage errors still go to standard error).
pub fn run_with<I, T>(args: I, decoders: &Decoders, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.json;
    let result = cmd::dispatch(cli, decoders, out).and_then(|code| {
        out.flush().map_err(error::CliError::from)?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => 0,
        Err(e) => {
            e.report(json, err);
            EXIT_FAILURE
        }
    }
}
