//! A raw client of a cluster: logged in as its member, and JetStream's atomic batch publish as
//! the server speaks it, for tests of what the replicated log rests on and for the benchmark's
//! raw JetStream rows.

use async_nats::HeaderMap;
use serde_json::Value;

use crate::Cluster;

/// A NATS client of `cluster`, logged in as its user, with its client certificate, on the
/// caller's tokio runtime.
///
/// # Errors
///
/// When the cluster refuses or does not answer.
pub async fn client(cluster: &Cluster) -> Result<async_nats::Client, async_nats::ConnectError> {
    let pki = cluster.pki();
    async_nats::ConnectOptions::with_user_and_password(
        cluster.user().to_owned(),
        cluster.password().to_owned(),
    )
    .require_tls(true)
    .add_root_certificates(pki.ca.clone())
    .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
    .connect(cluster.urls())
    .await
}

/// One message of a batch: its subject and extra headers.
pub struct Msg<'a> {
    /// The subject.
    pub subject: String,
    /// Headers besides the batch's own.
    pub headers: &'a [(&'a str, String)],
    /// The payload.
    pub payload: Vec<u8>,
}

/// Publishes `msgs` as one atomic batch (the first as a request, as clients do to learn early
/// that the server takes the batch; the last with `Nats-Batch-Commit`) and returns the server's
/// answer to the commit (or to the first message, when that is an error).
pub async fn atomic_batch(
    client: &async_nats::Client,
    msgs: &[Msg<'_>],
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let id = crate::random_secret()?;
    for (i, msg) in msgs.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        for (name, value) in msg.headers {
            headers.insert(*name, value.as_str());
        }
        let last = i + 1 == msgs.len();
        if last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        let payload = msg.payload.clone().into();
        if i == 0 || last {
            let reply = client
                .request_with_headers(msg.subject.clone(), headers, payload)
                .await?;
            let answer: Value = if reply.payload.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&reply.payload)?
            };
            if last || answer.get("error").is_some() {
                return Ok(answer);
            }
        } else {
            client
                .publish_with_headers(msg.subject.clone(), headers, payload)
                .await?;
        }
    }
    Err("an atomic batch needs at least one message".into())
}
