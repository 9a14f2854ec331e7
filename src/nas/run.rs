//! The run worker (DESIGN §5): drives one NAS run through the bridge — `start_run`, then
//! `run_trial` for every trial not yet finished (`budget.parallelism` at once, each its
//! own call with the trial's timeout and the client's retries), then `finalize_run` —
//! writing each outcome to the store the moment it arrives. A failed or timed-out trial
//! is recorded and the run goes on. Events go to a broadcast channel and to `tracing`
//! (`ml.run.start|trial|stop|exception`).
//!
//! Resuming is the same drive over a run whose owner died: finished trials are skipped,
//! so none runs twice, and every trial's seed depends only on the run seed and its index,
//! so a resumed run ends with the same best trial as an uninterrupted one.
//!
//! Store calls made while driving run on the store's own thread ([`StoreCalls`]), in
//! order: SQLite's busy wait for another process's writer never holds up a runtime
//! thread.
//!
//! With [`RunWorker::with_mlflow`], each drive also runs a [`SyncWorker`] beside the
//! trials: woken after every recorded trial, it mirrors the store's MLflow outbox into
//! MLflow without ever holding a trial up, and flushes once more when the run has ended.
//!
//! With [`RunWorker::with_executor`] set to `ray` (DESIGN §12), each trial runs as a Ray
//! task (`ray`); everything else — store, retries, timeouts, events, outbox — stays here.

mod book;
mod history;
mod ray;
mod report;
mod spans;

use crate::client::{CallOptions, Client};
use crate::core::contracts::{RunFinalizedV1, TrialReportedV1, TrialRequestedV1, TrialStatus};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::artifacts::run_folder;
use crate::nas::executor::ExecutorSettings;
use crate::nas::spec::{budget_map, trial_seed, RunSpec};
use crate::nas::store::{
    now_rfc3339, ArtifactRecord, Owner, RunEnd, RunRecord, Store, StoreCalls, TrialRecord,
    TrialState, HEARTBEAT_EVERY,
};
use crate::nas::sync::{SyncSettings, SyncWorker};
use book::TrialBook;
use ray::RayTrials;
use report::{check_report, CheckedReport, Expected};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

/// An event of a run, as broadcast to subscribers.
#[derive(Debug, Clone, Serialize)]
pub struct RunEvent {
    /// `ml.run.start`, `ml.run.trial`, `ml.run.stop` or `ml.run.exception`.
    pub kind: &'static str,
    /// The run.
    pub run_id: String,
    /// Event data: the trial record for `ml.run.trial`, the run for `ml.run.stop`.
    pub data: Value,
}

/// A cancellation signal shared by whoever may stop a run (Ctrl-C, `runs cancel`).
#[derive(Clone, Default)]
pub struct CancelSignal {
    cancelled: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl CancelSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the signal was raised.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is raised.
    pub async fn cancelled(&self) {
        while !self.is_cancelled() {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Drives runs over a client and a store.
#[derive(Clone)]
pub struct RunWorker {
    client: Arc<Client>,
    store: Arc<Store>,
    /// The store, for async code.
    calls: StoreCalls,
    artifact_dir: PathBuf,
    events: broadcast::Sender<RunEvent>,
    mlflow: Option<SyncSettings>,
    sync_wake: Arc<Notify>,
    executor: ExecutorSettings,
}

/// Everything a trial task needs, shared by all trials of one drive.
struct TrialContext {
    worker: RunWorker,
    run_id: String,
    spec: RunSpec,
    search_space: Map<String, Value>,
    parameters: Map<String, Value>,
    /// When the run's wall-clock budget (`budget.max_seconds`) is spent, if it has one.
    deadline: Option<Instant>,
    /// The trials in flight on Ray, under the `ray` executor.
    ray: Option<RayTrials>,
    /// The run's trials as the store holds them (for the histories trials are sent).
    book: TrialBook,
}

impl RunWorker {
    /// A worker writing artifacts under `artifact_dir`.
    pub fn new(client: Arc<Client>, store: Arc<Store>, artifact_dir: PathBuf) -> RunWorker {
        let (events, _) = broadcast::channel(1024);
        RunWorker {
            client,
            calls: StoreCalls::new(store.clone()),
            store,
            artifact_dir,
            events,
            mlflow: None,
            sync_wake: Arc::new(Notify::new()),
            executor: ExecutorSettings::default(),
        }
    }

    /// Runs trials with `executor` (default: `local`, through the client's own mode).
    pub fn with_executor(mut self, executor: ExecutorSettings) -> RunWorker {
        self.executor = executor;
        self
    }

    /// Syncs to MLflow while runs are driven (see [`crate::nas::sync`]). Without it, finished
    /// trials and runs still queue their items in the store, for `mlflow sync`.
    pub fn with_mlflow(mut self, settings: SyncSettings) -> RunWorker {
        self.mlflow = Some(settings);
        self
    }

    /// Receives this worker's run events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Records a new run for `spec` (status `queued`) and returns its id.
    pub fn create(&self, spec: &RunSpec) -> Result<String> {
        self.store.submit(spec)
    }

    /// Drives run `run_id` to its end (or until `cancel` is raised) and returns it as
    /// stored. Works the same for a new run and for one being resumed. A run the service
    /// refuses (`contract`, `config` or `dependency`, e.g. a trainer whose package is
    /// missing) is stored as failed and returned as that error, with its run id.
    pub async fn drive(&self, run_id: &str, cancel: CancelSignal) -> Result<RunRecord> {
        let run = self.read_run(run_id).await?;
        let spec: RunSpec = serde_json::from_value(run.spec.clone()).map_err(|e| {
            BridgeError::new(
                ErrorClass::SystemError,
                format!("run {run_id} has an unreadable spec in the store: {e}"),
            )
            .with_source(e)
        })?;
        let span = spans::run_span(run_id, &spec);
        let outcome = self
            .drive_spec(run_id, &spec, cancel)
            .instrument(span.clone())
            .await;
        spans::finish_run(&span, &outcome);
        outcome
    }

    /// [`RunWorker::drive`] of a run whose spec was read.
    async fn drive_spec(
        &self,
        run_id: &str,
        spec: &RunSpec,
        cancel: CancelSignal,
    ) -> Result<RunRecord> {
        let id = run_id.to_owned();
        self.calls
            .run(move |store| store.claim(&id, &Owner::current()))
            .await?;
        let heartbeat = self.spawn_heartbeat(run_id, cancel.clone());
        let sync = self.mlflow.clone().map(|settings| {
            SyncWorker::spawn(settings, self.store.clone(), self.sync_wake.clone())
        });
        let started = Instant::now();
        let outcome = self.drive_claimed(run_id, spec, &cancel).await;
        heartbeat.abort();
        let (end, error) = match &outcome {
            Ok(end) => (*end, None),
            Err(err) => (RunEnd::Failed, Some(err.to_string())),
        };
        // A run the service refused as specified is recorded as failed, and the refusal
        // is the caller's error: the CLI exits with its class (2 or 3), not as a run that
        // merely had no successful trial.
        let refused = outcome.err().filter(|err| {
            matches!(
                err.class,
                ErrorClass::Contract | ErrorClass::Config | ErrorClass::Dependency
            )
        });
        let finished = self
            .finalize(run_id, spec, end, error, started.elapsed())
            .await;
        if let Err(err) = &finished {
            self.end_as_failed(run_id, err).await;
        }
        let finished = match sync {
            Some(sync) => {
                sync.finish().await;
                // Read again: the final flush wrote the MLflow ids back.
                match finished {
                    Ok(_) => self.read_run(run_id).await,
                    Err(err) => Err(err),
                }
            }
            None => finished,
        };
        match refused {
            Some(err) => Err(err.with_run_id(Some(run_id.to_owned()))),
            None => finished,
        }
    }

    /// Last resort when ending a run failed: mark it `failed` with that error, so it
    /// never stays `running` without an owner.
    async fn end_as_failed(&self, run_id: &str, err: &BridgeError) {
        let why = format!("the run could not be finished: {err}");
        let id = run_id.to_owned();
        let ended = self
            .calls
            .run(move |store| store.finish_run(&id, RunEnd::Failed, Some(&why)))
            .await;
        if let Err(again) = ended {
            tracing::error!(run_id, "cannot end the run: {err}; then: {again}");
        }
    }

    /// Run `run_id` as stored.
    async fn read_run(&self, run_id: &str) -> Result<RunRecord> {
        let id = run_id.to_owned();
        self.calls.run(move |store| store.run(&id)).await
    }

    /// The trials of `run_id` as stored.
    async fn read_trials(&self, run_id: &str) -> Result<Vec<TrialRecord>> {
        let id = run_id.to_owned();
        self.calls.run(move |store| store.trials(&id)).await
    }

    fn spawn_heartbeat(&self, run_id: &str, cancel: CancelSignal) -> tokio::task::JoinHandle<()> {
        let calls = self.calls.clone();
        let run_id = run_id.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tick.tick().await;
                let id = run_id.clone();
                match calls.run(move |store| store.heartbeat(&id)).await {
                    Ok(true) => cancel.cancel(),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(run_id, "heartbeat failed: {err}"),
                }
            }
        })
    }

    /// start_run, then the trials; returns how the run ends.
    async fn drive_claimed(
        &self,
        run_id: &str,
        spec: &RunSpec,
        cancel: &CancelSignal,
    ) -> Result<RunEnd> {
        let artifact_dir = self.artifact_dir.clone();
        let started = spec.run_started(run_id, &now_rfc3339(), &artifact_dir);
        let info = self.client.start_run(&started).await?;
        let (id, stored_info) = (run_id.to_owned(), info.clone());
        self.calls
            .run(move |store| store.record_start(&id, &stored_info))
            .await?;
        self.emit("ml.run.start", run_id, info.clone());
        let max_seconds = spec.budget.max_seconds;
        let deadline = (max_seconds > 0).then(|| Instant::now() + Duration::from_secs(max_seconds));
        let search_space = info
            .get("search_space")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| spec.search_space.clone());
        let parameters = spec.trial_parameters(&artifact_dir);
        let ray = if self.executor.is_ray() {
            let client = self.client.clone();
            let settings = self.executor.clone();
            let budget = &spec.budget;
            Some(
                RayTrials::start(client, settings, run_id, &spec.dataset, &parameters, budget)
                    .await?,
            )
        } else {
            None
        };
        let trials = self.read_trials(run_id).await?;
        let finished: std::collections::HashSet<u32> = trials
            .iter()
            .filter(|t| t.status.is_completed())
            .map(|t| t.index)
            .collect();
        let book = TrialBook::new(spec, trials);
        let context = Arc::new(TrialContext {
            worker: self.clone(),
            run_id: run_id.to_owned(),
            spec: spec.clone(),
            search_space,
            parameters,
            deadline,
            ray,
            book,
        });
        let pending: Vec<u32> = (0..spec.budget.trials)
            .filter(|i| !finished.contains(i))
            .collect();
        let ran = run_trials(context.clone(), pending, cancel).await;
        if let Some(ray) = &context.ray {
            ray.end().await;
        }
        ran?;
        if cancel.is_cancelled() {
            return Ok(RunEnd::Cancelled);
        }
        let succeeded = self
            .read_trials(run_id)
            .await?
            .iter()
            .any(|t| t.status == TrialState::Succeeded);
        Ok(if succeeded {
            RunEnd::Succeeded
        } else {
            RunEnd::Failed
        })
    }

    /// Calls `finalize_run`, ends the run in the store and emits `ml.run.stop` (or
    /// `ml.run.exception`).
    async fn finalize(
        &self,
        run_id: &str,
        spec: &RunSpec,
        mut end: RunEnd,
        mut error: Option<String>,
        took: Duration,
    ) -> Result<RunRecord> {
        if end != RunEnd::Failed || error.is_none() {
            let run = self.read_run(run_id).await?;
            let mut finalized = RunFinalizedV1::new(run_id, end.contract_status());
            finalized.best_trial_id = run.best_trial_id.clone();
            finalized.duration_ms = took.as_millis() as u64;
            if let Some(best) = run.best_metric {
                finalized
                    .metrics
                    .insert(spec.objective.clone(), json!(best));
            }
            finalized
                .metrics
                .insert("trials_completed".into(), json!(run.trials_completed));
            if let Err(err) = self.client.finalize_run(&finalized).await {
                // A cancelled run stays cancelled: the failure is recorded beside it.
                if end != RunEnd::Cancelled {
                    end = RunEnd::Failed;
                }
                error = Some(format!("finalize_run failed: {err}"));
            }
        }
        if end == RunEnd::Failed && error.is_none() {
            error = Some("no trial succeeded".into());
        }
        let id = run_id.to_owned();
        self.calls
            .run(move |store| store.finish_run(&id, end, error.as_deref()))
            .await?;
        let run = self.read_run(run_id).await?;
        self.emit(
            end.event_kind(),
            run_id,
            serde_json::to_value(&run).unwrap_or_default(),
        );
        Ok(run)
    }

    fn emit(&self, kind: &'static str, run_id: &str, data: Value) {
        match kind {
            "ml.run.exception" => {
                let error = data
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                tracing::warn!(target: "ml.run", event = kind, run_id, "the run failed: {error}");
            }
            _ => tracing::info!(target: "ml.run", event = kind, run_id),
        }
        let _ = self.events.send(RunEvent {
            kind,
            run_id: run_id.to_owned(),
            data,
        });
    }
}

/// Runs the pending trials, `parallelism` at a time, until all are done, the run's
/// wall-clock budget is spent (no trial starts after it; running ones finish) or `cancel`
/// is raised (then the running ones are dropped, which cancels their Python calls, and
/// recorded as cancelled).
async fn run_trials(
    context: Arc<TrialContext>,
    pending: Vec<u32>,
    cancel: &CancelSignal,
) -> Result<()> {
    let parallelism = context.spec.budget.parallelism.max(1) as usize;
    let mut queue = pending.into_iter();
    let mut running: JoinSet<(u32, Result<()>)> = JoinSet::new();
    let mut in_flight: Vec<u32> = Vec::new();
    loop {
        while running.len() < parallelism && !cancel.is_cancelled() {
            if context.deadline.is_some_and(|d| Instant::now() >= d) {
                let left = queue.by_ref().count(); // none starts from now on
                if left > 0 {
                    tracing::info!(run_id = %context.run_id, left, "the run's wall-clock budget is spent");
                }
                break;
            }
            let Some(index) = queue.next() else { break };
            in_flight.push(index);
            let span = spans::trial_span(&context.run_id, &trial_id(&context.run_id, index), index);
            let context = context.clone();
            running.spawn(
                async move { (index, run_one_trial(&context, index).await) }.instrument(span),
            );
        }
        if running.is_empty() {
            return Ok(());
        }
        tokio::select! {
            Some(joined) = running.join_next() => {
                let outcome = joined
                    .map_err(|e| {
                        BridgeError::new(ErrorClass::SystemError, format!("a trial task failed: {e}"))
                            .with_source(e)
                    })
                    .and_then(|(index, outcome)| {
                        in_flight.retain(|i| *i != index);
                        outcome
                    });
                if let Err(err) = outcome {
                    // The run fails: stop the other trials so none stays `running`.
                    stop_in_flight(&context, &mut running, &mut in_flight).await;
                    return Err(err);
                }
            }
            _ = cancel.cancelled() => {
                stop_in_flight(&context, &mut running, &mut in_flight).await;
                return Ok(());
            }
        }
    }
}

/// Drops the running trials (which cancels their Python calls) and records those not yet
/// recorded as cancelled (a store that refuses is logged: the run is ending anyway).
async fn stop_in_flight(
    context: &TrialContext,
    running: &mut JoinSet<(u32, Result<()>)>,
    in_flight: &mut Vec<u32>,
) {
    running.abort_all();
    while running.join_next().await.is_some() {}
    if let Some(ray) = &context.ray {
        ray.cancel_all().await;
    }
    for index in in_flight.drain(..) {
        if let Err(err) = record_cancelled(context, index).await {
            tracing::warn!(run_id = %context.run_id, index, "cannot record a stopped trial: {err}");
        }
    }
}

fn trial_id(run_id: &str, index: u32) -> String {
    format!("{run_id}-t{index:03}")
}

async fn record_cancelled(context: &TrialContext, index: u32) -> Result<()> {
    let trial_id = trial_id(&context.run_id, index);
    let still_running = context
        .worker
        .read_trials(&context.run_id)
        .await?
        .iter()
        .any(|t| t.trial_id == trial_id && t.status == TrialState::Running);
    if !still_running {
        return Ok(());
    }
    let record = TrialRecord {
        run_id: context.run_id.clone(),
        trial_id,
        index,
        seed: trial_seed(context.spec.seed, index),
        status: TrialState::Cancelled,
        metrics: json!({}),
        parameters: json!({}),
        duration_ms: 0,
        artifact_uri: None,
        error: Some(json!({"class": "cancelled", "message": "the run was cancelled"})),
        attempts: 1,
        started_at: None,
        finished_at: Some(now_rfc3339()),
        mlflow_run_id: None,
        placement: None,
    };
    let stored = record.clone();
    context
        .worker
        .calls
        .run(move |store| store.record_trial(&stored, None))
        .await?;
    context.book.recorded(&record);
    Ok(())
}

/// Runs trial `index` and records its outcome, whatever it is.
async fn run_one_trial(context: &TrialContext, index: u32) -> Result<()> {
    let run_id = &context.run_id;
    let trial_id = trial_id(run_id, index);
    let seed = trial_seed(context.spec.seed, index);
    let calls = &context.worker.calls;
    let (id, started_trial) = (run_id.clone(), trial_id.clone());
    calls
        .run(move |store| store.trial_started(&id, &started_trial, index, seed))
        .await?;
    context.book.started(run_id, &trial_id, index, seed);
    let mut request = TrialRequestedV1::new(run_id.clone(), trial_id.clone(), index, seed);
    request.dataset_id = Some(context.spec.dataset.clone());
    request.search_space = context.search_space.clone();
    request.budget = budget_map(&context.spec.budget);
    request.parameters = context.parameters.clone();
    if let Some(history) = context.book.history(index) {
        request.parameters.insert("history".into(), history);
    }
    let timeout = Duration::from_millis(context.spec.budget.trial_timeout_ms);
    let started_at = now_rfc3339();
    let clock = Instant::now();
    let (mut placement, mut attempts) = (None, 1);
    let outcome = match &context.ray {
        Some(ray) => ray
            .run_trial(&request, &context.spec.budget, timeout)
            .await
            .map(|ran| {
                (placement, attempts) = (Some(ran.placement), ran.attempts);
                ran.report
            }),
        None => {
            let options = CallOptions {
                timeout: Some(timeout),
                ..CallOptions::default()
            };
            let client = &context.worker.client;
            client.run_trial_with(&request, options).await
        }
    };
    let folder = run_folder(&context.worker.artifact_dir, run_id);
    let expected = Expected {
        run_id,
        trial_id: &trial_id,
        objective: &context.spec.objective,
        run_folder: &folder,
    };
    let (record, artifact) = match outcome.and_then(|reply| check_report(&reply, &expected)) {
        Ok(checked) => {
            let (mut record, artifact) =
                trial_from_report(&request, checked, started_at, clock.elapsed());
            (record.placement, record.attempts) = (placement, attempts);
            (record, artifact)
        }
        Err(err) => (
            failed_trial(&request, &err, started_at, clock.elapsed()),
            None,
        ),
    };
    let record = record_or_fail(context, record, artifact).await?;
    spans::finish_trial(&tracing::Span::current(), &record, &context.spec.objective);
    context.worker.sync_wake.notify_one();
    // Announced as soon as it is stored: the acknowledgement below may wait for a
    // worker busy with another trial.
    context.worker.emit(
        "ml.run.trial",
        run_id,
        serde_json::to_value(&record).unwrap_or_default(),
    );
    if record.status == TrialState::Succeeded {
        acknowledge(context, &record).await;
    }
    Ok(())
}

/// Records a finished trial with its artifact. When the store refuses it, the trial is
/// recorded as `failed` with the store's error instead, so it never stays `running`; only
/// when that fails too is the error the run's.
async fn record_or_fail(
    context: &TrialContext,
    record: TrialRecord,
    artifact: Option<ArtifactRecord>,
) -> Result<TrialRecord> {
    let calls = &context.worker.calls;
    let stored = record.clone();
    let Err(err) = calls
        .run(move |store| store.record_trial(&stored, artifact.as_ref()))
        .await
    else {
        context.book.recorded(&record);
        return Ok(record);
    };
    tracing::warn!(run_id = %context.run_id, trial_id = %record.trial_id, "cannot record the trial: {err}");
    let failed = TrialRecord {
        status: TrialState::Failed,
        metrics: json!({}),
        parameters: json!({}),
        artifact_uri: None,
        error: Some(
            BridgeError::new(
                ErrorClass::SystemError,
                format!("the trial's outcome could not be recorded: {}", err.message),
            )
            .to_json(),
        ),
        ..record
    };
    let stored = failed.clone();
    calls
        .run(move |store| store.record_trial(&stored, None))
        .await?;
    context.book.recorded(&failed);
    Ok(failed)
}

/// Tells the service the trial was recorded (`record_trial`, the seed's persistence
/// hook; cached by (run_id, trial_id, status)). Its failure is logged, not fatal.
async fn acknowledge(context: &TrialContext, record: &TrialRecord) {
    let mut report = TrialReportedV1::new(
        record.run_id.clone(),
        record.trial_id.clone(),
        TrialStatus::Succeeded,
    );
    report.metrics = record.metrics.as_object().cloned().unwrap_or_default();
    report.artifact_uri = record.artifact_uri.clone();
    report.duration_ms = record.duration_ms;
    if let Err(err) = context.worker.client.record_trial(&report).await {
        tracing::warn!(run_id = %record.run_id, trial_id = %record.trial_id, "record_trial failed: {err}");
    }
}

/// The record of a checked reply, under the ids the host asked for. A trial the service
/// reports as failed, skipped or cancelled carries its reason (the reply's warnings) as its
/// error; a pruned one has none (pruning is not a failure).
fn trial_from_report(
    request: &TrialRequestedV1,
    checked: CheckedReport,
    started_at: String,
    took: Duration,
) -> (TrialRecord, Option<ArtifactRecord>) {
    let failed = !matches!(checked.status, TrialStatus::Succeeded | TrialStatus::Pruned);
    let error = failed.then(|| {
        let reason = if checked.warnings.is_empty() {
            "no reason given".to_owned()
        } else {
            checked.warnings.join("; ")
        };
        BridgeError::new(
            ErrorClass::Exception,
            format!(
                "the service reported the trial {}: {reason}",
                checked.status
            ),
        )
        .with_op("run_trial")
        .to_json()
    });
    let record = TrialRecord {
        run_id: request.run_id.clone(),
        trial_id: request.trial_id.clone(),
        index: request.index,
        seed: request.seed,
        status: checked.status.into(),
        metrics: checked.metrics.to_json(),
        parameters: Value::Object(checked.parameters),
        duration_ms: took.as_millis() as u64,
        artifact_uri: checked.artifact.as_ref().map(|a| a.uri.clone()),
        error,
        attempts: 1,
        started_at: Some(started_at),
        finished_at: Some(now_rfc3339()),
        mlflow_run_id: None,
        placement: None,
    };
    (record, checked.artifact)
}

fn failed_trial(
    request: &TrialRequestedV1,
    err: &BridgeError,
    started_at: String,
    took: Duration,
) -> TrialRecord {
    TrialRecord {
        run_id: request.run_id.clone(),
        trial_id: request.trial_id.clone(),
        index: request.index,
        seed: request.seed,
        status: TrialState::Failed,
        metrics: json!({}),
        parameters: json!({}),
        duration_ms: took.as_millis() as u64,
        artifact_uri: None,
        error: Some(err.to_json()),
        attempts: err.attempt.max(1),
        started_at: Some(started_at),
        finished_at: Some(now_rfc3339()),
        mlflow_run_id: None,
        placement: None,
    }
}
