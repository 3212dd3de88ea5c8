//! The `schemas` database ([`ProblemKind::Schema`]): every entry well formed, every event
//! type and schema version in the log with an entry (readers check each event's type against
//! it), and none under the key of a renamed entry.

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
    let mut renamed = std::collections::HashSet::new();
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
            Ok(Registered::Renamed) => {
                report.schemas_renamed += 1;
                renamed.insert(key.to_vec());
            }
            Ok(registered) => {
                report.schemas += 1;
                if registered == Registered::Unknown {
                    report.schemas_unknown += 1;
                }
            }
            Err(e) => report.push(ProblemKind::Schema, None, None, reason(&e)),
        }
    }
    // The log's types and versions by their first record, so that problems come in log order.
    let mut first: Vec<_> = log.first.iter().collect();
    first.sort_by_key(|(_, (seq, _))| *seq);
    for (key, (seq, stream)) in first {
        let what = if renamed.contains(key) {
            "which the store keeps under a new name (a renamed entry): two different events claim that version"
        } else if !entries.contains(key) {
            "with no recorded layout: the type of this record and any later ones of it"
        } else {
            continue;
        };
        let (name, version) = schema::parse_key(key)?;
        report.push(
            ProblemKind::Schema,
            Some(*seq),
            Some(*stream),
            format!(
                "a record of {} v{version}, {what}",
                String::from_utf8_lossy(name)
            ),
        );
    }
    Ok(())
}
