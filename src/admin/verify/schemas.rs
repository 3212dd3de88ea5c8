//! The `schemas` database ([`ProblemKind::Schema`]): every entry well formed, and every event
//! type and schema version in the log with an entry (readers check each event's type against
//! it).

use std::collections::HashMap;

use super::report::{reason, ProblemKind, VerifyReport};
use super::Snapshot;
use crate::error::Result;
use crate::format::schema::{self, Registered};
use crate::format::Envelope;
use crate::types::StreamId;

/// The event types and schema versions of the log, with the first record of each.
#[derive(Default)]
pub(super) struct LogSchemas {
    first: HashMap<Vec<u8>, (u64, StreamId)>,
    key: Vec<u8>,
}

impl LogSchemas {
    /// Notes the type and version of a record whose header is intact.
    pub(super) fn record(&mut self, env: &Envelope<'_>) {
        schema::key_into(&mut self.key, env.event_type.as_bytes(), env.schema_version);
        if !self.first.contains_key(&self.key[..]) {
            self.first.insert(self.key.clone(), (env.seq, env.stream));
        }
    }
}

/// Checks every entry, then that every type and version of the log has one.
pub(super) fn check(
    snap: &Snapshot<'_>,
    report: &mut VerifyReport,
    log: &LogSchemas,
) -> Result<()> {
    let Snapshot { dbs, txn, .. } = *snap;
    let mut entries = std::collections::HashSet::new();
    for entry in dbs.schemas.iter(txn)? {
        let (key, value) = entry?;
        let (name, version) = match schema::parse_key(key) {
            Ok(parsed) => parsed,
            Err(e) => {
                report.push(ProblemKind::Schema, None, None, reason(&e));
                continue;
            }
        };
        entries.insert(key.to_vec());
        match schema::decode(name, version, value) {
            Ok(registered) => {
                report.schemas += 1;
                if registered == Registered::Unknown {
                    report.schemas_unknown += 1;
                }
            }
            Err(e) => report.push(ProblemKind::Schema, None, None, reason(&e)),
        }
    }
    let mut missing: Vec<_> = log
        .first
        .iter()
        .filter(|(key, _)| !entries.contains(*key))
        .collect();
    missing.sort_by_key(|(_, (seq, _))| *seq);
    for (key, (seq, stream)) in missing {
        let (name, version) = schema::parse_key(key)?;
        report.push(
            ProblemKind::Schema,
            Some(*seq),
            Some(*stream),
            format!(
                "no recorded layout for {} v{version}, the type of this record and any later ones of it",
                String::from_utf8_lossy(name)
            ),
        );
    }
    Ok(())
}
