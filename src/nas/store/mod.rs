//! The run store (DESIGN §5): one SQLite file (WAL) holding runs, trials, artifacts and
//! run events. Every trial is written the moment it returns, in one transaction with
//! its artifact, its event and the run's counters, so a killed process loses nothing it
//! had reported.

mod calls;
mod outbox;
mod owner;
mod schema;

pub use calls::StoreCalls;
pub use outbox::{FailedItem, LeaseHolder, OutboxCounts, OutboxItem, OutboxKind};
pub use owner::{now_ms, Owner, HEARTBEAT_EVERY, LEASE};

use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::spec::RunSpec;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A run as stored (DESIGN §7's `run` document).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The spec's name.
    pub name: String,
    /// queued, running, succeeded, failed, cancelled or interrupted (running, but its
    /// owner is gone).
    pub status: String,
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
    /// running, succeeded, failed or cancelled.
    pub status: String,
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

/// One run event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    /// `ml.run.start`, `ml.run.trial`, `ml.run.stop`, `ml.run.exception`, …
    pub kind: String,
    /// When (RFC 3339).
    pub at: String,
    /// Event data.
    pub data: Value,
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn db_error(context: &str) -> impl Fn(rusqlite::Error) -> BridgeError + '_ {
    move |e| {
        let full = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
        );
        let hint = if full { " (the disk is full)" } else { "" };
        BridgeError::new(
            ErrorClass::SystemError,
            format!("store: {context}: {e}{hint}"),
        )
    }
}

impl Store {
    /// Opens (creating if needed) the store named by `url` (`sqlite://PATH`, relative
    /// to the current directory) and brings its schema up to date.
    pub fn open_url(url: &str) -> Result<Store> {
        Store::open(&store_path(url)?)
    }

    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        check_store_path(path).map_err(|reason| {
            BridgeError::new(
                ErrorClass::Config,
                format!("store {}: {reason}", path.display()),
            )
            .with_detail("key", "store.url")
        })?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("store: cannot create {}: {e}", parent.display()),
                )
            })?;
        }
        let conn = Connection::open(path).map_err(db_error("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_error("busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error("WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_error("foreign keys"))?;
        let store = Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the migrations this file lacks. Each step re-reads the version inside an
    /// immediate (write-locked) transaction, so processes opening a new store at the
    /// same time never apply a migration twice.
    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        loop {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_error("migration"))?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(db_error("schema version"))?;
            let version = version.max(0) as usize;
            if version > schema::MIGRATIONS.len() {
                return Err(BridgeError::new(
                    ErrorClass::Config,
                    format!(
                        "store {} has schema version {version}, newer than this build knows ({}); upgrade cerebros-bridge",
                        self.path.display(),
                        schema::MIGRATIONS.len()
                    ),
                ));
            }
            let Some(sql) = schema::MIGRATIONS.get(version) else {
                return Ok(());
            };
            tx.execute_batch(sql).map_err(db_error("migration"))?;
            tx.pragma_update(None, "user_version", (version + 1) as i64)
                .map_err(db_error("migration"))?;
            tx.commit().map_err(db_error("migration"))?;
        }
    }

    fn write<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_error(context))?;
        let value = f(&tx).map_err(db_error(context))?;
        tx.commit().map_err(db_error(context))?;
        Ok(value)
    }

    /// Records a new run, `queued`.
    pub fn create_run(&self, run_id: &str, spec: &RunSpec) -> Result<()> {
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        self.write("create run", |tx| {
            tx.execute(
                "INSERT INTO model_runs (run_id, name, status, objective, direction, dataset_id, seed,
                     spec, trials_planned, created_at)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run_id,
                    spec.name,
                    spec.objective,
                    spec.direction.as_str(),
                    spec.dataset,
                    spec.seed as i64,
                    spec_json,
                    spec.budget.trials,
                    now_rfc3339()
                ],
            )?;
            insert_event(tx, run_id, "ml.run.queued", &json!({"name": spec.name}))
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
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<u32>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((status, host, pid, start, heartbeat)) = row else {
                return Ok(Err(not_found(run_id)));
            };
            if is_final(&status) {
                return Ok(Err(BridgeError::new(
                    ErrorClass::Contract,
                    format!("run {run_id} already ended ({status}); nothing to resume"),
                )));
            }
            if let (Some(host), Some(pid), Some(start)) = (host, pid, start) {
                let holder = Owner { host, pid, start };
                if holder != *owner && status == "running" && holder.is_alive(heartbeat) {
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
                "UPDATE model_runs SET status = 'running', owner_host = ?2, owner_pid = ?3, owner_start = ?4,
                     heartbeat_ms = ?5, started_at = COALESCE(started_at, ?6), cancel_requested = 0
                 WHERE run_id = ?1",
                params![run_id, owner.host, owner.pid, owner.start, now_ms(), now_rfc3339()],
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

    /// Marks a trial as running (or running again after an interruption).
    pub fn trial_started(&self, run_id: &str, trial_id: &str, index: u32, seed: u64) -> Result<()> {
        self.write("trial started", |tx| {
            tx.execute(
                "INSERT INTO model_trials (run_id, trial_id, idx, seed, status, started_at, attempts)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, 0)
                 ON CONFLICT (run_id, trial_id) DO UPDATE SET status = 'running', started_at = ?5",
                params![run_id, trial_id, index, seed as i64, now_rfc3339()],
            )?;
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
            tx.execute(
                "INSERT INTO model_trials (run_id, trial_id, idx, seed, status, metrics, parameters,
                     artifact_uri, duration_ms, error, attempts, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (run_id, trial_id) DO UPDATE SET status = ?5, metrics = ?6,
                     parameters = ?7, artifact_uri = ?8, duration_ms = ?9, error = ?10,
                     attempts = ?11, finished_at = ?13",
                params![
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
                ],
            )?;
            if let Some(artifact) = artifact {
                tx.execute(
                    "INSERT INTO model_artifacts (run_id, trial_id, kind, uri, sha256, bytes, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        trial.run_id,
                        trial.trial_id,
                        artifact.kind,
                        artifact.uri,
                        artifact.sha256,
                        artifact.bytes.map(|b| b as i64),
                        now_rfc3339()
                    ],
                )?;
            }
            note_trial_in_run(tx, trial)?;
            if is_trial_final(&trial.status) {
                outbox::enqueue(tx, OutboxKind::Trial, &trial.run_id, Some(&trial.trial_id))?;
            }
            let event = json!({"trial_id": trial.trial_id, "index": trial.index, "status": trial.status,
                               "metrics": trial.metrics});
            insert_event(tx, &trial.run_id, "ml.run.trial", &event)
        })
    }

    /// Ends a run with `status` (succeeded, failed or cancelled) and releases it; queues
    /// its MLflow sync in the same transaction.
    pub fn finish_run(&self, run_id: &str, status: &str, error: Option<&str>) -> Result<()> {
        self.write("finish run", |tx| {
            update_run_summary(tx, run_id)?;
            tx.execute(
                "UPDATE model_runs SET status = ?2, error = ?3, finished_at = ?4, owner_pid = NULL,
                     owner_host = NULL, owner_start = NULL
                 WHERE run_id = ?1",
                params![run_id, status, error, now_rfc3339()],
            )?;
            let kind = if status == "failed" {
                "ml.run.exception"
            } else {
                "ml.run.stop"
            };
            outbox::enqueue(tx, OutboxKind::Run, run_id, None)?;
            insert_event(tx, run_id, kind, &json!({"status": status, "error": error}))
        })
    }

    /// Asks a run to stop. A run nobody drives (queued or interrupted) is cancelled at
    /// once; a running one is cancelled by its owner at its next heartbeat. Returns the
    /// status the run has now.
    pub fn request_cancel(&self, run_id: &str) -> Result<String> {
        let run = self.run(run_id)?;
        if is_final(&run.status) {
            return Ok(run.status);
        }
        if run.status == "running" {
            self.write("cancel run", |tx| {
                tx.execute(
                    "UPDATE model_runs SET cancel_requested = 1 WHERE run_id = ?1",
                    [run_id],
                )
            })?;
            return Ok("cancelling".into());
        }
        self.write("cancel run", |tx| {
            tx.execute(
                "UPDATE model_trials SET status = 'cancelled' WHERE run_id = ?1 AND status = 'running'",
                [run_id],
            )
        })?;
        self.finish_run(run_id, "cancelled", None)?;
        Ok("cancelled".into())
    }

    /// One run, with `running` reported as `interrupted` when its owner is gone.
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        let conn = self.conn.lock();
        conn.query_row(
            &format!("{RUN_SELECT} WHERE run_id = ?1"),
            [run_id],
            run_from_row,
        )
        .optional()
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

    /// The trials of a run, by index.
    pub fn trials(&self, run_id: &str) -> Result<Vec<TrialRecord>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(
                "SELECT run_id, trial_id, idx, seed, status, metrics, parameters, duration_ms,
                        artifact_uri, error, attempts, started_at, finished_at, mlflow_run_id
                 FROM model_trials WHERE run_id = ?1 ORDER BY idx",
            )
            .map_err(db_error("read trials"))?;
        let rows = stmt
            .query_map([run_id], trial_from_row)
            .map_err(db_error("read trials"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("read trials"))
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

    /// The events of a run, oldest first.
    pub fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT kind, at, data FROM run_events WHERE run_id = ?1 ORDER BY id")
            .map_err(db_error("read events"))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(EventRecord {
                    kind: r.get(0)?,
                    at: r.get(1)?,
                    data: json_column(r.get::<_, String>(2)?),
                })
            })
            .map_err(db_error("read events"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("read events"))
    }
}

/// Why `path` cannot hold a store, if it cannot. A store is a regular file, or a file
/// still to be created whose nearest existing ancestor is a folder. Refused: an empty
/// path and `:memory:` (SQLite would keep the results in memory and lose them), and a
/// device, FIFO or folder (`/dev/null` would swallow them and SQLite would write
/// `/dev/null-journal` beside it).
pub fn check_store_path(path: &Path) -> std::result::Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err(
            "the path is empty (SQLite would keep the results in memory and lose them)".into(),
        );
    }
    if path == Path::new(":memory:") {
        return Err("an in-memory database loses every result".into());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => Err(format!(
            "{} is a {}, not a regular file",
            path.display(),
            file_kind(&meta)
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let nearest = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .find(|a| a.exists());
            match nearest {
                Some(folder) if !folder.is_dir() => {
                    Err(format!("{} is not a folder", folder.display()))
                }
                _ => Ok(()),
            }
        }
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// What a non-regular file is, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "folder"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The file of a `sqlite://PATH` URL.
pub fn store_path(url: &str) -> Result<PathBuf> {
    let path = url.strip_prefix("sqlite://").ok_or_else(|| {
        BridgeError::new(
            ErrorClass::Config,
            format!("store.url = {url:?}: expected sqlite://PATH"),
        )
    })?;
    let path = path.split('?').next().unwrap_or(path);
    Ok(PathBuf::from(path))
}

fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// A trial status that ends it (and so queues its MLflow sync).
fn is_trial_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

fn not_found(run_id: &str) -> BridgeError {
    BridgeError::new(
        ErrorClass::Contract,
        format!("no run {run_id:?} in the store"),
    )
    .with_run_id(Some(run_id.to_owned()))
}

fn insert_event(
    tx: &Transaction<'_>,
    run_id: &str,
    kind: &str,
    data: &Value,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO run_events (run_id, kind, at, data) VALUES (?1, ?2, ?3, ?4)",
        params![run_id, kind, now_rfc3339(), data.to_string()],
    )?;
    Ok(())
}

/// Counts a newly finished trial into its run and makes it the best if it beats the
/// current best (constant time per trial; [`update_run_summary`] recomputes it all).
fn note_trial_in_run(tx: &Transaction<'_>, trial: &TrialRecord) -> rusqlite::Result<()> {
    let (objective, direction, best): (String, String, Option<f64>) = tx.query_row(
        "SELECT objective, direction, best_metric FROM model_runs WHERE run_id = ?1",
        [&trial.run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let metric = trial.metrics.get(&objective).and_then(Value::as_f64);
    if let (true, Some(metric)) = (trial.status == "succeeded", metric) {
        let better = best.is_none_or(|best| {
            if direction == "minimize" {
                metric < best
            } else {
                metric > best
            }
        });
        if better {
            tx.execute(
                "UPDATE model_runs SET best_metric = ?2, best_trial_id = ?3 WHERE run_id = ?1",
                params![trial.run_id, metric, trial.trial_id],
            )?;
        }
    }
    tx.execute(
        "UPDATE model_runs SET trials_completed = (SELECT COUNT(*) FROM model_trials
             WHERE run_id = ?1 AND status IN ('succeeded', 'failed'))
         WHERE run_id = ?1",
        [&trial.run_id],
    )?;
    Ok(())
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
                 WHERE run_id = ?1 AND status = 'succeeded' AND typeof(m) IN ('integer', 'real')
                 ORDER BY m {order}, idx ASC LIMIT 1"
            ),
            params![run_id, path],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    tx.execute(
        "UPDATE model_runs SET
             trials_completed = (SELECT COUNT(*) FROM model_trials
                                 WHERE run_id = ?1 AND status IN ('succeeded', 'failed')),
             best_trial_id = ?2, best_metric = ?3
         WHERE run_id = ?1",
        params![
            run_id,
            best.as_ref().map(|b| &b.0),
            best.as_ref().map(|b| b.1)
        ],
    )?;
    Ok(())
}

const RUN_SELECT: &str = "SELECT run_id, name, status, objective, direction, dataset_id, seed, best_metric,
    best_trial_id, trials_planned, trials_completed, created_at, started_at, finished_at, error,
    mlflow_run_id, spec, start_info, owner_host, owner_pid, owner_start, heartbeat_ms FROM model_runs";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let mut status: String = r.get(2)?;
    if status == "running" {
        let owner = match (
            r.get::<_, Option<String>>(18)?,
            r.get::<_, Option<u32>>(19)?,
            r.get::<_, Option<String>>(20)?,
        ) {
            (Some(host), Some(pid), Some(start)) => Some(Owner { host, pid, start }),
            _ => None,
        };
        let heartbeat: Option<i64> = r.get(21)?;
        let alive = owner.is_some_and(|o| o.is_alive(heartbeat));
        if !alive {
            status = "interrupted".into();
        }
    }
    Ok(RunRecord {
        run_id: r.get(0)?,
        name: r.get(1)?,
        status,
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
    })
}

fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
