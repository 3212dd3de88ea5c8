//! The replicated store's rows, on the cluster of [`crate::nats`] (the same run):
//!
//! - **Batched appends**: one node appends batches of 100 and of 1,000 [`BenchEvent`]s, one
//!   batch at a time, each to its own stream with `ExpectedVersion::NoStream` (an expectation
//!   per message). **Raw JetStream** then publishes the very messages those appends put in the
//!   log (read back from it: the same payloads and headers, the expectations included) to a
//!   stream of its own, one at a time, each awaiting its acknowledgement: what the appends cost
//!   on top of JetStream is the replica's apply, the wait for it, and the encoding.
//! - **64 concurrent single appends across two processes**: two node processes (this binary,
//!   started again as a child), 32 threads each, every thread appending single events at exact
//!   versions to a stream of its own: events per second over both, and the latency of each
//!   append.
//! - **Read-your-writes latency**: one thread appending single events one after another; an
//!   append returns once the node's replica applied it, so its latency is the time until the
//!   node reads its own write.
//! - **Replica apply rate**: a node started empty applies the whole log: events per second,
//!   against a local (not replicated) store appending batches of 100 of the same events.
//! - **Encrypted log**: the batched appends again in an encrypted log (records sealed by the
//!   node, a new stream key in the key bucket for each batch's new stream), against the plain
//!   log's rate, and a node started empty applying it (learning every key from the bucket).
//! - **Failover**: one thread appending single events while the server that leads the log's
//!   stream is killed with SIGKILL: the longest time between two acknowledged appends around
//!   the kill, which is the time until appends succeed again.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
use varvedb::{ExpectedVersion, Storage, StorageConfig, Writer};

use crate::common::{BenchEvent, Res};

/// The child's settings, in environment variables.
const ENV_CHILD: &str = "VARVEDB_BENCH_CLUSTER_CHILD";
const ENV_SERVERS: &str = "VARVEDB_BENCH_SERVERS";
const ENV_USER: &str = "VARVEDB_BENCH_USER";
const ENV_PASSWORD: &str = "VARVEDB_BENCH_PASSWORD";
const ENV_CA: &str = "VARVEDB_BENCH_CA";
const ENV_CERT: &str = "VARVEDB_BENCH_CERT";
const ENV_KEY: &str = "VARVEDB_BENCH_KEY";
const ENV_SECS: &str = "VARVEDB_BENCH_SECS";
const ENV_START: &str = "VARVEDB_BENCH_START";
/// The JetStream stream and subject prefix of the replicated rows' log.
const STREAM: &str = "REPLICATED";
const PREFIX: &str = "replicated";
/// Threads of each node process in the concurrent row.
const THREADS: usize = 32;

/// Sizes of the replicated rows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Events of each batched-appends row.
    pub events: u64,
    /// Seconds of the concurrent row.
    pub concurrent_secs: u64,
    /// Appends of the read-your-writes row.
    pub latency_appends: u64,
}

/// The node configuration of `cluster`.
pub fn node_config(cluster: &natscluster::Cluster) -> ClusterConfig {
    let pki = cluster.pki();
    ClusterConfig {
        servers: cluster.urls(),
        auth: ClusterAuth::user_and_password(cluster.user(), cluster.password()),
        tls: ClusterTls {
            ca_file: Some(pki.ca.clone()),
            client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        },
        ..ClusterConfig::default()
    }
}

fn open_node(path: &std::path::Path, config: &ClusterConfig) -> Res<Storage> {
    Ok(Storage::open_replicated(
        StorageConfig {
            path: path.to_path_buf(),
            ..Default::default()
        },
        config.clone(),
    )?)
}

/// The `q`th quantile of sorted `values`.
fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Appends `events` events in batches of `size`, one at a time, each batch to a new stream
/// `{prefix}-{stream_no}` with `ExpectedVersion::NoStream`: the events appended and their rate.
fn new_streams(
    writer: &mut Writer<BenchEvent>,
    prefix: &str,
    stream_no: &mut u64,
    size: u64,
    events: u64,
) -> Res<(u64, f64)> {
    let started = Instant::now();
    let mut n = 0;
    while n < events {
        let batch: Vec<BenchEvent> = (n..n + size).map(BenchEvent::new).collect();
        writer.append_batch(
            format!("{prefix}-{stream_no}").as_str(),
            ExpectedVersion::NoStream,
            batch,
        )?;
        *stream_no += 1;
        n += size;
    }
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}

/// The master key of the encrypted log's nodes.
const MASTER_KEY: [u8; 32] = [0x42; 32];

fn open_encrypted_node(path: &std::path::Path, config: &ClusterConfig) -> Res<Storage> {
    Ok(Storage::open_replicated(
        StorageConfig {
            path: path.to_path_buf(),
            encryption_enabled: true,
            master_key: Some(MASTER_KEY),
            ..Default::default()
        },
        config.clone(),
    )?)
}

/// The rows of an encrypted log (a JetStream stream of its own): the batched appends of
/// `plain` (size, events, first sequence, events/s) again, each batch to a new stream as there
/// (so each needs a new stream key in the key bucket), against the plain log's rate; then a node
/// started empty applying it, against the plain log's `plain_apply` rate.
fn encrypted_rows(
    config: &ClusterConfig,
    dir: &std::path::Path,
    plain: &[(u64, u64, u64, f64)],
    plain_apply: f64,
) -> Res<String> {
    let config = ClusterConfig {
        stream: format!("{STREAM}_SEALED"),
        subject_prefix: format!("{PREFIX}_sealed"),
        ..config.clone()
    };
    let mut out = String::new();
    let node = open_encrypted_node(&dir.join("sealed"), &config)?;
    let mut writer = Writer::<BenchEvent>::new(node.clone());
    let mut stream_no = 0u64;
    for &(size, events, _, plain_rate) in plain {
        eprintln!("replicated: encrypted log, batched appends of {size}, {events} events");
        let (n, rate) = new_streams(&mut writer, "sealed", &mut stream_no, size, events)?;
        out.push_str(&format!(
            "| encrypted log: the same appends, batches of {size} events, each to a new stream (a new key in the bucket) | {n} | {rate:.0} events/s; the plain log's: {plain_rate:.0} events/s; **{:.2}×** |\n",
            rate / plain_rate
        ));
    }
    // Batches of 100 to the streams just made, whose keys the node holds: the sealing alone.
    if let Some(&(size, events, _, plain_rate)) = plain.first() {
        eprintln!("replicated: encrypted log, batches of {size} to known streams, {events} events");
        let started = Instant::now();
        let mut n = 0;
        let mut i = 0u64;
        while n < events {
            let batch: Vec<BenchEvent> = (n..n + size).map(BenchEvent::new).collect();
            writer.append_batch(
                format!("sealed-{}", i % stream_no).as_str(),
                ExpectedVersion::Any,
                batch,
            )?;
            i += 1;
            n += size;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        out.push_str(&format!(
            "| encrypted log: batches of {size} events to streams whose keys the node holds | {n} | {rate:.0} events/s; the plain log's (new streams): {plain_rate:.0} events/s; **{:.2}×** |\n",
            rate / plain_rate
        ));
    }
    let events = node.head();
    eprintln!("replicated: encrypted log, a node started empty applies {events} events");
    let started = Instant::now();
    let fresh = open_encrypted_node(&dir.join("sealed-fresh"), &config)?;
    let secs = started.elapsed().as_secs_f64();
    if fresh.head() != events {
        return Err(format!(
            "the fresh encrypted replica holds {} events, not {events}",
            fresh.head()
        )
        .into());
    }
    let rate = events as f64 / secs;
    out.push_str(&format!(
        "| encrypted log: a node started empty applies it, learning {stream_no} stream keys from the bucket | {events} | {rate:.0} events/s; the plain log's apply: {plain_apply:.0} events/s; **{:.2}×** |\n",
        rate / plain_apply
    ));
    Ok(out)
}

/// Whether this process is a node child of the concurrent row; it then runs it and exits.
pub fn child_main() -> Option<Res<()>> {
    let id: u64 = std::env::var(ENV_CHILD).ok()?.parse().ok()?;
    Some(child(id))
}

fn child(id: u64) -> Res<()> {
    let var = |name| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let config = ClusterConfig {
        servers: var(ENV_SERVERS)?.split(',').map(str::to_owned).collect(),
        stream: STREAM.into(),
        subject_prefix: PREFIX.into(),
        auth: ClusterAuth::user_and_password(var(ENV_USER)?, var(ENV_PASSWORD)?),
        tls: ClusterTls {
            ca_file: Some(var(ENV_CA)?.into()),
            client_cert: Some((var(ENV_CERT)?.into(), var(ENV_KEY)?.into())),
        },
        ..ClusterConfig::default()
    };
    let secs: u64 = var(ENV_SECS)?.parse()?;
    let dir = tempfile::tempdir()?;
    let storage = open_node(dir.path(), &config)?;
    // Both processes start appending together: at the start file's time.
    let start = std::path::PathBuf::from(var(ENV_START)?);
    println!("READY");
    while !start.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let storage = storage.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, varvedb::Error> {
                let mut writer = Writer::<BenchEvent>::new(storage);
                let stream = format!("concurrent-{id}-{t}");
                let mut latencies = Vec::new();
                let mut version = 0;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    writer.append(stream.as_str(), version + 1, BenchEvent::new(version))?;
                    latencies.push(started.elapsed());
                    version += 1;
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| "a thread panicked")??);
    }
    let secs = deadline.elapsed().as_secs_f64() + secs as f64;
    println!(
        "RESULT {} {secs} {}",
        latencies.len(),
        latencies
            .iter()
            .map(|d| d.as_nanos().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}

/// Runs the rows on `cluster` and returns their lines of the table.
pub fn run(cluster: &mut natscluster::Cluster, s: &Settings) -> Res<String> {
    let config = ClusterConfig {
        stream: STREAM.into(),
        subject_prefix: PREFIX.into(),
        ..node_config(cluster)
    };
    let dir = tempfile::Builder::new()
        .prefix("varvedb-bench-replicated-")
        .tempdir()?;
    let mut out = String::new();

    // Batched appends, and the same messages published raw.
    let node = open_node(&dir.path().join("node"), &config)?;
    let mut writer = Writer::<BenchEvent>::new(node.clone());
    let mut appended = Vec::new();
    let mut stream_no = 0u64;
    for size in [100u64, 1_000] {
        eprintln!("replicated: batched appends of {size}, {} events", s.events);
        let first_seq = node.head();
        let (n, rate) = new_streams(&mut writer, "batch", &mut stream_no, size, s.events)?;
        appended.push((size, n, first_seq, rate));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let raw: Vec<(u64, f64)> = runtime.block_on(async {
        let client = natscluster::client(cluster).await?;
        let js = jetstream::new(client.clone());
        let source = js.get_stream(STREAM).await?;
        js.create_stream(jetstream::stream::Config {
            name: "RAWCOPY".into(),
            subjects: vec!["rawcopy.>".into()],
            num_replicas: 3,
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            max_message_size: (1 << 20) + (4 << 10),
            ..Default::default()
        })
        .await?;
        let mut rates = Vec::new();
        let mut seq = 0u64;
        for &(size, events, _, _) in &appended {
            // The appends' messages, in their order.
            let mut messages = Vec::new();
            let mut got = 0;
            while got < events {
                seq += 1;
                let m = source.get_raw_message(seq).await?;
                let records = m.payload.len() / crate::common::record_len();
                got += records as u64;
                let subject = m.subject.replacen(PREFIX, "rawcopy", 1);
                messages.push((subject, m.headers, m.payload));
            }
            eprintln!(
                "replicated: raw JetStream, the {} messages of the batches of {size}",
                messages.len()
            );
            let started = Instant::now();
            for (subject, headers, payload) in messages {
                let ack = js.publish_with_headers(subject, headers, payload).await?;
                ack.await?;
            }
            rates.push((size, got as f64 / started.elapsed().as_secs_f64()));
        }
        Ok::<_, Box<dyn std::error::Error>>(rates)
    })?;
    for ((size, events, _, rate), (_, raw_rate)) in appended.iter().zip(&raw) {
        out.push_str(&format!(
            "| replicated appends, batches of {size} events (one message each), one at a time | {events} | {rate:.0} events/s; raw JetStream publishing the same messages one at a time: {raw_rate:.0} events/s; **{:.2}×** |\n",
            rate / raw_rate
        ));
    }

    // Read-your-writes latency.
    eprintln!(
        "replicated: read-your-writes, {} single appends",
        s.latency_appends
    );
    let mut latencies = Vec::new();
    for v in 1..=s.latency_appends {
        let started = Instant::now();
        writer.append("latency-1", v, BenchEvent::new(v))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    out.push_str(&format!(
        "| read-your-writes: single appends one after another, each returned once the node's replica applied it | {} | p50 {} ms, p99 {} ms |\n",
        s.latency_appends,
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99))
    ));

    // 64 concurrent single appends across two processes.
    eprintln!(
        "replicated: 64 concurrent single appends across two processes, {} s",
        s.concurrent_secs
    );
    let start = dir.path().join("start");
    let pki = cluster.pki().clone();
    let mut children = Vec::new();
    for id in 0..2u64 {
        let child = Command::new(std::env::current_exe()?)
            .env(ENV_CHILD, id.to_string())
            .env(ENV_SERVERS, config.servers.join(","))
            .env(ENV_USER, cluster.user())
            .env(ENV_PASSWORD, cluster.password())
            .env(ENV_CA, &pki.ca)
            .env(ENV_CERT, &pki.client_cert)
            .env(ENV_KEY, &pki.client_key)
            .env(ENV_SECS, s.concurrent_secs.to_string())
            .env(ENV_START, &start)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        children.push(child);
    }
    let mut readers = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        readers.push(rx);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    for rx in &readers {
        let line = rx.recv_timeout(Duration::from_secs(120))?;
        if line != "READY" {
            return Err(format!("a node child said {line:?}").into());
        }
    }
    std::fs::write(&start, b"")?;
    let mut total = 0u64;
    let mut secs: f64 = 0.0;
    let mut all = Vec::new();
    for rx in &readers {
        let line = rx.recv_timeout(Duration::from_secs(s.concurrent_secs + 120))?;
        let mut words = line
            .strip_prefix("RESULT ")
            .ok_or(format!("a node child said {line:?}"))?
            .split(' ');
        total += words.next().ok_or("no count")?.parse::<u64>()?;
        secs = secs.max(words.next().ok_or("no time")?.parse()?);
        all.extend(
            words
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|w| !w.is_empty())
                .map(|w| w.parse::<u64>().map(Duration::from_nanos))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    for mut child in children {
        child.wait()?;
    }
    all.sort();
    out.push_str(&format!(
        "| 64 concurrent single appends across two node processes (32 threads each, own streams, exact versions) | {total} | {:.0} events/s, p50 {} ms, p99 {} ms |\n",
        total as f64 / secs,
        ms(quantile(&all, 0.5)),
        ms(quantile(&all, 0.99))
    ));

    // Replica apply rate, against a local store appending the same batches.
    let events = node.head();
    eprintln!("replicated: a node started empty applies the log of {events} events");
    let started = Instant::now();
    let fresh = open_node(&dir.path().join("fresh"), &config)?;
    let apply_secs = started.elapsed().as_secs_f64();
    if fresh.head() != events {
        return Err(format!(
            "the fresh replica holds {} events, not {events}",
            fresh.head()
        )
        .into());
    }
    drop(fresh);
    let local = Storage::open(StorageConfig {
        path: dir.path().join("local"),
        ..Default::default()
    })?;
    let mut local_writer = Writer::<BenchEvent>::new(local.clone());
    let started = Instant::now();
    let mut n = 0;
    let mut stream = 0u64;
    while n < events {
        let size = 100.min(events - n);
        let batch: Vec<BenchEvent> = (n..n + size).map(BenchEvent::new).collect();
        local_writer.append_batch(
            format!("batch-{stream}").as_str(),
            ExpectedVersion::NoStream,
            batch,
        )?;
        stream += 1;
        n += size;
    }
    let local_rate = n as f64 / started.elapsed().as_secs_f64();
    let apply_rate = events as f64 / apply_secs;
    out.push_str(&format!(
        "| replica apply: a node started empty applies the whole log (open to caught up) | {events} | {apply_rate:.0} events/s; one local store appending batches of 100: {local_rate:.0} events/s; **{:.2}×** |\n",
        apply_rate / local_rate
    ));
    drop(local);

    // The batched appends again in an encrypted log, and a node started empty applying it.
    out.push_str(&encrypted_rows(&config, dir.path(), &appended, apply_rate)?);

    // Failover: the time until appends succeed again after the stream's leader is killed.
    let report = varvedb::cluster::check(&config)?;
    let leader = report.leader.ok_or("the log's stream has no leader")?;
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.name() == leader)
        .ok_or(format!("no node is named {leader}"))?;
    eprintln!("replicated: killing the stream's leader ({leader}) under a writer");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let appender = {
        let (stop, acked, node) = (stop.clone(), acked.clone(), node.clone());
        std::thread::spawn(move || {
            let mut writer = Writer::<BenchEvent>::new(node.clone());
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = node.stream_version("failover-1").unwrap_or(0);
                match writer.append("failover-1", v + 1, BenchEvent::new(v)) {
                    Ok(_) => acked.lock().unwrap().push(Instant::now()),
                    Err(_) => failures += 1,
                }
            }
            failures
        })
    };
    let wait_acks = |n: usize, limit: Duration| -> Res<()> {
        let started = Instant::now();
        let base = acked.lock().unwrap().len();
        while acked.lock().unwrap().len() < base + n {
            if started.elapsed() > limit {
                return Err("appends did not resume".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    wait_acks(50, Duration::from_secs(60))?;
    let killed = Instant::now();
    cluster.node(index).kill();
    wait_acks(50, Duration::from_secs(120))?;
    stop.store(true, Ordering::Relaxed);
    let failures = appender.join().map_err(|_| "the appender panicked")?;
    cluster.restart(index)?;
    cluster.wait_healthy(Duration::from_secs(60))?;
    let acked = acked.lock().unwrap();
    let before = acked.iter().rev().find(|&&t| t < killed).copied();
    let after = acked.iter().find(|&&t| t >= killed).copied();
    let (before, after) = before
        .zip(after)
        .ok_or("no acknowledgement around the kill")?;
    out.push_str(&format!(
        "| failover: the server leading the log's stream killed under a writer of single appends; time from the kill to the next acknowledged append (longest gap) | {} | {} ms from the kill ({} ms gap), {failures} appends failed meanwhile |\n",
        acked.len(),
        ms(after - killed),
        ms(after - before)
    ));
    Ok(out)
}
