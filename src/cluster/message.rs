//! The log's messages on JetStream: how a commit (the parts of one append or transaction)
//! becomes messages, and how the replica reads them back.
//!
//! A message carries a run of records of one stream, as the store lays them out (`docs/format.md`),
//! one after another, sealed for transit: positions zero, the writer's timestamp, both
//! checksums. JetStream's cost is per message, so a batch of events travels as few messages as
//! its size allows (at most [`ClusterConfig::max_message_size`] bytes of records each), not one
//! per event. Headers:
//!
//! | header | on | value |
//! |---|---|---|
//! | `Nats-Msg-Id` | every message | the id of its first event: JetStream drops a repeat within its deduplication window |
//! | `Nats-Expected-Last-Subject-Sequence` | the first message of a part whose append expects a version | the JetStream sequence of the last message on the stream's subject that the expectation stands for (`0`: none) |
//! | `Varve-Part` | every message | the index of the append's part it belongs to |
//! | `Varve-Batch` | every message of a commit of several | `i/n`: its place among the commit's messages, published as one atomic batch |
//! | `Varve-Layout` | every message | the layout fingerprint of the part's event type, 32 hex digits |
//! | `Varve-Name` | the first message of a part appended by name | the stream's name |
//! | `Varve-Renamed` | the first message of a part whose type has older names | a JSON array of them |
//! | `Varve-Node` | the last message of a commit | the id of the node that published it, which waits for its outcome |
//!
//! The subject is `{subject_prefix}.{stream id as 32 hex digits}`.
//!
//! In an encrypted log each record is sealed in transit under its stream's data key (see
//! `format::record`): JetStream holds only ciphertext, and every replica stores the record as
//! it came. Shredding a stream puts a marker in the log, an empty message on
//! `{subject_prefix}.shred.{stream id}` with a `Varve-Node` header: every replica destroys its
//! copy of the stream's key when it applies the marker, in the log's order.

use async_nats::HeaderMap;
use bytes::Bytes;

use super::error::ClusterError;
use crate::cipher::StreamKey;
use crate::error::{Error, Result};
use crate::event::Fingerprint;
use crate::format::record;
use crate::name::StreamName;
use crate::types::{ExpectedVersion, StreamId};
use crate::write::{Request, Staged};

/// The most messages JetStream takes in one atomic batch.
pub(crate) const MAX_BATCH: usize = 1000;

pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
pub(crate) const EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
const PART: &str = "Varve-Part";
const BATCH: &str = "Varve-Batch";
const LAYOUT: &str = "Varve-Layout";
const NAME: &str = "Varve-Name";
const RENAMED: &str = "Varve-Renamed";
const NODE: &str = "Varve-Node";

/// The subject of `stream`'s messages.
pub(crate) fn subject(prefix: &str, stream: StreamId) -> String {
    format!("{prefix}.{:032x}", stream.0)
}

/// The subject of the marker that shreds `stream`.
pub(crate) fn shred_subject(prefix: &str, stream: StreamId) -> String {
    format!("{prefix}.shred.{:032x}", stream.0)
}

/// The marker that shreds `stream`, published by `node`.
pub(crate) fn shred_marker(prefix: &str, stream: StreamId, node: &str) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(NODE, node);
    Outgoing {
        subject: shred_subject(prefix, stream),
        headers,
        payload: Bytes::new(),
    }
}

/// How the records of an encrypted log's commit are sealed: the data key of each part's
/// stream, and the log's id (every replica's store id).
#[derive(Clone, Copy)]
pub(crate) struct Sealing<'a> {
    pub keys: &'a [std::sync::Arc<StreamKey>],
    pub store_id: u128,
}

/// A message to publish.
pub(crate) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl Outgoing {
    /// A copy of the message (its payload shared).
    pub(crate) fn copy(&self) -> Outgoing {
        Outgoing {
            subject: self.subject.clone(),
            headers: self.headers.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// The messages of a commit of `parts`, each part's expectation (`Some(seq)`: the last
/// sequence on its subject) on its first message. The records are sealed for transit with
/// `timestamp_ns` (in place: an encrypted record sealed once keeps its sealed bytes, so that
/// the commit encoded again is the same ciphertext), under `sealing`'s keys in an encrypted log.
///
/// # Errors
///
/// [`Error::EventTooLarge`] for a record longer than `max_size`,
/// [`ClusterError::BatchLimit`] for a commit of more than [`MAX_BATCH`] messages,
/// [`Error::Crypto`] for an encrypted record without its key.
pub(crate) fn encode(
    parts: &mut [Request],
    expectations: &[Option<u64>],
    prefix: &str,
    max_size: usize,
    node: &str,
    timestamp_ns: u64,
    sealing: Option<Sealing<'_>>,
) -> Result<Vec<Outgoing>> {
    let mut out: Vec<Outgoing> = Vec::new();
    for (index, (part, expected)) in parts.iter_mut().zip(expectations).enumerate() {
        let subject = subject(prefix, part.stream);
        let layout = format!("{:032x}", part.layout.0);
        let name = part.name.as_ref().map(|n| n.as_str().to_owned());
        let renamed = (!part.renamed_from.is_empty()).then(|| {
            serde_json::to_string(&*part.renamed_from).expect("a list of strings is JSON")
        });
        let mut first_of_part = true;
        let mut flush = |chunk: &mut Vec<u8>, first_id: uuid::Uuid| {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, first_id.to_string().as_str());
            headers.insert(PART, index.to_string().as_str());
            headers.insert(LAYOUT, layout.as_str());
            if first_of_part {
                if let Some(seq) = expected {
                    headers.insert(EXPECTED_SUBJECT_SEQ, seq.to_string().as_str());
                }
                if let Some(name) = &name {
                    headers.insert(NAME, name.as_str());
                }
                if let Some(renamed) = &renamed {
                    headers.insert(RENAMED, renamed.as_str());
                }
                first_of_part = false;
            }
            out.push(Outgoing {
                subject: subject.clone(),
                headers,
                payload: Bytes::from(std::mem::take(chunk)),
            });
        };
        let mut chunk: Vec<u8> = Vec::new();
        let mut first_id = None;
        for s in &part.staged {
            if s.len > max_size {
                return Err(Error::EventTooLarge {
                    size: s.len,
                    max: max_size,
                });
            }
            let rec = &mut part.buf[s.start..s.start + s.len];
            if let Some(id) = first_id {
                if chunk.len() + s.len > max_size {
                    flush(&mut chunk, id);
                    first_id = None;
                }
            }
            let key = sealing.map(|k| (&*k.keys[index], k.store_id));
            record::seal_in_transit(rec, s.payload_offset, timestamp_ns, key)?;
            first_id.get_or_insert(s.id);
            chunk.extend_from_slice(rec);
        }
        if let Some(id) = first_id {
            flush(&mut chunk, id);
        }
    }
    let n = out.len();
    if n > MAX_BATCH {
        return Err(ClusterError::BatchLimit {
            messages: n,
            max: MAX_BATCH,
        }
        .into());
    }
    if n > 1 {
        for (i, m) in out.iter_mut().enumerate() {
            m.headers.insert(BATCH, format!("{}/{n}", i + 1).as_str());
        }
    }
    if let Some(last) = out.last_mut() {
        last.headers.insert(NODE, node);
    }
    Ok(out)
}

/// A message of the log as the replica reads it.
pub(crate) struct Incoming {
    /// Its JetStream sequence.
    pub seq: u64,
    pub subject: String,
    pub stream: StreamId,
    /// Whether it is the marker that shreds its stream (it holds no record).
    pub shred: bool,
    pub part: u32,
    /// Its place among the messages of its commit, and their number.
    pub batch: (u32, u32),
    pub node: Option<String>,
    pub name: Option<StreamName>,
    pub layout: Fingerprint,
    pub renamed: Vec<String>,
    /// Its records, and where each one is among them.
    pub records: Vec<u8>,
    pub staged: Vec<Staged>,
    /// The timestamp its writer gave its records.
    pub timestamp_ns: u64,
    /// When JetStream stored it, in nanoseconds since the Unix epoch (0 until known).
    pub stored_ns: i128,
}

/// Reads the message at JetStream sequence `seq`, checking every record and header; the error
/// names what is wrong with it (the replica stops on it: a message it cannot read is never
/// passed over). The records of an `encrypted` log must be sealed in transit, those of a plain
/// one plain.
pub(crate) fn decode(
    prefix: &str,
    seq: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    encrypted: bool,
) -> Result<Incoming> {
    let bad = |reason: String| {
        Error::from(ClusterError::BadMessage {
            seq,
            subject: subject.to_owned(),
            reason,
        })
    };
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'));
    let (shred, rest) = match rest.and_then(|s| s.strip_prefix("shred.")) {
        Some(hex) => (true, Some(hex)),
        None => (false, rest),
    };
    let stream = rest
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .map(StreamId)
        .ok_or_else(|| bad("the subject does not name a stream".into()))?;
    let empty = HeaderMap::new();
    let headers = headers.unwrap_or(&empty);
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    if shred {
        if !payload.is_empty() {
            return Err(bad("a shred marker that holds bytes".into()));
        }
        return Ok(Incoming {
            seq,
            subject: subject.to_owned(),
            stream,
            shred: true,
            part: 0,
            batch: (1, 1),
            node: header(NODE),
            name: None,
            layout: Fingerprint(0),
            renamed: Vec::new(),
            records: Vec::new(),
            staged: Vec::new(),
            timestamp_ns: 0,
            stored_ns: 0,
        });
    }
    let part = header(PART)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad(format!("no valid {PART} header")))?;
    let batch = match header(BATCH) {
        None => (1, 1),
        Some(b) => b
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
            .filter(|&(i, n): &(u32, u32)| i >= 1 && i <= n)
            .ok_or_else(|| bad(format!("an invalid {BATCH} header {b:?}")))?,
    };
    let layout = header(LAYOUT)
        .and_then(|l| u128::from_str_radix(&l, 16).ok())
        .map(Fingerprint)
        .ok_or_else(|| bad(format!("no valid {LAYOUT} header")))?;
    let name = match header(NAME) {
        None => None,
        Some(n) => {
            let name = StreamName::new(&n)
                .map_err(|e| bad(format!("an invalid stream name {n:?}: {e}")))?;
            if name.stream_id() != stream {
                return Err(bad(format!(
                    "the stream name {n:?} is not the subject's stream"
                )));
            }
            Some(name)
        }
    };
    let renamed = match header(RENAMED) {
        None => Vec::new(),
        Some(r) => serde_json::from_str(&r)
            .map_err(|e| bad(format!("an invalid {RENAMED} header: {e}")))?,
    };
    let mut records = Vec::with_capacity(payload.len());
    let mut staged = Vec::new();
    let mut timestamp_ns = None;
    let mut at = 0;
    while at < payload.len() {
        let rest = &payload[at..];
        let len = record::stated_len(rest)
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| bad(format!("the record at byte {at} is cut short")))?;
        let rec = record::decode_event(0, &rest[..len])
            .and_then(|r| r.check_type_name().map(|()| r))
            .map_err(|e| bad(format!("the record at byte {at}: {e}")))?;
        let env = rec.envelope();
        if env.stream != stream || env.version != 0 {
            return Err(bad(format!(
                "the record at byte {at} is not a record of the subject's stream in transit"
            )));
        }
        if rec.is_encrypted() != encrypted
            || (encrypted && !record::is_sealed_in_transit(rec.raw()))
        {
            return Err(bad(format!(
                "the record at byte {at} is {}, in {} log",
                if rec.is_encrypted() {
                    "encrypted"
                } else {
                    "plain"
                },
                if encrypted { "an encrypted" } else { "a plain" }
            )));
        }
        if *timestamp_ns.get_or_insert(env.timestamp_ns) != env.timestamp_ns {
            return Err(bad("its records carry different timestamps".into()));
        }
        staged.push(Staged {
            start: records.len(),
            len,
            payload_offset: rec.payload_offset(),
            id: env.event_id,
        });
        records.extend_from_slice(&rest[..len]);
        at += len;
    }
    let timestamp_ns = timestamp_ns.ok_or_else(|| bad("it holds no record".into()))?;
    Ok(Incoming {
        seq,
        subject: subject.to_owned(),
        stream,
        shred: false,
        part,
        batch,
        node: header(NODE),
        name,
        layout,
        renamed,
        records,
        staged,
        timestamp_ns,
        stored_ns: 0,
    })
}

/// The append parts of one commit's messages (all of them, in order): consecutive messages of
/// a part joined into one request, whose version check was the cluster's.
pub(crate) fn parts_of(messages: Vec<Incoming>) -> Vec<Request> {
    let mut parts: Vec<(u32, Request)> = Vec::new();
    for m in messages.into_iter().filter(|m| !m.shred) {
        match parts.last_mut() {
            Some((part, req)) if *part == m.part && req.stream == m.stream => {
                let base = req.buf.len();
                req.buf.extend_from_slice(&m.records);
                req.staged.extend(m.staged.into_iter().map(|s| Staged {
                    start: base + s.start,
                    ..s
                }));
            }
            _ => parts.push((
                m.part,
                Request {
                    stream: m.stream,
                    name: m.name,
                    expected: ExpectedVersion::Any,
                    buf: m.records,
                    staged: m.staged,
                    layout: m.layout,
                    renamed_from: m.renamed.into(),
                    timestamp_ns: Some(m.timestamp_ns),
                },
            )),
        }
    }
    parts.into_iter().map(|(_, req)| req).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{begin, finish, RecordParts};

    /// A request of `n` events of `len` payload bytes each to `stream`.
    fn request(stream: u128, first_id: u128, n: usize, len: usize) -> Request {
        let mut buf = Vec::new();
        let mut staged = Vec::new();
        for i in 0..n {
            let id = uuid::Uuid::from_u128(first_id + i as u128);
            let begun = begin(
                &mut buf,
                &RecordParts {
                    stream: StreamId(stream),
                    event_id: id,
                    correlation_id: None,
                    causation_id: None,
                    event_type: "Noted",
                    schema_version: 1,
                    metadata: Some(b"meta"),
                    encrypted: false,
                },
            );
            buf.extend(std::iter::repeat_n(i as u8, len));
            let rec_len = finish(&mut buf, begun.start, begun.payload_offset);
            staged.push(Staged {
                start: begun.start,
                len: rec_len,
                payload_offset: begun.payload_offset,
                id,
            });
        }
        Request {
            stream: StreamId(stream),
            name: None,
            expected: ExpectedVersion::Exact(3),
            buf,
            staged,
            layout: Fingerprint(0xFEED),
            renamed_from: vec!["Old".to_owned()].into(),
            timestamp_ns: None,
        }
    }

    fn decoded(out: &[Outgoing], first_seq: u64) -> Vec<Incoming> {
        out.iter()
            .enumerate()
            .map(|(i, m)| {
                decode(
                    "p",
                    first_seq + i as u64,
                    &m.subject,
                    Some(&m.headers),
                    &m.payload,
                    false,
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_commit_travels_in_as_few_messages_as_its_size_allows_and_comes_back_whole() {
        let mut parts = vec![request(7, 100, 10, 100), request(9, 200, 1, 10)];
        let originals: Vec<Vec<u8>> = parts.iter().map(|p| p.buf.clone()).collect();
        let rec_len = parts[0].staged[0].len;
        // Room for four records of the first part per message: three messages, then one.
        let out = encode(
            &mut parts,
            &[Some(5), None],
            "p",
            rec_len * 4,
            "node-1",
            77,
            None,
        )
        .unwrap();
        assert_eq!(out.len(), 4);
        let batch: Vec<String> = out
            .iter()
            .map(|m| m.headers.get(BATCH).unwrap().as_str().to_owned())
            .collect();
        assert_eq!(batch, ["1/4", "2/4", "3/4", "4/4"]);
        // The expectation on the first message of the part only, the node on the last.
        let expected: Vec<Option<String>> = out
            .iter()
            .map(|m| {
                m.headers
                    .get(EXPECTED_SUBJECT_SEQ)
                    .map(|v| v.as_str().to_owned())
            })
            .collect();
        assert_eq!(expected, [Some("5".to_owned()), None, None, None]);
        assert!(out[..3].iter().all(|m| m.headers.get(NODE).is_none()));
        assert_eq!(out[3].headers.get(NODE).unwrap().as_str(), "node-1");
        assert_eq!(out[0].subject, format!("p.{:032x}", 7));
        assert_eq!(
            out[1].headers.get(MSG_ID).unwrap().as_str(),
            uuid::Uuid::from_u128(104).to_string()
        );

        let incoming = decoded(&out, 11);
        assert!(incoming.iter().all(|m| m.timestamp_ns == 77));
        let back = parts_of(incoming);
        assert_eq!(back.len(), 2);
        for (part, original) in back.iter().zip(&parts) {
            assert_eq!(part.stream, original.stream);
            assert_eq!(part.expected, ExpectedVersion::Any);
            assert_eq!(part.layout, Fingerprint(0xFEED));
            assert_eq!(&*part.renamed_from, ["Old".to_owned()]);
            assert_eq!(part.timestamp_ns, Some(77));
            let ids: Vec<_> = part.staged.iter().map(|s| s.id).collect();
            let want: Vec<_> = original.staged.iter().map(|s| s.id).collect();
            assert_eq!(ids, want);
            // The same events: only the timestamp and header checksum differ from staging.
            for (s, o) in part.staged.iter().zip(&original.staged) {
                assert!(record::same_event(
                    &part.buf[s.start..s.start + s.len],
                    &originals[if part.stream == StreamId(7) { 0 } else { 1 }]
                        [o.start..o.start + o.len]
                ));
            }
        }
    }

    #[test]
    fn a_commit_of_one_message_is_no_batch_and_limits_are_refused() {
        let mut parts = vec![request(1, 1, 3, 10)];
        let out = encode(&mut parts, &[None], "p", 1 << 20, "n", 1, None).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].headers.get(BATCH).is_none());
        assert!(out[0].headers.get(EXPECTED_SUBJECT_SEQ).is_none());
        let rec_len = parts[0].staged[0].len;
        assert!(matches!(
            encode(&mut parts, &[None], "p", rec_len - 16, "n", 1, None),
            Err(Error::EventTooLarge { .. })
        ));
        let mut many = vec![request(1, 1, MAX_BATCH + 1, 1)];
        let rec_len = many[0].staged[0].len;
        assert!(matches!(
            encode(&mut many, &[None], "p", rec_len, "n", 1, None),
            Err(Error::Cluster(ClusterError::BatchLimit { messages, .. })) if messages == MAX_BATCH + 1
        ));
    }

    #[test]
    fn a_damaged_or_misplaced_message_is_an_error_never_events() {
        let mut parts = vec![request(7, 1, 2, 40)];
        let out = encode(&mut parts, &[None], "p", 1 << 20, "n", 1, None).unwrap();
        let m = &out[0];
        let bad = |r: Result<Incoming>| match r {
            Err(Error::Cluster(ClusterError::BadMessage { seq, .. })) => assert_eq!(seq, 3),
            Err(other) => panic!("expected a bad message, got {other}"),
            Ok(_) => panic!("expected a bad message, got events"),
        };
        // Every flipped bit of the payload.
        for bit in 0..m.payload.len() * 8 {
            let mut payload = m.payload.to_vec();
            payload[bit / 8] ^= 1 << (bit % 8);
            bad(decode(
                "p",
                3,
                &m.subject,
                Some(&m.headers),
                &payload,
                false,
            ));
        }
        // Cut short, on another stream's subject, without its headers.
        bad(decode(
            "p",
            3,
            &m.subject,
            Some(&m.headers),
            &m.payload[..m.payload.len() - 16],
            false,
        ));
        bad(decode(
            "p",
            3,
            &subject("p", StreamId(8)),
            Some(&m.headers),
            &m.payload,
            false,
        ));
        bad(decode("p", 3, &m.subject, None, &m.payload, false));
        bad(decode("p", 3, &m.subject, Some(&m.headers), &[], false));
        assert!(decode("p", 3, &m.subject, Some(&m.headers), &m.payload, false).is_ok());
    }

    #[test]
    fn a_shred_marker_reads_back_and_records_must_match_the_log() {
        let m = shred_marker("p", StreamId(8), "node-1");
        let d = decode("p", 9, &m.subject, Some(&m.headers), &m.payload, true).unwrap();
        assert!(d.shred);
        assert_eq!(d.stream, StreamId(8));
        assert_eq!(d.node.as_deref(), Some("node-1"));
        assert!(parts_of(vec![d]).is_empty(), "a marker appends nothing");
        let bad_message =
            |r: Result<Incoming>| matches!(r, Err(Error::Cluster(ClusterError::BadMessage { .. })));
        assert!(bad_message(decode(
            "p",
            9,
            &m.subject,
            Some(&m.headers),
            b"x",
            true
        )));
        // Plain records in an encrypted log, or the other way round, stop the replica.
        let mut parts = vec![request(7, 1, 2, 10)];
        let out = encode(&mut parts, &[None], "p", 1 << 20, "n", 1, None).unwrap();
        let m = &out[0];
        assert!(decode("p", 3, &m.subject, Some(&m.headers), &m.payload, false).is_ok());
        assert!(bad_message(decode(
            "p",
            3,
            &m.subject,
            Some(&m.headers),
            &m.payload,
            true
        )));
    }
}
