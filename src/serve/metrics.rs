//! `GET /metrics`: the Prometheus text exposition of the bridge, the runs and the server.
//!
//! [`Metrics::install`] installs the Prometheus recorder for the process and turns on
//! the client's per-call metrics ([`crate::client::metrics`]). The rest is read at
//! scrape time: the server fills a [`Snapshot`] (client counters and workers, runs and
//! trials by state, the MLflow outbox, SSE clients) and [`Metrics::render`] sets the
//! gauges from it and renders everything recorded. The server counts its requests
//! with [`record_http_request`].

use crate::client::metrics::{self as calls, CALLS_TOTAL, CALL_DURATION_SECONDS};
use crate::client::ClientStats;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::store::{OutboxCounts, StoreCounts};
use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often recorded histogram samples are folded into their buckets when nobody
/// scrapes (each scrape folds them too); until then each sample holds memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Retries of failed attempts (counter, label `mode`).
pub const RETRIES_TOTAL: &str = "cerebros_bridge_retries_total";
/// Calls answered from the result cache (counter, label `mode`).
pub const CACHE_HITS_TOTAL: &str = "cerebros_bridge_cache_hits_total";
/// Cacheable calls that missed the cache (counter, label `mode`).
pub const CACHE_MISSES_TOTAL: &str = "cerebros_bridge_cache_misses_total";
/// Configured workers (gauge, label `mode`).
pub const WORKERS: &str = "cerebros_bridge_workers";
/// Workers running and able to take calls (gauge, label `mode`).
pub const WORKERS_ALIVE: &str = "cerebros_bridge_workers_alive";
/// Retired workers still stuck in the call that cost them their slot (gauge, label `mode`).
pub const WORKERS_STUCK: &str = "cerebros_bridge_workers_stuck";
/// Workers retired because a cancelled call did not stop in time (counter, label `mode`).
pub const WORKERS_RETIRED_TOTAL: &str = "cerebros_bridge_workers_retired_total";
/// Workers that died and were replaced (counter, label `mode`).
pub const WORKERS_REPLACED_TOTAL: &str = "cerebros_bridge_workers_replaced_total";
/// Calls waiting for a worker (gauge, label `mode`).
pub const QUEUED_CALLS: &str = "cerebros_bridge_queued_calls";
/// Runs in the store by state (gauge, label `status`).
pub const RUNS: &str = "cerebros_runs";
/// Trials in the store by state (gauge, label `status`).
pub const TRIALS: &str = "cerebros_trials";
/// MLflow outbox items by state (gauge, label `status`: pending, synced, failed).
pub const OUTBOX_ITEMS: &str = "cerebros_mlflow_outbox_items";
/// Connected Server-Sent-Events clients (gauge).
pub const SSE_CLIENTS: &str = "cerebros_sse_clients";
/// HTTP requests answered (counter, labels `route` and `status`).
pub const HTTP_REQUESTS_TOTAL: &str = "cerebros_http_requests_total";

/// What the server reads at scrape time for [`Metrics::render`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The client's counters and workers ([`crate::Client::stats`]).
    pub client: ClientStats,
    /// Runs and trials by state ([`crate::nas::store::Store::counts`]).
    pub store: StoreCounts,
    /// The MLflow outbox ([`crate::nas::store::Store::outbox_counts`]).
    pub outbox: OutboxCounts,
    /// Connected SSE clients.
    pub sse_clients: usize,
}

/// The process's Prometheus recorder (see the module doc).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the Prometheus recorder (once per process: later calls return the same
    /// one), describes every metric family and enables the client's per-call metrics.
    /// Fails when another `metrics` recorder was installed first.
    pub fn install() -> Result<Metrics> {
        static INSTALLED: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();
        let handle = INSTALLED.get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(CALL_DURATION_SECONDS.into()),
                    &calls::CALL_DURATION_BUCKETS,
                )
                .and_then(|builder| builder.install_recorder())
                .map_err(|e| e.to_string())?;
            describe();
            start_upkeep(handle.clone());
            calls::enable();
            Ok(handle)
        });
        match handle {
            Ok(handle) => Ok(Metrics {
                handle: handle.clone(),
            }),
            Err(e) => Err(BridgeError::new(
                ErrorClass::SystemError,
                format!("cannot install the Prometheus recorder: {e}"),
            )),
        }
    }

    /// Sets the gauges (and the counters kept elsewhere) from `snapshot`, then renders
    /// every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self, snapshot: &Snapshot) -> String {
        record_snapshot(snapshot);
        self.handle.render()
    }
}

/// Counts one answered HTTP request. `route` is the router's route template (such as
/// `/api/runs/{id}`), never the raw path, so the label set stays bounded.
pub fn record_http_request(route: &str, status: u16) {
    if calls::is_enabled() {
        counter!(HTTP_REQUESTS_TOTAL, "route" => route.to_owned(), "status" => status.to_string())
            .increment(1);
    }
}

fn record_snapshot(snapshot: &Snapshot) {
    let client = &snapshot.client;
    let mode = client.mode;
    counter!(RETRIES_TOTAL, "mode" => mode).absolute(client.retries);
    counter!(CACHE_HITS_TOTAL, "mode" => mode).absolute(client.cache_hits);
    counter!(CACHE_MISSES_TOTAL, "mode" => mode).absolute(client.cache_misses);
    let workers = &client.workers;
    gauge!(WORKERS, "mode" => mode).set(workers.workers as f64);
    gauge!(WORKERS_ALIVE, "mode" => mode).set(workers.workers_alive as f64);
    gauge!(WORKERS_STUCK, "mode" => mode).set(workers.workers_stuck as f64);
    counter!(WORKERS_RETIRED_TOTAL, "mode" => mode).absolute(workers.workers_retired);
    counter!(WORKERS_REPLACED_TOTAL, "mode" => mode).absolute(workers.workers_replaced);
    gauge!(QUEUED_CALLS, "mode" => mode).set(workers.queued as f64);
    for (state, n) in &snapshot.store.runs {
        gauge!(RUNS, "status" => state.as_str()).set(*n as f64);
    }
    for (state, n) in &snapshot.store.trials {
        gauge!(TRIALS, "status" => state.as_str()).set(*n as f64);
    }
    let outbox = &snapshot.outbox;
    for (status, n) in [
        ("pending", outbox.pending),
        ("synced", outbox.synced),
        ("failed", outbox.failed),
    ] {
        gauge!(OUTBOX_ITEMS, "status" => status).set(n as f64);
    }
    gauge!(SSE_CLIENTS).set(snapshot.sse_clients as f64);
}

/// The `# HELP` text of every family.
fn describe() {
    describe_counter!(
        CALLS_TOTAL,
        "Bridge calls (cache hits included) by op, mode and outcome: ok or the error class"
    );
    describe_histogram!(
        CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of bridge calls (all attempts and backoff) by op and mode"
    );
    describe_counter!(RETRIES_TOTAL, "Retries of failed attempts");
    describe_counter!(CACHE_HITS_TOTAL, "Calls answered from the result cache");
    describe_counter!(CACHE_MISSES_TOTAL, "Cacheable calls that missed the cache");
    describe_gauge!(WORKERS, "Configured bridge workers");
    describe_gauge!(
        WORKERS_ALIVE,
        "Bridge workers running and able to take calls"
    );
    describe_gauge!(
        WORKERS_STUCK,
        "Retired workers still stuck in the call that cost them their slot"
    );
    describe_counter!(
        WORKERS_RETIRED_TOTAL,
        "Workers retired because a cancelled call did not stop in time"
    );
    describe_counter!(
        WORKERS_REPLACED_TOTAL,
        "Workers that died and were replaced"
    );
    describe_gauge!(QUEUED_CALLS, "Calls waiting for a worker");
    describe_gauge!(RUNS, "Runs in the store by status");
    describe_gauge!(TRIALS, "Trials in the store by status");
    describe_gauge!(OUTBOX_ITEMS, "MLflow outbox items by status");
    describe_gauge!(SSE_CLIENTS, "Connected Server-Sent-Events clients");
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered by route and status"
    );
}

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`], on a thread of
/// its own for the life of the process (like the recorder itself).
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("cerebros-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!("no metrics upkeep thread ({e}): histogram samples wait for scrapes");
    }
}
