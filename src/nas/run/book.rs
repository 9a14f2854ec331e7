//! The run's trials as the store holds them, kept by the drive (DESIGN §13): a learning
//! strategy or a pruner sends each trial the run's history, and reading every trial of the
//! run back from the store for each new one cost time that grew with the run (4 ms per
//! trial at 800 trials, on the store's one thread). The book is loaded from the store once
//! when a drive starts (so `runs resume` sees what earlier drives recorded), then updated
//! with every trial row the drive writes, exactly as the store's upserts change the row.
//!
//! It holds what a history can contain — the trials in flight, and the finished trials a
//! history keeps ([`history::kept_finished`]: the latest and the best; a finished trial
//! left out of them never comes back) with some slack — and nothing for a run whose search
//! sends no history.

use super::history::{self, BEST_LIMIT, RECENT_LIMIT};
use crate::nas::spec::RunSpec;
use crate::nas::store::{TrialRecord, TrialState};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The trials of one run a history may need, by index.
pub struct TrialBook {
    /// The run's spec (its search, objective and direction decide what is kept).
    spec: RunSpec,
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
            spec: spec.clone(),
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
    pub fn history(&self, index: u32) -> Option<Value> {
        history::history(&self.spec, self.trials.lock().values(), index)
    }

    /// Drops the finished trials no history will hold, once the book holds twice as many
    /// trials as a history keeps. Within a drive a finished trial stays finished, and one
    /// that is neither among the latest nor the best never becomes so again.
    fn forget_old(&self, trials: &mut BTreeMap<u32, TrialRecord>) {
        if trials.len() <= 2 * (RECENT_LIMIT + BEST_LIMIT) {
            return;
        }
        let finished: Vec<&TrialRecord> = trials
            .values()
            .filter(|t| t.status.is_completed())
            .collect();
        let kept = history::kept_finished(&self.spec, &finished);
        let old: Vec<u32> = finished
            .iter()
            .map(|t| t.index)
            .filter(|index| !kept.contains(index))
            .collect();
        for index in old {
            trials.remove(&index);
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
                book.history(index),
                history::history(&spec, &rows, index),
                "trial {index}"
            );
        }
        let sent = book.history(4).unwrap();
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
        let limit = (RECENT_LIMIT + BEST_LIMIT) as u32;
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
        assert!(book.trials.lock().len() <= 2 * (RECENT_LIMIT + BEST_LIMIT) + 1);
        assert_eq!(book.history(10_000), history::history(&tpe, &rows, 10_000));
        let random = spec("r");
        let book = TrialBook::new(&random, rows);
        book.recorded(&finished(5, TrialState::Succeeded, 0.5));
        assert!(book.trials.lock().is_empty());
        assert_eq!(book.history(1), None);
    }
}
