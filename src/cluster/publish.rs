//! Publishing a commit's messages to the log's JetStream stream: one message alone, several as
//! one atomic batch (server 2.12), and what the server answered.

use std::time::Duration;

use async_nats::HeaderMap;

use super::message::Outgoing;

/// What the server answered a commit.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Stored, its last message at `seq`; `duplicate` when JetStream found the message id of a
    /// single message in its deduplication window and stored nothing (`seq` is then the
    /// message that holds it).
    Stored { seq: u64, duplicate: bool },
    /// An expectation failed: a stream moved since the node read it (JetStream error 10071),
    /// or a message to it is in flight, to be stored or not (10164).
    WrongLastSequence,
    /// The batch repeats a message id that JetStream holds in its deduplication window: a
    /// retry of a stored commit, or ids reused (10201).
    DuplicateInBatch,
    /// No answer in time: the commit may or may not be stored.
    TimedOut,
    /// The cluster cannot take the commit now (no server listens, the stream has no leader):
    /// nothing is stored.
    Unavailable(String),
    /// Anything else, with the server's or the connection's words.
    Failed(String),
}

/// Set by `failpoints::drop_next_cluster_answer`: the next stored commit's answer is dropped.
#[cfg(feature = "failpoints")]
pub(crate) static DROP_NEXT_ANSWER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

const WRONG_LAST_SEQUENCE: u64 = 10071;
/// "wrong last sequence", without one: another message to the subject is in flight, or two
/// messages of a batch expect something of one subject (which the node never sends).
const WRONG_LAST_SEQUENCE_IN_FLIGHT: u64 = 10164;
const BATCH_DUPLICATE_MSG_ID: u64 = 10201;
/// "JetStream system temporarily unavailable".
const TEMPORARILY_UNAVAILABLE: u64 = 10008;

/// How long one attempt waits for its answer, at most: a server that died with the commit in
/// flight never answers, and a new attempt reaches the stream's new leader.
const ATTEMPT: Duration = Duration::from_secs(2);
/// How long the node waits before another attempt after the cluster said it cannot take the
/// commit now (no leader yet).
const BACKOFF: Duration = Duration::from_millis(100);

/// Publishes `messages` (one commit) and waits up to `timeout` for the answer, publishing them
/// again when an attempt has no answer or the cluster has no leader for the log yet. Again is
/// safe: every message carries its message id, so JetStream stores a commit once within its
/// deduplication window (a repeat is answered as one, which the node then settles).
pub(crate) async fn publish(
    nats: &async_nats::Client,
    messages: Vec<Outgoing>,
    timeout: Duration,
) -> Answer {
    let started = tokio::time::Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Answer::TimedOut;
        }
        let copy = messages.iter().map(Outgoing::copy).collect();
        let answer = tokio::time::timeout(left.min(ATTEMPT), publish_once(nats, copy)).await;
        #[cfg(feature = "failpoints")]
        let answer = match answer {
            Ok(Answer::Stored { .. })
                if DROP_NEXT_ANSWER.swap(false, std::sync::atomic::Ordering::SeqCst) =>
            {
                Ok(Answer::TimedOut)
            }
            other => other,
        };
        match answer {
            Ok(Answer::Unavailable(reason)) => {
                tracing::debug!(%reason, "the cluster cannot take a commit now; trying again");
                tokio::time::sleep(BACKOFF.min(left)).await;
            }
            Ok(Answer::TimedOut) | Err(_) => {}
            Ok(answer) => return answer,
        }
    }
}

async fn publish_once(nats: &async_nats::Client, messages: Vec<Outgoing>) -> Answer {
    let n = messages.len();
    if n == 1 {
        let Some(m) = messages.into_iter().next() else {
            return Answer::Failed("a commit without messages".into());
        };
        return answer(
            nats.request_with_headers(m.subject, m.headers, m.payload)
                .await,
        );
    }
    // Atomic batch publish (ADR-50): every message carries the batch's id and its place; the
    // first and the last are requests, the others plain publishes; the last commits.
    let id = uuid::Uuid::new_v4().simple().to_string();
    for (i, m) in messages.into_iter().enumerate() {
        let mut headers: HeaderMap = m.headers;
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        let last = i + 1 == n;
        if last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if i == 0 || last {
            let reply = nats
                .request_with_headers(m.subject, headers, m.payload)
                .await;
            if last {
                return answer(reply);
            }
            // The first message's answer is empty unless the server refuses the batch.
            match reply {
                Ok(reply) if reply.payload.is_empty() => {}
                other => return answer(other),
            }
        } else if let Err(e) = nats
            .publish_with_headers(m.subject, headers, m.payload)
            .await
        {
            return Answer::Failed(e.to_string());
        }
    }
    Answer::Failed("a commit without messages".into())
}

/// The meaning of a reply to a publish.
fn answer(reply: Result<async_nats::Message, async_nats::RequestError>) -> Answer {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => return Answer::TimedOut,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Answer::Unavailable(e.to_string())
        }
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let value: serde_json::Value = match serde_json::from_slice(&reply.payload) {
        Ok(value) => value,
        Err(e) => {
            return Answer::Failed(format!(
                "an answer that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&reply.payload)
            ))
        }
    };
    if let Some(error) = value.get("error") {
        return match error.get("err_code").and_then(|c| c.as_u64()) {
            Some(WRONG_LAST_SEQUENCE | WRONG_LAST_SEQUENCE_IN_FLIGHT) => Answer::WrongLastSequence,
            Some(BATCH_DUPLICATE_MSG_ID) => Answer::DuplicateInBatch,
            Some(TEMPORARILY_UNAVAILABLE) => Answer::Unavailable(error.to_string()),
            _ => Answer::Failed(error.to_string()),
        };
    }
    match value.get("seq").and_then(|s| s.as_u64()) {
        Some(seq) => Answer::Stored {
            seq,
            duplicate: value
                .get("duplicate")
                .and_then(|d| d.as_bool())
                .unwrap_or(false),
        },
        None => Answer::Failed(format!("an answer without a sequence: {value}")),
    }
}
