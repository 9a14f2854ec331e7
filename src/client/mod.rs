//! The client: what hosts call. It checks payloads, validates contracts, serves
//! cached results, retries retryable failures with backoff, emits telemetry (and
//! metrics, once a host enables them) and hands each attempt to the [`Invoker`] of the
//! configured mode.

pub mod cache;
pub mod metrics;
pub mod retry;
pub mod telemetry;

use crate::core::config::{Config, Mode, MAX_TIMEOUT_MS};
use crate::core::contracts::{
    ContractV1, RunFinalizedV1, RunStartedV1, TrialReportedV1, TrialRequestedV1,
};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::invoker::PoolStats;
use crate::core::invoker::{Invoker, Request};
use crate::core::payload;
use crate::inprocess::invoker::InProcessInvoker;
use crate::inprocess::pool::PoolOptions;
use cache::{CacheStats, ResultCache};
use retry::RetryPolicy;
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Per-call settings that override the client's defaults.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline of each attempt (default `invoke.default_timeout_ms`).
    pub timeout: Option<Duration>,
    /// Cache the result under this key (generic ops are cached only with a key).
    pub cache_key: Option<String>,
    /// Extra attempts (default `invoke.max_retries`).
    pub max_retries: Option<u32>,
}

/// Counters and worker state, as `stats()` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStats {
    /// The execution mode.
    pub mode: &'static str,
    /// Calls made through the client (cache hits included).
    pub calls: u64,
    /// Failed calls (after retries), by error class.
    pub errors: BTreeMap<&'static str, u64>,
    /// Retries made.
    pub retries: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Cacheable calls that missed the cache.
    pub cache_misses: u64,
    /// The cache's own counters.
    pub cache: CacheStats,
    /// Workers: configured, alive, retired, stuck, replaced.
    #[serde(flatten)]
    pub workers: PoolStats,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    retries: AtomicU64,
    errors: [AtomicU64; ErrorClass::ALL.len()],
}

/// The bridge client.
///
/// ```
/// use cerebros_bridge::{Client, Config};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = Client::start(&Config::load(None)?)?;
/// let health = client.health().await?;
/// assert_eq!(health["status"], "ok");
/// let echoed = client.call("echo", serde_json::json!({"run_id": "r1"})).await?;
/// assert_eq!(echoed["run_id"], "r1");
/// # Ok::<(), cerebros_bridge::BridgeError>(())
/// # }).unwrap();
/// ```
pub struct Client {
    invoker: Arc<dyn Invoker>,
    cache: ResultCache,
    retry: RetryPolicy,
    default_timeout: Duration,
    max_payload_bytes: usize,
    counters: Counters,
}

impl Client {
    /// Starts the invoker of `config.mode` and builds a client over it.
    pub fn start(config: &Config) -> Result<Client> {
        if !config.enabled {
            return Err(BridgeError::new(
                ErrorClass::Dependency,
                "the bridge is disabled (enabled = false or CEREBROS_ENABLED=false)",
            ));
        }
        let invoker: Arc<dyn Invoker> = match config.mode {
            Mode::InProcess => Arc::new(InProcessInvoker::start(pool_options(config))?),
            Mode::WorkerProcess => Arc::new(crate::process::WorkerProcessInvoker::start(
                crate::process::ProcessOptions::from_config(config),
            )?),
            Mode::Subprocess => Arc::new(crate::process::SubprocessInvoker::start(
                crate::process::ProcessOptions::from_config(config),
            )?),
        };
        Ok(Client::with_invoker(invoker, config))
    }

    /// A client over an invoker that is already running.
    pub fn with_invoker(invoker: Arc<dyn Invoker>, config: &Config) -> Client {
        let cache = if config.cache.enabled {
            ResultCache::new(
                config.cache.max_entries,
                Duration::from_millis(config.cache.ttl_ms),
            )
        } else {
            ResultCache::disabled()
        };
        Client {
            invoker,
            cache,
            retry: RetryPolicy {
                max_retries: config.invoke.max_retries,
                backoff: Duration::from_millis(config.invoke.retry_backoff_ms),
                retry_on: config.invoke.retry_on.clone(),
            },
            default_timeout: Duration::from_millis(config.invoke.default_timeout_ms),
            max_payload_bytes: config.invoke.max_payload_bytes,
            counters: Counters::default(),
        }
    }

    /// The retry policy of failed calls (`invoke.max_retries`, `retry_on`, backoff).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The invoker behind this client.
    pub fn invoker(&self) -> &Arc<dyn Invoker> {
        &self.invoker
    }

    /// Calls `op` with `payload`, with the default timeout and retries. Payloads of
    /// the contract ops (`start_run`, `run_trial`, `record_trial`, `finalize_run`) are
    /// validated against their contract and their results cached by the seed's keys.
    pub async fn call(&self, op: &str, payload: Value) -> Result<Value> {
        self.call_with(op, payload, CallOptions::default()).await
    }

    /// [`Client::call`] with per-call options.
    pub async fn call_with(&self, op: &str, payload: Value, options: CallOptions) -> Result<Value> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let started = metrics::call_started();
        let outcome = self.call_counted(op, payload, options).await;
        let failure = outcome.as_ref().err().map(|err| err.class);
        if let Some(class) = failure {
            self.counters.errors[class_index(class)].fetch_add(1, Ordering::Relaxed);
        }
        metrics::record_call(started, op, self.invoker.mode().as_str(), failure);
        outcome
    }

    async fn call_counted(&self, op: &str, payload: Value, options: CallOptions) -> Result<Value> {
        // An explicit key names the result: a hit needs no look at the payload.
        if let Some(hit) = options.cache_key.as_deref().and_then(|k| self.cache.hit(k)) {
            return Ok(Arc::unwrap_or_clone(hit));
        }
        let payload = Arc::new(payload);
        let context = |err: BridgeError| {
            let run_id = payload.get("run_id").and_then(Value::as_str);
            err.with_op(op).with_run_id(run_id.map(str::to_owned))
        };
        payload::check_value(&payload, self.max_payload_bytes).map_err(context)?;
        let contract_key = contract_cache_key(op, &payload).map_err(context)?;
        let key = options.cache_key.clone().or(contract_key);
        let span = telemetry::invoke_span(op, &payload, self.invoker.mode().as_str());
        let attempts = self.attempts(op, payload.clone(), &options);
        match key {
            Some(key) if self.cache.is_enabled() => {
                // Joining an identical call in flight, this caller still waits at most
                // its own deadline.
                let limit = options.timeout.unwrap_or(self.default_timeout);
                let value = self
                    .cache
                    .get_or_compute_within(key, limit, || attempts)
                    .instrument(span)
                    .await;
                value.map(Arc::unwrap_or_clone).map_err(context)
            }
            _ => attempts.instrument(span).await.map_err(context),
        }
    }

    /// Runs attempts until one succeeds, the error is not retryable, or retries run out.
    async fn attempts(
        &self,
        op: &str,
        payload: Arc<Value>,
        options: &CallOptions,
    ) -> Result<Value> {
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        check_timeout(timeout)?;
        let max_retries = options.max_retries.unwrap_or(self.retry.max_retries);
        // This runs inside the call's invoke span (see `call_counted`).
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        let began = Instant::now();
        let mut attempt = 1;
        loop {
            telemetry::start(attempt, &payload);
            let started = Instant::now();
            let request = Request {
                op: op.to_owned(),
                payload: payload.clone(),
                timeout,
                traceparent: traceparent.clone(),
            };
            match self.invoker.invoke(request).await {
                Ok(value) => {
                    telemetry::stop(attempt, started.elapsed(), &value);
                    telemetry::finish(attempt, began.elapsed(), None);
                    return Ok(value);
                }
                Err(err) => {
                    let err = err.with_attempt(attempt);
                    let retrying = attempt <= max_retries && self.retry.retries(err.class);
                    telemetry::exception(attempt, started.elapsed(), &err, retrying);
                    if !retrying {
                        telemetry::finish(attempt, began.elapsed(), Some(&err));
                        return Err(err);
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// [`Client::call`] for hosts without an async runtime: blocks the current thread
    /// (which must not be an async runtime's thread).
    ///
    /// ```
    /// # use cerebros_bridge::{client::Client, core::config::Config};
    /// let client = Client::start(&Config::default())?;
    /// let reply = client.call_blocking("echo", serde_json::json!({"n": 1}))?;
    /// assert_eq!(reply["n"], 1);
    /// # Ok::<(), cerebros_bridge::BridgeError>(())
    /// ```
    pub fn call_blocking(&self, op: &str, payload: Value) -> Result<Value> {
        self.call_blocking_with(op, payload, CallOptions::default())
    }

    /// [`Client::call_with`] for hosts without an async runtime.
    pub fn call_blocking_with(
        &self,
        op: &str,
        payload: Value,
        options: CallOptions,
    ) -> Result<Value> {
        block_on(self.call_with(op, payload, options))
    }

    /// The service's `health` report.
    pub async fn health(&self) -> Result<Value> {
        self.call("health", Value::Object(Default::default())).await
    }

    /// `start_run`, cached by (run_id, pulse_id).
    pub async fn start_run(&self, contract: &RunStartedV1) -> Result<Value> {
        self.call("start_run", contract.to_value()).await
    }

    /// `run_trial`: trains one trial and returns its report (never cached).
    pub async fn run_trial(&self, contract: &TrialRequestedV1) -> Result<TrialReportedV1> {
        self.run_trial_with(contract, CallOptions::default()).await
    }

    /// [`Client::run_trial`] with per-call options (a trial's own timeout).
    pub async fn run_trial_with(
        &self,
        contract: &TrialRequestedV1,
        options: CallOptions,
    ) -> Result<TrialReportedV1> {
        let reply = self
            .call_with("run_trial", contract.to_value(), options)
            .await?;
        TrialReportedV1::from_value(&reply).map_err(|err| {
            BridgeError::new(
                ErrorClass::ParseError,
                format!("run_trial returned an invalid report: {}", err.message),
            )
            .with_op("run_trial")
            .with_run_id(Some(contract.run_id.clone()))
            .with_source(err)
        })
    }

    /// `record_trial`, cached by (run_id, trial_id, status).
    pub async fn record_trial(&self, contract: &TrialReportedV1) -> Result<Value> {
        self.call("record_trial", contract.to_value()).await
    }

    /// `finalize_run`, cached by (run_id, status).
    pub async fn finalize_run(&self, contract: &RunFinalizedV1) -> Result<Value> {
        self.call("finalize_run", contract.to_value()).await
    }

    /// Counters, cache figures and worker state.
    pub fn stats(&self) -> ClientStats {
        let cache = self.cache.stats();
        ClientStats {
            mode: self.invoker.mode().as_str(),
            calls: self.counters.calls.load(Ordering::Relaxed),
            errors: ErrorClass::ALL
                .iter()
                .map(|c| {
                    (
                        c.as_str(),
                        self.counters.errors[class_index(*c)].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            retries: self.counters.retries.load(Ordering::Relaxed),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache,
            workers: self.invoker.stats(),
        }
    }

    /// Drops every cached result.
    pub fn purge_cache(&self) {
        self.cache.purge();
    }

    /// Stops the invoker, waiting at most `grace` for running calls.
    pub fn shutdown(&self, grace: Duration) -> usize {
        self.invoker.shutdown(grace)
    }
}

/// The pool settings of a configuration.
pub fn pool_options(config: &Config) -> PoolOptions {
    PoolOptions {
        size: config.invoke.pool_size,
        queue_capacity: config.invoke.queue_capacity,
        cancel_grace: Duration::from_millis(config.invoke.cancel_grace_ms),
        module: config.module.clone(),
        repo_path: config.repo_path.clone(),
        python_executable: config.python_executable.clone(),
        spin: true,
        start_timeout: Duration::from_millis(config.invoke.start_timeout_ms),
        nice: config.invoke.worker_nice,
    }
}

/// A call's deadline is at most [`MAX_TIMEOUT_MS`] away (a later one would overflow
/// the clock's arithmetic).
fn check_timeout(timeout: Duration) -> Result<()> {
    if timeout <= Duration::from_millis(MAX_TIMEOUT_MS) {
        return Ok(());
    }
    Err(BridgeError::new(
        ErrorClass::Contract,
        format!(
            "a timeout of {} ms is over the limit of {MAX_TIMEOUT_MS} ms (24 h)",
            timeout.as_millis()
        ),
    ))
}

fn class_index(class: ErrorClass) -> usize {
    ErrorClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(0)
}

/// Validates the payload of a contract op and returns its cache key (DESIGN §2);
/// `None` for generic ops and for `run_trial`, which is never cached.
fn contract_cache_key(op: &str, payload: &Value) -> Result<Option<String>> {
    Ok(match op {
        "start_run" => {
            let c = RunStartedV1::from_value(payload)?;
            Some(format!(
                "start_run|{}|{}",
                c.run_id,
                c.pulse_id.unwrap_or_default()
            ))
        }
        "run_trial" => {
            TrialRequestedV1::from_value(payload)?;
            None
        }
        "record_trial" => {
            let c = TrialReportedV1::from_value(payload)?;
            Some(format!(
                "record_trial|{}|{}|{}",
                c.run_id,
                c.trial_id,
                c.status.as_str()
            ))
        }
        "finalize_run" => {
            let c = RunFinalizedV1::from_value(payload)?;
            Some(format!("finalize_run|{}|{}", c.run_id, c.status.as_str()))
        }
        _ => None,
    })
}

/// Runs `future` to completion on this thread's own small runtime (one per thread that
/// uses the blocking API, created on first use).
fn block_on<F: std::future::Future<Output = Result<Value>>>(future: F) -> Result<Value> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(BridgeError::new(
            ErrorClass::SystemError,
            "call_blocking was called from an async runtime thread; use `call(..).await` there",
        ));
    }
    thread_local! {
        static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
    }
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| {
                    BridgeError::new(
                        ErrorClass::SystemError,
                        format!("cannot start a runtime for call_blocking: {e}"),
                    )
                    .with_source(e)
                })?;
            *slot = Some(runtime);
        }
        let runtime = slot.as_ref().expect("the runtime was just created");
        runtime.block_on(future)
    })
}
