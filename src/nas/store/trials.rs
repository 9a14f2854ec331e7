//! Trials and their artifacts: a trial is marked `running` when it starts and recorded,
//! with its artifact, its event, its run's counters and its MLflow outbox item, in one
//! transaction when it ends.

use super::TrialState;
use super::{db_error, insert_event, json_column, now_rfc3339, outbox, OutboxKind, Store};
use crate::core::error::Result;
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A trial as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrialRecord {
    /// The run.
    pub run_id: String,
    /// The trial id (`<run_id>-t<index>`).
    pub trial_id: String,
    /// Position in the run (0-based).
    pub index: u32,
    /// The trial's seed.
    pub seed: u64,
    /// Running, or how the trial ended.
    pub status: TrialState,
    /// Metrics reported by the service.
    pub metrics: Value,
    /// The sampled architecture and hyper-parameters.
    pub parameters: Value,
    /// Wall time of the trial.
    pub duration_ms: u64,
    /// Where the trained model is.
    pub artifact_uri: Option<String>,
    /// The error of a failed trial (`BridgeError` as JSON).
    pub error: Option<Value>,
    /// Attempts the bridge made.
    pub attempts: u32,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The MLflow child run, once synced.
    pub mlflow_run_id: Option<String>,
    /// Where the trial ran, under the `ray` executor (`None` under `local`).
    pub placement: Option<Placement>,
}

/// Where a trial ran on a Ray cluster (DESIGN §12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The Ray node id (hex).
    pub node_id: String,
    /// The node's host name.
    pub host: String,
    /// The pid of the Ray worker process that ran the trial.
    pub worker_pid: u32,
}

/// An artifact written by a trial.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArtifactRecord {
    /// `model` for a trained network.
    pub kind: String,
    /// `file://…` or another URI.
    pub uri: String,
    /// Hex SHA-256 of the file.
    pub sha256: Option<String>,
    /// Size in bytes.
    pub bytes: Option<u64>,
}

impl Store {
    /// Marks a trial as running (or running again after an interruption).
    pub fn trial_started(&self, run_id: &str, trial_id: &str, index: u32, seed: u64) -> Result<()> {
        self.write("trial started", |tx| {
            tx.prepare_cached(
                "INSERT INTO model_trials (run_id, trial_id, idx, seed, status, started_at, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?6, ?5, 0)
                 ON CONFLICT (run_id, trial_id) DO UPDATE SET status = ?6, started_at = ?5",
            )?
            .execute(params![
                    run_id,
                    trial_id,
                    index,
                    seed as i64,
                    now_rfc3339(),
                TrialState::Running
            ])?;
            Ok(())
        })
    }

    /// Records a finished trial, its artifact, its event, the run's new counters and best
    /// trial, and its MLflow outbox item, all in one transaction.
    pub fn record_trial(
        &self,
        trial: &TrialRecord,
        artifact: Option<&ArtifactRecord>,
    ) -> Result<()> {
        self.write("record trial", |tx| {
            let was: Option<TrialState> = tx
                .prepare_cached(
                    "SELECT status FROM model_trials WHERE run_id = ?1 AND trial_id = ?2",
                )?
                .query_row(params![trial.run_id, trial.trial_id], |r| r.get(0))
                .optional()?;
            tx.prepare_cached(
                "INSERT INTO model_trials (run_id, trial_id, idx, seed, status, metrics, parameters,
                     artifact_uri, duration_ms, error, attempts, started_at, finished_at,
                     node_id, node_host, worker_pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (run_id, trial_id) DO UPDATE SET status = ?5, metrics = ?6,
                     parameters = ?7, artifact_uri = ?8, duration_ms = ?9, error = ?10,
                     attempts = ?11, finished_at = ?13, node_id = ?14, node_host = ?15,
                     worker_pid = ?16",
            )?
            .execute(params![
                    trial.run_id,
                    trial.trial_id,
                    trial.index,
                    trial.seed as i64,
                    trial.status,
                    trial.metrics.to_string(),
                    trial.parameters.to_string(),
                    trial.artifact_uri,
                    trial.duration_ms as i64,
                    trial.error.as_ref().map(Value::to_string),
                    trial.attempts,
                    trial.started_at,
                    trial.finished_at,
                    trial.placement.as_ref().map(|p| &p.node_id),
                    trial.placement.as_ref().map(|p| &p.host),
                trial.placement.as_ref().map(|p| p.worker_pid),
            ])?;
            if let Some(artifact) = artifact {
                tx.prepare_cached(
                    "INSERT INTO model_artifacts (run_id, trial_id, kind, uri, sha256, bytes, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                        trial.run_id,
                        trial.trial_id,
                        artifact.kind,
                        artifact.uri,
                        artifact.sha256,
                        artifact.bytes.map(|b| b as i64),
                    now_rfc3339()
                ])?;
            }
            let best = note_trial_in_run(tx, trial, was)?;
            if trial.status.queues_sync() {
                outbox::enqueue(tx, OutboxKind::Trial, &trial.run_id, Some(&trial.trial_id))?;
            }
            let event = json!({"trial_id": trial.trial_id, "index": trial.index, "status": trial.status,
                               "metrics": trial.metrics, "parameters": trial.parameters,
                               "duration_ms": trial.duration_ms, "error": trial.error,
                               "placement": trial.placement});
            insert_event(tx, &trial.run_id, "ml.run.trial", &event)?;
            if let Some(best) = best {
                insert_event(tx, &trial.run_id, "ml.run.best", &best)?;
            }
            Ok(())
        })
    }

    /// The trials of a run, by index.
    pub fn trials(&self, run_id: &str) -> Result<Vec<TrialRecord>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(&format!("{TRIAL_SELECT} WHERE run_id = ?1 ORDER BY idx"))
            .map_err(db_error("read trials"))?;
        let rows = stmt
            .query_map([run_id], trial_from_row)
            .map_err(db_error("read trials"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("read trials"))
    }

    /// One trial of a run.
    pub fn trial(&self, run_id: &str, trial_id: &str) -> Result<Option<TrialRecord>> {
        let conn = self.conn.lock();
        conn.query_row(
            &format!("{TRIAL_SELECT} WHERE run_id = ?1 AND trial_id = ?2"),
            params![run_id, trial_id],
            trial_from_row,
        )
        .optional()
        .map_err(db_error("read trial"))
    }

    /// The artifacts of a run.
    pub fn artifacts(&self, run_id: &str) -> Result<Vec<(Option<String>, ArtifactRecord)>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT trial_id, kind, uri, sha256, bytes FROM model_artifacts WHERE run_id = ?1 ORDER BY id")
            .map_err(db_error("read artifacts"))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok((
                    r.get(0)?,
                    ArtifactRecord {
                        kind: r.get(1)?,
                        uri: r.get(2)?,
                        sha256: r.get(3)?,
                        bytes: r.get::<_, Option<i64>>(4)?.map(|b| b as u64),
                    },
                ))
            })
            .map_err(db_error("read artifacts"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("read artifacts"))
    }
}

/// Counts a newly finished trial into its run (`was`: the trial's state before this
/// record, if it had a row) and makes it the best if it beats the current best (constant
/// time per trial; `runs::update_run_summary` recomputes it all). Returns the
/// `ml.run.best` event's data when the trial became the best.
fn note_trial_in_run(
    tx: &Transaction<'_>,
    trial: &TrialRecord,
    was: Option<TrialState>,
) -> rusqlite::Result<Option<Value>> {
    let (objective, direction, best): (String, String, Option<f64>) = tx
        .prepare_cached(
            "SELECT objective, direction, best_metric FROM model_runs WHERE run_id = ?1",
        )?
        .query_row([&trial.run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let metric = trial.metrics.get(&objective).and_then(Value::as_f64);
    let mut new_best = None;
    if let (TrialState::Succeeded, Some(metric)) = (trial.status, metric) {
        let better = best.is_none_or(|best| {
            if direction == "minimize" {
                metric < best
            } else {
                metric > best
            }
        });
        if better {
            tx.prepare_cached(
                "UPDATE model_runs SET best_metric = ?2, best_trial_id = ?3 WHERE run_id = ?1",
            )?
            .execute(params![trial.run_id, metric, trial.trial_id])?;
            new_best = Some(json!({"trial_id": trial.trial_id, "index": trial.index,
                                   "objective": objective, "value": metric}));
        }
    }
    let counted =
        |state: Option<TrialState>| i64::from(state.is_some_and(TrialState::is_completed));
    let delta = counted(Some(trial.status)) - counted(was);
    if delta != 0 {
        tx.prepare_cached(
            "UPDATE model_runs SET trials_completed = trials_completed + ?2 WHERE run_id = ?1",
        )?
        .execute(params![trial.run_id, delta])?;
    }
    Ok(new_best)
}

const TRIAL_SELECT: &str =
    "SELECT run_id, trial_id, idx, seed, status, metrics, parameters, duration_ms,
    artifact_uri, error, attempts, started_at, finished_at, mlflow_run_id, node_id, node_host,
    worker_pid FROM model_trials";

/// A row of [`TRIAL_SELECT`].
fn trial_from_row(r: &Row<'_>) -> rusqlite::Result<TrialRecord> {
    Ok(TrialRecord {
        run_id: r.get(0)?,
        trial_id: r.get(1)?,
        index: r.get(2)?,
        seed: r.get::<_, i64>(3)? as u64,
        status: r.get(4)?,
        metrics: json_column(r.get::<_, String>(5)?),
        parameters: json_column(r.get::<_, String>(6)?),
        duration_ms: r.get::<_, i64>(7)? as u64,
        artifact_uri: r.get(8)?,
        error: r.get::<_, Option<String>>(9)?.map(json_column),
        attempts: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        mlflow_run_id: r.get(13)?,
        placement: placement_from_row(r)?,
    })
}

/// The placement columns of a [`TRIAL_SELECT`] row (all set, or none).
fn placement_from_row(r: &Row<'_>) -> rusqlite::Result<Option<Placement>> {
    let node_id: Option<String> = r.get(14)?;
    let host: Option<String> = r.get(15)?;
    let pid: Option<u32> = r.get(16)?;
    Ok(match (node_id, host, pid) {
        (Some(node_id), Some(host), Some(worker_pid)) => Some(Placement {
            node_id,
            host,
            worker_pid,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::store::test_support::{spec, trial};

    #[test]
    fn a_trial_counts_once_into_its_run_however_often_it_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.create_run("r", &spec("t")).unwrap();
        let completed = || store.run("r").unwrap().trials_completed;
        let record = |index, state| store.record_trial(&trial("r", index, state), None).unwrap();
        store.trial_started("r", "r-t000", 0, 1).unwrap();
        assert_eq!(completed(), 0, "a running trial is not completed");
        record(0, TrialState::Failed);
        assert_eq!(completed(), 1);
        // Recorded again (a retry that succeeded): still one trial.
        record(0, TrialState::Succeeded);
        assert_eq!(completed(), 1);
        // A cancelled or skipped record is not completed; one without a running row first.
        record(1, TrialState::Cancelled);
        record(2, TrialState::Skipped);
        record(3, TrialState::Pruned);
        assert_eq!(completed(), 2);
        // A completed trial recorded as cancelled afterwards leaves the count.
        record(0, TrialState::Cancelled);
        assert_eq!(completed(), 1);
        // The constant-time count agrees with a recount.
        let recount: u32 = store
            .trials("r")
            .unwrap()
            .iter()
            .filter(|t| t.status.is_completed())
            .count() as u32;
        assert_eq!(completed(), recount);
        // One pending outbox item per synced trial (0, 1 and 3; a skipped one is not
        // mirrored), bumped, not duplicated, when a trial is recorded again.
        assert_eq!(store.outbox_counts().unwrap().pending, 3);
    }
}
