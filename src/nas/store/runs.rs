//! Runs: created `queued`, claimed by the process that drives them (`running`, with a
//! heartbeat), ended with their summary (trials completed, best trial) and their MLflow
//! outbox item. A `running` run whose owner is gone reads as `interrupted`.

use super::owner::now_ms;
use super::queue::NEXT_POSITION;
use super::{db_error, insert_event, json_column, now_rfc3339, outbox, OutboxKind, Store};
use super::{CancelOutcome, Owner, RunEnd, RunState, TrialState};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::spec::RunSpec;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::Serialize;
use serde_json::{json, Value};

/// A run as stored (DESIGN §7's `run` document).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The spec's name.
    pub name: String,
    /// Where the run is; `interrupted` when it is stored as running but its owner is gone.
    pub status: RunState,
    /// What the run optimises.
    pub objective: String,
    /// maximize or minimize.
    pub direction: String,
    /// The dataset id.
    pub dataset_id: String,
    /// The run seed.
    pub seed: u64,
    /// Best objective value so far.
    pub best_metric: Option<f64>,
    /// The trial that reached it.
    pub best_trial_id: Option<String>,
    /// Trials planned by the budget.
    pub trials_planned: u32,
    /// Trials finished (succeeded or failed).
    pub trials_completed: u32,
    /// When the run was created (RFC 3339).
    pub created_at: String,
    /// When it first started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The MLflow parent run, once synced.
    pub mlflow_run_id: Option<String>,
    /// The run spec.
    pub spec: Value,
    /// What `start_run` answered (task, dataset sizes, normalised search space).
    pub start_info: Option<Value>,
}

impl Store {
    /// Records a new run, `queued`: `false` (and nothing written) when `run_id` is taken.
    pub fn create_run(&self, run_id: &str, spec: &RunSpec) -> Result<bool> {
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        self.write("create run", |tx| {
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO model_runs (run_id, name, status, objective, direction, dataset_id,
                         seed, spec, trials_planned, created_at, queue_position)
                     VALUES (?1, ?2, ?10, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NEXT_POSITION})
                     ON CONFLICT (run_id) DO NOTHING"
                ),
                params![
                    run_id,
                    spec.name,
                    spec.objective,
                    spec.direction.as_str(),
                    spec.dataset,
                    spec.seed as i64,
                    spec_json,
                    spec.budget.trials,
                    now_rfc3339(),
                    RunState::Queued
                ],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            insert_event(tx, run_id, "ml.run.queued", &json!({"name": spec.name}))?;
            Ok(true)
        })
    }

    /// Makes `owner` the driver of `run_id` and marks it `running`. Refused while another
    /// live owner holds it, and for a run that has ended.
    pub fn claim(&self, run_id: &str, owner: &Owner) -> Result<()> {
        self.write("claim run", |tx| {
            let row = tx
                .query_row(
                    "SELECT status, owner_host, owner_pid, owner_start, heartbeat_ms FROM model_runs WHERE run_id = ?1",
                    [run_id],
                    |r| {
                        Ok((
                            r.get::<_, RunState>(0)?,
                            recorded_owner(r.get(1)?, r.get(2)?, r.get(3)?),
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((status, holder, heartbeat)) = row else {
                return Ok(Err(not_found(run_id)));
            };
            if status.is_final() {
                return Ok(Err(BridgeError::new(
                    ErrorClass::Contract,
                    format!("run {run_id} already ended ({status}); nothing to resume"),
                )));
            }
            // A cancel asked of an earlier owner is not this one's to honour; one asked
            // since this owner took the run (from the queue) is.
            let keep_cancel = holder.as_ref() == Some(owner) && status == RunState::Running;
            if let Some(holder) = holder {
                if holder != *owner && status == RunState::Running && holder.is_alive(heartbeat) {
                    return Ok(Err(BridgeError::new(
                        ErrorClass::Contract,
                        format!(
                            "run {run_id} is being driven by process {} on {}; cancel it with `runs cancel {run_id}` or wait",
                            holder.pid, holder.host
                        ),
                    )));
                }
            }
            tx.execute(
                "UPDATE model_runs SET status = ?7, owner_host = ?2, owner_pid = ?3, owner_start = ?4,
                     heartbeat_ms = ?5, started_at = COALESCE(started_at, ?6),
                     cancel_requested = cancel_requested * ?8
                 WHERE run_id = ?1",
                params![
                    run_id,
                    owner.host,
                    owner.pid,
                    owner.start,
                    now_ms(),
                    now_rfc3339(),
                    RunState::Running,
                    keep_cancel
                ],
            )?;
            Ok(Ok(()))
        })?
    }

    /// Renews the owner's heartbeat; returns whether a cancel was requested.
    pub fn heartbeat(&self, run_id: &str) -> Result<bool> {
        self.write("heartbeat", |tx| {
            tx.execute(
                "UPDATE model_runs SET heartbeat_ms = ?2 WHERE run_id = ?1",
                params![run_id, now_ms()],
            )?;
            tx.query_row(
                "SELECT cancel_requested FROM model_runs WHERE run_id = ?1",
                [run_id],
                |r| r.get::<_, bool>(0),
            )
        })
    }

    /// Stores what `start_run` answered.
    pub fn record_start(&self, run_id: &str, info: &Value) -> Result<()> {
        self.write("record start", |tx| {
            tx.execute(
                "UPDATE model_runs SET start_info = ?2 WHERE run_id = ?1",
                params![run_id, info.to_string()],
            )?;
            insert_event(tx, run_id, "ml.run.start", info)
        })
    }

    /// Ends a run the way `end` says and releases it; queues its MLflow sync in the same
    /// transaction.
    ///
    /// A run asked to stop (`cancel_requested`, answered `cancelling`) that would end
    /// `succeeded` ends `cancelled`: the request may land after its last trial, before
    /// this transaction, and what the requester was told must hold.
    pub fn finish_run(&self, run_id: &str, end: RunEnd, error: Option<&str>) -> Result<()> {
        self.write("finish run", |tx| {
            let cancel_requested: bool = tx
                .query_row(
                    "SELECT cancel_requested FROM model_runs WHERE run_id = ?1",
                    [run_id],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(false);
            let end = match end {
                RunEnd::Succeeded if cancel_requested => RunEnd::Cancelled,
                end => end,
            };
            finish_run_in(tx, run_id, end, error)
        })
    }

    /// Asks a run to stop. A run nobody drives (queued or interrupted) is cancelled at
    /// once; a running one is cancelled by its owner at its next heartbeat. The state is
    /// read and changed in one transaction, so a server taking the run from the queue at
    /// the same moment either drives it (and sees the request) or finds it cancelled.
    pub fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome> {
        self.write("cancel run", |tx| {
            let Some(run) = run_in(tx, run_id)? else {
                return Ok(Err(not_found(run_id)));
            };
            if let Some(end) = run.status.end() {
                return Ok(Ok(CancelOutcome::Ended(end)));
            }
            if run.status == RunState::Running {
                tx.execute(
                    "UPDATE model_runs SET cancel_requested = 1 WHERE run_id = ?1",
                    [run_id],
                )?;
                return Ok(Ok(CancelOutcome::Cancelling));
            }
            tx.execute(
                "UPDATE model_trials SET status = ?2 WHERE run_id = ?1 AND status = ?3",
                params![run_id, TrialState::Cancelled, TrialState::Running],
            )?;
            finish_run_in(tx, run_id, RunEnd::Cancelled, None)?;
            Ok(Ok(CancelOutcome::Ended(RunEnd::Cancelled)))
        })?
    }

    /// One run, with `running` reported as `interrupted` when its owner is gone.
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        run_in(&self.conn.lock(), run_id)
            .map_err(db_error("read run"))?
            .ok_or_else(|| not_found(run_id))
    }

    /// All runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(&format!(
                "{RUN_SELECT} ORDER BY created_at DESC, rowid DESC"
            ))
            .map_err(db_error("list runs"))?;
        let rows = stmt
            .query_map([], run_from_row)
            .map_err(db_error("list runs"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("list runs"))
    }
}

/// Ends a run in `tx` (see [`Store::finish_run`]).
pub(super) fn finish_run_in(
    tx: &Transaction<'_>,
    run_id: &str,
    end: RunEnd,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let status = RunState::from(end);
    update_run_summary(tx, run_id)?;
    tx.execute(
        "UPDATE model_runs SET status = ?2, error = ?3, finished_at = ?4, owner_pid = NULL,
             owner_host = NULL, owner_start = NULL
         WHERE run_id = ?1",
        params![run_id, status, error, now_rfc3339()],
    )?;
    outbox::enqueue(tx, OutboxKind::Run, run_id, None)?;
    insert_event(
        tx,
        run_id,
        end.event_kind(),
        &json!({"status": status, "error": error}),
    )
}

/// The detail that marks a [`not_found`] error (see [`is_not_found`]).
const NOT_FOUND: &str = "not_found";

/// Whether `err` says that the run it names is not in the store.
pub fn is_not_found(err: &BridgeError) -> bool {
    err.details.get(NOT_FOUND).and_then(Value::as_bool) == Some(true)
}

/// Run `run_id` as [`Store::run`] reports it, read on `conn` (or in a transaction).
pub(super) fn run_in(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<RunRecord>> {
    conn.query_row(
        &format!("{RUN_SELECT} WHERE run_id = ?1"),
        [run_id],
        run_from_row,
    )
    .optional()
}

pub(super) fn not_found(run_id: &str) -> BridgeError {
    BridgeError::new(
        ErrorClass::Contract,
        format!("no run {run_id:?} in the store"),
    )
    .with_run_id(Some(run_id.to_owned()))
    .with_detail(NOT_FOUND, true)
}

/// The owner named by a run's owner columns, when all three are set.
fn recorded_owner(host: Option<String>, pid: Option<u32>, start: Option<String>) -> Option<Owner> {
    Some(Owner {
        host: host?,
        pid: pid?,
        start: start?,
    })
}

/// SQL for the number of completed trials ([`TrialState::COMPLETED`]) of run `?1`.
pub(super) fn trials_completed_sql() -> String {
    let states: Vec<String> = TrialState::COMPLETED
        .iter()
        .map(|state| format!("'{state}'"))
        .collect();
    format!(
        "(SELECT COUNT(*) FROM model_trials WHERE run_id = ?1 AND status IN ({}))",
        states.join(", ")
    )
}

/// Recomputes trials_completed and the best trial from the trials table (ties go to
/// the lowest index, so the best trial does not depend on the order trials finished).
/// Only numeric objective values count: a row written before replies were checked may
/// hold anything, and must not keep its run from finishing.
fn update_run_summary(tx: &Transaction<'_>, run_id: &str) -> rusqlite::Result<()> {
    let (objective, direction): (String, String) = tx.query_row(
        "SELECT objective, direction FROM model_runs WHERE run_id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let order = if direction == "minimize" {
        "ASC"
    } else {
        "DESC"
    };
    let path = format!("$.{objective}");
    let best: Option<(String, f64)> = tx
        .query_row(
            &format!(
                "SELECT trial_id, json_extract(metrics, ?2) AS m FROM model_trials
                 WHERE run_id = ?1 AND status = ?3 AND typeof(m) IN ('integer', 'real')
                 ORDER BY m {order}, idx ASC LIMIT 1"
            ),
            params![run_id, path, TrialState::Succeeded],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    tx.execute(
        &format!(
            "UPDATE model_runs SET trials_completed = {}, best_trial_id = ?2, best_metric = ?3
             WHERE run_id = ?1",
            trials_completed_sql()
        ),
        params![
            run_id,
            best.as_ref().map(|b| &b.0),
            best.as_ref().map(|b| b.1)
        ],
    )?;
    Ok(())
}

pub(super) const RUN_SELECT: &str =
    "SELECT run_id, name, status, objective, direction, dataset_id, seed, best_metric,
    best_trial_id, trials_planned, trials_completed, created_at, started_at, finished_at, error,
    mlflow_run_id, spec, start_info, owner_host, owner_pid, owner_start, heartbeat_ms, rowid
    FROM model_runs";

/// The state a run is reported in: its stored `status`, except that `running` reads as
/// `interrupted` when its owner (columns `owner_host`, `owner_pid`, `owner_start`,
/// `heartbeat_ms`, from column `first_owner_column` on) is gone.
pub(super) fn reported_state(
    r: &Row<'_>,
    status: RunState,
    first_owner_column: usize,
) -> rusqlite::Result<RunState> {
    if status != RunState::Running {
        return Ok(status);
    }
    let c = first_owner_column;
    let owner = recorded_owner(r.get(c)?, r.get(c + 1)?, r.get(c + 2)?);
    let heartbeat: Option<i64> = r.get(c + 3)?;
    Ok(if owner.is_some_and(|o| o.is_alive(heartbeat)) {
        RunState::Running
    } else {
        RunState::Interrupted
    })
}

/// A row of [`RUN_SELECT`]; `running` becomes `interrupted` when its owner is gone.
pub(super) fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        name: r.get(1)?,
        status: reported_state(r, r.get(2)?, 18)?,
        objective: r.get(3)?,
        direction: r.get(4)?,
        dataset_id: r.get(5)?,
        seed: r.get::<_, i64>(6)? as u64,
        best_metric: r.get(7)?,
        best_trial_id: r.get(8)?,
        trials_planned: r.get(9)?,
        trials_completed: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        error: r.get(14)?,
        mlflow_run_id: r.get(15)?,
        spec: json_column(r.get::<_, String>(16)?),
        start_info: r.get::<_, Option<String>>(17)?.map(json_column),
    })
}
