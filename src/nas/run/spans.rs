//! The run worker's `tracing` spans (DESIGN §14): one `run` span per drive of a run and
//! a `trial` span per trial under it; the client's `cerebros.bridge.invoke` spans of
//! each call nest below. With the `otel` feature they are exported as one trace per
//! run. Each span records its outcome when its work ends.

use crate::client::telemetry::NAS_TARGET;
use crate::core::error::Result;
use crate::nas::spec::RunSpec;
use crate::nas::store::{RunRecord, RunState, TrialRecord, TrialState};
use tracing::field::Empty;
use tracing::Span;

/// The span of one drive of run `run_id` (a resumed run gets a new one).
pub(super) fn run_span(run_id: &str, spec: &RunSpec) -> Span {
    tracing::info_span!(
        target: NAS_TARGET,
        "run",
        run_id,
        run.name = %spec.name,
        dataset = %spec.dataset,
        objective = %spec.objective,
        trials_planned = i64::from(spec.budget.trials),
        status = Empty,
        best_metric = Empty,
        best_trial_id = Empty,
        trials_completed = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// Records how the run ended on its span.
pub(super) fn finish_run(span: &Span, outcome: &Result<RunRecord>) {
    match outcome {
        Ok(run) => {
            span.record("status", run.status.as_str());
            span.record("trials_completed", i64::from(run.trials_completed));
            if let Some(best) = run.best_metric {
                span.record("best_metric", best);
            }
            if let Some(best) = &run.best_trial_id {
                span.record("best_trial_id", best.as_str());
            }
            if run.status == RunState::Failed {
                error_status(span, run.error.as_deref().unwrap_or("the run failed"));
            }
        }
        Err(err) => error_status(span, &err.to_string()),
    }
}

/// The span of trial `index` of `run_id`; created where the trial is started, so that
/// its parent is the run's span.
pub(super) fn trial_span(run_id: &str, trial_id: &str, index: u32) -> Span {
    tracing::info_span!(
        target: NAS_TARGET,
        "trial",
        run_id,
        trial_id,
        index = i64::from(index),
        status = Empty,
        objective_value = Empty,
        duration_ms = Empty,
        attempts = Empty,
        error_class = Empty,
        node_id = Empty,
        node_host = Empty,
        worker_pid = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// Records the trial's stored outcome on its span; `objective` names its metric.
pub(super) fn finish_trial(span: &Span, record: &TrialRecord, objective: &str) {
    span.record("status", record.status.as_str());
    // Whole numbers as i64: OpenTelemetry has no unsigned integers.
    span.record("duration_ms", record.duration_ms as i64);
    span.record("attempts", i64::from(record.attempts));
    if let Some(value) = record.metrics.get(objective).and_then(|v| v.as_f64()) {
        span.record("objective_value", value);
    }
    // Where the `ray` executor ran it.
    if let Some(placement) = &record.placement {
        span.record("node_id", placement.node_id.as_str());
        span.record("node_host", placement.host.as_str());
        span.record("worker_pid", i64::from(placement.worker_pid));
    }
    if record.status == TrialState::Failed {
        let error = record.error.as_ref();
        let class = error.and_then(|e| e.get("class")).and_then(|c| c.as_str());
        if let Some(class) = class {
            span.record("error_class", class);
        }
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("the trial failed");
        error_status(span, message);
    }
}

fn error_status(span: &Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message);
}
