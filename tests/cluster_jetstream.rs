//! What the replicated log rests on, checked against the real server (the pinned nats-server,
//! in a three-node cluster on loopback, in the log's stream as `cluster::check` creates it):
//! atomic batches are all or nothing under per-subject expectations, a wrong expectation is
//! refused with the subject's true last sequence, and message ids are deduplicated, a batch that
//! repeats one being refused whole. If a server release changes any of this, these tests say so
//! before the replicated log relies on it.
#![cfg(feature = "cluster")]

mod common_cluster;

use std::time::Duration;

use async_nats::HeaderMap;
use natscluster::{atomic_batch, Cluster, Msg};
use serde_json::Value;
use varvedb::cluster::check;

/// A message of a test batch.
fn msg<'a>(subject: String, headers: &'a [(&'a str, String)]) -> Msg<'a> {
    Msg {
        subject,
        headers,
        payload: b"event".to_vec(),
    }
}

/// The server's answer to an atomic batch of `msgs` (subject and headers each).
async fn batch(client: &async_nats::Client, msgs: &[(String, &[(&str, String)])]) -> Value {
    let msgs: Vec<Msg<'_>> = msgs.iter().map(|(s, h)| msg(s.clone(), h)).collect();
    atomic_batch(client, &msgs).await.unwrap()
}

fn err_code(answer: &Value) -> Option<u64> {
    answer["error"]["err_code"].as_u64()
}

fn seq(answer: &Value) -> u64 {
    answer["seq"].as_u64().expect("a sequence in the answer")
}

/// A cluster with the log's JetStream stream `name` made by `check`: its directory, the cluster
/// and the stream's subject prefix.
fn log_stream(name: &str) -> (tempfile::TempDir, Cluster, String) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, Duration::from_secs(60)).unwrap();
    let config = common_cluster::cluster_member(&cluster, name);
    check(&config).unwrap();
    (dir, cluster, config.subject_prefix)
}

#[test]
fn batches_are_all_or_nothing_under_per_subject_expectations() {
    let (_dir, cluster, p) = log_stream("LOG");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = natscluster::client(&cluster).await.unwrap();
        // Two new streams, each expecting to be empty: taken.
        let expect = |s: u64| vec![("Nats-Expected-Last-Subject-Sequence", s.to_string())];
        let (e0, e0b) = (expect(0), expect(0));
        let answer = atomic_batch(
            &client,
            &[
                msg(format!("{p}.a"), &e0),
                Msg {
                    subject: format!("{p}.a"),
                    headers: &[],
                    payload: b"event".to_vec(),
                },
                msg(format!("{p}.b"), &e0b),
            ],
        )
        .await
        .unwrap();
        assert_eq!(err_code(&answer), None, "{answer}");
        assert_eq!(seq(&answer), 3);
        assert_eq!(answer["count"], 3);

        // A batch whose second stream's expectation is stale: refused whole, with that
        // subject's true last sequence, and nothing of it stored.
        let (ea, eb) = (expect(2), expect(0));
        let answer = batch(&client, &[(format!("{p}.a"), &ea), (format!("{p}.b"), &eb)]).await;
        assert_eq!(err_code(&answer), Some(10071), "{answer}");
        assert!(
            answer["error"]["description"]
                .as_str()
                .unwrap()
                .ends_with("wrong last sequence: 3"),
            "{answer}"
        );
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream("LOG").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.last_sequence, 3);

        // Two messages to one subject that both carry an expectation: refused; only the first
        // message of a stream in a batch can.
        let (x, y) = (expect(2), expect(2));
        let answer = batch(&client, &[(format!("{p}.a"), &x), (format!("{p}.a"), &y)]).await;
        assert_eq!(err_code(&answer), Some(10164), "{answer}");
        assert_eq!(stream.info().await.unwrap().state.last_sequence, 3);
    });
}

#[test]
fn message_ids_are_deduplicated_and_a_batch_that_repeats_one_is_refused_whole() {
    let (_dir, cluster, p) = log_stream("IDS");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = natscluster::client(&cluster).await.unwrap();
        let id = |n: u32| vec![("Nats-Msg-Id", format!("event-{n}"))];
        let (i1, i2) = (id(1), id(2));
        let answer = batch(&client, &[(format!("{p}.s"), &i1), (format!("{p}.s"), &i2)]).await;
        assert_eq!(err_code(&answer), None, "{answer}");
        assert_eq!(seq(&answer), 2);

        // The same batch again, as a retry after a lost acknowledgement: refused whole.
        let (i1, i2) = (id(1), id(2));
        let answer = batch(&client, &[(format!("{p}.s"), &i1), (format!("{p}.s"), &i2)]).await;
        assert_eq!(err_code(&answer), Some(10201), "{answer}");

        // One repeated id among new ones: the batch is still refused whole.
        let (i3, i2) = (id(3), id(2));
        let answer = batch(&client, &[(format!("{p}.s"), &i3), (format!("{p}.s"), &i2)]).await;
        assert_eq!(err_code(&answer), Some(10201), "{answer}");

        // A single publish that repeats an id is acknowledged as a duplicate, with the
        // sequence of the message that holds it.
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "event-2");
        let reply = client
            .request_with_headers(format!("{p}.s"), headers, "again".into())
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(answer["duplicate"], true, "{answer}");
        assert_eq!(seq(&answer), 2);

        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream("IDS").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 2);
    });
}
