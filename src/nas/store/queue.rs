//! The run queue of `serve` (DESIGN §11), kept in the runs table: a `queued` run waits
//! in `queue_position` order (FIFO); a server takes the oldest one, claiming it and marking
//! it as driven by `serve` in one transaction, so two takers (two slots of one server,
//! or two servers on one store) never get the same run; after a crash, the runs a
//! server was driving (now `interrupted`) are found again with
//! [`Store::interrupted_runs_of`] and resumed.

use super::runs::{finish_run_in, not_found, run_from_row, run_in, RUN_SELECT};
use super::{
    db_error, insert_event, now_ms, now_rfc3339, Owner, RunEnd, RunRecord, RunState, Store,
    TrialRecord,
};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::spec::RunSpec;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

/// SQL for the position after the last in the queue.
pub(super) const NEXT_POSITION: &str =
    "(SELECT COALESCE(MAX(queue_position), 0) + 1 FROM model_runs)";

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
        loop {
            // Ids of one second differ in 24 random bits: a taken one is drawn again.
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            let run_id = format!("run-{stamp}-{:06x}", fastrand::u32(..0x100_0000));
            if self.create_run(&run_id, spec)? {
                return Ok(run_id);
            }
        }
    }

    /// Takes the oldest `queued` run for `owner` to drive: in one transaction it becomes
    /// `running`, claimed by `owner` and marked as driven by a server (so a restarted
    /// server resumes it). `None` when the queue is empty. No two takers ever get the
    /// same run.
    pub fn take_queued(&self, owner: &Owner) -> Result<Option<String>> {
        self.write("take queued run", |tx| {
            let run_id: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM model_runs WHERE status = ?1
                     ORDER BY queue_position LIMIT 1",
                    [RunState::Queued],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(run_id) = &run_id {
                tx.execute(
                    "UPDATE model_runs SET status = ?2, driver = ?3, owner_host = ?4,
                         owner_pid = ?5, owner_start = ?6, heartbeat_ms = ?7,
                         started_at = COALESCE(started_at, ?8), cancel_requested = 0
                     WHERE run_id = ?1",
                    params![
                        run_id,
                        RunState::Running,
                        SERVE_DRIVER,
                        owner.host,
                        owner.pid,
                        owner.start,
                        now_ms(),
                        now_rfc3339()
                    ],
                )?;
            }
            Ok(run_id)
        })
    }

    /// Ends as failed, with `error`, a run that `owner` took from the queue but could
    /// not drive (its spec unreadable, the service refused to start it, …), so that it
    /// neither blocks the queue nor reads as running. Only a run still `queued`, or
    /// `running` under `owner`, is ended; returns whether it was.
    pub fn fail_taken(&self, run_id: &str, owner: &Owner, error: &str) -> Result<bool> {
        self.write("end a run that could not be driven", |tx| {
            let row = tx
                .query_row(
                    "SELECT status, owner_host, owner_pid, owner_start FROM model_runs
                     WHERE run_id = ?1",
                    [run_id],
                    |r| {
                        Ok((
                            r.get::<_, RunState>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<u32>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()?;
            let Some((status, host, pid, start)) = row else {
                return Ok(false);
            };
            let ours = host.as_deref() == Some(&owner.host)
                && pid == Some(owner.pid)
                && start.as_deref() == Some(&owner.start);
            let stranded = status == RunState::Queued || (status == RunState::Running && ours);
            if stranded {
                finish_run_in(tx, run_id, RunEnd::Failed, Some(error))?;
            }
            Ok(stranded)
        })
    }

    /// Puts an `interrupted` run back at the end of the queue, to be resumed by a
    /// server. A run that has ended, or that a live process drives, is refused
    /// (`contract`, with detail `conflict`); a queued run stays where it is.
    pub fn requeue(&self, run_id: &str) -> Result<RunRecord> {
        self.write("queue run", |tx| {
            let Some(run) = run_in(tx, run_id)? else {
                return Ok(Err(not_found(run_id)));
            };
            match run.status {
                RunState::Interrupted => {
                    tx.execute(
                        &format!(
                            "UPDATE model_runs SET status = ?2, queue_position = {NEXT_POSITION},
                                 driver = NULL, owner_pid = NULL, owner_host = NULL,
                                 owner_start = NULL
                             WHERE run_id = ?1"
                        ),
                        params![run_id, RunState::Queued],
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
                "{RUN_SELECT} WHERE status = ?1 AND driver = ?2 ORDER BY queue_position"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nas::store::test_support::{gone_owner, spec, trial_with};
    use crate::nas::store::TrialState;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn the_queue_is_first_in_first_out_and_no_run_is_taken_twice() {
        let (_dir, store) = store();
        let ids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| store.submit(&spec(n)).unwrap())
            .collect();
        let me = Owner::current();
        assert_eq!(store.take_queued(&me).unwrap().as_ref(), Some(&ids[0]));
        let taken = store.run(&ids[0]).unwrap();
        assert_eq!(taken.status, RunState::Running, "claimed as it is taken");
        assert!(taken.started_at.is_some());
        assert_eq!(store.take_queued(&me).unwrap().as_ref(), Some(&ids[1]));
        assert_eq!(store.take_queued(&me).unwrap().as_ref(), Some(&ids[2]));
        assert_eq!(store.take_queued(&me).unwrap(), None);
        assert!(store.interrupted_runs_of(SERVE_DRIVER).unwrap().is_empty());
    }

    #[test]
    fn a_server_finds_the_runs_it_was_driving_and_requeues_on_demand() {
        let (_dir, store) = store();
        let dead = gone_owner();
        let id = store.submit(&spec("x")).unwrap();
        store.take_queued(&dead).unwrap();
        let by_hand = store.submit(&spec("cli")).unwrap();
        store.claim(&by_hand, &dead).unwrap();
        assert_eq!(store.run(&id).unwrap().status, RunState::Interrupted);
        assert_eq!(
            store.interrupted_runs_of(SERVE_DRIVER).unwrap(),
            vec![id.clone()],
            "only the runs a server drove"
        );
        let later = store.submit(&spec("later")).unwrap();
        let requeued = store.requeue(&by_hand).unwrap();
        assert_eq!(requeued.status, RunState::Queued);
        assert_eq!(
            store.take_queued(&Owner::current()).unwrap(),
            Some(later),
            "a requeued run goes to the end"
        );
        store.finish_run(&id, RunEnd::Succeeded, None).unwrap();
        let err = store.requeue(&id).unwrap_err();
        assert!(is_conflict(&err), "{err}");
        assert!(crate::nas::store::is_not_found(
            &store.requeue("nope").unwrap_err()
        ));
    }

    #[test]
    fn a_run_id_drawn_twice_is_drawn_again_not_an_error() {
        // The same random draw within one second gives the same id: the insert found it
        // taken and the submission failed (a 500 from `serve`).
        let (_dir, store) = store();
        let (first, second) = loop {
            let stamp = chrono::Utc::now().timestamp();
            fastrand::seed(7);
            let first = store.submit(&spec("a")).unwrap();
            fastrand::seed(7);
            let second = store.submit(&spec("b")).unwrap();
            if chrono::Utc::now().timestamp() == stamp {
                break (first, second); // both drawn within one second: a collision
            }
        };
        assert_ne!(first, second);
        assert_eq!(store.run(&first).unwrap().name, "a");
        assert_eq!(store.run(&second).unwrap().name, "b");
        assert!(!store.create_run(&first, &spec("c")).unwrap(), "taken");
        assert_eq!(store.run(&first).unwrap().name, "a", "nothing overwritten");
    }

    #[test]
    fn a_cancel_asked_between_taking_a_run_and_claiming_it_is_kept() {
        let (_dir, store) = store();
        let me = Owner::current();
        let id = store.submit(&spec("x")).unwrap();
        store.take_queued(&me).unwrap();
        assert_eq!(
            store.request_cancel(&id).unwrap(),
            crate::nas::store::CancelOutcome::Cancelling
        );
        store.claim(&id, &me).unwrap();
        assert!(store.heartbeat(&id).unwrap(), "the driver sees the cancel");
        // A cancel asked of a dead owner is not the next owner's.
        let other = store.submit(&spec("y")).unwrap();
        store.take_queued(&gone_owner()).unwrap();
        store
            .write("ask", |tx| {
                tx.execute(
                    "UPDATE model_runs SET cancel_requested = 1 WHERE run_id = ?1",
                    [&other],
                )
            })
            .unwrap();
        store.claim(&other, &me).unwrap();
        assert!(!store.heartbeat(&other).unwrap());
    }

    #[test]
    fn a_run_told_cancelling_ends_cancelled_even_when_its_trials_all_finished() {
        // The request may land after the last trial, before the run ends: what the
        // requester was told (`cancelling`) must hold. A failure stays a failure.
        let (_dir, store) = store();
        let me = Owner::current();
        for (end, expected) in [
            (RunEnd::Succeeded, RunState::Cancelled),
            (RunEnd::Failed, RunState::Failed),
        ] {
            let id = store.submit(&spec("x")).unwrap();
            store.take_queued(&me).unwrap();
            store.claim(&id, &me).unwrap();
            assert_eq!(
                store.request_cancel(&id).unwrap(),
                crate::nas::store::CancelOutcome::Cancelling
            );
            store.finish_run(&id, end, None).unwrap();
            assert_eq!(store.run(&id).unwrap().status, expected, "{end:?}");
        }
    }

    #[test]
    fn a_taken_run_that_cannot_be_driven_is_failed_only_by_its_taker() {
        let (_dir, store) = store();
        let me = Owner::current();
        let id = store.submit(&spec("x")).unwrap();
        store.take_queued(&me).unwrap();
        assert!(!store.fail_taken(&id, &gone_owner(), "not mine").unwrap());
        assert!(store.fail_taken(&id, &me, "unreadable spec").unwrap());
        let run = store.run(&id).unwrap();
        assert_eq!(run.status, RunState::Failed);
        assert_eq!(run.error.as_deref(), Some("unreadable spec"));
        assert!(
            !store.fail_taken(&id, &me, "again").unwrap(),
            "an ended run stays"
        );
    }

    #[test]
    fn pages_run_newest_first_and_filter_by_reported_state() {
        let (_dir, store) = store();
        let ids: Vec<String> = (0..5)
            .map(|i| store.submit(&spec(&format!("r{i}"))).unwrap())
            .collect();
        store.claim(&ids[1], &gone_owner()).unwrap();
        store.claim(&ids[3], &Owner::current()).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.runs_page(None, 2, cursor).unwrap();
            assert!(page.runs.len() <= 2);
            seen.extend(page.runs.into_iter().map(|r| r.run_id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(seen, newest_first);
        let only = |state| {
            store
                .runs_page(Some(state), 10, None)
                .unwrap()
                .runs
                .into_iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(only(RunState::Interrupted), vec![ids[1].clone()]);
        assert_eq!(only(RunState::Running), vec![ids[3].clone()]);
        assert_eq!(only(RunState::Queued).len(), 3);
        let page = store.runs_page(Some(RunState::Queued), 1, None).unwrap();
        assert_eq!(page.runs.len(), 1);
        assert!(
            page.next_cursor.is_some(),
            "a filtered page knows more follow"
        );
    }

    #[test]
    fn events_are_read_after_an_id_per_run_or_for_all_and_a_new_best_is_an_event() {
        let (_dir, store) = store();
        let a = store.submit(&spec("a")).unwrap();
        let b = store.submit(&spec("b")).unwrap();
        store.claim(&a, &Owner::current()).unwrap();
        let trial = |index: u32, accuracy: f64| {
            trial_with(
                &a,
                index,
                TrialState::Succeeded,
                json!({"val_accuracy": accuracy}),
            )
        };
        store.record_trial(&trial(0, 0.5), None).unwrap();
        store.record_trial(&trial(1, 0.4), None).unwrap();
        store.record_trial(&trial(2, 0.9), None).unwrap();
        let kinds: Vec<String> = store
            .events(&a)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "ml.run.queued",
                "ml.run.trial",
                "ml.run.best",
                "ml.run.trial",
                "ml.run.trial",
                "ml.run.best"
            ]
        );
        let best = store.events(&a).unwrap().pop().unwrap();
        assert_eq!(best.data["value"], 0.9);
        assert_eq!(best.data["index"], 2);
        let all = store.events_after(None, 0, 100).unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(all[1].run_id, b, "b was queued second");
        let after = store.events_after(None, all[3].id, 2).unwrap();
        assert_eq!(after, all[4..6].to_vec(), "a page after an id");
        assert_eq!(store.events_after(Some(&b), 0, 10).unwrap().len(), 1);
        assert_eq!(store.last_event_id().unwrap(), all[6].id);
    }
}
