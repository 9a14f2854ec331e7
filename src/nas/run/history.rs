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
//! trials are left out.
//!
//! Of the finished trials a history holds the [`RECENT_LIMIT`] of highest index and the
//! [`BEST_LIMIT`] best by the objective (see [`kept_finished`]), each curve at most
//! [`CURVE_LIMIT`] epochs. The service's time per trial grows with the history (Optuna's
//! TPE rebuilds its estimators from every trial it is given), and so does the payload; the
//! best ones are what TPE models as good (its "below" group is the best 10 % of the trials,
//! at most 25: once 25 trials have succeeded, the best 25 of the whole run), and the recent
//! ones what it models as bad, where it weighs recent trials most anyway.

use crate::nas::spec::{Direction, RunSpec};
use crate::nas::store::{TrialRecord, TrialState};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// The finished trials of highest index a history holds.
pub const RECENT_LIMIT: usize = 250;

/// The best finished trials a history holds besides the recent ones (TPE's largest
/// "below" group).
pub const BEST_LIMIT: usize = 25;

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
    let kept = kept_finished(spec, &finished);
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

/// The indexes of the `finished` trials (in index order) a history holds: the
/// [`RECENT_LIMIT`] last and the [`BEST_LIMIT`] best succeeded ones by the spec's objective
/// and direction (the earlier of equal ones first).
pub fn kept_finished(spec: &RunSpec, finished: &[&TrialRecord]) -> HashSet<u32> {
    let recent_from = finished.len().saturating_sub(RECENT_LIMIT);
    let mut kept: HashSet<u32> = finished[recent_from..].iter().map(|t| t.index).collect();
    let mut ranked: Vec<(f64, u32)> = finished
        .iter()
        .filter(|t| t.status == TrialState::Succeeded)
        .filter_map(|t| Some((t.metrics.get(&spec.objective)?.as_f64()?, t.index)))
        .collect();
    ranked.sort_by(|(a, i), (b, j)| {
        let better = match spec.direction {
            Direction::Maximize => b.total_cmp(a),
            Direction::Minimize => a.total_cmp(b),
        };
        better.then(i.cmp(j))
    });
    kept.extend(ranked.iter().take(BEST_LIMIT).map(|(_, index)| index));
    kept
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

    fn with_accuracy(index: u32, accuracy: f64) -> TrialRecord {
        let mut trial = stored(index, TrialState::Succeeded);
        trial.metrics["val_accuracy"] = json!(accuracy);
        trial
    }

    fn sent_indexes(spec: &RunSpec, trials: &[TrialRecord]) -> Vec<u64> {
        let sent = history(spec, trials, 99_999).unwrap();
        let sent = sent.as_array().unwrap().iter();
        sent.map(|e| e["index"].as_u64().unwrap()).collect()
    }

    #[test]
    fn a_history_keeps_the_latest_and_the_best_finished_trials() {
        let n = (RECENT_LIMIT + 100) as u32;
        // Accuracy rises with the index, except that trials 10..40 are the best of all.
        let trials: Vec<TrialRecord> = (0..n)
            .map(|i| {
                let best = (10..40).contains(&i);
                with_accuracy(
                    i,
                    if best {
                        2.0 - f64::from(i) / 100.0
                    } else {
                        f64::from(i) / 1e4
                    },
                )
            })
            .chain([
                stored(n, TrialState::Running),
                stored(n + 1, TrialState::Failed),
            ])
            .collect();
        let spec = search_spec("tpe", "median");
        let sent = sent_indexes(&spec, &trials);
        let best: Vec<u64> = (10..10 + BEST_LIMIT as u64).collect();
        // The latest finished are n - 249 ..= n + 1 but for n, which is running (and sent).
        let latest: Vec<u64> =
            (u64::from(n) + 1 - RECENT_LIMIT as u64..=u64::from(n) + 1).collect();
        assert_eq!(
            sent,
            [best, latest].concat(),
            "in index order, running included"
        );
        // Minimised, the best are the lowest: the earliest ones but 10..40.
        let mut loss = spec.clone();
        loss.direction = Direction::Minimize;
        let sent = sent_indexes(&loss, &trials);
        let lowest: Vec<u64> = (0..10).chain(40..40 + BEST_LIMIT as u64 - 10).collect();
        assert_eq!(&sent[..BEST_LIMIT], lowest);
        assert_eq!(
            sent.len(),
            BEST_LIMIT + RECENT_LIMIT + 1,
            "and the running one"
        );
    }

    #[test]
    fn without_successes_a_history_keeps_the_latest_finished_trials_only() {
        let trials: Vec<TrialRecord> = (0..RECENT_LIMIT as u32 + 5)
            .map(|i| stored(i, TrialState::Failed))
            .collect();
        let sent = sent_indexes(&search_spec("tpe", "median"), &trials);
        assert_eq!(sent.len(), RECENT_LIMIT);
        assert_eq!(sent[0], 5);
    }
}
