//! The cluster rows, on a three-node NATS JetStream cluster on loopback (`crates/natscluster`:
//! TLS with verified client certificates, a password, `sync_interval: always`), in the
//! JetStream stream of VarveDB's log as `varvedb::cluster::check` creates it (R3, file storage,
//! atomic publish allowed, a two-minute duplicate window):
//!
//! - **Raw JetStream publishing**: one message per event (an event's record bytes, a UUIDv7 as
//!   `Nats-Msg-Id`), to 10,000 subjects, 256 publishes awaiting their acknowledgement at a time;
//!   and the same messages in atomic batches of 100 and of 1,000, one batch at a time: messages
//!   per second, the peers that VarveDB's replicated appends are compared with.
//! - **Memory per subject**: JetStream keeps per-subject state in each server's memory, and each
//!   VarveDB stream is a subject. One message to each of `subjects` new subjects, then as many
//!   again: the resident memory of each server after each step, and the bytes per subject that
//!   the second step added.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use varvedb::cluster::check;

use crate::common::Res;

/// Sizes of the cluster rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Messages of the publishing row.
    pub messages: u64,
    /// New subjects of each step of the memory row.
    pub subjects: u64,
    /// Bytes of each message (a record of the bench event).
    pub record_len: usize,
    /// The replicated store's rows.
    pub replicated: crate::replicated::Settings,
}

/// Publishes to `subject(i)` for `i` in `range`, `window` acknowledgements outstanding at a
/// time: messages per second.
async fn publish(
    js: &jetstream::Context,
    range: std::ops::Range<u64>,
    subject: impl Fn(u64) -> String,
    record: &[u8],
    window: usize,
) -> Res<f64> {
    let started = Instant::now();
    let count = range.end - range.start;
    let mut pending = VecDeque::with_capacity(window);
    for i in range {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        let ack = js
            .publish_with_headers(subject(i), headers, record.to_vec().into())
            .await?;
        pending.push_back(ack);
        if pending.len() >= window {
            pending.pop_front().expect("a pending ack").await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// Runs the rows and returns their table.
pub fn run(s: &Settings) -> Res<String> {
    eprintln!("cluster: starting three nats-server nodes on loopback");
    let dir = tempfile::Builder::new()
        .prefix("varvedb-bench-cluster-")
        .tempdir()?;
    let mut cluster = natscluster::Cluster::start(dir.path(), 3, Duration::from_secs(60))?;
    let config = crate::replicated::node_config(&cluster);
    let report = check(&config)?;
    let version = report.server_version.clone();
    let prefix = config.subject_prefix.clone();
    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .map(|n| n.pid().ok_or("a node is not running"))
        .collect::<Result<_, _>>()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let record = vec![0x5Au8; s.record_len];
    let (rate, batched, memory) = runtime.block_on(async {
        let client = natscluster::client(&cluster).await?;
        let js = jetstream::new(client.clone());

        // The stream `check` just made may not answer on every server yet: wait until a
        // message of its own is stored.
        let ready_by = Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let stored = match js
                .publish(format!("{prefix}.ready"), record.clone().into())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(()) => break,
                Err(e) if Instant::now() < ready_by => {
                    eprintln!("cluster: the log's stream is not ready yet ({e})");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }

        eprintln!("cluster: raw JetStream publishing, {} messages", s.messages);
        let rate = publish(
            &js,
            0..s.messages,
            |i| format!("{prefix}.p{}", i % 10_000),
            &record,
            256,
        )
        .await?;

        let mut batched = Vec::new();
        for size in [100u64, 1_000] {
            eprintln!(
                "cluster: raw JetStream atomic batches of {size}, {} messages",
                s.messages
            );
            let started = Instant::now();
            let mut sent = 0u64;
            while sent < s.messages {
                let fresh: Vec<Vec<(&str, String)>> = (0..size)
                    .map(|_| vec![("Nats-Msg-Id", uuid::Uuid::now_v7().to_string())])
                    .collect();
                let msgs: Vec<natscluster::Msg<'_>> = fresh
                    .iter()
                    .enumerate()
                    .map(|(i, headers)| natscluster::Msg {
                        subject: format!("{prefix}.p{}", (sent + i as u64) % 10_000),
                        headers,
                        payload: record.clone(),
                    })
                    .collect();
                let answer = natscluster::atomic_batch(&client, &msgs)
                    .await
                    .map_err(|e| e.to_string())?;
                if answer.get("error").is_some() || answer["count"] != size {
                    return Err(format!("an atomic batch was refused: {answer}").into());
                }
                sent += size;
            }
            batched.push((size, sent, sent as f64 / started.elapsed().as_secs_f64()));
        }

        let mut memory = Vec::new();
        let before: Vec<u64> = pids.iter().map(|&p| rss(p)).collect::<Res<_>>()?;
        memory.push((0u64, before));
        for step in 1..=2u64 {
            eprintln!(
                "cluster: one message to each of {} new subjects (step {step})",
                s.subjects
            );
            publish(
                &js,
                (step - 1) * s.subjects..step * s.subjects,
                |i| format!("{prefix}.s{i}"),
                &record,
                256,
            )
            .await?;
            let now: Vec<u64> = pids.iter().map(|&p| rss(p)).collect::<Res<_>>()?;
            memory.push((step * s.subjects, now));
        }
        Ok::<_, Box<dyn std::error::Error>>((rate, batched, memory))
    })?;

    let mut out = format!(
        "\n### On a three-node NATS JetStream cluster (nats-server {version}, loopback, TLS, `sync_interval: always`, R3)\n\n| workload | messages | per second or bytes |\n|---|---:|---:|\n| raw JetStream publish, {} bytes, `Nats-Msg-Id`, 256 in flight, 10,000 subjects | {} | {rate:.0} msg/s |\n",
        s.record_len, s.messages
    );
    for (size, sent, rate) in &batched {
        out.push_str(&format!(
            "| raw JetStream atomic batches of {size}, the same messages, one batch at a time | {sent} | {rate:.0} msg/s |\n"
        ));
    }
    for (subjects, rss) in &memory {
        let mib: Vec<String> = rss
            .iter()
            .map(|b| format!("{:.0}", *b as f64 / (1 << 20) as f64))
            .collect();
        out.push_str(&format!(
            "| resident memory of each server (MiB) with {subjects} one-message subjects | {subjects} | {} |\n",
            mib.join(" / ")
        ));
    }
    let (a, b) = (&memory[1].1, &memory[2].1);
    let per: Vec<String> = a
        .iter()
        .zip(b)
        .map(|(x, y)| format!("{:.0}", (*y as f64 - *x as f64) / s.subjects as f64))
        .collect();
    out.push_str(&format!(
        "| memory per subject on each server, second step (bytes) | {} | {} |\n",
        s.subjects,
        per.join(" / ")
    ));
    out.push_str(&crate::replicated::run(&mut cluster, &s.replicated)?);
    Ok(out)
}
