//! The metrics end to end: the example's workload served over loopback by
//! `varvedb::metrics::serve_prometheus`, scraped over HTTP, checked with `promtool check metrics`,
//! and scraped by a real Prometheus server whose query API must report the number of events
//! written. Also checks the Grafana dashboard and `docs/metrics.md` against what is emitted.
//!
//! Needs `prometheus` and `promtool` on the PATH (Debian's `prometheus` package, which
//! `scripts/test`, the README's test command, installs when they are missing). Without them the
//! test fails: it never passes silently.
#![cfg(feature = "prometheus")]

#[path = "../examples/metrics.rs"]
#[allow(dead_code)]
mod example;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Events the workload writes.
const EVENTS: u64 = 3_000;
/// Longest wait for Prometheus to start and scrape.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(90);

#[test]
fn prometheus_scrapes_the_example_and_counts_every_event() {
    let promtool = tool("promtool");
    let prometheus = tool("prometheus");

    let exporter_addr = free_loopback_addr();
    let handle = varvedb::metrics::serve_prometheus(exporter_addr).expect("serve_prometheus");
    let dir = tempfile::tempdir().unwrap();
    let summary = example::workload(&dir.path().join("store"), EVENTS).expect("workload");
    assert_eq!(summary.events, EVENTS);
    assert_eq!(summary.processed, EVENTS);
    varvedb::metrics::refresh();
    let path = summary.storage.path().display().to_string();

    // Scraped over HTTP, the text holds what the workload did.
    let text = http_get(exporter_addr, "/metrics");
    let samples = parse_samples(&text);
    assert_eq!(
        samples,
        parse_samples(&handle.render()),
        "the HTTP listener serves the recorder"
    );
    let of = |name: &str, extra: &str| -> f64 {
        let key = format!("{name}{{path=\"{path}\"{extra}}}");
        *samples
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing from the scrape:\n{text}"))
    };
    assert_eq!(of("varvedb_appended_events_total", ""), EVENTS as f64);
    assert_eq!(
        of("varvedb_appended_batches_total", ""),
        (EVENTS / 50) as f64
    );
    assert_eq!(of("varvedb_deduplicated_batches_total", ""), 1.0);
    assert_eq!(of("varvedb_append_conflicts_total", ""), 1.0);
    assert_eq!(
        of(
            "varvedb_append_errors_total",
            ",kind=\"concurrency_conflict\""
        ),
        1.0
    );
    let stats = summary.storage.stats();
    assert_eq!(of("varvedb_commits_total", ""), stats.commits as f64);
    assert_eq!(
        of("varvedb_commit_group_batches_count", ""),
        stats.commits as f64
    );
    assert_eq!(
        of("varvedb_commit_group_batches_sum", ""),
        stats.committed_batches as f64
    );
    assert_eq!(
        of("varvedb_append_duration_seconds_count", ""),
        (EVENTS / 50 + 1) as f64
    );
    assert_eq!(of("varvedb_head_sequence", ""), EVENTS as f64);
    assert_eq!(of("varvedb_map_size_bytes", ""), stats.map_size as f64);
    assert!(of("varvedb_used_bytes", "") > 0.0);
    assert_eq!(of("varvedb_subscriptions", ""), 1.0);
    assert_eq!(of("varvedb_checksum_failures_total", ""), 0.0);
    // The processor scanned the log once, and so did the example's own scan.
    assert_eq!(
        of("varvedb_read_events_total", ",kind=\"log\""),
        2.0 * EVENTS as f64
    );
    // Every stream read once in full, plus the example's look-up of the first event.
    assert_eq!(
        of("varvedb_read_events_total", ",kind=\"stream\""),
        EVENTS as f64 + 1.0
    );
    assert_eq!(
        of("varvedb_read_events_total", ",kind=\"last_in_stream\""),
        100.0
    );
    let gets = EVENTS.div_ceil(7) as f64;
    assert_eq!(of("varvedb_read_events_total", ",kind=\"get\""), gets);
    assert_eq!(of("varvedb_read_events_total", ",kind=\"envelope\""), gets);
    assert_eq!(
        of(
            "varvedb_processor_checkpoint_sequence",
            ",processor=\"totals\""
        ),
        EVENTS as f64
    );
    assert_eq!(
        of("varvedb_processor_lag_events", ",processor=\"totals\""),
        0.0
    );

    // The workload read one event of the previous version of its type, from a second store.
    let previous = example::previous_release(summary.storage.path())
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let upcasts = format!(
        "varvedb_upcasts_total{{path=\"{previous}\",type=\"Deposited\",from=\"1\",to=\"2\"}}"
    );
    assert_eq!(samples.get(&upcasts), Some(&1.0), "{upcasts} in\n{text}");

    // Every metric the library names is emitted, and nothing else under its prefix.
    let families: BTreeSet<String> = samples.keys().map(|k| family(k)).collect();
    let named: BTreeSet<String> = varvedb::metrics::ALL
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        families, named,
        "emitted metric families vs varvedb::metrics::ALL"
    );

    // promtool accepts the exposition format and its naming lints.
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus server scrapes the exporter and answers for the append counter.
    let server = Prometheus::start(&prometheus, exporter_addr, dir.path());
    let query = format!("varvedb_appended_events_total{{path=\"{path}\"}}");
    let value = server.wait_for_value(&query);
    assert_eq!(value, EVENTS as f64, "Prometheus's value of {query}");

    // Every expression of the dashboard references only emitted metrics, and Prometheus
    // evaluates each of them without error.
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");
    let emitted: BTreeSet<&str> = samples.keys().map(|k| sample_name(k)).collect();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                emitted.contains(name.as_str()),
                "dashboard expression {expr:?} uses {name}, which the exporter does not emit"
            );
        }
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$path", ".*")
            .replace("$processor", ".*");
        let answer = server.query(&concrete);
        assert_eq!(
            answer["status"], "success",
            "Prometheus rejects {concrete:?}: {answer}"
        );
    }
    drop(server);
    drop(summary);
}

/// `docs/metrics.md` documents every metric the library names.
#[test]
fn docs_list_every_metric() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .expect("docs/metrics.md");
    for name in varvedb::metrics::ALL
        .iter()
        .chain(varvedb::metrics::CLUSTER)
    {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/metrics.md does not list {name}"
        );
    }
    for name in metric_names(&docs) {
        assert!(
            varvedb::metrics::ALL.contains(&name.as_str())
                || varvedb::metrics::CLUSTER.contains(&name.as_str())
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.ends_with(s)),
            "docs/metrics.md names {name}, which the library does not record"
        );
    }
}

/// The dashboard is valid JSON with one data source variable and titled panels.
#[test]
fn dashboard_is_valid_grafana_json() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        assert!(panel["title"].is_string(), "panel without a title: {panel}");
        if panel["type"] != "row" {
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "{panel}"
            );
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["Throughput", "Latency", "Lag", "Size"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
}

/// The path of a command on the PATH; fails the test with what to install when it is missing.
fn tool(name: &str) -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path.display().to_string(),
        None => panic!(
            "{name} is not installed: this test needs Prometheus's `prometheus` and `promtool` \
             binaries: run the suite with `scripts/test`, which installs them, or install Debian's \
             `prometheus` package"
        ),
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The body of an HTTP/1.0 GET (the server closes the connection after the body).
fn http_get(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {response:?}"));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {target}: {head}"
    );
    body.to_string()
}

/// Sample lines of a Prometheus text exposition: `name{labels}` → value.
fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                key.to_string(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

/// `name` of `name{labels}`.
fn sample_name(key: &str) -> &str {
    key.split('{').next().unwrap()
}

/// The metric family of a sample: its name without a histogram's suffix.
fn family(key: &str) -> String {
    let name = sample_name(key);
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if base.ends_with("_seconds") || base.ends_with("_batches") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Every `varvedb_…` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("varvedb_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if end > "varvedb_".len() {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/varvedb.json");
    let text = std::fs::read_to_string(&path).expect("dashboards/varvedb.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries.
fn dashboard_exprs() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard(), &mut out);
    out
}

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(binary: &str, target: SocketAddr, dir: &Path) -> Prometheus {
        let addr = free_loopback_addr();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: varvedb\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        Prometheus { child, addr, log }
    }

    /// The JSON answer of an instant query.
    fn query(&self, promql: &str) -> serde_json::Value {
        let body = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Waits until `promql` has exactly one series, and returns its value.
    fn wait_for_value(&self, promql: &str) -> f64 {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let answer = TcpStream::connect(self.addr)
                .ok()
                .map(|_| self.query(promql));
            if let Some(result) = answer.as_ref().and_then(|a| a["data"]["result"].as_array()) {
                if let [series] = result.as_slice() {
                    let value = series["value"][1].as_str().expect("a sample value");
                    return value.parse().expect("a number");
                }
                assert!(
                    result.is_empty(),
                    "more than one series for {promql}: {result:?}"
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "Prometheus at {} had no sample of {promql} after {PROMETHEUS_WAIT:?}; \
                     last answer {answer:?}; its log:\n{}",
                    self.addr,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
