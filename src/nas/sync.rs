//! MLflow sync (DESIGN §5): drains the store's MLflow outbox into an MLflow tracking
//! server or database. MLflow is a *view* of the store, never a point of failure: items
//! are enqueued in the transactions that record trials and end runs, and synced here, off
//! the trial path, by calling the `sync_mlflow` op of `cerebros_service` through a bridge
//! client of its own (one worker, so a sync never takes a trial's worker).
//!
//! * [`MlflowSync::flush`] syncs the pending items once, oldest first; an outage (the
//!   server is down, MLflow is missing) stops the pass at its first failure and leaves the
//!   rest pending. `cerebros-bridge mlflow sync` is one forced flush.
//! * [`SyncWorker`] runs flushes in the background while a run goes on: woken after each
//!   trial, retrying with backoff while MLflow is unreachable, and flushing once more when
//!   the run ends, for at most `mlflow.flush_timeout_ms` in all. It logs one warning when
//!   syncing starts failing and one when it recovers, never one per trial.
//!
//! **Transient or permanent** ([`is_permanent`]): an item that can never sync as it is
//! gets parked as `failed` with its reason and is not tried again (until it is recorded
//! again, or `mlflow sync --retry-failed`). That is only when its own content is refused:
//! its payload fails the bridge's payload check (over `invoke.max_payload_bytes`, nested
//! too deep), or MLflow refuses the request itself (`sync_mlflow` marks the error
//! `permanent`: MLflow's `INVALID_PARAMETER_VALUE`, `BAD_REQUEST`, `MALFORMED_REQUEST`).
//! Everything else may pass later and leaves the item pending: an outage, a timeout, a
//! crashed worker, a denied permission, an unknown exception (retried with backoff).
//!
//! Short timeouts keep a dead server from hanging anything: MLflow's own HTTP client gets
//! one try and a few seconds per request ([`HTTP_TIMEOUT_S`]; environment variables the
//! user set win), and each bridge call has its own deadline ([`CALL_TIMEOUT`]).

use crate::client::{CallOptions, Client};
use crate::core::config::{Config, Mode};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::payload;
use crate::nas::artifacts::{artifact_dir, run_folder};
use crate::nas::store::{now_ms, LeaseHolder, OutboxItem, OutboxKind, Store};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The op that syncs one item.
pub const SYNC_OP: &str = "sync_mlflow";
/// The module that provides [`SYNC_OP`]: the bridge's own service, whatever module the
/// runs themselves use.
pub const SYNC_MODULE: &str = "cerebros_service";
/// Deadline of one `sync_mlflow` call (the first one imports MLflow and may create its
/// database, which takes seconds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// MLflow's HTTP request timeout for the sync calls (`MLFLOW_HTTP_REQUEST_TIMEOUT`).
pub const HTTP_TIMEOUT_S: u64 = 5;
/// How long a flush holds the runs it leased before another syncer may take them.
const LEASE: Duration = Duration::from_secs(120);
/// Items leased per pass.
const BATCH: usize = 1000;
/// First and longest wait between attempts while MLflow is unreachable.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry delay of an item that failed on its own (a bad item, not an outage): doubles
/// per attempt from this, up to [`ITEM_RETRY_MAX`].
const ITEM_RETRY_START: Duration = Duration::from_secs(2);
const ITEM_RETRY_MAX: Duration = Duration::from_secs(300);
/// How often the background worker looks for due items when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Grace given to the sync client's worker when it stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Whether MLflow sync is on: `mlflow.tracking_uri = ""` or `"off"` turns it off (items
/// still queue in the outbox, so turning it on later syncs them).
pub fn enabled(config: &Config) -> bool {
    let uri = config.mlflow.tracking_uri.trim();
    !(uri.is_empty() || uri.eq_ignore_ascii_case("off"))
}

/// Where and how to sync, from a configuration and the store's file.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    tracking_uri: String,
    client_config: Config,
    flush_timeout: Duration,
}

impl SyncSettings {
    /// `mlflow.tracking_uri` (a relative sqlite path resolved against the folder of
    /// `store_file`), and a one-worker client configuration for [`SYNC_MODULE`].
    pub fn from_config(config: &Config, store_file: &Path) -> SyncSettings {
        let mut client_config = config.clone();
        if client_config.module != SYNC_MODULE {
            client_config.module = SYNC_MODULE.to_owned();
            client_config.repo_path = service_root(config);
            client_config.script_path = None;
        }
        // MLflow runs in a child process of its own: importing it and creating its
        // database take seconds of GIL time that would otherwise slow in-process trials.
        client_config.mode = Mode::WorkerProcess;
        client_config.invoke.pool_size = 1;
        client_config.invoke.max_retries = 0;
        client_config.invoke.default_timeout_ms = CALL_TIMEOUT.as_millis() as u64;
        client_config.cache.enabled = false;
        SyncSettings {
            tracking_uri: resolve_tracking_uri(&config.mlflow.tracking_uri, store_file),
            client_config,
            flush_timeout: Duration::from_millis(config.mlflow.flush_timeout_ms),
        }
    }

    /// The tracking URI items are synced to.
    pub fn tracking_uri(&self) -> &str {
        &self.tracking_uri
    }

    /// The configuration of the sync client.
    pub fn client_config(&self) -> &Config {
        &self.client_config
    }

    /// Asks `sync_mlflow` whether MLflow imports and the tracking URI answers, writing
    /// nothing (`validate`); returns its reply (`mlflow_version`, `detail`). Blocks: call
    /// it outside an async runtime.
    pub fn probe(&self, timeout: Duration) -> Result<Value> {
        let client = Client::start(&self.client_config)?;
        let options = CallOptions {
            timeout: Some(timeout),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        let payload =
            json!({"tracking_uri": self.tracking_uri, "probe": true, "http": http_settings()});
        let reply = client.call_blocking_with(SYNC_OP, payload, options);
        client.shutdown(SHUTDOWN_GRACE);
        reply
    }
}

/// Resolves a relative `sqlite:///PATH` against the folder of `store_file` (made
/// absolute); every other URI (absolute sqlite paths, `http(s)://`, `databricks`, …) is
/// returned as it is.
///
/// ```
/// use cerebros_bridge::nas::sync::resolve_tracking_uri;
/// use std::path::Path;
/// let store = Path::new("/data/runs/cerebros.db");
/// assert_eq!(resolve_tracking_uri("sqlite:///mlflow.db", store), "sqlite:////data/runs/mlflow.db");
/// assert_eq!(resolve_tracking_uri("sqlite:////x/m.db", store), "sqlite:////x/m.db");
/// assert_eq!(resolve_tracking_uri("http://127.0.0.1:5000", store), "http://127.0.0.1:5000");
/// ```
pub fn resolve_tracking_uri(uri: &str, store_file: &Path) -> String {
    let Some(rest) = uri.strip_prefix("sqlite:///") else {
        return uri.to_owned();
    };
    let (path, query) = match rest.find('?') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if path.is_empty() || path.starts_with('/') || path == ":memory:" {
        return uri.to_owned();
    }
    let folder = store_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    format!("sqlite:///{}{query}", folder.join(path).display())
}

/// The folder that holds the `cerebros_service` package for the sync client: the
/// configured `repo_path` when it does, else `python/` of the interpreter's project, of
/// the working directory or of this crate's sources; else `repo_path` (the package must
/// then be installed in the venv).
fn service_root(config: &Config) -> PathBuf {
    let holds = |dir: &Path| dir.join(SYNC_MODULE).join("__init__.py").is_file();
    let mut candidates = vec![config.repo_path.clone()];
    if let Some(project) = config
        .python_executable
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(project.join("python"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"));
    candidates
        .into_iter()
        .find(|dir| holds(dir))
        .unwrap_or_else(|| config.repo_path.clone())
}

/// MLflow HTTP client settings sent with every call (see the Python side).
fn http_settings() -> Value {
    json!({"timeout_s": HTTP_TIMEOUT_S, "max_retries": 0, "backoff_factor": 0, "backoff_jitter": 0})
}

/// What one flush did (`mlflow sync --json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushReport {
    /// Items synced by this flush.
    pub synced: u64,
    /// Items still pending afterwards (those that failed and may pass later included;
    /// parked ones not).
    pub pending: u64,
    /// Items this flush tried and could not sync (those it parked included).
    pub failed: u64,
    /// One entry per failure: `{"item", "kind", "run_id", "trial_id", "class", "message",
    /// "parked"}` (`parked`: it can never sync as it is and is now `failed`).
    pub errors: Vec<Value>,
    /// The failure that stopped the flush, when MLflow could not be reached.
    #[serde(skip)]
    pub outage: Option<BridgeError>,
}

/// A syncer: the store, a client for `sync_mlflow` and the identity its leases carry.
pub struct MlflowSync {
    store: Arc<Store>,
    client: Client,
    tracking_uri: String,
    holder: LeaseHolder,
    max_payload_bytes: usize,
}

impl MlflowSync {
    /// Starts the sync client (one worker process running [`SYNC_MODULE`]); its leases
    /// are `holder`'s.
    pub fn start(
        settings: &SyncSettings,
        store: Arc<Store>,
        holder: LeaseHolder,
    ) -> Result<MlflowSync> {
        let client = Client::start(&settings.client_config)?;
        Ok(MlflowSync {
            store,
            client,
            tracking_uri: settings.tracking_uri.clone(),
            holder,
            max_payload_bytes: settings.client_config.invoke.max_payload_bytes,
        })
    }

    /// The tracking URI.
    pub fn tracking_uri(&self) -> &str {
        &self.tracking_uri
    }

    /// Syncs the pending items once, oldest first (with `due_only`, only those whose
    /// retry time has come). Stops at the first outage-like failure; other failures are
    /// recorded on their item (parking those that can never sync) and the pass goes on.
    pub async fn flush(&self, due_only: bool) -> Result<FlushReport> {
        let items = self
            .store
            .outbox_lease(&self.holder, now_ms(), LEASE, due_only, BATCH)?;
        let mut report = FlushReport::default();
        let outcome = self.sync_items(&items, &mut report).await;
        let released = self.store.outbox_release(&self.holder.id);
        outcome?;
        released?;
        report.pending = self.store.outbox_counts()?.pending;
        Ok(report)
    }

    async fn sync_items(&self, items: &[OutboxItem], report: &mut FlushReport) -> Result<()> {
        for item in items {
            self.store
                .outbox_renew(&self.holder.id, now_ms() + LEASE.as_millis() as i64)?;
            let outcome = match self.payload(item) {
                Ok(Some(payload)) => self.call(payload).await,
                Ok(None) => Ok((None, None)),
                Err(err) => Err(err),
            };
            match outcome {
                Ok((run_id, trial_id)) => {
                    if self
                        .store
                        .outbox_synced(item, run_id.as_deref(), trial_id.as_deref())?
                    {
                        report.synced += 1;
                    }
                }
                Err(err) if is_permanent(&err) => {
                    let parked = self.store.outbox_park(item, &err.message)?;
                    report.note_failure(item, &err, parked);
                    if parked {
                        tracing::warn!(
                            target: "mlflow.sync",
                            item = item.id,
                            run_id = %item.run_id,
                            trial_id = item.trial_id.as_deref().unwrap_or(""),
                            "this item can never sync to MLflow as it is; parked as failed \
                             (listed by `cerebros-bridge mlflow sync`): {}",
                            err.message
                        );
                    }
                }
                Err(err) => {
                    report.note_failure(item, &err, false);
                    let retry = item_retry_delay(item.attempts + 1);
                    self.store.outbox_failed(
                        item,
                        &err.message,
                        now_ms() + retry.as_millis() as i64,
                    )?;
                    if is_outage(&err) {
                        report.outage = Some(err);
                        return Ok(());
                    }
                    if item.attempts == 0 {
                        tracing::warn!(
                            target: "mlflow.sync",
                            item = item.id,
                            run_id = %item.run_id,
                            trial_id = item.trial_id.as_deref().unwrap_or(""),
                            "MLflow sync of this item failed (retried later): {}",
                            err.message
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The `sync_mlflow` payload of `item`, from what the store holds now; `None` for a
    /// trial the store no longer has (nothing to sync). A payload the bridge would refuse
    /// (over `invoke.max_payload_bytes`, nested too deep) is a permanent error: the same
    /// item always builds the same payload.
    fn payload(&self, item: &OutboxItem) -> Result<Option<Value>> {
        let run = self.store.run(&item.run_id)?;
        let final_run = item.kind == OutboxKind::Run && run.status.is_final();
        let trial = match (&item.kind, &item.trial_id) {
            (OutboxKind::Trial, Some(trial_id)) => {
                match self.store.trial(&item.run_id, trial_id)? {
                    Some(trial) => Some(serde_json::to_value(trial).unwrap_or_default()),
                    None => return Ok(None),
                }
            }
            _ => None,
        };
        // The only folder the service may upload a trial's artifact from (DESIGN §10).
        let artifact_root = run_folder(&artifact_dir(self.store.path()), &item.run_id);
        let payload = json!({
            "tracking_uri": self.tracking_uri,
            "run": run,
            "final": final_run,
            "trial": trial,
            "artifact_root": artifact_root,
            "http": http_settings(),
        });
        payload::check_value(&payload, self.max_payload_bytes).map_err(|err| {
            let mut err = err.with_op(SYNC_OP).with_detail(PERMANENT, true);
            err.message = format!("its sync_mlflow payload cannot be sent: {}", err.message);
            err
        })?;
        Ok(Some(payload))
    }

    /// Calls `sync_mlflow`; returns the parent's and the child's MLflow ids.
    async fn call(&self, payload: Value) -> Result<(Option<String>, Option<String>)> {
        let options = CallOptions {
            timeout: Some(CALL_TIMEOUT),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        let reply = self.client.call_with(SYNC_OP, payload, options).await?;
        let id = |part: &str| {
            reply
                .get(part)
                .and_then(|p| p.get("mlflow_run_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok((id("run"), id("trial")))
    }

    /// Stops the sync client (blocks for at most its grace).
    pub fn shutdown(&self) {
        self.client.shutdown(SHUTDOWN_GRACE);
    }
}

/// The detail that marks an error as permanent (set by [`MlflowSync`]'s payload check and
/// by `sync_mlflow` for a request MLflow refuses).
const PERMANENT: &str = "permanent";

/// Whether `err` means the item can never sync as it is (it is parked as `failed`); see
/// the module's doc for the rule.
fn is_permanent(err: &BridgeError) -> bool {
    err.details.get(PERMANENT) == Some(&Value::Bool(true))
}

/// Whether `err` means MLflow (or the bridge) cannot sync anything right now, rather
/// than that this one item is bad.
fn is_outage(err: &BridgeError) -> bool {
    !matches!(
        err.class,
        ErrorClass::Exception | ErrorClass::Contract | ErrorClass::ParseError
    )
}

impl FlushReport {
    fn note_failure(&mut self, item: &OutboxItem, err: &BridgeError, parked: bool) {
        self.failed += 1;
        self.errors.push(json!({
            "item": item.id,
            "kind": item.kind,
            "run_id": item.run_id,
            "trial_id": item.trial_id,
            "class": err.class.as_str(),
            "message": err.message,
            "parked": parked,
        }));
    }
}

fn item_retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (ITEM_RETRY_START * factor).min(ITEM_RETRY_MAX)
}

/// Whether syncing is failing, to log each outage once.
struct Health {
    tracking_uri: String,
    failing: bool,
    backoff: Duration,
}

impl Health {
    fn note(&mut self, outcome: &Result<FlushReport>) {
        let outage = match outcome {
            Ok(report) => report.outage.as_ref().map(|e| (e, report.pending)),
            Err(err) => Some((err, 0)),
        };
        match outage {
            Some((err, pending)) => {
                if self.failing {
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                } else {
                    self.failing = true;
                    self.backoff = BACKOFF_START;
                    tracing::warn!(
                        target: "mlflow.sync",
                        tracking_uri = %self.tracking_uri,
                        pending,
                        "MLflow sync is failing ({}); runs go on and their items stay pending, \
                         retried in the background or flushed by `cerebros-bridge mlflow sync`",
                        err.message
                    );
                }
            }
            None if self.failing => {
                self.failing = false;
                self.backoff = BACKOFF_START;
                tracing::warn!(
                    target: "mlflow.sync",
                    tracking_uri = %self.tracking_uri,
                    "MLflow sync recovered; pending items are being synced"
                );
            }
            None => {}
        }
    }
}

/// The background sync of one run: a task that flushes the outbox when woken, every few
/// seconds, and with backoff while MLflow is unreachable, and once more when finished.
pub struct SyncWorker {
    /// Set by [`SyncWorker::finish`] to the time the task must be done by.
    stop: watch::Sender<Option<Instant>>,
    flush_timeout: Duration,
    handle: tokio::task::JoinHandle<()>,
}

impl SyncWorker {
    /// Spawns the worker on the current runtime; `wake` is notified after each recorded
    /// trial. The sync client starts inside the task, so a failure to start it (MLflow
    /// or the service package missing) is logged once and costs the run nothing.
    pub fn spawn(settings: SyncSettings, store: Arc<Store>, wake: Arc<Notify>) -> SyncWorker {
        let (stop, stopped) = watch::channel(None);
        let flush_timeout = settings.flush_timeout;
        let handle = tokio::spawn(run_worker(settings, store, wake, stopped));
        SyncWorker {
            stop,
            flush_timeout,
            handle,
        }
    }

    /// Flushes once more (every pending item, due or not), then stops the worker and its
    /// client. The whole wait, a sync call already in flight included, lasts at most
    /// `mlflow.flush_timeout_ms` (plus the client's shutdown grace); what is not synced by
    /// then stays pending, for the next run or `mlflow sync`.
    pub async fn finish(self) {
        let _ = self.stop.send(Some(Instant::now() + self.flush_timeout));
        if let Err(err) = self.handle.await {
            tracing::warn!(target: "mlflow.sync", "the MLflow sync task failed: {err}");
        }
    }
}

/// The worker's task: starts the client, drains the outbox until told to finish, and
/// gives up when the finish deadline passes.
async fn run_worker(
    settings: SyncSettings,
    store: Arc<Store>,
    wake: Arc<Notify>,
    stopped: watch::Receiver<Option<Instant>>,
) {
    let mut health = Health {
        tracking_uri: settings.tracking_uri.clone(),
        failing: false,
        backoff: BACKOFF_START,
    };
    let flush_timeout = settings.flush_timeout;
    let starting = store.clone();
    let start = tokio::task::spawn_blocking(move || {
        MlflowSync::start(&settings, starting, LeaseHolder::current())
    });
    let started = tokio::select! {
        started = start => started,
        _ = deadline(stopped.clone()) => {
            // The client is dropped (and stopped) whenever its start returns.
            gave_up(&store, flush_timeout);
            return;
        }
    };
    let sync = match started {
        Ok(Ok(sync)) => sync,
        Ok(Err(err)) => {
            health.note(&Err(err));
            return;
        }
        Err(err) => {
            health.note(&Err(BridgeError::new(
                ErrorClass::SystemError,
                err.to_string(),
            )));
            return;
        }
    };
    tokio::select! {
        _ = drain(&sync, &mut health, &wake, stopped.clone()) => {}
        _ = deadline(stopped) => {
            // The dropped call was cancelled; give its run back at once.
            let _ = store.outbox_release(&sync.holder.id);
            gave_up(&store, flush_timeout);
        }
    }
    let _ = tokio::task::spawn_blocking(move || sync.shutdown()).await;
}

/// Flushes the due items when woken, every few seconds, or after a backoff while failing;
/// once finishing is asked for, flushes every pending item once more and returns.
async fn drain(
    sync: &MlflowSync,
    health: &mut Health,
    wake: &Notify,
    mut stopped: watch::Receiver<Option<Instant>>,
) {
    loop {
        let wait = if health.failing {
            health.backoff
        } else {
            IDLE_POLL
        };
        tokio::select! {
            _ = stopped.wait_for(Option::is_some) => break,
            _ = wake.notified(), if !health.failing => {}
            _ = tokio::time::sleep(wait) => {}
        }
        health.note(&sync.flush(true).await);
    }
    health.note(&sync.flush(false).await);
}

/// Resolves when the finish deadline has passed (at once if the [`SyncWorker`] was
/// dropped without finishing).
async fn deadline(mut stopped: watch::Receiver<Option<Instant>>) {
    let at = match stopped.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn gave_up(store: &Store, flush_timeout: Duration) {
    let pending = store.outbox_counts().map(|c| c.pending).unwrap_or(0);
    tracing::warn!(
        target: "mlflow.sync",
        pending,
        "MLflow sync did not finish within mlflow.flush_timeout_ms = {} of the run's end; \
         the rest stays pending for the next run or `cerebros-bridge mlflow sync`",
        flush_timeout.as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sqlite_paths_follow_the_store() {
        let store = Path::new("/srv/x/cerebros.db");
        assert_eq!(
            resolve_tracking_uri("sqlite:///sub/m.db?mode=rwc", store),
            "sqlite:////srv/x/sub/m.db?mode=rwc"
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_tracking_uri("sqlite:///mlflow.db", Path::new("cerebros.db")),
            format!("sqlite:///{}", cwd.join("mlflow.db").display())
        );
        assert_eq!(resolve_tracking_uri("https://m:1", store), "https://m:1");
        assert_eq!(resolve_tracking_uri("databricks", store), "databricks");
    }

    #[test]
    fn the_sync_client_runs_the_service_module_on_one_worker() {
        let config = Config {
            module: "nas_fixture".into(),
            repo_path: PathBuf::from("/nonexistent"),
            ..Config::default()
        };
        let settings = SyncSettings::from_config(&config, Path::new("/tmp/c.db"));
        let client = settings.client_config();
        assert_eq!(client.module, SYNC_MODULE);
        assert!(client
            .repo_path
            .join("cerebros_service/__init__.py")
            .is_file());
        assert_eq!(client.invoke.pool_size, 1);
        assert_eq!(client.invoke.max_retries, 0);
        assert_eq!(settings.tracking_uri(), "sqlite:////tmp/mlflow.db");
    }

    #[test]
    fn an_outage_is_noted_once_and_its_end_once() {
        let mut health = Health {
            tracking_uri: "http://127.0.0.1:1".into(),
            failing: false,
            backoff: BACKOFF_START,
        };
        let down = || FlushReport {
            outage: Some(BridgeError::new(ErrorClass::SystemError, "refused")),
            ..FlushReport::default()
        };
        health.note(&Ok(down()));
        assert!(health.failing);
        assert_eq!(health.backoff, BACKOFF_START);
        for _ in 0..10 {
            health.note(&Ok(down()));
        }
        assert_eq!(health.backoff, BACKOFF_MAX);
        health.note(&Ok(FlushReport::default()));
        assert!(!health.failing);
        assert_eq!(health.backoff, BACKOFF_START);
    }

    #[test]
    fn outages_stop_a_flush_and_bad_items_do_not() {
        let err = |class| BridgeError::new(class, "x");
        assert!(is_outage(&err(ErrorClass::SystemError)));
        assert!(is_outage(&err(ErrorClass::Timeout)));
        assert!(is_outage(&err(ErrorClass::Dependency)));
        assert!(!is_outage(&err(ErrorClass::Exception)));
        // Only an error marked permanent parks its item.
        assert!(!is_permanent(&err(ErrorClass::Exception)));
        assert!(!is_permanent(&err(ErrorClass::Contract)));
        assert!(is_permanent(
            &err(ErrorClass::Exception).with_detail(PERMANENT, true)
        ));
        assert_eq!(item_retry_delay(1), Duration::from_secs(2));
        assert_eq!(item_retry_delay(3), Duration::from_secs(8));
        assert_eq!(item_retry_delay(30), ITEM_RETRY_MAX);
    }
}
