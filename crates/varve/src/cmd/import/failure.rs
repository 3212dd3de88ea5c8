//! The errors of an import and their advice, which depends on what a failure leaves of the
//! target: nothing (a store the import creates is removed), or a store that existed before and
//! keeps the events imported into it.

use std::path::Path;

use varvedb::admin::{DecodeError, ImportError, ImportEvent};

use crate::error::CliError;

/// What is wrong with a line, before its number is known.
pub struct LineError(pub String);

/// The target of an import, for advice on failures.
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    pub path: &'a Path,
    /// A failure removes the store the import created: nothing imported is left.
    pub leaves_nothing: bool,
}

impl Failure<'_> {
    /// What to do after a failure once `committed` events were imported.
    pub fn after(&self, committed: u64) -> String {
        if self.leaves_nothing || committed == 0 {
            "fix the input (it must be what `varve export` wrote) and import again".into()
        } else {
            format!(
                "{committed} events were imported before the failure: remove {} and import a corrected file into a new store",
                self.path.display()
            )
        }
    }

    /// What to remove first before importing again, when anything.
    pub fn remove_first(&self, committed: u64) -> String {
        if self.leaves_nothing || committed == 0 {
            String::new()
        } else {
            format!(
                "; first remove {}, which holds the {committed} events imported so far",
                self.path.display()
            )
        }
    }

    /// The error of line `number`, after `committed` events were imported.
    pub fn line(&self, e: LineError, number: usize, committed: u64) -> CliError {
        CliError::new(self.path, format!("line {number}: {}", e.0)).hint(self.after(committed))
    }

    /// An error of the importer, at line `number` after `committed` events when known.
    pub fn import(&self, e: ImportError, line: Option<(usize, u64)>) -> CliError {
        let prefix = line.map_or(String::new(), |(n, _)| format!("line {n}: "));
        let committed = line.map_or(0, |(_, c)| c);
        match e {
            ImportError::Invalid { seq, reason } => {
                // An input line may name sequence 0, which no event has.
                let err = CliError::new(self.path, format!("{prefix}{reason}"));
                let err = if seq > 0 { err.at(seq) } else { err };
                err.hint(self.after(committed))
            }
            ImportError::Store(e) => {
                let mut err = CliError::store(self.path, e);
                err.message = format!("{prefix}{}", err.message);
                err
            }
            other => CliError::new(self.path, format!("{prefix}{other}")),
        }
    }

    /// The refusal of an event whose payload the decoder of its type does not accept.
    pub fn invalid_payload(
        &self,
        event: &ImportEvent,
        e: DecodeError,
        number: usize,
        committed: u64,
    ) -> CliError {
        CliError::new(
            self.path,
            format!(
                "line {number}: the payload is not a valid {}: {e}",
                event.event_type
            ),
        )
        .at(event.seq)
        .hint(format!(
            "the application could not read this event: the decoder registered for {} refuses it; {}",
            event.event_type,
            self.after(committed)
        ))
    }

    /// The refusal of a target that holds events.
    pub fn not_empty(&self, e: ImportError) -> CliError {
        match e {
            ImportError::NotEmpty { .. } => CliError::new(self.path, e.to_string()).hint(
                "give `varve import` a new directory (it is created) or an empty store; this store is left as it was",
            ),
            other => self.import(other, None),
        }
    }
}
