//! The MLflow outbox (DESIGN §5): one row per finished trial or run still to be mirrored
//! into MLflow. Rows are written by [`enqueue`] inside the transaction that records the
//! trial or ends the run, so nothing the store holds can miss its sync; the sync worker
//! (`crate::nas::sync`) leases them, calls `sync_mlflow`, and marks them synced together with
//! the MLflow ids it got back.
//!
//! A row is `pending` until it is synced; a failure that may pass (an outage, a timeout)
//! only bumps `attempts` and pushes `next_attempt_ms` back, while an item that can never
//! sync as it is gets parked as `failed` with its reason (`crate::nas::sync` decides which is
//! which). Syncers lease whole runs: while one holds items of a run, others skip that
//! run, so two processes never create the same MLflow run twice. A lease names its
//! holder's process (host, pid, start time): the leases of a holder whose process is gone
//! are freed at once, the others when they expire. Re-enqueuing an item that is still
//! pending (a cancelled trial that a resume runs again) bumps its `revision` instead of
//! adding a row, and revives a parked one; a syncer that read the older state then leaves
//! it pending for the next pass.

use super::{db_error, now_ms, now_rfc3339, Owner, Store};
use crate::core::error::Result;
use rusqlite::{params, Transaction};
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

/// The kind stored in the `kind` column (its CHECK allows only these two).
fn kind_from_column(kind: &str) -> OutboxKind {
    if kind == "run" {
        OutboxKind::Run
    } else {
        OutboxKind::Trial
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

/// How many items are waiting, synced and parked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Items not synced yet (and not parked).
    pub pending: u64,
    /// Items synced.
    pub synced: u64,
    /// Items parked as `failed`: they can never sync as they are.
    pub failed: u64,
}

/// An item parked as `failed` (`mlflow sync` lists them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedItem {
    /// The row id.
    pub item: i64,
    /// Run or trial.
    pub kind: OutboxKind,
    /// The run.
    pub run_id: String,
    /// The trial, for a trial item.
    pub trial_id: Option<String>,
    /// Why it can never sync.
    pub error: String,
    /// Attempts made, the last one included.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub failed_at: Option<String>,
}

/// Who holds outbox leases: one syncer (an id unique even among the syncers of one
/// process) and the process it runs in, by which a holder that is gone is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The syncer's id (`lease_owner`).
    pub id: String,
    /// Its process (`lease_host`, `lease_pid`, `lease_start`).
    pub process: Owner,
}

impl LeaseHolder {
    /// A new syncer of this process.
    pub fn current() -> LeaseHolder {
        let process = Owner::current();
        let id = format!(
            "{}:{}:{}:{:08x}",
            process.host,
            process.pid,
            now_ms(),
            fastrand::u32(..)
        );
        LeaseHolder { id, process }
    }
}

/// Adds (or refreshes) the pending item of a run or trial, inside the caller's
/// transaction. A parked item of the same run or trial is pending again: what it
/// mirrors has changed, so it may sync now.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    kind: OutboxKind,
    run_id: &str,
    trial_id: Option<&str>,
) -> rusqlite::Result<()> {
    let bumped = tx
        .prepare_cached(
            "UPDATE mlflow_outbox SET revision = revision + 1, next_attempt_ms = 0,
                 attempts = CASE status WHEN 'failed' THEN 0 ELSE attempts END,
                 status = 'pending', failed_at = NULL
             WHERE run_id = ?2 AND trial_id IS ?3 AND kind = ?1 AND status IN ('pending', 'failed')",
        )?
        .execute(params![kind.as_str(), run_id, trial_id])?;
    if bumped == 0 {
        tx.prepare_cached(
            "INSERT INTO mlflow_outbox (kind, run_id, trial_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![kind.as_str(), run_id, trial_id, now_rfc3339()])?;
    }
    Ok(())
}

/// Frees the leases of every other holder whose process is gone (on this host: its pid
/// is gone or now runs another process); returns how many items were freed. Holders on
/// other hosts, and leases of older versions that name no process, keep their leases
/// until they expire.
fn release_gone_holders(tx: &Transaction<'_>, own_id: &str) -> rusqlite::Result<usize> {
    let holders = {
        let mut stmt = tx.prepare(
            "SELECT DISTINCT lease_owner, lease_host, lease_pid, lease_start FROM mlflow_outbox
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND lease_owner != ?1
               AND lease_host IS NOT NULL AND lease_pid IS NOT NULL AND lease_start IS NOT NULL",
        )?;
        let rows = stmt.query_map([own_id], |r| {
            let owner = Owner {
                host: r.get(1)?,
                pid: r.get(2)?,
                start: r.get(3)?,
            };
            Ok((r.get::<_, String>(0)?, owner))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut freed = 0;
    for (id, _) in holders.iter().filter(|(_, owner)| owner.is_gone()) {
        freed += tx.execute(
            "UPDATE mlflow_outbox SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = ?1",
            [id],
        )?;
    }
    Ok(freed)
}

impl Store {
    /// Leases up to `limit` pending items for `holder` until `now_ms + lease`, oldest
    /// first, skipping runs another live lease holds (the leases of holders whose process
    /// is gone are freed first). With `due_only`, items whose retry time has not come yet
    /// are left alone.
    pub fn outbox_lease(
        &self,
        holder: &LeaseHolder,
        now_ms: i64,
        lease: Duration,
        due_only: bool,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let until = now_ms + lease.as_millis() as i64;
        let owner = holder.id.as_str();
        self.write("lease outbox", |tx| {
            release_gone_holders(tx, owner)?;
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
                    Ok(OutboxItem {
                        id: r.get(0)?,
                        kind: kind_from_column(&r.get::<_, String>(1)?),
                        run_id: r.get(2)?,
                        trial_id: r.get(3)?,
                        revision: r.get(4)?,
                        attempts: r.get(5)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let process = &holder.process;
            for item in &items {
                tx.execute(
                    "UPDATE mlflow_outbox SET lease_owner = ?2, lease_until_ms = ?3,
                         lease_host = ?4, lease_pid = ?5, lease_start = ?6
                     WHERE id = ?1",
                    params![
                        item.id,
                        owner,
                        until,
                        process.host,
                        process.pid,
                        process.start
                    ],
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

    /// Parks `item` as `failed` with `error`: it can never sync as it is, so no pass
    /// tries it again until it is enqueued again or [`Store::outbox_retry_failed`] puts
    /// it back. An item enqueued again since it was leased stays pending instead (what
    /// it mirrors has changed). Returns whether it was parked.
    pub fn outbox_park(&self, item: &OutboxItem, error: &str) -> Result<bool> {
        self.write("outbox park", |tx| {
            let parked = tx.execute(
                "UPDATE mlflow_outbox SET status = 'failed', attempts = attempts + 1,
                     last_error = ?3, failed_at = ?4, lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = ?1 AND revision = ?2",
                params![item.id, item.revision, error, now_rfc3339()],
            )?;
            if parked == 0 {
                tx.execute(
                    "UPDATE mlflow_outbox SET lease_owner = NULL, lease_until_ms = NULL WHERE id = ?1",
                    [item.id],
                )?;
            }
            Ok(parked > 0)
        })
    }

    /// Every item parked as `failed`, oldest first.
    pub fn outbox_failed_items(&self) -> Result<Vec<FailedItem>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(
                "SELECT id, kind, run_id, trial_id, COALESCE(last_error, ''), attempts, failed_at
                 FROM mlflow_outbox WHERE status = 'failed' ORDER BY id",
            )
            .map_err(db_error("read failed outbox items"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FailedItem {
                    item: r.get(0)?,
                    kind: kind_from_column(&r.get::<_, String>(1)?),
                    run_id: r.get(2)?,
                    trial_id: r.get(3)?,
                    error: r.get(4)?,
                    attempts: r.get(5)?,
                    failed_at: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(db_error("read failed outbox items"))
    }

    /// Puts every parked item back to pending, as if never tried (`mlflow sync
    /// --retry-failed`, once what made them fail is fixed); returns how many.
    pub fn outbox_retry_failed(&self) -> Result<u64> {
        self.write("retry failed outbox items", |tx| {
            let revived = tx.execute(
                "UPDATE mlflow_outbox SET status = 'pending', attempts = 0, next_attempt_ms = 0,
                     failed_at = NULL
                 WHERE status = 'failed'",
                [],
            )?;
            Ok(revived as u64)
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

    /// Pending, synced and parked item counts.
    pub fn outbox_counts(&self) -> Result<OutboxCounts> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'synced'), 0),
                    COALESCE(SUM(status = 'failed'), 0)
             FROM mlflow_outbox",
            [],
            |r| {
                Ok(OutboxCounts {
                    pending: r.get::<_, i64>(0)? as u64,
                    synced: r.get::<_, i64>(1)? as u64,
                    failed: r.get::<_, i64>(2)? as u64,
                })
            },
        )
        .map_err(db_error("count outbox"))
    }
}

#[cfg(test)]
mod tests;
