//! The run's trials as the store holds them, kept by the drive (DESIGN §13): a learning
//! strategy or a pruner sends each trial the run's history, and reading every trial of the
//! run back from the store for each new one cost time that grew with the run (4 ms per
//! trial at 800 trials, on the store's one thread). The book is loaded from the store once
//! when a drive starts (so `runs resume` sees what earlier drives recorded), then updated
//! with every trial row the drive writes, exactly as the store's upserts change the row.

use super::history;
use crate::nas::spec::RunSpec;
use crate::nas::store::{TrialRecord, TrialState};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The trials of one run, by index.
pub struct TrialBook {
    trials: Mutex<BTreeMap<u32, TrialRecord>>,
}

impl TrialBook {
    /// A book holding the run's `trials`, as read from the store.
    pub fn new(trials: Vec<TrialRecord>) -> TrialBook {
        let trials = trials.into_iter().map(|t| (t.index, t)).collect();
        TrialBook {
            trials: Mutex::new(trials),
        }
    }

    /// The indexes of the trials that have finished (they are not run again).
    pub fn finished(&self) -> Vec<u32> {
        let trials = self.trials.lock();
        let finished = trials.values().filter(|t| t.status.is_completed());
        finished.map(|t| t.index).collect()
    }

    /// Trial `index` started, as `Store::trial_started` records it: a new row, or the old
    /// row of an earlier attempt now running.
    pub fn started(&self, run_id: &str, trial_id: &str, index: u32, seed: u64) {
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
        self.trials.lock().insert(record.index, record.clone());
    }

    /// The history to send with trial `index` (see [`history::history`]).
    pub fn history(&self, spec: &RunSpec, index: u32) -> Option<Value> {
        history::history(spec, self.trials.lock().values(), index)
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
        let book = TrialBook::new(vec![
            finished(0, TrialState::Succeeded, 0.9),
            finished(1, TrialState::Failed, 0.0),
        ]);
        assert_eq!(book.finished(), vec![0, 1]);
        // Trial 1 is run again, trial 2 starts and ends pruned, trial 3 is in flight.
        book.started("r", "r-t001", 1, 7);
        book.started("r", "r-t002", 2, 8);
        book.recorded(&finished(2, TrialState::Pruned, 0.5));
        book.started("r", "r-t003", 3, 9);
        assert_eq!(book.finished(), vec![0, 2]);
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
}
