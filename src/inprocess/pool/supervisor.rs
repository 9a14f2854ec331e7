//! The supervisor: cancels late jobs, retires workers that do not stop, and replaces
//! workers that died.
//!
//! Two threads, so that nothing that decides about workers ever waits for the GIL:
//! the *supervisor* never attaches to the interpreter (C code holding the GIL cannot
//! stall it), and the *canceller* attaches to raise the timeout exception (and may wait
//! for the GIL as long as it takes; stale requests are harmless because it re-checks,
//! holding the GIL, that the worker still runs the job).

use super::{worker, Shared};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use worker::WorkerState;

/// Requests to the supervisor.
pub(super) enum SupervisorMsg {
    /// A caller's deadline passed while `job_id` was queued or running.
    Cancel {
        /// The job to cancel.
        job_id: u64,
    },
    /// A worker thread ended by panicking.
    WorkerDied {
        /// The worker that died.
        worker: Arc<WorkerState>,
    },
    /// The pool shut down.
    Stop,
}

struct GraceCheck {
    due: Instant,
    job_id: u64,
    worker: Arc<WorkerState>,
}

pub(super) fn spawn(shared: Arc<Shared>, inbox: Receiver<SupervisorMsg>) -> Result<()> {
    let (cancel_tx, cancel_rx) = crossbeam_channel::unbounded();
    let spawn_error = |e: std::io::Error| {
        BridgeError::new(
            ErrorClass::SystemError,
            format!("cannot start the pool supervisor: {e}"),
        )
        .with_source(e)
    };
    std::thread::Builder::new()
        .name("cerebros-cancel".into())
        .spawn(move || run_canceller(cancel_rx))
        .map_err(spawn_error)?;
    std::thread::Builder::new()
        .name("cerebros-supervisor".into())
        .spawn(move || run_supervisor(shared, inbox, cancel_tx))
        .map_err(spawn_error)?;
    Ok(())
}

fn run_canceller(requests: Receiver<(u64, Arc<WorkerState>)>) {
    while let Ok((job_id, worker)) = requests.recv() {
        Python::attach(|py| {
            if worker.raise_timeout_in(py, job_id) {
                tracing::debug!(
                    job_id,
                    slot = worker.slot,
                    "raised the timeout in the worker"
                );
            }
        });
    }
}

fn run_supervisor(
    shared: Arc<Shared>,
    inbox: Receiver<SupervisorMsg>,
    canceller: Sender<(u64, Arc<WorkerState>)>,
) {
    let mut checks: Vec<GraceCheck> = Vec::new();
    loop {
        let next_due = checks.iter().map(|c| c.due).min();
        let message = match next_due {
            Some(due) => inbox.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match message {
            Ok(SupervisorMsg::Cancel { job_id }) => {
                if let Some(worker) = worker_running(&shared, job_id) {
                    let _ = canceller.send((job_id, worker.clone()));
                    checks.push(GraceCheck {
                        due: Instant::now() + shared.options.cancel_grace,
                        job_id,
                        worker,
                    });
                }
            }
            Ok(SupervisorMsg::WorkerDied { worker }) => {
                tracing::error!(
                    slot = worker.slot,
                    generation = worker.generation,
                    "a worker thread died; starting a replacement"
                );
                shared.replaced.fetch_add(1, Ordering::Relaxed);
                replace(&shared, &worker);
            }
            Ok(SupervisorMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        checks.retain(|check| {
            if check.due > now {
                return true;
            }
            if check.worker.current_job() == Some(check.job_id) && !check.worker.is_retired() {
                retire(&shared, &check.worker);
            }
            false
        });
    }
}

fn worker_running(shared: &Shared, job_id: u64) -> Option<Arc<WorkerState>> {
    shared
        .slots
        .lock()
        .iter()
        .find(|w| w.current_job() == Some(job_id))
        .cloned()
}

/// Takes `worker` out of service and gives its slot to a fresh worker. The old thread
/// exits by itself if its call ever returns.
fn retire(shared: &Arc<Shared>, worker: &Arc<WorkerState>) {
    tracing::warn!(
        slot = worker.slot,
        generation = worker.generation,
        grace_ms = shared.options.cancel_grace.as_millis() as u64,
        "a cancelled call did not stop within the grace; retiring its worker"
    );
    worker.retire(&shared.stuck);
    shared.retired.fetch_add(1, Ordering::Relaxed);
    replace(shared, worker);
}

fn replace(shared: &Arc<Shared>, old: &Arc<WorkerState>) {
    if shared.shutting_down.load(Ordering::Acquire) {
        return;
    }
    let mut slots = shared.slots.lock();
    if !Arc::ptr_eq(&slots[old.slot], old) {
        return;
    }
    let generation = old.generation + 1;
    match worker::spawn(shared, old.slot, generation) {
        Ok(fresh) => slots[old.slot] = fresh,
        Err(err) => tracing::error!(slot = old.slot, "cannot replace a worker: {err}"),
    }
}
