//! The MLflow outbox (DESIGN §5): one row per finished trial or run still to be mirrored
//! into MLflow. Rows are written by [`enqueue`] inside the transaction that records the
//! trial or ends the run, so nothing the store holds can miss its sync; the sync worker
//! (`crate::sync`) leases them, calls `sync_mlflow`, and marks them synced together with
//! the MLflow ids it got back.
//!
//! A row stays `pending` until it is synced (a failure only bumps `attempts` and pushes
//! `next_attempt_ms` back). Syncers lease whole runs: while one holds items of a run,
//! others skip that run, so two processes never create the same MLflow run twice.
//! Re-enqueuing an item that is still pending (a cancelled trial that a resume runs
//! again) bumps its `revision` instead of adding a row; a syncer that read the older
//! state then leaves it pending for the next pass.

use super::{db_error, now_rfc3339, trial_from_row, Store, TrialRecord};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;
use std::time::Duration;

/// What an outbox item mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    /// A run (the MLflow parent run), enqueued when the run ends.
    Run,
    /// A trial (a child run), enqueued when the trial is recorded.
    Trial,
}

impl OutboxKind {
    fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Run => "run",
            OutboxKind::Trial => "trial",
        }
    }
}

/// One leased outbox item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    /// The row id.
    pub id: i64,
    /// Run or trial.
    pub kind: OutboxKind,
    /// The run.
    pub run_id: String,
    /// The trial, for a trial item.
    pub trial_id: Option<String>,
    /// Bumped each time the item is enqueued again while pending.
    pub revision: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// How many items are waiting and how many were synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Items not synced yet.
    pub pending: u64,
    /// Items synced.
    pub synced: u64,
}

/// Adds (or refreshes) the pending item of a run or trial, inside the caller's
/// transaction.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    kind: OutboxKind,
    run_id: &str,
    trial_id: Option<&str>,
) -> rusqlite::Result<()> {
    let bumped = tx.execute(
        "UPDATE mlflow_outbox SET revision = revision + 1, next_attempt_ms = 0
         WHERE kind = ?1 AND run_id = ?2 AND trial_id IS ?3 AND status = 'pending'",
        params![kind.as_str(), run_id, trial_id],
    )?;
    if bumped == 0 {
        tx.execute(
            "INSERT INTO mlflow_outbox (kind, run_id, trial_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![kind.as_str(), run_id, trial_id, now_rfc3339()],
        )?;
    }
    Ok(())
}

impl Store {
    /// Leases up to `limit` pending items for `owner` until `now_ms + lease`, oldest
    /// first, skipping runs another live lease holds. With `due_only`, items whose retry
    /// time has not come yet are left alone.
    pub fn outbox_lease(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        due_only: bool,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let until = now_ms + lease.as_millis() as i64;
        self.write("lease outbox", |tx| {
            let items = {
                let mut stmt = tx.prepare(
                    "SELECT id, kind, run_id, trial_id, revision, attempts FROM mlflow_outbox o
                     WHERE status = 'pending' AND (?2 = 0 OR next_attempt_ms <= ?3)
                       AND NOT EXISTS (SELECT 1 FROM mlflow_outbox l
                           WHERE l.run_id = o.run_id AND l.status = 'pending'
                             AND l.lease_owner IS NOT NULL AND l.lease_owner != ?1
                             AND l.lease_until_ms > ?3)
                     ORDER BY id LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![owner, due_only, now_ms, limit as i64], |r| {
                    let kind: String = r.get(1)?;
                    Ok(OutboxItem {
                        id: r.get(0)?,
                        kind: if kind == "run" {
                            OutboxKind::Run
                        } else {
                            OutboxKind::Trial
                        },
                        run_id: r.get(2)?,
                        trial_id: r.get(3)?,
                        revision: r.get(4)?,
                        attempts: r.get(5)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for item in &items {
                tx.execute(
                    "UPDATE mlflow_outbox SET lease_owner = ?2, lease_until_ms = ?3 WHERE id = ?1",
                    params![item.id, owner, until],
                )?;
            }
            Ok(items)
        })
    }

    /// Extends `owner`'s leases to `until_ms`.
    pub fn outbox_renew(&self, owner: &str, until_ms: i64) -> Result<()> {
        self.write("renew outbox lease", |tx| {
            tx.execute(
                "UPDATE mlflow_outbox SET lease_until_ms = ?2 WHERE lease_owner = ?1 AND status = 'pending'",
                params![owner, until_ms],
            )?;
            Ok(())
        })
    }

    /// Marks `item` synced and writes the MLflow ids back to its run and trial, in one
    /// transaction. An item enqueued again since it was leased stays pending. Returns
    /// whether it was marked synced.
    pub fn outbox_synced(
        &self,
        item: &OutboxItem,
        run_mlflow_id: Option<&str>,
        trial_mlflow_id: Option<&str>,
    ) -> Result<bool> {
        self.write("outbox synced", |tx| {
            if let Some(id) = run_mlflow_id {
                tx.execute(
                    "UPDATE model_runs SET mlflow_run_id = ?2 WHERE run_id = ?1",
                    params![item.run_id, id],
                )?;
            }
            if let (Some(trial_id), Some(id)) = (&item.trial_id, trial_mlflow_id) {
                tx.execute(
                    "UPDATE model_trials SET mlflow_run_id = ?3 WHERE run_id = ?1 AND trial_id = ?2",
                    params![item.run_id, trial_id, id],
                )?;
            }
            let done = tx.execute(
                "UPDATE mlflow_outbox SET status = 'synced', synced_at = ?3, last_error = NULL,
                     lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = ?1 AND revision = ?2",
                params![item.id, item.revision, now_rfc3339()],
            )?;
            if done == 0 {
                tx.execute(
                    "UPDATE mlflow_outbox SET lease_owner = NULL, lease_until_ms = NULL WHERE id = ?1",
                    [item.id],
                )?;
            }
            Ok(done > 0)
        })
    }

    /// Records a failed attempt of `item`: it stays pending, retried from `retry_at_ms`.
    pub fn outbox_failed(&self, item: &OutboxItem, error: &str, retry_at_ms: i64) -> Result<()> {
        self.write("outbox failed", |tx| {
            tx.execute(
                "UPDATE mlflow_outbox SET attempts = attempts + 1, last_error = ?2,
                     next_attempt_ms = ?3, lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = ?1",
                params![item.id, error, retry_at_ms],
            )?;
            Ok(())
        })
    }

    /// Gives back every lease `owner` still holds.
    pub fn outbox_release(&self, owner: &str) -> Result<()> {
        self.write("release outbox", |tx| {
            tx.execute(
                "UPDATE mlflow_outbox SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = ?1",
                [owner],
            )?;
            Ok(())
        })
    }

    /// Pending and synced item counts.
    pub fn outbox_counts(&self) -> Result<OutboxCounts> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'synced'), 0)
             FROM mlflow_outbox",
            [],
            |r| {
                Ok(OutboxCounts {
                    pending: r.get::<_, i64>(0)? as u64,
                    synced: r.get::<_, i64>(1)? as u64,
                })
            },
        )
        .map_err(db_error("count outbox"))
    }

    /// One trial of a run.
    pub fn trial(&self, run_id: &str, trial_id: &str) -> Result<Option<TrialRecord>> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT run_id, trial_id, idx, seed, status, metrics, parameters, duration_ms,
                    artifact_uri, error, attempts, started_at, finished_at, mlflow_run_id
             FROM model_trials WHERE run_id = ?1 AND trial_id = ?2",
            params![run_id, trial_id],
            trial_from_row,
        )
        .optional()
        .map_err(db_error("read trial"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RunSpec;
    use serde_json::json;

    fn store_with_run(dir: &tempfile::TempDir) -> (Store, String) {
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let spec: RunSpec = RunSpec::from_toml_str(
            "name = \"t\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = 2\n",
            dir.path(),
        )
        .unwrap();
        store.create_run("r1", &spec).unwrap();
        (store, "r1".into())
    }

    fn trial(run_id: &str, index: u32, status: &str) -> TrialRecord {
        TrialRecord {
            run_id: run_id.into(),
            trial_id: format!("{run_id}-t{index:03}"),
            index,
            seed: 1,
            status: status.into(),
            metrics: json!({"val_accuracy": 0.5}),
            parameters: json!({}),
            duration_ms: 1,
            artifact_uri: None,
            error: None,
            attempts: 1,
            started_at: None,
            finished_at: None,
            mlflow_run_id: None,
        }
    }

    #[test]
    fn recording_enqueues_and_syncing_writes_the_ids_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = store_with_run(&dir);
        store
            .record_trial(&trial(&run, 0, "succeeded"), None)
            .unwrap();
        store.record_trial(&trial(&run, 1, "failed"), None).unwrap();
        store.finish_run(&run, "succeeded", None).unwrap();
        assert_eq!(store.outbox_counts().unwrap().pending, 3);

        let items = store
            .outbox_lease("a", 0, Duration::from_secs(60), true, 10)
            .unwrap();
        let kinds: Vec<_> = items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [OutboxKind::Trial, OutboxKind::Trial, OutboxKind::Run]
        );
        // Another syncer finds the run leased.
        let other = store
            .outbox_lease("b", 0, Duration::from_secs(60), false, 10)
            .unwrap();
        assert!(other.is_empty());

        assert!(store
            .outbox_synced(&items[0], Some("p1"), Some("c1"))
            .unwrap());
        store.outbox_failed(&items[1], "down", 5_000).unwrap();
        store.outbox_release("a").unwrap();
        assert_eq!(
            store.run(&run).unwrap().mlflow_run_id.as_deref(),
            Some("p1")
        );
        let synced = store.trial(&run, "r1-t000").unwrap().unwrap();
        assert_eq!(synced.mlflow_run_id.as_deref(), Some("c1"));
        assert_eq!(
            store.outbox_counts().unwrap(),
            OutboxCounts {
                pending: 2,
                synced: 1
            }
        );
        // The failed item waits for its retry time unless forced.
        let due = store
            .outbox_lease("b", 1_000, Duration::from_secs(60), true, 10)
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, OutboxKind::Run);
        store.outbox_release("b").unwrap();
        let forced = store
            .outbox_lease("b", 1_000, Duration::from_secs(60), false, 10)
            .unwrap();
        assert_eq!(forced.len(), 2);
        assert_eq!(forced[0].attempts, 1);
    }

    #[test]
    fn an_item_enqueued_again_while_leased_stays_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = store_with_run(&dir);
        store
            .record_trial(&trial(&run, 0, "cancelled"), None)
            .unwrap();
        let items = store
            .outbox_lease("a", 0, Duration::from_secs(60), true, 10)
            .unwrap();
        store
            .record_trial(&trial(&run, 0, "succeeded"), None)
            .unwrap();
        assert!(!store
            .outbox_synced(&items[0], Some("p"), Some("c"))
            .unwrap());
        assert_eq!(store.outbox_counts().unwrap().pending, 1);
        let again = store
            .outbox_lease("a", 0, Duration::from_secs(60), true, 10)
            .unwrap();
        assert_eq!(again[0].revision, 2);
        assert!(store
            .outbox_synced(&again[0], Some("p"), Some("c"))
            .unwrap());
        assert_eq!(store.outbox_counts().unwrap().pending, 0);
    }
}
