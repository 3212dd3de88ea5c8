//! The result table: one row per workload, one column per engine, ratios in the same run.

use std::fmt::Write as _;
use std::time::Duration;

/// Per-append latency of a concurrent run.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest append.
    pub max: Duration,
}

/// The extra columns of a concurrent-writers row, per engine (VarveDB, raw heed, SQLite, fjall,
/// PostgreSQL).
#[derive(Clone, Debug, Default)]
pub struct Concurrent {
    /// Per-append latency, retries included.
    pub latency: [Option<Latency>; 5],
    /// Conflicts the writers retried through.
    pub conflicts: [Option<u64>; 5],
    /// VarveDB's average commit group (committed batches per commit).
    pub group: Option<f64>,
}

/// The extra columns of a processor or subscription row (VarveDB only, its own table).
#[derive(Clone, Copy, Debug)]
pub enum Consumer {
    /// Catch-up throughput on a pre-filled store: events/s in `varvedb`, against `scan`, the
    /// events/s of VarveDB's full typed scan of the same store in the same run.
    Throughput {
        /// The baseline's events/s.
        scan: f64,
    },
    /// Delivery under a paced durable write load; `varvedb` holds the appends/s achieved.
    Live(Live),
}

/// What a live-delivery row measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live {
    /// Events appended during the run.
    pub appended: u64,
    /// Events the consumer received (should equal `appended`).
    pub delivered: u64,
    /// Append call to return, on the writer thread.
    pub append: Option<Latency>,
    /// Envelope timestamp to the append's return: the rest of the write transaction, its commit
    /// and fsync, publishing the head, waking the writer.
    pub durable: Option<Latency>,
    /// Envelope timestamp to the handler call (processor) or to `next()` returning
    /// (subscription).
    pub delivery: Option<Latency>,
    /// The append's return to the event's delivery, 0 when the consumer got it first.
    pub after_return: Option<Latency>,
}

/// One measured workload: events/s of each engine that ran it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// What was measured, shape included.
    pub name: String,
    /// VarveDB through its public API.
    pub varvedb: Option<f64>,
    /// Raw heed doing the same LMDB work.
    pub heed: Option<f64>,
    /// SQLite doing the same rows.
    pub sqlite: Option<f64>,
    /// fjall doing the same key-value writes as raw heed.
    pub fjall: Option<f64>,
    /// PostgreSQL doing the same rows as SQLite.
    pub postgres: Option<f64>,
    /// Set on concurrent-writers rows, which go to their own table.
    pub concurrent: Option<Concurrent>,
    /// Set on processor and subscription rows, which go to their own tables.
    pub consumer: Option<Consumer>,
}

impl Workload {
    /// A row with no measurement yet.
    pub fn new(name: impl Into<String>) -> Self {
        Workload {
            name: name.into(),
            varvedb: None,
            heed: None,
            sqlite: None,
            fjall: None,
            postgres: None,
            concurrent: None,
            consumer: None,
        }
    }

    /// Makes this a processor or subscription row with these extra columns.
    pub fn consumer(mut self, extra: Consumer) -> Self {
        self.consumer = Some(extra);
        self
    }

    /// Makes this a concurrent-writers row with these extra columns.
    pub fn concurrent(mut self, extra: Concurrent) -> Self {
        self.concurrent = Some(extra);
        self
    }

    /// Sets VarveDB's events/s.
    pub fn varvedb(mut self, rate: f64) -> Self {
        self.varvedb = Some(rate);
        self
    }

    /// Sets raw heed's events/s.
    pub fn heed(mut self, rate: f64) -> Self {
        self.heed = Some(rate);
        self
    }

    /// Sets SQLite's events/s, when SQLite ran.
    pub fn sqlite(mut self, rate: Option<f64>) -> Self {
        self.sqlite = rate;
        self
    }

    /// Sets fjall's events/s, when fjall ran.
    pub fn fjall(mut self, rate: Option<f64>) -> Self {
        self.fjall = rate;
        self
    }

    /// Sets PostgreSQL's events/s, when PostgreSQL ran.
    pub fn postgres(mut self, rate: Option<f64>) -> Self {
        self.postgres = rate;
        self
    }

    /// VarveDB / raw heed.
    pub fn vs_heed(&self) -> Option<f64> {
        self.vs(self.heed)
    }

    /// VarveDB / SQLite.
    pub fn vs_sqlite(&self) -> Option<f64> {
        self.vs(self.sqlite)
    }

    /// VarveDB / a peer's rate.
    pub fn vs(&self, peer: Option<f64>) -> Option<f64> {
        Some(self.varvedb? / peer?)
    }

    /// The rates of the engines past SQLite (fjall, PostgreSQL), with their names.
    fn peers(&self) -> [(&'static str, Option<f64>); 2] {
        [("fjall", self.fjall), ("PostgreSQL", self.postgres)]
    }
}

/// Whether any of `rows` has a rate for fjall, and for PostgreSQL: their columns are shown only
/// then.
fn peer_columns(rows: &[&Workload]) -> [bool; 2] {
    [0, 1].map(|i| rows.iter().any(|r| r.peers()[i].1.is_some()))
}

/// The table and the notes printed under it.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Workload>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a row, echoing it to stderr as progress.
    pub fn add(&mut self, row: Workload) {
        eprintln!(
            "  {}: varvedb {} | heed {} | sqlite {} | fjall {} | postgres {}",
            row.name,
            rate(row.varvedb),
            rate(row.heed),
            rate(row.sqlite),
            rate(row.fjall),
            rate(row.postgres)
        );
        self.rows.push(row);
    }

    /// Adds a line under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The first row whose name starts with `prefix`.
    pub fn rows_starting(&self, prefix: &str) -> Option<&Workload> {
        self.rows.iter().find(|r| r.name.starts_with(prefix))
    }

    /// The tables as markdown (single-threaded rows, concurrent-writers rows, processor
    /// throughput rows, live-delivery rows), notes as a list below them.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (consumers, engines): (Vec<&Workload>, Vec<&Workload>) =
            self.rows.iter().partition(|r| r.consumer.is_some());
        let (concurrent, plain): (Vec<&Workload>, Vec<&Workload>) =
            engines.into_iter().partition(|r| r.concurrent.is_some());
        if !plain.is_empty() {
            let shown = peer_columns(&plain);
            out.push_str("| workload | VarveDB ev/s | raw heed ev/s | VarveDB / heed | SQLite ev/s | VarveDB / SQLite |");
            peer_headers(&mut out, 6, shown, "ev/s", "");
            for row in plain {
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    row.name,
                    rate(row.varvedb),
                    rate(row.heed),
                    ratio(row.vs_heed()),
                    rate(row.sqlite),
                    ratio(row.vs_sqlite()),
                );
                peer_cells(&mut out, row, shown, None);
            }
        }
        if !concurrent.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            let shown = peer_columns(&concurrent);
            out.push_str("| concurrent durable writers | VarveDB appends/s | raw heed appends/s | VarveDB / heed | SQLite appends/s | VarveDB / SQLite | VarveDB latency p50 / p99 (max), ms | raw heed latency | SQLite latency | VarveDB batches per commit | conflicts VarveDB / heed / SQLite");
            let peer_names: Vec<&str> = ["fjall", "PostgreSQL"]
                .into_iter()
                .zip(shown)
                .filter_map(|(name, shown)| shown.then_some(name))
                .collect();
            for name in &peer_names {
                let _ = write!(out, " / {name}");
            }
            out.push_str(" |");
            peer_headers(&mut out, 11, shown, "appends/s", " latency");
            for row in concurrent {
                let extra = row.concurrent.clone().unwrap_or_default();
                let [lv, lh, ls, lf, lp] = extra.latency.map(latency);
                let conflicts: Vec<String> = extra
                    .conflicts
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i < 3 || shown[i - 3])
                    .map(|(_, c)| c.map_or_else(|| "–".into(), |c| c.to_string()))
                    .collect();
                let conflicts = conflicts.join(" / ");
                let group = extra
                    .group
                    .map_or_else(|| "–".into(), |g| format!("{g:.1}"));
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {lv} | {lh} | {ls} | {group} | {conflicts} |",
                    row.name,
                    rate(row.varvedb),
                    rate(row.heed),
                    ratio(row.vs_heed()),
                    rate(row.sqlite),
                    ratio(row.vs_sqlite()),
                );
                peer_cells(&mut out, row, shown, Some([lf, lp]));
            }
        }
        let throughput: Vec<(&Workload, f64)> = consumers
            .iter()
            .filter_map(|r| match r.consumer {
                Some(Consumer::Throughput { scan }) => Some((*r, scan)),
                _ => None,
            })
            .collect();
        if !throughput.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str("| processors and subscriptions, catch-up (VarveDB only) | VarveDB ev/s | ÷ VarveDB full typed scan |\n");
            out.push_str("|---|---:|---:|\n");
            for (row, scan) in throughput {
                let vs_scan = row.varvedb.filter(|_| scan > 0.0).map(|v| v / scan);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    row.name,
                    rate(row.varvedb),
                    ratio(vs_scan)
                );
            }
        }
        let live: Vec<(&Workload, Live)> = consumers
            .iter()
            .filter_map(|r| match r.consumer {
                Some(Consumer::Live(l)) => Some((*r, l)),
                _ => None,
            })
            .collect();
        if !live.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str("| live delivery under a durable write load (VarveDB only) | appends/s achieved | append call → return p50 / p99 (max), ms | commit timestamp → append returned | commit timestamp → delivered | append returned → delivered | delivered / appended |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
            for (row, l) in live {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} / {} |",
                    row.name,
                    rate(row.varvedb),
                    latency(l.append),
                    latency(l.durable),
                    latency(l.delivery),
                    latency(l.after_return),
                    l.delivered,
                    l.appended,
                );
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// Ends a table's header row of `columns` columns with the columns of the peers in `shown` (rate,
/// ratio to VarveDB, and a latency column when `latency` names one), then writes the separator
/// row.
fn peer_headers(out: &mut String, mut columns: usize, shown: [bool; 2], unit: &str, latency: &str) {
    for (name, shown) in ["fjall", "PostgreSQL"].into_iter().zip(shown) {
        if shown {
            let _ = write!(out, " {name} {unit} | VarveDB / {name} |");
            columns += 2;
            if !latency.is_empty() {
                let _ = write!(out, " {name}{latency} |");
                columns += 1;
            }
        }
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(columns.saturating_sub(1)));
    out.push('\n');
}

/// Ends a row with the cells of the peers in `shown` (and their latencies, when given).
fn peer_cells(out: &mut String, row: &Workload, shown: [bool; 2], latency: Option<[String; 2]>) {
    for (i, (_, peer)) in row.peers().into_iter().enumerate() {
        if shown[i] {
            let _ = write!(out, " {} | {} |", rate(peer), ratio(row.vs(peer)));
            if let Some(latency) = &latency {
                let _ = write!(out, " {} |", latency[i]);
            }
        }
    }
    out.push('\n');
}

/// Events/s with a unit: `1.23 M`, `86.4 k`, `950`; `–` when not measured.
pub fn rate(value: Option<f64>) -> String {
    match value {
        None => "–".into(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e5 => format!("{:.0} k", v / 1e3),
        Some(v) if v >= 1e3 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

/// `p50 / p99 (max)` in milliseconds; `–` when not measured.
pub fn latency(value: Option<Latency>) -> String {
    let ms = |d: Duration| {
        let ms = d.as_secs_f64() * 1e3;
        if ms < 10.0 {
            format!("{ms:.2}")
        } else {
            format!("{ms:.0}")
        }
    };
    value.map_or_else(
        || "–".into(),
        |l| format!("{} / {} ({})", ms(l.p50), ms(l.p99), ms(l.max)),
    )
}

/// A ratio such as `0.85×`; `–` when either side is missing.
pub fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rates_and_ratios() {
        let mut report = Report::default();
        report.add(Workload::new("w").varvedb(2e6).heed(4e6).sqlite(None));
        let table = report.render();
        assert!(
            table.contains("| w | 2.00 M | 4.00 M | 0.50× | – | – |"),
            "{table}"
        );
        assert_eq!(rate(Some(86_400.0)), "86.4 k");

        let lat = Latency {
            p50: Duration::from_micros(420),
            p99: Duration::from_millis(12),
            max: Duration::from_millis(3),
        };
        report.add(
            Workload::new("c")
                .varvedb(100.0)
                .heed(50.0)
                .concurrent(Concurrent {
                    latency: [Some(lat), None, None, None, None],
                    conflicts: [Some(3), Some(0), None, None, None],
                    group: Some(31.96),
                }),
        );
        let table = report.render();
        assert!(
            table.contains(
                "| c | 100 | 50 | 2.00× | – | – | 0.42 / 12 (3.00) | – | – | 32.0 | 3 / 0 / – |"
            ),
            "{table}"
        );
        assert_eq!(rate(Some(386_400.0)), "386 k");

        report.add(
            Workload::new("p")
                .varvedb(1e6)
                .consumer(Consumer::Throughput { scan: 4e6 }),
        );
        report.add(
            Workload::new("l")
                .varvedb(998.0)
                .consumer(Consumer::Live(Live {
                    appended: 10,
                    delivered: 10,
                    delivery: Some(lat),
                    ..Live::default()
                })),
        );
        let table = report.render();
        assert!(table.contains("| p | 1.00 M | 0.25× |"), "{table}");
        assert!(
            table.contains("| l | 998 | – | – | 0.42 / 12 (3.00) | – | 10 / 10 |"),
            "{table}"
        );
        assert!(!table.contains("| p | 1.00 M | – |"), "{table}");

        let mut peers = Report::default();
        peers.add(
            Workload::new("q")
                .varvedb(300.0)
                .heed(100.0)
                .sqlite(Some(600.0))
                .fjall(Some(150.0))
                .postgres(None),
        );
        let table = peers.render();
        assert!(
            table.contains("| workload | VarveDB ev/s | raw heed ev/s | VarveDB / heed | SQLite ev/s | VarveDB / SQLite | fjall ev/s | VarveDB / fjall |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"),
            "{table}"
        );
        assert!(
            table.contains("| q | 300 | 100 | 3.00× | 600 | 0.50× | 150 | 2.00× |\n"),
            "{table}"
        );
    }
}
