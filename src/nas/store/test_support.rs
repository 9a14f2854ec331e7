//! What the store's unit tests share: a spec, a finished trial, an owner that is gone.

use super::{Owner, TrialRecord, TrialState};
use crate::nas::spec::RunSpec;
use serde_json::{json, Value};

/// A two-trial iris spec named `name`.
pub fn spec(name: &str) -> RunSpec {
    let text = format!("name = \"{name}\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = 2\n");
    RunSpec::from_toml_str(&text, std::path::Path::new(".")).unwrap()
}

/// Trial `index` of `run_id`, finished in `status`, with `val_accuracy` 0.5.
pub fn trial(run_id: &str, index: u32, status: TrialState) -> TrialRecord {
    trial_with(run_id, index, status, json!({"val_accuracy": 0.5}))
}

/// Trial `index` of `run_id`, finished in `status` with `metrics`.
pub fn trial_with(run_id: &str, index: u32, status: TrialState, metrics: Value) -> TrialRecord {
    TrialRecord {
        run_id: run_id.into(),
        trial_id: format!("{run_id}-t{index:03}"),
        index,
        seed: 1,
        status,
        metrics,
        parameters: json!({}),
        duration_ms: 1,
        artifact_uri: None,
        error: None,
        attempts: 1,
        started_at: None,
        finished_at: None,
        mlflow_run_id: None,
        placement: None,
    }
}

/// An owner on this host whose process has exited.
pub fn gone_owner() -> Owner {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    Owner {
        pid,
        ..Owner::current()
    }
}
