//! The scheduler: drives the queued runs, at most `serve.max_concurrent_runs` at a
//! time, oldest first (the queue is in the store, see
//! [`Store::take_queued`](crate::nas::store::Store::take_queued)). Runs this server (or
//! an earlier server on this store) was driving when it died are resumed first, when
//! `serve.auto_resume` is on.
//!
//! It looks at the queue when a run is submitted (the bell), when a run ends, and every
//! [`LOOK_EVERY`] (for runs queued by `runs submit` from another process).

use crate::nas::run::{CancelSignal, RunWorker};
use crate::nas::store::{Owner, Store, SERVE_DRIVER};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How often the queue is read without being rung.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The cancel signal of each run this server drives, so that a cancel request stops it
/// at once rather than at its next heartbeat.
#[derive(Clone, Default)]
pub struct Drives {
    signals: Arc<Mutex<HashMap<String, CancelSignal>>>,
}

impl Drives {
    /// Raises the cancel signal of `run_id` if this server drives it.
    pub fn cancel(&self, run_id: &str) {
        if let Some(signal) = self.signals.lock().get(run_id) {
            signal.cancel();
        }
    }

    fn start(&self, run_id: &str) -> CancelSignal {
        let signal = CancelSignal::new();
        self.signals
            .lock()
            .insert(run_id.to_owned(), signal.clone());
        signal
    }

    fn end(&self, run_id: &str) {
        self.signals.lock().remove(run_id);
    }
}

/// Drives queued runs until dropped (see the module doc).
pub struct Scheduler {
    worker: RunWorker,
    store: Arc<Store>,
    bell: Arc<Notify>,
    max_running: usize,
    resume_first: VecDeque<String>,
    drives: Drives,
}

impl Scheduler {
    /// A scheduler over `worker`, reading the queue through `store`, filing the runs it
    /// drives in `drives`.
    pub fn new(
        worker: RunWorker,
        store: Arc<Store>,
        bell: Arc<Notify>,
        max_running: u32,
        drives: Drives,
    ) -> Scheduler {
        Scheduler {
            worker,
            store,
            bell,
            max_running: max_running.max(1) as usize,
            resume_first: VecDeque::new(),
            drives,
        }
    }

    /// Resumes, before any queued run, the runs a server was driving when it stopped.
    pub fn resume_interrupted(mut self) -> crate::core::error::Result<Scheduler> {
        let interrupted = self.store.interrupted_runs_of(SERVE_DRIVER)?;
        if !interrupted.is_empty() {
            tracing::info!(runs = ?interrupted, "resuming the runs a stopped server was driving");
        }
        self.resume_first.extend(interrupted);
        Ok(self)
    }

    /// Runs until the task is dropped; dropping it stops the runs being driven where
    /// they are (they read as `interrupted`, and the next server resumes them).
    pub async fn run(mut self) {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            while running.len() < self.max_running {
                let Some(run_id) = self.next_run().await else {
                    break;
                };
                let worker = self.worker.clone();
                let store = self.store.clone();
                let drives = self.drives.clone();
                running.spawn(async move {
                    let cancel = drives.start(&run_id);
                    drive(worker, store, &run_id, cancel).await;
                    drives.end(&run_id);
                });
            }
            tokio::select! {
                _ = self.bell.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// The next run to drive: an interrupted one to resume, else the oldest queued.
    async fn next_run(&mut self) -> Option<String> {
        if let Some(run_id) = self.resume_first.pop_front() {
            return Some(run_id);
        }
        let store = self.store.clone();
        let owner = Owner::current();
        match tokio::task::spawn_blocking(move || store.take_queued(&owner)).await {
            Ok(Ok(next)) => next,
            Ok(Err(err)) => {
                tracing::warn!("scheduler: cannot read the queue: {err}");
                None
            }
            Err(_) => None,
        }
    }
}

/// Drives one run to its end. A run that cannot even start (its spec is unreadable,
/// the service refuses it) is ended as failed, so it never blocks the queue.
async fn drive(worker: RunWorker, store: Arc<Store>, run_id: &str, cancel: CancelSignal) {
    tracing::info!(run_id, "driving run");
    let Err(err) = worker.drive(run_id, cancel).await else {
        return;
    };
    tracing::warn!(run_id, "run failed: {err}");
    let id = run_id.to_owned();
    let error = err.to_string();
    let ended =
        tokio::task::spawn_blocking(move || store.fail_taken(&id, &Owner::current(), &error)).await;
    if let Ok(Err(again)) = ended {
        tracing::error!(run_id, "cannot end the run: {again}");
    }
}
