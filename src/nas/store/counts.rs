//! How many runs and trials are in each state: what `/metrics` reports on every scrape,
//! in two grouped queries while runs are being written.

use super::runs::reported_state;
use super::{db_error, RunState, Store, TrialState};
use crate::core::error::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Runs and trials by state, every state listed (zero when none is in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Runs by the state they are reported in (`interrupted` included, as
    /// [`Store::run`] reports it).
    pub runs: BTreeMap<RunState, u64>,
    /// Trials by state.
    pub trials: BTreeMap<TrialState, u64>,
}

impl Store {
    /// Runs by reported state and trials by state.
    pub fn counts(&self) -> Result<StoreCounts> {
        let conn = self.conn.lock();
        let mut runs: BTreeMap<RunState, u64> = RunState::ALL.map(|s| (s, 0)).into();
        // One group per state, except that each `running` run is a group of its own:
        // whether it is interrupted depends on its owner.
        let mut stmt = conn
            .prepare(
                "SELECT status, owner_host, owner_pid, owner_start, heartbeat_ms, COUNT(*)
                 FROM model_runs
                 GROUP BY status, CASE WHEN status = ?1 THEN rowid END",
            )
            .map_err(db_error("count runs"))?;
        let groups = stmt
            .query_map([RunState::Running], |r| {
                Ok((reported_state(r, r.get(0)?, 1)?, r.get::<_, i64>(5)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error("count runs"))?;
        for (state, n) in groups {
            *runs.entry(state).or_default() += n as u64;
        }
        let mut trials: BTreeMap<TrialState, u64> = TrialState::ALL.map(|s| (s, 0)).into();
        let mut stmt = conn
            .prepare("SELECT status, COUNT(*) FROM model_trials GROUP BY status")
            .map_err(db_error("count trials"))?;
        let groups = stmt
            .query_map([], |r| {
                Ok((r.get::<_, TrialState>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error("count trials"))?;
        for (state, n) in groups {
            *trials.entry(state).or_default() += n as u64;
        }
        Ok(StoreCounts { runs, trials })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::store::test_support::{gone_owner, spec, trial};
    use crate::nas::store::{Owner, RunEnd};

    #[test]
    fn runs_count_in_the_state_they_are_reported_in_and_trials_by_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let empty = store.counts().unwrap();
        assert!(empty.runs.len() == RunState::ALL.len() && empty.runs.values().all(|n| *n == 0));
        assert!(empty.trials.len() == TrialState::ALL.len());

        let spec = spec("t");
        for id in ["queued", "live", "dead1", "dead2", "done"] {
            store.create_run(id, &spec).unwrap();
        }
        store.claim("live", &Owner::current()).unwrap();
        store.claim("dead1", &gone_owner()).unwrap();
        store.claim("dead2", &gone_owner()).unwrap();
        store.claim("done", &Owner::current()).unwrap();
        store.trial_started("live", "live-t000", 0, 1).unwrap();
        store
            .record_trial(&trial("live", 1, TrialState::Succeeded), None)
            .unwrap();
        store
            .record_trial(&trial("done", 0, TrialState::Succeeded), None)
            .unwrap();
        store
            .record_trial(&trial("done", 1, TrialState::Failed), None)
            .unwrap();
        store
            .record_trial(&trial("done", 2, TrialState::Skipped), None)
            .unwrap();
        store
            .record_trial(&trial("done", 3, TrialState::Pruned), None)
            .unwrap();
        store.finish_run("done", RunEnd::Succeeded, None).unwrap();

        let counts = store.counts().unwrap();
        let runs: Vec<(&str, u64)> = counts.runs.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        assert_eq!(
            runs,
            [
                ("queued", 1),
                ("running", 1),
                ("succeeded", 1),
                ("failed", 0),
                ("cancelled", 0),
                ("interrupted", 2)
            ]
        );
        // The states the runs' own records are reported in.
        let mut reported: BTreeMap<RunState, u64> = RunState::ALL.map(|s| (s, 0)).into();
        for run in store.runs().unwrap() {
            *reported.get_mut(&run.status).unwrap() += 1;
        }
        assert_eq!(counts.runs, reported);
        let trials: Vec<(&str, u64)> = counts
            .trials
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            trials,
            [
                ("running", 1),
                ("succeeded", 2),
                ("failed", 1),
                ("skipped", 1),
                ("cancelled", 0),
                ("pruned", 1)
            ]
        );
    }
}
