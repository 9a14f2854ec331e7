//! The run's trials as the store holds them, kept by the drive (DESIGN §13): a learning
//! strategy or a pruner sends each trial the run's history, and reading every trial of the
//! run back from the store for each new one cost time that grew with the run (4 ms per
//! trial at 800 trials, on the store's one thread). The book is loaded from the store once
//! when a drive starts (so `runs resume` sees what earlier drives recorded), then updated
//! with every trial row the drive writes, exactly as the store's upserts change the row.
//!
//! It holds what a history can contain: the trials in flight and the finished trials of
//! highest index (a few more than [`HISTORY_LIMIT`]), and nothing for a run whose search
//! sends no history.

use super::history::{self, HISTORY_LIMIT};
use crate::nas::spec::RunSpec;
use crate::nas::store::{TrialRecord, TrialState};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The trials of one run a history may need, by index.
pub struct TrialBook {
    /// Whether the run's search sends a history at all.
    keeps: bool,
    trials: Mutex<BTreeMap<u32, TrialRecord>>,
}

impl TrialBook {
    /// The book of a run with `spec` whose stored trials are `trials`.
    pub fn new(spec: &RunSpec, trials: Vec<TrialRecord>) -> TrialBook {
        let keeps = !spec.search.is_default();
        let kept = trials.into_iter().filter(|_| keeps);
        let book = TrialBook {
            keeps,
            trials: Mutex::new(kept.map(|t| (t.index, t)).collect()),
        };
        book.forget_old(&mut book.trials.lock());
        book
    }

    /// Trial `index` started, as `Store::trial_started` records it: a new row, or the old
    /// row of an earlier attempt now running.
    pub fn started(&self, run_id: &str, trial_id: &str, index: u32, seed: u64) {
        if !self.keeps {
            return;
        }
        let mut trials = self.trials.lock();
        let trial = trials.entry(index).or_insert_with(|| TrialRecord {
            run_id: run_id.to_owned(),
            trial_id: trial_id.to_owned(),
            index,
            seed,
            status: TrialState::Running,
            metrics: json!({}),
            parameters: json!({}),
            duration_ms: 0,
            artifact_uri: None,
            error: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            mlflow_run_id: None,
            placement: None,
        });
        trial.status = TrialState::Running;
    }

    /// `record` was written, as `Store::record_trial` writes it.
    pub fn recorded(&self, record: &TrialRecord) {
        if !self.keeps {
            return;
        }
        let mut trials = self.trials.lock();
        trials.insert(record.index, record.clone());
        self.forget_old(&mut trials);
    }

    /// The history to send with trial `index` (see [`history::history`]).
    pub fn history(&self, spec: &RunSpec, index: u32) -> Option<Value> {
        history::history(spec, self.trials.lock().values(), index)
    }

    /// Drops the finished trials no history will hold (a history keeps the
    /// [`HISTORY_LIMIT`] finished ones of highest index, and a trial once finished stays
    /// so within a drive), once they are twice as many as it keeps.
    fn forget_old(&self, trials: &mut BTreeMap<u32, TrialRecord>) {
        if trials.len() <= 2 * HISTORY_LIMIT {
            return;
        }
        let finished = trials.values().filter(|t| t.status.is_completed());
        let old: Vec<u32> = finished.map(|t| t.index).collect();
        let excess = old.len().saturating_sub(HISTORY_LIMIT);
        for index in &old[..excess] {
            trials.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::store::test_support::{spec, trial_with};

    fn finished(index: u32, status: TrialState, accuracy: f64) -> TrialRecord {
        let metrics = json!({"val_accuracy": accuracy, "curve": {"val_accuracy": [accuracy]}});
        let mut trial = trial_with("r", index, status, metrics);
        trial.parameters = json!({"levels": [[8]], "activation": "relu", "learning_rate": 0.01});
        trial
    }

    #[test]
    fn the_book_follows_the_rows_the_drive_writes() {
        let mut spec = spec("r");
        spec.search.strategy = "tpe".into();
        spec.search.pruner = "asha".into();
        let book = TrialBook::new(
            &spec,
            vec![
                finished(0, TrialState::Succeeded, 0.9),
                finished(1, TrialState::Failed, 0.0),
            ],
        );
        // Trial 1 is run again, trial 2 starts and ends pruned, trial 3 is in flight.
        book.started("r", "r-t001", 1, 7);
        book.started("r", "r-t002", 2, 8);
        book.recorded(&finished(2, TrialState::Pruned, 0.5));
        book.started("r", "r-t003", 3, 9);
        let rows = [
            finished(0, TrialState::Succeeded, 0.9),
            TrialRecord {
                status: TrialState::Running,
                ..finished(1, TrialState::Failed, 0.0)
            },
            finished(2, TrialState::Pruned, 0.5),
            TrialRecord {
                metrics: json!({}),
                parameters: json!({}),
                ..trial_with("r", 3, TrialState::Running, json!({}))
            },
        ];
        for index in 0..5 {
            assert_eq!(
                book.history(&spec, index),
                history::history(&spec, &rows, index),
                "trial {index}"
            );
        }
        let sent = book.history(&spec, 4).unwrap();
        let statuses: Vec<&str> = sent
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["succeeded", "running", "pruned", "running"]);
    }

    #[test]
    fn a_long_run_keeps_what_its_histories_hold_and_a_random_one_nothing() {
        let mut tpe = spec("r");
        tpe.search.strategy = "tpe".into();
        let limit = HISTORY_LIMIT as u32;
        let book = TrialBook::new(&tpe, Vec::new());
        let mut rows = Vec::new();
        for index in 0..3 * limit {
            book.started("r", &format!("r-t{index:03}"), index, 1);
            let row = finished(index, TrialState::Succeeded, 0.5);
            book.recorded(&row);
            rows.push(row);
        }
        book.started("r", "r-t9999", 9999, 1);
        rows.push(TrialRecord {
            metrics: json!({}),
            ..trial_with("r", 9999, TrialState::Running, json!({}))
        });
        assert!(book.trials.lock().len() <= 2 * HISTORY_LIMIT + 1);
        assert_eq!(
            book.history(&tpe, 10_000),
            history::history(&tpe, &rows, 10_000)
        );
        let random = spec("r");
        let book = TrialBook::new(&random, rows);
        book.recorded(&finished(5, TrialState::Succeeded, 0.5));
        assert!(book.trials.lock().is_empty());
        assert_eq!(book.history(&random, 1), None);
    }
}
