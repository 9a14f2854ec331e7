//! The run's history sent with a trial (`parameters.history`, DESIGN §13): what a learning
//! strategy (`tpe`, `cmaes`) or a pruner needs of the run's other trials, read from the
//! store, the one record of a run. The service rebuilds an Optuna study from it for each
//! trial; nothing of Optuna's lives between trials, so `runs resume` and parallel trials
//! need nothing more.
//!
//! Each entry: `index`, `status` (`succeeded`, `failed`, `pruned`, or `running` for a
//! trial in flight), and for a finished trial `value` (the objective at its best epoch),
//! `architecture` (`levels`, `activation`, `learning_rate`; only for a learning strategy)
//! and `curve` (the objective after each epoch; only with a pruner). Skipped and cancelled
//! trials are left out. The payload stays small: at most [`HISTORY_LIMIT`] finished trials
//! (those of highest index), each curve at most [`CURVE_LIMIT`] epochs.

use crate::nas::spec::RunSpec;
use crate::nas::store::{TrialRecord, TrialState};
use serde_json::{json, Map, Value};

/// The most finished trials a history holds (a few hundred bytes each).
pub const HISTORY_LIMIT: usize = 1000;

/// The most epochs of a curve a history holds (pruning rules look at the first epochs).
pub const CURVE_LIMIT: usize = 256;

/// The keys of a trial's stored parameters that describe its architecture's shape.
const ARCHITECTURE_KEYS: [&str; 3] = ["levels", "activation", "learning_rate"];

/// The history for trial `index` of a run with `spec`, from the run's stored `trials`
/// (all but `index` itself), ordered by index; `None` when the spec's search needs none.
pub fn history<'a>(
    spec: &RunSpec,
    trials: impl IntoIterator<Item = &'a TrialRecord>,
    index: u32,
) -> Option<Value> {
    if spec.search.is_default() {
        return None;
    }
    let mut others: Vec<&TrialRecord> = trials.into_iter().filter(|t| t.index != index).collect();
    others.sort_by_key(|t| t.index);
    let finished: Vec<&TrialRecord> = others
        .iter()
        .copied()
        .filter(|t| t.status.is_completed())
        .collect();
    let keep_from = finished.len().saturating_sub(HISTORY_LIMIT);
    let kept = finished[keep_from..].iter().map(|t| t.index);
    let kept: std::collections::HashSet<u32> = kept.collect();
    let entries = others
        .into_iter()
        .filter_map(|t| match t.status {
            TrialState::Running => Some(json!({"index": t.index, "status": "running"})),
            _ if kept.contains(&t.index) => Some(finished_entry(spec, t)),
            _ => None,
        })
        .collect();
    Some(Value::Array(entries))
}

fn finished_entry(spec: &RunSpec, trial: &TrialRecord) -> Value {
    let mut entry = Map::new();
    entry.insert("index".into(), trial.index.into());
    entry.insert("status".into(), trial.status.as_str().into());
    let objective = &spec.objective;
    if trial.status == TrialState::Succeeded {
        if let Some(value) = trial.metrics.get(objective).filter(|v| v.is_number()) {
            entry.insert("value".into(), value.clone());
        }
    }
    if spec.search.needs_architectures() {
        let architecture: Map<String, Value> = ARCHITECTURE_KEYS
            .iter()
            .filter_map(|key| Some((key.to_string(), trial.parameters.get(*key)?.clone())))
            .collect();
        if !architecture.is_empty() {
            entry.insert("architecture".into(), Value::Object(architecture));
        }
    }
    if spec.search.needs_curves() {
        if let Some(curve) = trial.metrics["curve"][objective].as_array() {
            let curve: Vec<Value> = curve.iter().take(CURVE_LIMIT).cloned().collect();
            entry.insert("curve".into(), Value::Array(curve));
        }
    }
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::store::test_support::{spec, trial_with};

    fn search_spec(strategy: &str, pruner: &str) -> RunSpec {
        let mut spec = spec("h");
        spec.search.strategy = strategy.into();
        spec.search.pruner = pruner.into();
        spec
    }

    fn stored(index: u32, status: TrialState) -> TrialRecord {
        let metrics = json!({"val_accuracy": 0.9, "val_loss": 0.3,
            "curve": {"val_accuracy": [0.5, 0.9], "val_loss": [0.6, 0.3]}});
        let mut trial = trial_with("r", index, status, metrics);
        trial.parameters =
            json!({"levels": [[8, 9]], "activation": "relu", "learning_rate": 0.01, "seed": 5});
        trial
    }

    #[test]
    fn random_without_a_pruner_sends_no_history() {
        let trials = [stored(0, TrialState::Succeeded)];
        assert_eq!(history(&search_spec("random", "none"), &trials, 1), None);
    }

    #[test]
    fn a_history_holds_what_the_search_needs_in_index_order() {
        let trials = [
            stored(2, TrialState::Running),
            stored(0, TrialState::Succeeded),
            stored(1, TrialState::Pruned),
            stored(3, TrialState::Cancelled),
            stored(4, TrialState::Running),
        ];
        let tpe = history(&search_spec("tpe", "none"), &trials, 4).unwrap();
        assert_eq!(
            tpe,
            json!([
                {"index": 0, "status": "succeeded", "value": 0.9,
                 "architecture": {"levels": [[8, 9]], "activation": "relu", "learning_rate": 0.01}},
                {"index": 1, "status": "pruned",
                 "architecture": {"levels": [[8, 9]], "activation": "relu", "learning_rate": 0.01}},
                {"index": 2, "status": "running"},
            ])
        );
        let asha = history(&search_spec("random", "asha"), &trials, 2).unwrap();
        assert_eq!(
            asha,
            json!([
                {"index": 0, "status": "succeeded", "value": 0.9, "curve": [0.5, 0.9]},
                {"index": 1, "status": "pruned", "curve": [0.5, 0.9]},
                {"index": 4, "status": "running"},
            ])
        );
    }

    #[test]
    fn a_history_keeps_the_latest_finished_trials_only() {
        let trials: Vec<TrialRecord> = (0..HISTORY_LIMIT as u32 + 5)
            .map(|i| stored(i, TrialState::Failed))
            .collect();
        let sent = history(&search_spec("tpe", "median"), &trials, 99_999).unwrap();
        let sent = sent.as_array().unwrap();
        assert_eq!(sent.len(), HISTORY_LIMIT);
        assert_eq!(sent[0]["index"], 5);
    }
}
