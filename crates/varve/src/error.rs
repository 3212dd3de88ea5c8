//! Errors of the tool: each names the store, the record when there is one, and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use varvedb::error::Error;

#[derive(Debug)]
pub struct CliError {
    pub store: Option<PathBuf>,
    pub seq: Option<u64>,
    pub message: String,
    pub hint: Option<String>,
    broken_pipe: bool,
}

impl CliError {
    pub fn new(store: &Path, message: impl Into<String>) -> Self {
        CliError {
            store: Some(store.to_owned()),
            seq: None,
            message: message.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    /// An error about the command line rather than a store.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            store: None,
            seq: None,
            message: message.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds `note` to the hint.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        self.hint = Some(match self.hint.take() {
            Some(hint) => format!("{hint}; {note}"),
            None => note,
        });
        self
    }

    pub fn at(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// An error of the library about the store at `store`, with advice by kind.
    pub fn store(store: &Path, e: Error) -> Self {
        let hint = match &e {
            Error::Corrupted { .. } => Some(format!(
                "run `varve verify {}` to list every damaged record, then restore from a backup",
                store.display()
            )),
            Error::FormatVersion { .. } | Error::LayoutMismatch { .. } => Some(
                "use a varve built with the VarveDB version that wrote the store: export it there and import it here"
                    .into(),
            ),
            Error::EncryptionMismatch {
                store_encrypted: true,
                ..
            } => Some(
                "the store is encrypted: give its master key with --key-file FILE (32 raw bytes or 64 hex characters) or in VARVE_MASTER_KEY (hex)"
                    .into(),
            ),
            Error::EncryptionMismatch {
                store_encrypted: false,
                ..
            } => Some(
                "the store is not encrypted: unset VARVE_MASTER_KEY and drop --key-file (encryption is fixed when a store is created; export it and import it into an encrypted store to encrypt it)"
                    .into(),
            ),
            Error::WrongMasterKey { .. } => Some(
                "give the master key the store was created or last rotated with".into(),
            ),
            Error::Keystore { .. } => Some(format!(
                "restore {} together with its keys directory from a backup (`varve backup` copies both); run `varve verify` with the master key to see which streams are affected",
                store.display()
            )),
            Error::Decryption { .. } => Some(format!(
                "the record was tampered with or moved: restore from a backup; `varve verify {}` with the master key lists every such record",
                store.display()
            )),
            Error::MapFull { .. } => Some("free disk space, or end long read transactions".into()),
            Error::Lmdb(heed::Error::Io(io)) | Error::Io(io)
                if io.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("run varve as a user that can read and write the store's directory".into())
            }
            Error::Lmdb(_) => Some(
                "check that PATH is a VarveDB store directory, and that the disk is healthy".into(),
            ),
            _ => None,
        };
        CliError {
            store: Some(store.to_owned()),
            seq: e.seq(),
            message: e.to_string(),
            hint,
            broken_pipe: false,
        }
    }

    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }

    /// Writes the error to `err` (standard error), as text or as a JSON document.
    pub fn report(&self, json: bool, err: &mut dyn std::io::Write) {
        let _ = if json {
            let doc = serde_json::json!({
                "error": self.message,
                "store": self.store.as_ref().map(|p| p.display().to_string()),
                "seq": self.seq,
                "hint": self.hint,
            });
            writeln!(err, "{doc}")
        } else {
            writeln!(err, "{self}")
        };
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "varve: ")?;
        if let Some(store) = &self.store {
            write!(f, "store {}: ", store.display())?;
        }
        if let Some(seq) = self.seq {
            write!(f, "record {seq}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  what to do: {hint}")?;
        }
        Ok(())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError {
            store: None,
            seq: None,
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
            message: format!("writing the output failed: {e}"),
            hint: None,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
