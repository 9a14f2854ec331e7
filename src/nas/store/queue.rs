//! The run queue of `serve` (DESIGN §11), kept in the runs table: a `queued` run waits
//! in `queued_at` order (FIFO); a server takes the oldest one, marking it as driven by
//! `serve`; after a crash, the runs a server was driving (now `interrupted`) are found
//! again with [`Store::interrupted_runs_of`] and resumed.
//!
//! Taking a run does not claim it: [`Store::claim`] does that when the run is driven,
//! atomically, so two servers sharing one store never drive the same run.

use super::runs::{not_found, run_from_row, RUN_SELECT};
use super::{db_error, insert_event, now_rfc3339, RunRecord, RunState, Store, TrialRecord};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::spec::RunSpec;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

/// Who drives a run taken from the queue.
pub const SERVE_DRIVER: &str = "serve";

/// A page of runs, newest first, and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct RunsPage {
    /// The runs of this page.
    pub runs: Vec<RunRecord>,
    /// Pass it as `cursor` to read the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl Store {
    /// Records a new run of `spec`, `queued`, under a new id (`run-<UTC time>-<random>`)
    /// and returns the id.
    pub fn submit(&self, spec: &RunSpec) -> Result<String> {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let run_id = format!("run-{stamp}-{:06x}", fastrand::u32(..0x100_0000));
        self.create_run(&run_id, spec)?;
        Ok(run_id)
    }

    /// Takes the oldest `queued` run for a server to drive (marking its driver), or
    /// `None` when the queue is empty.
    pub fn take_queued(&self) -> Result<Option<String>> {
        self.write("take queued run", |tx| {
            let run_id: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM model_runs WHERE status = ?1
                     ORDER BY queued_at, rowid LIMIT 1",
                    [RunState::Queued],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(run_id) = &run_id {
                tx.execute(
                    "UPDATE model_runs SET driver = ?2 WHERE run_id = ?1",
                    params![run_id, SERVE_DRIVER],
                )?;
            }
            Ok(run_id)
        })
    }

    /// Puts an `interrupted` run back at the end of the queue, to be resumed by a
    /// server. A run that has ended, or that a live process drives, is refused
    /// (`contract`, with detail `conflict`); a queued run stays where it is.
    pub fn requeue(&self, run_id: &str) -> Result<RunRecord> {
        self.write("queue run", |tx| {
            let Some(run) = tx
                .query_row(&format!("{RUN_SELECT} WHERE run_id = ?1"), [run_id], run_from_row)
                .optional()?
            else {
                return Ok(Err(not_found(run_id)));
            };
            match run.status {
                RunState::Interrupted => {
                    tx.execute(
                        "UPDATE model_runs SET status = ?2, queued_at = ?3, driver = NULL,
                             owner_pid = NULL, owner_host = NULL, owner_start = NULL
                         WHERE run_id = ?1",
                        params![run_id, RunState::Queued, now_rfc3339()],
                    )?;
                    insert_event(tx, run_id, "ml.run.queued", &json!({"name": run.name}))?;
                    Ok(Ok(RunRecord {
                        status: RunState::Queued,
                        ..run
                    }))
                }
                RunState::Queued => Ok(Ok(run)),
                status => Ok(Err(conflict(
                    run_id,
                    match status {
                        RunState::Running => "is being driven by a live process".to_owned(),
                        ended => format!("already ended ({ended}); nothing to resume"),
                    },
                ))),
            }
        })?
    }

    /// The runs a server was driving whose process is gone (`interrupted`), oldest
    /// first.
    pub fn interrupted_runs_of(&self, driver: &str) -> Result<Vec<String>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(&format!(
                "{RUN_SELECT} WHERE status = ?1 AND driver = ?2 ORDER BY queued_at, rowid"
            ))
            .map_err(db_error("list interrupted runs"))?;
        let runs = stmt
            .query_map(params![RunState::Running, driver], run_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error("list interrupted runs"))?;
        Ok(runs
            .into_iter()
            .filter(|run| run.status == RunState::Interrupted)
            .map(|run| run.run_id)
            .collect())
    }

    /// At most `limit` runs, newest first, older than `cursor` (a previous page's
    /// `next_cursor`), in state `status` if given.
    pub fn runs_page(
        &self,
        status: Option<RunState>,
        limit: u32,
        cursor: Option<i64>,
    ) -> Result<RunsPage> {
        // `running` and `interrupted` are both stored as `running`.
        let stored = status.map(|s| match s {
            RunState::Interrupted => RunState::Running,
            other => other,
        });
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{RUN_SELECT} WHERE rowid < ?1 AND (?2 IS NULL OR status = ?2)
                 ORDER BY rowid DESC"
            ))
            .map_err(db_error("list runs"))?;
        let mut rows = stmt
            .query(params![cursor.unwrap_or(i64::MAX), stored])
            .map_err(db_error("list runs"))?;
        let mut runs = Vec::new();
        let mut last_rowid = None;
        while let Some(row) = rows.next().map_err(db_error("list runs"))? {
            let run = run_from_row(row).map_err(db_error("list runs"))?;
            if status.is_some_and(|s| s != run.status) {
                continue;
            }
            if runs.len() == limit as usize {
                return Ok(RunsPage {
                    runs,
                    next_cursor: last_rowid,
                });
            }
            last_rowid = Some(row.get::<_, i64>("rowid").map_err(db_error("list runs"))?);
            runs.push(run);
        }
        Ok(RunsPage {
            runs,
            next_cursor: None,
        })
    }
}

/// A request that the run's state does not allow.
fn conflict(run_id: &str, why: String) -> BridgeError {
    BridgeError::new(ErrorClass::Contract, format!("run {run_id} {why}"))
        .with_run_id(Some(run_id.to_owned()))
        .with_detail(CONFLICT, true)
}

/// The detail that marks a [`conflict`] error.
const CONFLICT: &str = "conflict";

/// Whether `err` says that the run's state refused the request (HTTP 409).
pub fn is_conflict(err: &BridgeError) -> bool {
    err.details.get(CONFLICT).and_then(Value::as_bool) == Some(true)
}

/// DESIGN §7's document of one run: `{"run": {...}, "trials": [...]}` (`run --json`,
/// `runs show --json`, `GET /api/runs/{id}`).
pub fn run_document(run: &RunRecord, trials: &[TrialRecord]) -> Value {
    json!({"run": run, "trials": trials})
}
