//! Trials as Ray tasks (the `ray` executor, DESIGN §12), for one drive of one run.
//!
//! A trial is submitted (`ray_submit`, which returns a handle at once) and then polled
//! (`ray_poll`, which never blocks) with a growing pause between polls, so awaiting any
//! number of trials holds no pool thread. At the trial's deadline its task is
//! force-cancelled (`ray_cancel`: Ray kills the worker process running it) and the attempt
//! fails with class `timeout`; the client's retry policy then decides, per trial, whether
//! to submit it again (Ray's own retries are off). Handles still in flight when the drive
//! stops (cancelled run, failed run) are cancelled together by [`RayTrials::cancel_all`].

use crate::client::{CallOptions, Client};
use crate::core::contracts::{ContractV1, TrialReportedV1, TrialRequestedV1};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::executor::ExecutorSettings;
use crate::nas::spec::Budget;
use crate::nas::store::Placement;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first pause between two polls of a trial; it doubles up to [`MAX_POLL_PAUSE`].
const FIRST_POLL_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause between two polls: how late a finished trial may be noticed.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(25);
/// Deadline of the short calls (submit, poll, cancel) through the bridge.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A trial that ran to its end on Ray (succeeded or not, as its report says).
pub(super) struct RayOutcome {
    /// The service's report.
    pub(super) report: TrialReportedV1,
    /// Where the last attempt ran.
    pub(super) placement: Placement,
    /// Attempts made (1 when the first one ended).
    pub(super) attempts: u32,
}

/// The Ray side of one drive: the settings, the client and the trials in flight.
pub(super) struct RayTrials {
    client: Arc<Client>,
    settings: ExecutorSettings,
    run_id: String,
    in_flight: Mutex<HashSet<String>>,
}

impl RayTrials {
    /// Connects to the cluster and shares the run's dataset through the object store
    /// (`ray_start_run`: loaded once here, never read from a file on a worker node).
    pub(super) async fn start(
        client: Arc<Client>,
        settings: ExecutorSettings,
        run_id: &str,
        dataset_id: &str,
        parameters: &serde_json::Map<String, Value>,
    ) -> Result<RayTrials> {
        let payload = json!({
            "connection": settings.connection(),
            "run_id": run_id,
            "dataset_id": dataset_id,
            "parameters": parameters,
        });
        let options = CallOptions {
            timeout: Some(Duration::from_secs(300)),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        client.call_with("ray_start_run", payload, options).await?;
        Ok(RayTrials {
            client,
            settings,
            run_id: run_id.to_owned(),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// Runs `request` on the cluster, each attempt at most `timeout`, retried by the
    /// client's policy: its report, where the last attempt ran and the attempts made.
    pub(super) async fn run_trial(
        &self,
        request: &TrialRequestedV1,
        budget: &Budget,
        timeout: Duration,
    ) -> Result<RayOutcome> {
        let policy = self.client.retry_policy().clone();
        let mut attempt = 1;
        loop {
            match self.attempt(request, budget, timeout).await {
                Ok((report, placement)) => {
                    return Ok(RayOutcome {
                        report,
                        placement,
                        attempts: attempt,
                    })
                }
                Err(err) => {
                    let err = err
                        .with_op("run_trial")
                        .with_run_id(Some(request.run_id.clone()))
                        .with_attempt(attempt);
                    if attempt > policy.max_retries || !policy.retries(err.class) {
                        return Err(err);
                    }
                    tracing::info!(trial_id = %request.trial_id, attempt, "retrying the trial on Ray: {err}");
                    tokio::time::sleep(policy.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One submission of `request`, polled until it ends or `timeout` passes.
    async fn attempt(
        &self,
        request: &TrialRequestedV1,
        budget: &Budget,
        timeout: Duration,
    ) -> Result<(TrialReportedV1, Placement)> {
        let started = Instant::now();
        let payload = json!({
            "trial": request.to_value(),
            "module": self.settings.module,
            "resources": {
                "cpus": budget.trial_cpus,
                "gpus": budget.trial_gpus,
                "memory_mb": budget.trial_memory_mb,
            },
        });
        let submitted = self.call("ray_submit", payload).await?;
        let handle = submitted
            .get("handle")
            .and_then(Value::as_str)
            .ok_or_else(|| parse_error("ray_submit returned no handle"))?
            .to_owned();
        self.lock().insert(handle.clone());
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            let polled = self.call("ray_poll", json!({"handle": handle})).await;
            let polled = match polled {
                Ok(polled) => polled,
                Err(err) => {
                    self.lock().remove(&handle);
                    return Err(err);
                }
            };
            if polled.get("state").and_then(Value::as_str) == Some("done") {
                self.lock().remove(&handle);
                return done(&polled);
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                self.cancel(vec![handle]).await;
                return Err(BridgeError::new(
                    ErrorClass::Timeout,
                    format!(
                        "the trial ran past its {} ms (budget.trial_timeout_ms); its Ray task \
                         was force-cancelled",
                        timeout.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    /// Force-cancels every trial still in flight (the drive is stopping).
    pub(super) async fn cancel_all(&self) {
        let handles: Vec<String> = self.lock().drain().collect();
        if !handles.is_empty() {
            self.cancel(handles).await;
        }
    }

    /// Cancels what is in flight and releases the run's shared dataset.
    pub(super) async fn end(&self) {
        self.cancel_all().await;
        if let Err(err) = self
            .call("ray_end_run", json!({"run_id": self.run_id}))
            .await
        {
            tracing::warn!(run_id = %self.run_id, "cannot release the run's Ray dataset: {err}");
        }
    }

    async fn cancel(&self, handles: Vec<String>) {
        for handle in &handles {
            self.lock().remove(handle);
        }
        if let Err(err) = self.call("ray_cancel", json!({"handles": handles})).await {
            tracing::warn!(run_id = %self.run_id, "cannot cancel Ray trials: {err}");
        }
    }

    async fn call(&self, op: &str, payload: Value) -> Result<Value> {
        let options = CallOptions {
            timeout: Some(CALL_TIMEOUT),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        self.client.call_with(op, payload, options).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The report and placement of a `done` poll.
fn done(polled: &Value) -> Result<(TrialReportedV1, Placement)> {
    let report = polled
        .get("report")
        .ok_or_else(|| parse_error("ray_poll returned no report"))?;
    let report = TrialReportedV1::from_value(report).map_err(|err| {
        parse_error(&format!(
            "run_trial returned an invalid report: {}",
            err.message
        ))
        .with_source(err)
    })?;
    let placement: Placement = polled
        .get("placement")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|err| parse_error(&format!("ray_poll returned a bad placement: {err}")))?
        .ok_or_else(|| parse_error("ray_poll returned no placement"))?;
    Ok((report, placement))
}

fn parse_error(message: &str) -> BridgeError {
    BridgeError::new(ErrorClass::ParseError, message.to_owned())
}
