//! Metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! VarveDB records what it does (appends, commits, reads, damaged records, map size, processor
//! lag, key cache use) with the `metrics` crate's facade and installs no recorder of its own: an
//! application that installs none pays next to nothing, and one that installs any `metrics`
//! recorder (Prometheus, StatsD, OpenTelemetry bridges, ...) gets them all. With the cargo feature
//! `prometheus`, `serve_prometheus` installs one and serves it over HTTP in one line.
//!
//! Every metric is named here as a constant and listed, with its type, labels and meaning, in
//! `docs/metrics.md`. Each carries a `path` label: the canonical directory of the store it
//! belongs to.
//!
//! # Where the numbers come from
//!
//! - Appends are recorded once per commit group (events, bytes, batches, commit latency, group
//!   size) and once per `append`/`append_batch` call (its latency, or its error by kind).
//! - Reads are counted in the read transaction and published when it ends, never per event.
//! - Values the store already keeps in counters of its own (map size and use, resizes,
//!   unaligned copies, key cache hits and misses, shredded streams, processor checkpoints and
//!   lag, the head) are published by [`refresh`], which `serve_prometheus` runs every second.
//!   With a recorder of your own, call [`refresh`] before each scrape or on a timer.
//!
//! Metric handles are registered with the recorder in force when a store first records
//! something, and registered again whenever another recorder is in force (a global one installed
//! later, or a thread's local one): installing the recorder after opening stores is fine.
//!
//! ```
//! use varvedb::{Storage, StorageConfig};
//! use varvedb::Writer;
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
//! pub struct Ping { pub n: u32 }
//!
//! # let dir = tempfile::tempdir()?;
//! // No recorder installed: recording is a no-op and nothing else changes.
//! let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() })?;
//! Writer::<Ping>::new(storage.clone()).append(1, 1, Ping { n: 1 })?;
//! varvedb::metrics::refresh();
//! assert_eq!(varvedb::metrics::APPENDED_EVENTS, "varvedb_appended_events_total");
//! # Ok::<(), varvedb::error::Error>(())
//! ```

pub(crate) mod handles;
mod names;

pub use names::*;

/// Publishes the values that every open store of this process keeps in counters of its own:
/// the head, map size and use, map resizes, unaligned copies, key cache hits and misses,
/// shredded streams, and every processor's committed checkpoint and lag.
/// `serve_prometheus` (feature `prometheus`) calls it every second; with a recorder of your own,
/// call it before each scrape or on a timer. It opens one short read transaction per store.
pub fn refresh() {
    for storage in crate::store::open_stores() {
        storage.publish_metrics();
    }
}

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use prometheus::{serve_prometheus, BuildError, PrometheusHandle};

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    /// Bucket bounds of the `_seconds` histograms: 10 µs to 10 s.
    const SECONDS_BUCKETS: &[f64] = &[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
    /// Bucket bounds of the commit group size histogram.
    const GROUP_BUCKETS: &[f64] = &[
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];

    /// Installs a Prometheus recorder as the global `metrics` recorder and serves it over HTTP
    /// at `addr` (any path, for example `http://127.0.0.1:9898/metrics`), in Prometheus text
    /// format, from a thread of its own. Also starts a thread that calls
    /// [`refresh`](super::refresh) every second. Histograms are exported with buckets (10 µs to
    /// 10 s for durations). Returns a handle that renders the same text in-process.
    ///
    /// Needs the cargo feature `prometheus`. Call it once per process: the global recorder can
    /// be set only once.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `addr` cannot be bound, a global recorder is already installed, or the
    /// exporter's runtime or threads cannot be started.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// varvedb::metrics::serve_prometheus("127.0.0.1:9898".parse()?)?;
    /// # Ok(()) }
    /// ```
    pub fn serve_prometheus(addr: SocketAddr) -> Result<PrometheusHandle, BuildError> {
        let builder = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(super::COMMIT_GROUP_BATCHES.into()),
                GROUP_BUCKETS,
            )?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        let (recorder, exporter) = {
            let _entered = runtime.enter();
            builder.build()?
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)?;
        super::describe();
        std::thread::Builder::new()
            .name("varvedb-metrics-http".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(exporter) {
                    tracing::error!(error = ?e, "the Prometheus HTTP listener stopped");
                }
            })
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        std::thread::Builder::new()
            .name("varvedb-metrics-refresh".into())
            .spawn(|| loop {
                super::refresh();
                std::thread::sleep(Duration::from_secs(1));
            })
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        Ok(handle)
    }
}
