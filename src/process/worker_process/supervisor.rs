//! The supervisor thread: starts the children, reaps each one that dies (answering the
//! requests that were in flight on it) and starts its replacement, after a growing
//! delay when it died before it was ready. It lives as long as the pool, so
//! `PR_SET_PDEATHSIG` only fires when the host goes.

use super::worker::{self, Worker};
use super::{system_error, Event, Reply, Shared};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::process::child;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a dead child's stderr may take to reach its end before errors are built.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

/// Delays before restarting a child that died before it was ready.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the supervisor thread.
pub(super) fn spawn(shared: Arc<Shared>, inbox: Receiver<Event>) -> Result<()> {
    std::thread::Builder::new()
        .name("cerebros-wp-supervisor".into())
        .spawn(move || supervise(shared, inbox))
        .map(drop)
        .map_err(|err| {
            system_error(format!("cannot start the supervisor thread: {err}")).with_source(err)
        })
}

/// Starts, reaps and replaces children. Runs until shutdown has reaped every child.
fn supervise(shared: Arc<Shared>, inbox: Receiver<Event>) {
    let size = shared.options.pool_size;
    let mut generations = vec![0u64; size];
    let mut failures = vec![0u32; size];
    let mut restart_at: Vec<Option<Instant>> = vec![None; size];
    let mut stopping = false;
    loop {
        if stopping && all_reaped(&shared) {
            return;
        }
        let next = restart_at.iter().flatten().min().copied();
        let event = match (stopping, next) {
            // Shutdown: keep reaping, but never wait forever for a child to die.
            (true, _) => inbox.recv_timeout(Duration::from_secs(5)),
            (false, Some(at)) => inbox.recv_deadline(at),
            (false, None) => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Spawn { slot, reply }) => {
                let started = worker::spawn(&shared, slot, generations[slot]);
                generations[slot] += 1;
                reply.fill(started);
            }
            Ok(Event::Died { worker, orphans }) => {
                let slot = worker.slot;
                let current = shared.slots.lock()[slot]
                    .as_ref()
                    .is_some_and(|w| Arc::ptr_eq(w, &worker));
                worker.kill();
                if current && !shared.shutting_down.load(Ordering::Acquire) {
                    if worker_ready(&worker) == Some(true) {
                        failures[slot] = 0;
                        restart_at[slot] = Some(Instant::now());
                    } else {
                        failures[slot] += 1;
                        restart_at[slot] = Some(Instant::now() + backoff(failures[slot]));
                    }
                    restart_due(&shared, &mut restart_at, &mut generations, &mut failures);
                }
                bury(&shared, &worker, orphans);
            }
            Ok(Event::Stop) => {
                stopping = true;
                restart_at.iter_mut().for_each(|at| *at = None);
                for worker in shared.slots.lock().iter().flatten() {
                    worker.close_stdin();
                    worker.kill();
                }
            }
            Err(RecvTimeoutError::Timeout) if stopping => return,
            Err(RecvTimeoutError::Timeout) => {
                restart_due(&shared, &mut restart_at, &mut generations, &mut failures);
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `Some(true)` if the child reported ready, `Some(false)` if it reported a start-up
/// error, `None` if it reported nothing.
fn worker_ready(worker: &Worker) -> Option<bool> {
    if !worker.ready.is_ready() {
        return None;
    }
    // Read the flag, not the slot: the start-up waiter may take the value.
    Some(!worker.ready_failed.load(Ordering::Acquire))
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(6);
    (RESTART_BACKOFF * factor).min(RESTART_BACKOFF_MAX)
}

/// Starts the children whose restart time has come.
fn restart_due(
    shared: &Arc<Shared>,
    restart_at: &mut [Option<Instant>],
    generations: &mut [u64],
    failures: &mut [u32],
) {
    let now = Instant::now();
    for slot in 0..restart_at.len() {
        if restart_at[slot].is_none_or(|at| at > now) {
            continue;
        }
        restart_at[slot] = None;
        if shared.shutting_down.load(Ordering::Acquire) {
            continue;
        }
        match worker::spawn(shared, slot, generations[slot]) {
            Ok(_) => {
                shared.replaced.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::error!(
                    target: "cerebros.bridge.worker",
                    slot,
                    "cannot restart a worker process: {err}"
                );
                failures[slot] += 1;
                restart_at[slot] = Some(now + backoff(failures[slot]));
            }
        }
        generations[slot] += 1;
    }
}

fn all_reaped(shared: &Shared) -> bool {
    shared
        .slots
        .lock()
        .iter()
        .flatten()
        .all(|w| w.reaped.load(Ordering::Acquire))
}

/// Reaps a dead child, ends its writer thread (closing its stdin) and answers the
/// requests that were in flight on it.
fn bury(shared: &Shared, worker: &Arc<Worker>, orphans: Vec<Reply>) {
    worker.close_stdin();
    // Wait for the exit without reaping, so that a concurrent kill (which holds the
    // process lock) can never reach a reused pid; then reap.
    child::wait_exit(worker.pid);
    let status = worker
        .process
        .lock()
        .take()
        .map(|mut process| process.wait());
    worker.reaped.store(true, Ordering::Release);
    let returncode = match status {
        Some(Ok(status)) => child::returncode(status),
        _ => -1,
    };
    {
        let settle = Instant::now() + STDERR_SETTLE;
        let mut done = worker.stderr_done.lock();
        while !*done {
            if worker
                .stderr_closed
                .wait_until(&mut done, settle)
                .timed_out()
            {
                break;
            }
        }
    }
    let stderr_excerpt = worker.stderr_excerpt();
    let shutting_down = shared.shutting_down.load(Ordering::Acquire);
    let how = child::describe_returncode(returncode);
    let error = if shutting_down {
        BridgeError::new(
            ErrorClass::Cancelled,
            format!(
                "the worker process pool shut down before the call finished (worker process {} {how})",
                worker.pid
            ),
        )
    } else if let Some(why) = worker.killed_because() {
        BridgeError::new(
            ErrorClass::SubprocessExit,
            format!(
                "worker process {} was killed because another request on it {why}",
                worker.pid
            ),
        )
    } else {
        BridgeError::new(
            ErrorClass::SubprocessExit,
            format!("worker process {} {how} while running the call", worker.pid),
        )
    };
    let error = error
        .with_detail("returncode", returncode)
        .with_detail("pid", worker.pid)
        .with_detail("stderr_excerpt", stderr_excerpt.clone());
    if shutting_down {
        // Expected: nothing to report.
    } else if let Some(why) = worker.killed_because() {
        tracing::info!(
            target: "cerebros.bridge.worker",
            pid = worker.pid,
            slot = worker.slot,
            generation = worker.generation,
            in_flight = orphans.len(),
            "worker process killed because a request on it {why}"
        );
    } else {
        tracing::warn!(
            target: "cerebros.bridge.worker",
            pid = worker.pid,
            slot = worker.slot,
            generation = worker.generation,
            returncode,
            in_flight = orphans.len(),
            "worker process {how}"
        );
    }
    for reply in orphans {
        reply.fill(Err(error.clone()));
    }
    // A child that died before it reported ready: its start-up failed.
    worker.ready.fill(Err(BridgeError::new(
        ErrorClass::Dependency,
        format!(
            "worker process {} {how} before it was ready: {stderr_excerpt}",
            worker.pid
        ),
    )
    .with_detail("returncode", returncode)
    .with_detail("stderr_excerpt", stderr_excerpt)));
}
