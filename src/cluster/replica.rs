//! The replica: follows the log's JetStream stream with an ordered consumer and applies its
//! messages to the local store, many per write transaction, in the stream's order.
//!
//! Every replica gives each event the same global sequence and stream version, since it
//! applies the same messages in the same order by the same rules (`write::replicate`). It
//! records the last applied JetStream sequence in the transaction that applies it, and starts
//! after it: nothing is applied twice or missed across crashes and restarts. A gap in the
//! stream's sequences or a message that cannot be read stops it with the error; it never
//! passes over a message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::error::ClusterError;
use super::keys::Keys;
use super::message::{self, Incoming};
use crate::crypto::keystore::Entry;
use crate::crypto::Learned;
use crate::error::{Error, Result};
use crate::format::replica::Origin;
use crate::types::StreamId;
use crate::write::{Apply, Outcome, ReplicatedBatch, WritePath};

/// Most messages applied in one write transaction.
const MAX_MESSAGES_PER_APPLY: usize = 4096;
/// Most bytes of records applied in one write transaction.
const MAX_BYTES_PER_APPLY: usize = 16 << 20;
/// Outcomes kept for this node's writers before the oldest are looked at for dropping, and how
/// far behind the log's last applied message an outcome is dropped then.
const MAX_OUTCOMES: usize = 1024;
const OUTCOMES_KEPT: u64 = 1 << 20;
/// How long the replica waits before following the stream again after the connection failed.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// What the replica shares with the node's writers.
pub(crate) struct Shared {
    /// The last JetStream sequence applied.
    pub applied: watch::Sender<u64>,
    /// The outcome of each commit this node published, by the sequence of its last message,
    /// until its writer takes it.
    pub outcomes: Mutex<HashMap<u64, Outcome>>,
    /// Why the replica stopped, once it did.
    pub stopped: watch::Sender<Option<String>>,
}

impl Shared {
    pub(crate) fn new(applied: u64) -> Arc<Shared> {
        Arc::new(Shared {
            applied: watch::channel(applied).0,
            outcomes: Mutex::new(HashMap::new()),
            stopped: watch::channel(None).0,
        })
    }

    /// The outcome of the commit whose last message is `seq`, taken.
    pub(crate) fn take_outcome(&self, seq: u64) -> Option<Outcome> {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&seq)
    }

    /// Publishes that the log is applied up to `seq` (never moving back: the follower and a
    /// node's own appends both apply, see `node`).
    pub(crate) fn advance(&self, seq: u64) {
        self.applied.send_if_modified(|applied| {
            let moved = seq > *applied;
            if moved {
                *applied = seq;
            }
            moved
        });
    }

    pub(crate) fn stop(&self, e: &Error) {
        tracing::error!(error = %e, "the replica stopped");
        self.stopped.send_replace(Some(e.to_string()));
    }
}

/// What the replica follows and where it writes.
pub(crate) struct Follow {
    pub jetstream: jetstream::Context,
    pub origin: Origin,
    pub node: String,
    pub writes: Arc<WritePath>,
    pub shared: Arc<Shared>,
    /// How long the replica waits for a message before it asks the cluster whether the log
    /// holds more: a consumer that stalled (its server gone) is made again.
    pub stall_after: Duration,
    /// The key bucket of an encrypted log.
    pub keys: Option<Arc<Keys>>,
}

/// Follows the log until the runtime shuts down or the replica meets an error it must stop on.
pub(crate) async fn follow(f: Follow) {
    loop {
        match follow_once(&f).await {
            Ok(()) => {}
            Err(Stop::Fatal(e)) => {
                f.shared.stop(&e);
                return;
            }
            Err(Stop::Retry(reason)) => {
                tracing::warn!(%reason, "following the log failed; trying again");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Why following stopped.
enum Stop {
    /// The connection or the consumer failed: follow again from the last applied message.
    Retry(String),
    /// The replica cannot go on.
    Fatal(Error),
}

async fn follow_once(f: &Follow) -> Result<(), Stop> {
    let retry = |e: &dyn std::fmt::Display| Stop::Retry(e.to_string());
    let mut applied = *f.shared.applied.borrow();
    let mut stream = f
        .jetstream
        .get_stream(&f.origin.stream)
        .await
        .map_err(|e| retry(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.>", f.origin.subject_prefix),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            },
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| retry(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| retry(&e))?;
    // The messages read of a commit not complete yet.
    let mut pending: Vec<Incoming> = Vec::new();
    let mut seen = applied;
    // Messages of the log after the last one read, as JetStream counted them.
    let mut waiting = 0;
    loop {
        let mut got = Vec::new();
        let mut bytes = 0;
        // Wait for one message, then take what is ready without waiting.
        let next = loop {
            match tokio::time::timeout(f.stall_after, messages.next()).await {
                Ok(next) => break next,
                Err(_) => {
                    // Nothing came: the log may hold nothing more, or the consumer stalled.
                    let info = stream.info().await.map_err(|e| retry(&e))?;
                    let last = info.state.last_sequence;
                    if last == applied {
                        crate::metrics::handles::replica_progress(
                            f.writes.log.env.metrics(),
                            applied,
                            0,
                            0.0,
                        );
                    }
                    if last > seen {
                        return Err(Stop::Retry(format!(
                            "no message came for {:?}, and the log holds {} after message {seen}: following it again",
                            f.stall_after,
                            last - seen
                        )));
                    }
                }
            }
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(retry(&e)),
            Some(Ok(m)) => {
                bytes += m.payload.len();
                got.push(m);
            }
        }
        while got.len() < MAX_MESSAGES_PER_APPLY && bytes < MAX_BYTES_PER_APPLY {
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    bytes += m.payload.len();
                    got.push(m);
                }
                Ok(Some(Err(e))) => return Err(retry(&e)),
                Ok(None) | Err(_) => break,
            }
        }
        for m in got {
            let info = m.info().map_err(|e| retry(&e))?;
            let (seq, stored_ns) = (info.stream_sequence, info.published.unix_timestamp_nanos());
            waiting = info.pending;
            follows(seen, seq).map_err(|e| Stop::Fatal(e.into()))?;
            seen = seq;
            let incoming = message::decode(
                &f.origin.subject_prefix,
                seq,
                m.subject.as_str(),
                m.headers.as_ref(),
                &m.payload,
                f.keys.is_some(),
            )
            .map_err(Stop::Fatal)?;
            pending.push(Incoming {
                stored_ns,
                ..incoming
            });
        }
        let Taken {
            batches,
            last,
            stored_ns,
            shreds,
        } = complete_batches(&mut pending).map_err(Stop::Fatal)?;
        let Some(last) = last else {
            continue;
        };
        let learned =
            match &f.keys {
                Some(keys) => to_learn(keys, &f.writes, &batches, &shreds)
                    .await
                    .map_err(|e| match e {
                        Error::Cluster(ClusterError::Request { .. }) => Stop::Retry(e.to_string()),
                        e => Stop::Fatal(e),
                    })?,
                None => Vec::new(),
            };
        let nodes: Vec<(u64, bool)> = batches
            .iter()
            .map(|(b, node)| (b.last, node.as_deref() == Some(f.node.as_str())))
            .collect();
        let mut batches: Vec<ReplicatedBatch> = batches.into_iter().map(|(b, _)| b).collect();
        let writes = Arc::clone(&f.writes);
        let origin = f.origin.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            if let Some(crypto) = &writes.log.crypto {
                crypto.learn(&learned)?;
            }
            writes.apply_replicated(Apply {
                origin: &origin,
                batches: &mut batches,
            })
        })
        .await
        .map_err(|e| {
            Stop::Fatal(Error::Io(std::io::Error::other(format!(
                "applying the log's messages panicked: {e}"
            ))))
        })?
        .map_err(Stop::Fatal)?;
        {
            let mut mine = f
                .shared
                .outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for ((seq, own), outcome) in nodes.into_iter().zip(outcomes) {
                if let (true, Some(outcome)) = (own, outcome) {
                    mine.insert(seq, outcome);
                }
            }
            // An outcome whose writer stopped waiting (its append timed out) is never taken:
            // those far behind the log are dropped.
            if mine.len() > MAX_OUTCOMES {
                mine.retain(|&seq, _| seq + OUTCOMES_KEPT > last);
            }
        }
        applied = last;
        f.shared.advance(applied);
        let lag = waiting + (seen - applied);
        let lag_seconds = if lag == 0 {
            0.0
        } else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            (now - stored_ns).max(0) as f64 / 1e9
        };
        crate::metrics::handles::replica_progress(
            f.writes.log.env.metrics(),
            applied,
            lag,
            lag_seconds,
        );
    }
}

/// What the keystore of an encrypted log's replica must learn before it applies `batches`:
/// the key of every stream they hold events of that it has no key for (from the bucket), and
/// the shredding of the streams of the shred markers among them.
///
/// # Errors
///
/// [`ClusterError::Request`] for a failed read of the bucket (the replica follows again), and
/// [`ClusterError::BadKey`] for a stream the bucket never held a key for (it stops).
async fn to_learn(
    keys: &Keys,
    writes: &WritePath,
    batches: &[Read],
    shreds: &[StreamId],
) -> Result<Vec<(StreamId, Learned)>> {
    let Some(crypto) = &writes.log.crypto else {
        return Err(ClusterError::EncryptionMismatch {
            reason: "the replica follows an encrypted log, but its store is not encrypted".into(),
        }
        .into());
    };
    let mut learned: Vec<(StreamId, Learned)> = Vec::new();
    let mut decided: HashSet<StreamId> = HashSet::new();
    for (batch, _) in batches {
        for part in &batch.parts {
            let stream = part.stream;
            if !decided.insert(stream) || !matches!(crypto.local_entry(stream)?, Entry::Missing) {
                continue;
            }
            match fetch_key(keys, stream).await? {
                Some(l) => learned.push((stream, l)),
                None => {
                    return Err(ClusterError::BadKey {
                        key: format!("s.{:032x}", stream.0),
                        reason: format!(
                            "the log holds events of stream {stream}, but the key bucket never held its key"
                        ),
                    }
                    .into())
                }
            }
        }
    }
    learned.extend(shreds.iter().map(|&s| (s, Learned::Shredded)));
    Ok(learned)
}

/// Reads of the bucket a replica makes for a key it finds missing before it stops: the key was
/// put before the first event that uses it was published, so only a bucket leader that has not
/// caught up (just elected) can answer that it holds none.
const KEY_READS: usize = 10;
const KEY_READ_AFTER: Duration = Duration::from_millis(100);

/// What the bucket holds for `stream`, read again for a while when it holds nothing.
async fn fetch_key(keys: &Keys, stream: StreamId) -> Result<Option<Learned>> {
    for _ in 1..KEY_READS {
        if let Some(learned) = keys.fetch(stream).await? {
            return Ok(Some(learned));
        }
        tokio::time::sleep(KEY_READ_AFTER).await;
    }
    keys.fetch(stream).await
}

/// Checks that the message at `seq` is the one after `seen`: the log's stream denies deletes
/// and purges, so its sequences have no gap, and one means messages are gone.
fn follows(seen: u64, seq: u64) -> Result<(), ClusterError> {
    if seq == seen + 1 {
        Ok(())
    } else {
        Err(ClusterError::Gap {
            applied: seen,
            next: seq,
        })
    }
}

/// A batch read whole, with the node that published it.
type Read = (ReplicatedBatch, Option<String>);

/// The complete commits taken off the front of the messages read.
#[derive(Default)]
pub(crate) struct Taken {
    pub batches: Vec<Read>,
    /// The sequence of the last message taken, and when JetStream stored it.
    last: Option<u64>,
    stored_ns: i128,
    /// The streams of the shred markers taken, in order.
    pub shreds: Vec<StreamId>,
}

/// Takes the complete commits off the front of `pending` (the messages read, in order),
/// leaving a commit whose messages have not all come.
///
/// # Errors
///
/// [`ClusterError::BadMessage`] for messages of a commit out of their order.
pub(crate) fn complete_batches(pending: &mut Vec<Incoming>) -> Result<Taken> {
    let mut ends = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        let n = pending[i].batch.1 as usize;
        let end = i + n;
        for (k, m) in pending[i..end.min(pending.len())].iter().enumerate() {
            if m.batch != (k as u32 + 1, n as u32) {
                return Err(ClusterError::BadMessage {
                    seq: m.seq,
                    subject: m.subject.clone(),
                    reason: format!(
                        "message {}/{} where message {}/{n} of a commit belongs",
                        m.batch.0,
                        m.batch.1,
                        k + 1
                    ),
                }
                .into());
            }
        }
        if end > pending.len() {
            break;
        }
        ends.push(n);
        i = end;
    }
    let mut taken = Taken::default();
    let mut rest = pending.drain(..i);
    for n in ends {
        let msgs: Vec<Incoming> = rest.by_ref().take(n).collect();
        let first = msgs.first().expect("a commit has messages").seq;
        let last = msgs.last().expect("a commit has messages");
        let (seq, node) = (last.seq, last.node.clone());
        let mut subjects: Vec<(StreamId, u64)> = Vec::new();
        for m in &msgs {
            if m.shred {
                taken.shreds.push(m.stream);
                continue;
            }
            match subjects.iter_mut().find(|(s, _)| *s == m.stream) {
                Some(entry) => entry.1 = m.seq,
                None => subjects.push((m.stream, m.seq)),
            }
        }
        taken.last = Some(seq);
        taken.stored_ns = last.stored_ns;
        taken.batches.push((
            ReplicatedBatch {
                parts: message::parts_of(msgs),
                first,
                last: seq,
                subjects,
            },
            node,
        ));
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, stream: u128, batch: (u32, u32)) -> Incoming {
        Incoming {
            seq,
            subject: format!("p.{stream:032x}"),
            stream: StreamId(stream),
            shred: false,
            part: 0,
            batch,
            node: (batch.0 == batch.1).then(|| format!("node-{seq}")),
            name: None,
            layout: crate::event::Fingerprint(1),
            renamed: Vec::new(),
            records: Vec::new(),
            staged: Vec::new(),
            timestamp_ns: 1,
            stored_ns: 0,
        }
    }

    #[test]
    fn complete_commits_are_taken_and_a_partial_one_waits() {
        let mut pending = vec![
            msg(1, 1, (1, 1)),
            msg(2, 2, (1, 3)),
            msg(3, 3, (2, 3)),
            msg(4, 2, (3, 3)),
            msg(5, 1, (1, 2)),
        ];
        let taken = complete_batches(&mut pending).unwrap();
        assert_eq!(taken.last, Some(4));
        let lasts: Vec<(u64, Option<String>)> = taken
            .batches
            .iter()
            .map(|(b, node)| (b.last, node.clone()))
            .collect();
        assert_eq!(
            lasts,
            [(1, Some("node-1".into())), (4, Some("node-4".into()))]
        );
        let spans = taken
            .batches
            .iter()
            .map(|(b, _)| (b.first, b.last, b.subjects.clone()))
            .collect::<Vec<_>>();
        assert_eq!(
            spans,
            [
                (1, 1, vec![(StreamId(1), 1)]),
                (2, 4, vec![(StreamId(2), 4), (StreamId(3), 3)])
            ]
        );
        assert_eq!(pending.len(), 1);
        pending.push(msg(6, 1, (2, 2)));
        let taken = complete_batches(&mut pending).unwrap();
        assert_eq!(taken.last, Some(6));
        assert!(pending.is_empty());
        assert!(complete_batches(&mut pending).unwrap().last.is_none());
    }

    #[test]
    fn a_gap_or_a_message_again_stops_the_replica() {
        assert!(follows(0, 1).is_ok());
        assert!(follows(41, 42).is_ok());
        assert!(matches!(
            follows(41, 43),
            Err(ClusterError::Gap {
                applied: 41,
                next: 43
            })
        ));
        assert!(follows(41, 41).is_err());
        assert!(follows(41, 7).is_err());
    }

    #[test]
    fn messages_of_a_commit_out_of_order_stop_the_replica() {
        for mut pending in [
            vec![msg(1, 1, (2, 2))],
            vec![msg(1, 1, (1, 3)), msg(2, 1, (3, 3))],
            vec![msg(1, 1, (1, 2)), msg(2, 1, (1, 1))],
        ] {
            assert!(matches!(
                complete_batches(&mut pending),
                Err(Error::Cluster(ClusterError::BadMessage { .. }))
            ));
        }
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use crate::{Error, ExpectedVersion, Storage, StorageConfig, Writer};

    fn origin(stream: &str) -> Origin {
        Origin {
            stream: stream.into(),
            created_ns: 7,
            subject_prefix: "p".into(),
        }
    }

    /// A batch of the log: `n` events to `stream` at messages `first..first + n`.
    fn batch(storage: &Storage, stream: u64, first: u64, n: u64) -> ReplicatedBatch {
        let mut writer = Writer::<u64>::new(storage.clone());
        let request = writer
            .prepare(stream, ExpectedVersion::Any, (0..n).collect::<Vec<_>>())
            .unwrap();
        ReplicatedBatch {
            parts: vec![request],
            first,
            last: first + n - 1,
            subjects: vec![(StreamId(stream as u128), first + n - 1)],
        }
    }

    #[test]
    fn batches_applied_already_are_passed_over_and_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig {
            path: dir.path().into(),
            ..Default::default()
        })
        .unwrap();
        let writes = &storage.store.writes;
        let o = origin("LOG");
        let mut first = vec![batch(&storage, 1, 1, 2), batch(&storage, 2, 3, 1)];
        let outcomes = writes
            .apply_replicated(Apply {
                origin: &o,
                batches: &mut first,
            })
            .unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Some(Ok(_)))));
        assert_eq!(storage.head(), 3);
        // Again, with one more: the first two are passed over.
        let mut again = vec![
            batch(&storage, 1, 1, 2),
            batch(&storage, 2, 3, 1),
            batch(&storage, 1, 4, 1),
        ];
        let outcomes = writes
            .apply_replicated(Apply {
                origin: &o,
                batches: &mut again,
            })
            .unwrap();
        assert!(outcomes[0].is_none() && outcomes[1].is_none());
        let placed = outcomes[2].as_ref().unwrap().as_ref().unwrap();
        assert_eq!((placed[0].first().seq, placed[0].first().version), (4, 3));
        // Messages after a gap are refused, and nothing of them written.
        let mut gap = vec![batch(&storage, 1, 6, 1)];
        assert!(matches!(
            writes.apply_replicated(Apply {
                origin: &o,
                batches: &mut gap,
            }),
            Err(Error::Corrupted { .. })
        ));
        // Another log is refused.
        let mut next = vec![batch(&storage, 1, 5, 1)];
        assert!(matches!(
            writes.apply_replicated(Apply {
                origin: &origin("OTHER"),
                batches: &mut next,
            }),
            Err(Error::Corrupted { .. })
        ));
        assert_eq!(storage.head(), 4);
        // The store is a replica now: a local append is refused.
        writes.set_replica_of("LOG");
        assert!(matches!(
            Writer::<u64>::new(storage.clone()).append(9, 1, 1),
            Err(Error::ReplicaNotWritable { .. })
        ));
    }

    #[test]
    fn a_store_with_events_of_its_own_is_no_replica() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig {
            path: dir.path().into(),
            ..Default::default()
        })
        .unwrap();
        Writer::<u64>::new(storage.clone()).append(1, 1, 1).unwrap();
        let mut b = vec![batch(&storage, 1, 1, 1)];
        assert!(matches!(
            storage.store.writes.apply_replicated(Apply {
                origin: &origin("LOG"),
                batches: &mut b,
            }),
            Err(Error::Corrupted { .. })
        ));
        assert_eq!(storage.head(), 1);
    }
}
