//! The hook through which an application shows its payloads as JSON in `varve`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use super::ImportEvent;
use crate::format::{Envelope, Part};

/// The error a decoder returns: anything that can be shown.
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// Turns the payload of one event type into JSON text.
///
/// Implemented for closures `Fn(&Envelope, &[u8]) -> Result<String, DecodeError>`; for an rkyv
/// type, [`Decoders::register_archived`] does the validation and hands over the archived value.
pub trait PayloadDecoder: Send + Sync {
    /// The payload as a JSON document (text). The envelope tells the schema version, for
    /// decoders that read several.
    ///
    /// # Errors
    ///
    /// Whatever keeps the payload from being shown: it is reported next to the event, which is
    /// then shown as hex.
    fn to_json(&self, envelope: &Envelope<'_>, payload: &[u8]) -> Result<String, DecodeError>;

    /// Checks that the payload is one the application can read, without showing it: what
    /// `varve import` and `varve verify` ask of every payload of the decoder's event type. By
    /// default, that [`PayloadDecoder::to_json`] succeeds.
    ///
    /// # Errors
    ///
    /// What makes the payload unreadable: the event is refused by an import and reported by a
    /// verification.
    fn validate(&self, envelope: &Envelope<'_>, payload: &[u8]) -> Result<(), DecodeError> {
        self.to_json(envelope, payload).map(drop)
    }
}

impl<F> PayloadDecoder for F
where
    F: Fn(&Envelope<'_>, &[u8]) -> Result<String, DecodeError> + Send + Sync,
{
    fn to_json(&self, envelope: &Envelope<'_>, payload: &[u8]) -> Result<String, DecodeError> {
        self(envelope, payload)
    }
}

/// Decoders by event type name: what an application gives `varve::run` to see its payloads as
/// JSON.
///
/// ```
/// use varvedb::admin::Decoders;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// pub struct Deposited { pub cents: u64 }
///
/// let mut decoders = Decoders::new();
/// decoders.register_archived::<Deposited, _>("Deposited", |d| {
///     Ok(format!("{{\"cents\":{}}}", d.cents))
/// });
/// let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&Deposited { cents: 250 })?;
/// assert!(decoders.has("Deposited"));
/// assert_eq!(decoders.decode_payload("Deposited", &payload).unwrap()?, r#"{"cents":250}"#);
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone, Default)]
pub struct Decoders {
    by_type: BTreeMap<String, Arc<dyn PayloadDecoder>>,
}

impl std::fmt::Debug for Decoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_type.keys()).finish()
    }
}

/// A decoder that validates the payload as an archived `E` and passes it to a function.
struct ArchivedDecoder<E, F> {
    f: F,
    _event: PhantomData<fn() -> E>,
}

impl<E, F> ArchivedDecoder<E, F>
where
    E: Archive,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    F: Fn(&E::Archived) -> Result<String, DecodeError> + Send + Sync,
{
    /// Validates `payload` as an archived `E` and hands it to `f`.
    fn with_archived<R>(
        payload: &[u8],
        f: impl FnOnce(&E::Archived) -> Result<R, DecodeError>,
    ) -> Result<R, DecodeError> {
        // A copy into a 16-byte aligned buffer: callers may hold the bytes anywhere.
        let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let archived = rkyv::access::<E::Archived, rancor::Error>(&aligned)
            .map_err(|e| format!("not a valid archive of the registered type: {e}"))?;
        f(archived)
    }
}

impl<E, F> PayloadDecoder for ArchivedDecoder<E, F>
where
    E: Archive,
    E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    F: Fn(&E::Archived) -> Result<String, DecodeError> + Send + Sync,
{
    fn to_json(&self, _envelope: &Envelope<'_>, payload: &[u8]) -> Result<String, DecodeError> {
        Self::with_archived(payload, &self.f)
    }

    /// The validation the application's reads do (bytecheck), without building the JSON.
    fn validate(&self, _envelope: &Envelope<'_>, payload: &[u8]) -> Result<(), DecodeError> {
        Self::with_archived(payload, |_| Ok(()))
    }
}

impl Decoders {
    /// No decoders: payloads are shown as hex.
    pub fn new() -> Self {
        Decoders::default()
    }

    /// Registers `decoder` for events stored under `event_type`, replacing an earlier one.
    pub fn register(
        &mut self,
        event_type: impl Into<String>,
        decoder: impl PayloadDecoder + 'static,
    ) -> &mut Self {
        self.by_type.insert(event_type.into(), Arc::new(decoder));
        self
    }

    /// Registers a decoder for events of the rkyv type `E` stored under `event_type`: the
    /// payload is validated (bytecheck) as an archived `E`, then `f` turns it into JSON text
    /// (for example by deserializing it and calling `serde_json::to_string`).
    pub fn register_archived<E, F>(&mut self, event_type: impl Into<String>, f: F) -> &mut Self
    where
        E: Archive + 'static,
        E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
        F: Fn(&E::Archived) -> Result<String, DecodeError> + Send + Sync + 'static,
    {
        self.register(
            event_type,
            ArchivedDecoder::<E, F> {
                f,
                _event: PhantomData,
            },
        )
    }

    /// Whether a decoder is registered for `event_type`.
    pub fn has(&self, event_type: &str) -> bool {
        self.by_type.contains_key(event_type)
    }

    /// The registered event type names, in order.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// The payload of an event as JSON text, or `None` when no decoder is registered for its
    /// type.
    pub fn to_json(
        &self,
        envelope: &Envelope<'_>,
        payload: &[u8],
    ) -> Option<Result<String, DecodeError>> {
        self.by_type
            .get(envelope.event_type)
            .map(|d| d.to_json(envelope, payload))
    }

    /// Validates the payload of an event with the decoder registered for its type
    /// ([`PayloadDecoder::validate`]), or `None` when no decoder is registered for it.
    pub fn validate(
        &self,
        envelope: &Envelope<'_>,
        payload: &[u8],
    ) -> Option<Result<(), DecodeError>> {
        self.by_type
            .get(envelope.event_type)
            .map(|d| d.validate(envelope, payload))
    }

    /// [`Decoders::validate`] for an event about to be imported: the decoder sees the envelope
    /// the event will have in the store.
    pub fn validate_import(&self, event: &ImportEvent) -> Option<Result<(), DecodeError>> {
        let envelope = Envelope {
            seq: event.seq,
            stream: event.stream,
            version: event.version,
            prev_seq: event.prev_seq,
            timestamp_ns: event.timestamp_ns,
            event_id: event.event_id,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            metadata: event.metadata.as_deref(),
            payload_len: event.payload.len() as u32,
            encrypted: false,
            part: Part::WHOLE,
        };
        self.validate(&envelope, &event.payload)
    }

    /// [`Decoders::to_json`] for a payload whose envelope is not at hand (decoders that look at
    /// the envelope see one with only the type name set).
    pub fn decode_payload(
        &self,
        event_type: &str,
        payload: &[u8],
    ) -> Option<Result<String, DecodeError>> {
        let envelope = Envelope {
            seq: 0,
            stream: crate::types::StreamId(0),
            version: 0,
            prev_seq: None,
            timestamp_ns: 0,
            event_id: uuid::Uuid::nil(),
            correlation_id: None,
            causation_id: None,
            event_type,
            schema_version: 0,
            metadata: None,
            payload_len: payload.len() as u32,
            encrypted: false,
            part: Part::WHOLE,
        };
        self.to_json(&envelope, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    struct Moved {
        to: String,
        steps: u32,
    }

    #[test]
    fn archived_decoders_validate_and_closures_see_the_envelope() {
        let mut decoders = Decoders::new();
        decoders.register_archived::<Moved, _>("Moved", |m| {
            Ok(format!(
                "{{\"to\":{:?},\"steps\":{}}}",
                m.to.as_str(),
                m.steps
            ))
        });
        decoders.register(
            "Raw",
            |env: &Envelope<'_>, p: &[u8]| -> Result<String, DecodeError> {
                Ok(format!(
                    "{{\"type\":{:?},\"len\":{}}}",
                    env.event_type,
                    p.len()
                ))
            },
        );
        let bytes = rkyv::to_bytes::<rancor::Error>(&Moved {
            to: "north".into(),
            steps: 3,
        })
        .unwrap();
        // Misaligned input is copied, not refused.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let json = decoders
            .decode_payload("Moved", &shifted[1..])
            .unwrap()
            .unwrap();
        assert_eq!(json, r#"{"to":"north","steps":3}"#);
        assert!(decoders
            .decode_payload("Moved", &[1, 2, 3])
            .unwrap()
            .is_err());
        assert_eq!(
            decoders.decode_payload("Raw", &[1, 2]).unwrap().unwrap(),
            r#"{"type":"Raw","len":2}"#
        );
        assert!(decoders.decode_payload("Other", &bytes).is_none());
        // Validation: the archive check alone for an rkyv type, the decoder for a closure.
        let mut event = ImportEvent::new(1, crate::types::StreamId(1), 1, "Moved");
        event.payload = bytes.to_vec();
        assert!(decoders.validate_import(&event).unwrap().is_ok());
        event.payload = vec![0; 3];
        assert!(decoders.validate_import(&event).unwrap().is_err());
        event.event_type = "Other".into();
        assert!(decoders.validate_import(&event).is_none());
        event.event_type = "Raw".into();
        assert!(decoders.validate_import(&event).unwrap().is_ok());
        assert_eq!(decoders.event_types().collect::<Vec<_>>(), ["Moved", "Raw"]);
    }
}
