//! Trials as Ray tasks (the `ray` executor, DESIGN §12), for one drive of one run.
//!
//! Each attempt of a trial is named by a handle of its own and filed as awaited, then
//! submitted (`ray_submit`, which returns at once); the drive's one waiter task calls
//! `ray_wait` for the run, which blocks (GIL released) until any of its trials ends — one
//! submitted during the wait included — or [`WAIT_SLICE`] passes, and returns all that
//! ended, so the trials in flight hold one pool thread between them, never one each, and
//! cost one call per wake-up, not one per trial. At a trial's deadline its task is
//! force-cancelled (`ray_cancel`: Ray kills the worker process running it) and the attempt
//! fails with class `timeout`; the client's retry policy then decides, per trial, whether
//! to submit it again (Ray's own retries are off). Handles still in flight when the drive
//! stops (cancelled run, failed run) are cancelled together by [`RayTrials::cancel_all`],
//! one whose submission has not reached the driver yet included (the driver then refuses it).

use crate::client::{CallOptions, Client};
use crate::core::contracts::{ContractV1, TrialReportedV1, TrialRequestedV1};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::executor::ExecutorSettings;
use crate::nas::spec::Budget;
use crate::nas::store::Placement;
use crate::process::protocol::error_from_wire;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The longest one `ray_wait` blocks, so the longest the waiter holds its pool thread at a
/// time (a trial that ends, whenever it was submitted, ends the wait at once).
const WAIT_SLICE: Duration = Duration::from_millis(200);
/// Deadline of the short calls (submit, wait, cancel) through the bridge.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Submissions made by this process, which number the handles (unique in the interpreter,
/// which outlives a drive: a service runs and resumes many runs).
static SUBMISSIONS: AtomicU64 = AtomicU64::new(0);

/// How an attempt ended: the service's report and where it ran, or its error.
type Ended = Result<(TrialReportedV1, Placement)>;
/// How an ended attempt reaches the trial task awaiting it.
type Delivery = oneshot::Sender<Ended>;

/// A handle the drive awaits: filed before its `ray_submit` is sent (its task may end,
/// and a wait return it, before that call returns), watched once the submission is known.
struct Awaited {
    deliver: Delivery,
    /// Whether `ray_submit` returned: only then is the handle one the service must know.
    submitted: bool,
}

/// A trial that ran to its end on Ray (succeeded or not, as its report says).
pub(super) struct RayOutcome {
    /// The service's report.
    pub(super) report: TrialReportedV1,
    /// Where the last attempt ran.
    pub(super) placement: Placement,
    /// Attempts made (1 when the first one ended).
    pub(super) attempts: u32,
}

/// The Ray side of one drive: the trials in flight and the task waiting on them.
pub(super) struct RayTrials {
    shared: Arc<Shared>,
    waiter: JoinHandle<()>,
}

/// What the trial tasks and the waiter share.
struct Shared {
    client: Arc<Client>,
    settings: ExecutorSettings,
    run_id: String,
    /// Handle of each attempt not yet ended, and where its end goes.
    in_flight: Mutex<HashMap<String, Awaited>>,
    /// Rung when a handle is added, so an idle waiter starts waiting on it.
    submitted: Notify,
}

impl RayTrials {
    /// Connects to the cluster ([`ExecutorSettings::connect`]: its deadline, and its
    /// `config` error for an address no cluster answers from, hold for runs that no
    /// command connected first, such as those `serve` drives) and shares the run's dataset
    /// through the object store (`ray_start_run`: loaded once here, never read from a file
    /// on a worker node).
    pub(super) async fn start(
        client: Arc<Client>,
        settings: ExecutorSettings,
        run_id: &str,
        dataset_id: &str,
        parameters: &serde_json::Map<String, Value>,
        budget: &Budget,
    ) -> Result<RayTrials> {
        // The service refuses resources no live node has (a task would wait for good).
        let payload = json!({
            "connection": settings.connection(),
            "run_id": run_id,
            "dataset_id": dataset_id,
            "parameters": parameters,
            "resources": trial_resources(budget),
        });
        let options = CallOptions {
            timeout: Some(Duration::from_secs(300)),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        settings.connect(&client).await?;
        client.call_with("ray_start_run", payload, options).await?;
        let shared = Arc::new(Shared {
            client,
            settings,
            run_id: run_id.to_owned(),
            in_flight: Mutex::new(HashMap::new()),
            submitted: Notify::new(),
        });
        let waiter = tokio::spawn(wait_for_trials(shared.clone()).in_current_span());
        Ok(RayTrials { shared, waiter })
    }

    /// Runs `request` on the cluster, each attempt at most `timeout`, retried by the
    /// client's policy: its report, where the last attempt ran and the attempts made.
    pub(super) async fn run_trial(
        &self,
        request: &TrialRequestedV1,
        budget: &Budget,
        timeout: Duration,
    ) -> Result<RayOutcome> {
        let policy = self.shared.client.retry_policy().clone();
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

    /// One submission of `request`, awaited until it ends or `timeout` passes.
    async fn attempt(
        &self,
        request: &TrialRequestedV1,
        budget: &Budget,
        timeout: Duration,
    ) -> Ended {
        let started = Instant::now();
        let number = SUBMISSIONS.fetch_add(1, Ordering::Relaxed);
        let handle = format!("{}#{number}", request.trial_id);
        let payload = json!({
            "handle": handle,
            "trial": request.to_value(),
            "module": self.shared.settings.module,
            "resources": {
                "cpus": budget.trial_cpus,
                "gpus": budget.trial_gpus,
                "memory_mb": budget.trial_memory_mb,
            },
        });
        let (deliver, ended) = oneshot::channel();
        let awaited = Awaited {
            deliver,
            submitted: false,
        };
        self.shared.lock().insert(handle.clone(), awaited);
        if let Err(err) = self.shared.call("ray_submit", payload).await {
            self.shared.lock().remove(&handle);
            return Err(err);
        }
        if let Some(awaited) = self.shared.lock().get_mut(&handle) {
            awaited.submitted = true; // unless a wait already returned its end
        }
        self.shared.submitted.notify_one();
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, ended).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(BridgeError::new(
                ErrorClass::SystemError,
                "the drive's Ray waiter stopped before the trial ended",
            )),
            Err(_) => {
                self.shared.cancel(vec![handle]).await;
                Err(BridgeError::new(
                    ErrorClass::Timeout,
                    format!(
                        "the trial ran past its {} ms (budget.trial_timeout_ms); its Ray task \
                         was force-cancelled",
                        timeout.as_millis()
                    ),
                ))
            }
        }
    }

    /// Force-cancels every trial still in flight (the drive is stopping).
    pub(super) async fn cancel_all(&self) {
        let handles: Vec<String> = self.shared.lock().keys().cloned().collect();
        if !handles.is_empty() {
            self.shared.cancel(handles).await;
        }
    }

    /// Cancels what is in flight, stops the waiter and releases the run's shared dataset.
    pub(super) async fn end(&self) {
        self.cancel_all().await;
        self.waiter.abort();
        let run_id = &self.shared.run_id;
        if let Err(err) = self
            .shared
            .call("ray_end_run", json!({"run_id": run_id}))
            .await
        {
            tracing::warn!(run_id = %run_id, "cannot release the run's Ray dataset: {err}");
        }
    }
}

impl Drop for RayTrials {
    fn drop(&mut self) {
        self.waiter.abort();
    }
}

impl Shared {
    /// Forgets `handles` (whoever awaits them learns they were cancelled) and
    /// force-cancels their tasks.
    async fn cancel(&self, handles: Vec<String>) {
        {
            let mut in_flight = self.lock();
            for handle in &handles {
                in_flight.remove(handle);
            }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Awaited>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The drive's waiter: while trials are in flight, one `ray_wait` at a time for all of
/// them, each ended one delivered to its trial task. A failed wait ends every trial it
/// waited on with its error (and cancels their tasks), so none waits forever.
async fn wait_for_trials(shared: Arc<Shared>) {
    let slice = WAIT_SLICE.as_millis() as u64;
    loop {
        let handles: Vec<String> = shared
            .lock()
            .iter()
            .filter(|(_, awaited)| awaited.submitted)
            .map(|(handle, _)| handle.clone())
            .collect();
        if handles.is_empty() {
            shared.submitted.notified().await;
            continue;
        }
        let payload = json!({"run_id": shared.run_id, "handles": handles, "timeout_ms": slice});
        match shared
            .call("ray_wait", payload)
            .await
            .and_then(|reply| ended(&reply))
        {
            Ok(ended) => {
                let mut in_flight = shared.lock();
                for (handle, outcome) in ended {
                    if let Some(awaited) = in_flight.remove(&handle) {
                        let _ = awaited.deliver.send(outcome); // its trial task may be gone
                    }
                }
            }
            Err(err) => {
                tracing::warn!(run_id = %shared.run_id, "waiting on Ray trials failed: {err}");
                let lost: Vec<(String, Awaited)> = {
                    let mut in_flight = shared.lock();
                    handles
                        .iter()
                        .filter_map(|h| in_flight.remove_entry(h))
                        .collect()
                };
                let handles = lost.iter().map(|(h, _)| h.clone()).collect();
                for (_, awaited) in lost {
                    let _ = awaited.deliver.send(Err(err.clone()));
                }
                shared.cancel(handles).await;
            }
        }
    }
}

/// The handle and outcome of each trial a `ray_wait` reply says ended.
fn ended(reply: &Value) -> Result<Vec<(String, Ended)>> {
    let done = reply
        .get("done")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_error("ray_wait returned no done list"))?;
    done.iter()
        .map(|entry| {
            let handle = entry
                .get("handle")
                .and_then(Value::as_str)
                .ok_or_else(|| parse_error("ray_wait returned an entry without its handle"))?;
            let outcome = match entry.get("error") {
                Some(error) => Err(error_from_wire(error)),
                None => finished(entry),
            };
            Ok((handle.to_owned(), outcome))
        })
        .collect()
}

/// The report and placement of a trial `ray_wait` says ended well.
fn finished(polled: &Value) -> Result<(TrialReportedV1, Placement)> {
    let report = polled
        .get("report")
        .ok_or_else(|| parse_error("ray_wait returned no report"))?;
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
        .map_err(|err| parse_error(&format!("ray_wait returned a bad placement: {err}")))?
        .ok_or_else(|| parse_error("ray_wait returned no placement"))?;
    Ok((report, placement))
}

/// What a trial asks of the cluster, under its `budget` keys.
fn trial_resources(budget: &Budget) -> Value {
    json!({
        "trial_cpus": budget.trial_cpus,
        "trial_gpus": budget.trial_gpus,
        "trial_memory_mb": budget.trial_memory_mb,
    })
}

fn parse_error(message: &str) -> BridgeError {
    BridgeError::new(ErrorClass::ParseError, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_reply_gives_each_ended_trial_its_report_or_its_error() {
        let reply = json!({"done": [
            {"handle": "a", "placement": {"node_id": "n1", "host": "h", "worker_pid": 7},
             "report": {"contract": "trial_reported", "version": 1, "run_id": "r",
                        "trial_id": "r-t000", "status": "succeeded",
                        "metrics": {"val_accuracy": 0.5}}},
            {"handle": "b", "error": {"class": "subprocess_exit", "message": "worker died",
                                      "details": {}}},
        ]});
        let ended = ended(&reply).unwrap();
        assert_eq!(ended.len(), 2);
        let (report, placement) = ended[0].1.as_ref().unwrap();
        assert_eq!(
            (ended[0].0.as_str(), report.trial_id.as_str()),
            ("a", "r-t000")
        );
        assert_eq!(
            (placement.node_id.as_str(), placement.worker_pid),
            ("n1", 7)
        );
        let err = ended[1].1.as_ref().unwrap_err();
        assert_eq!(
            (ended[1].0.as_str(), err.class),
            ("b", ErrorClass::SubprocessExit)
        );
    }

    #[test]
    fn a_malformed_wait_reply_is_a_parse_error() {
        for reply in [
            json!({}),
            json!({"done": [{"report": {}}]}),
            json!({"done": "a"}),
        ] {
            assert_eq!(
                ended(&reply).unwrap_err().class,
                ErrorClass::ParseError,
                "{reply}"
            );
        }
        let no_placement = json!({"done": [{"handle": "a", "report": {
            "contract": "trial_reported", "version": 1, "run_id": "r", "trial_id": "t",
            "status": "succeeded"}}]});
        let ended = ended(&no_placement).unwrap();
        assert_eq!(
            ended[0].1.as_ref().unwrap_err().class,
            ErrorClass::ParseError
        );
    }
}
