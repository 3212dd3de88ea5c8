//! Payloads against the decoders an application registered ([`ProblemKind::Payload`]): each
//! intact, readable payload of a type with a decoder is one the decoder accepts; payloads of
//! other types are counted by type, as not validated.

use super::report::{ProblemKind, VerifyReport};
use crate::admin::Decoders;
use crate::format::Envelope;

/// Checks the payload of the record of `env` (plaintext, decrypted in an encrypted store).
pub(super) fn check(
    decoders: &Decoders,
    report: &mut VerifyReport,
    env: &Envelope<'_>,
    payload: &[u8],
) {
    match decoders.validate(env, payload) {
        Some(Ok(())) => report.payloads_validated += 1,
        Some(Err(e)) => {
            report.payloads_validated += 1;
            report.push(
                ProblemKind::Payload,
                Some(env.seq),
                Some(env.stream),
                format!(
                    "the decoder registered for {:?} refuses the payload: {e}",
                    env.event_type
                ),
            );
        }
        None => match report.not_validated.get_mut(env.event_type) {
            Some(count) => *count += 1,
            None => {
                report.not_validated.insert(env.event_type.to_owned(), 1);
            }
        },
    }
}
