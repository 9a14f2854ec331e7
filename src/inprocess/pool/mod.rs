//! The in-process worker pool: a fixed number of dedicated OS threads, each attached to
//! the embedded interpreter for its whole life (one `PyThreadState` per thread, never
//! re-created per call), fed from one bounded queue.
//!
//! * **Queue.** [`Pool::submit`] never blocks: a full queue is an `overloaded` error.
//! * **GIL fairness.** A worker keeps the GIL while jobs are queued and releases it only
//!   to wait for work. A brief release/re-acquire between jobs would count as a GIL
//!   switch and let a busy worker starve a thread waiting for the GIL for seconds;
//!   holding it lets CPython's forced switch (every switch interval) hand it over.
//! * **Latency.** One idle worker spins briefly for the next job before parking, and
//!   callers spin briefly for their reply (see [`crate::inprocess::reply`]), so a short call does
//!   not pay two futex wake-ups.
//! * **Timeouts.** A caller stops waiting at its deadline and asks the supervisor to
//!   cancel: an exception is raised in the interpreter thread running *that* job; if
//!   the job is still running after the cancel grace, its worker is retired and a fresh
//!   one takes its slot, so the pool keeps its size.

pub mod priority;
mod queue;
mod startup;
mod supervisor;
mod worker;

use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::invoker::PoolStats;
use crate::inprocess::convert;
use crate::inprocess::reply::ReplySlot;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use pyo3::prelude::*;
use queue::JobQueue;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor::SupervisorMsg;
use worker::WorkerState;

/// How long a caller spins for its reply before parking or yielding to its runtime.
pub(crate) const CALLER_SPIN: Duration = Duration::from_micros(40);
/// How long an idle worker spins for the next job before parking.
pub(crate) const WORKER_SPIN: Duration = Duration::from_micros(100);
/// How much of [`WORKER_SPIN`] is pure spinning (the rest yields the core between checks).
pub(crate) const WORKER_PURE_SPIN: Duration = Duration::from_micros(3);
/// How much of [`CALLER_SPIN`] is pure spinning.
pub(crate) const CALLER_PURE_SPIN: Duration = Duration::from_micros(20);

/// What a [`Pool`] needs to start.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Number of worker threads.
    pub size: usize,
    /// Jobs that may wait in the queue before `submit` answers `overloaded`.
    pub queue_capacity: usize,
    /// How long a cancelled job may keep running before its worker is retired.
    pub cancel_grace: Duration,
    /// The service module whose functions are the ops.
    pub module: String,
    /// Put on `sys.path` before importing `module`.
    pub repo_path: PathBuf,
    /// The interpreter whose venv the embedded interpreter uses (see
    /// [`crate::inprocess::interpreter::find_python`]).
    pub python_executable: Option<PathBuf>,
    /// Whether idle workers and lone callers busy-wait briefly before parking (the
    /// default; see BENCHMARKS.md for what turning it off costs).
    pub spin: bool,
    /// How long starting the interpreter and importing `module` may take
    /// (`invoke.start_timeout_ms`); past it, [`Pool::start`] fails with `timeout`.
    pub start_timeout: Duration,
    /// The nice value of the worker threads and of the thread that imports `module`
    /// (`invoke.worker_nice`; 0: the host's own priority; see [`priority`]).
    pub nice: u32,
}

enum Message {
    Call(Job),
    /// Fault injection: makes the worker that takes it panic outside any job.
    Panic,
}

struct Job {
    id: u64,
    op: String,
    payload: Arc<Value>,
    /// The payload as JSON text, made on the caller's thread when the workers can read it
    /// (`orjson`) and the payload is worth it ([`convert::sent_as_text`]); the worker then
    /// converts the text and never touches the tree.
    text: Option<Vec<u8>>,
    /// The call's W3C trace context, entered in Python while the op runs.
    traceparent: Option<String>,
    deadline: Instant,
    reply: Arc<ReplySlot<Result<Value>>>,
}

struct Shared {
    options: PoolOptions,
    module: Py<PyModule>,
    jobs: JobQueue<Message>,
    shutting_down: AtomicBool,
    slots: Mutex<Vec<Arc<WorkerState>>>,
    supervisor: Sender<SupervisorMsg>,
    next_job: AtomicU64,
    /// Calls whose caller is still waiting for the reply.
    waiting_callers: AtomicUsize,
    /// Whether the workers read payloads as JSON text (a worker imported `orjson`).
    text_payloads: AtomicBool,
    submitted: AtomicU64,
    retired: AtomicU64,
    stuck: AtomicU64,
    replaced: AtomicU64,
}

/// A pool of interpreter threads running the ops of one service module.
///
/// ```
/// use cerebros_bridge::inprocess::pool::{Pool, PoolOptions};
/// use std::time::Duration;
/// let pool = Pool::start(PoolOptions {
///     size: 2,
///     queue_capacity: 1024,
///     cancel_grace: Duration::from_millis(250),
///     module: "cerebros_service".into(),
///     repo_path: "python".into(),
///     python_executable: None,
///     spin: true,
///     start_timeout: Duration::from_secs(30),
///     nice: 0,
/// })?;
/// let reply = pool
///     .submit("echo", serde_json::json!({"x": 1}), Duration::from_secs(5))?
///     .wait_blocking()?;
/// assert_eq!(reply["x"], 1);
/// # Ok::<(), cerebros_bridge::core::error::BridgeError>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts the interpreter (once per process), imports the service module (both
    /// within `options.start_timeout`) and starts `options.size` workers. A failure
    /// part way stops the workers already started.
    pub fn start(options: PoolOptions) -> Result<Pool> {
        if options.size == 0 {
            return Err(BridgeError::new(
                ErrorClass::Config,
                "invoke.pool_size = 0: expected at least 1 worker",
            ));
        }
        let module = startup::import_module(&options)?;
        let (supervisor_tx, supervisor_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            module,
            jobs: JobQueue::new(options.queue_capacity),
            shutting_down: AtomicBool::new(false),
            slots: Mutex::new(Vec::with_capacity(options.size)),
            supervisor: supervisor_tx,
            next_job: AtomicU64::new(1),
            waiting_callers: AtomicUsize::new(0),
            text_payloads: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            options,
        });
        // From here on, dropping `pool` (an error below) shuts down what was started.
        let pool = Pool { shared };
        for slot in 0..pool.shared.options.size {
            let state = worker::spawn(&pool.shared, slot, 0)?;
            pool.shared.slots.lock().push(state);
        }
        supervisor::spawn(pool.shared.clone(), supervisor_rx)?;
        Ok(pool)
    }

    /// Queues a call of `op` with `payload`; the caller must give up at `timeout`.
    /// Never blocks: a full queue is `overloaded`, a pool shutting down `cancelled`.
    pub fn submit(
        &self,
        op: &str,
        payload: impl Into<Arc<Value>>,
        timeout: Duration,
    ) -> Result<PendingCall> {
        self.submit_traced(op, payload, timeout, None)
    }

    /// [`Pool::submit`] of a traced call: while the op runs, `traceparent` (W3C) is the
    /// current OpenTelemetry context in Python (DESIGN §14).
    pub fn submit_traced(
        &self,
        op: &str,
        payload: impl Into<Arc<Value>>,
        timeout: Duration,
        traceparent: Option<String>,
    ) -> Result<PendingCall> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(BridgeError::new(
                ErrorClass::Cancelled,
                "the worker pool is shut down",
            ));
        }
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        let reply = ReplySlot::new();
        let deadline = Instant::now() + timeout;
        let payload: Arc<Value> = payload.into();
        let text = (self.shared.text_payloads.load(Ordering::Relaxed)
            && convert::sent_as_text(&payload))
        .then(|| serde_json::to_vec(&*payload).ok())
        .flatten();
        let job = Job {
            id,
            op: op.to_owned(),
            payload,
            text,
            traceparent,
            deadline,
            reply: reply.clone(),
        };
        if self.shared.jobs.push(Message::Call(job)).is_err() {
            return Err(BridgeError::new(
                ErrorClass::Overloaded,
                format!(
                    "the request queue is full ({} calls waiting); retry later or raise invoke.queue_capacity",
                    self.shared.options.queue_capacity
                ),
            ));
        }
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        let waiting = self.shared.waiting_callers.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(PendingCall {
            id,
            reply,
            deadline,
            timeout,
            others_waiting: waiting - 1,
            shared: self.shared.clone(),
        })
    }

    /// The pool's health.
    pub fn stats(&self) -> PoolStats {
        let slots = self.shared.slots.lock();
        PoolStats {
            workers: self.shared.options.size,
            workers_alive: slots.iter().filter(|w| w.is_serving()).count(),
            workers_retired: self.shared.retired.load(Ordering::Relaxed),
            workers_stuck: self.shared.stuck.load(Ordering::Relaxed),
            workers_replaced: self.shared.replaced.load(Ordering::Relaxed),
            queued: self.shared.jobs.len(),
            submitted: self.shared.submitted.load(Ordering::Relaxed),
        }
    }

    /// Stops taking calls, lets running calls finish for up to `grace`, answers queued
    /// calls with `cancelled`, then cancels what still runs. Never waits on a worker
    /// stuck in the interpreter beyond `grace`. Returns the number of workers that had
    /// not stopped by then.
    pub fn shutdown(&self, grace: Duration) -> usize {
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return 0;
        }
        self.shared.jobs.close();
        let deadline = Instant::now() + grace;
        let workers: Vec<Arc<WorkerState>> = self.shared.slots.lock().clone();
        while Instant::now() < deadline && workers.iter().any(|w| !w.has_exited()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left: Vec<_> = workers.iter().filter(|w| !w.has_exited()).collect();
        for worker in &left {
            if let Some(job) = worker.current_job() {
                let _ = self
                    .shared
                    .supervisor
                    .send(SupervisorMsg::Cancel { job_id: job });
            }
        }
        let _ = self.shared.supervisor.send(SupervisorMsg::Stop);
        left.len()
    }

    /// Fault injection for tests: the next worker to take this message panics outside
    /// any call. The pool must log it and replace the worker.
    #[doc(hidden)]
    pub fn inject_worker_panic(&self) -> Result<()> {
        self.shared.jobs.push(Message::Panic).map_err(|_| {
            BridgeError::new(ErrorClass::Overloaded, "queue full; cannot inject a panic")
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let grace = self.shared.options.cancel_grace;
        self.shutdown(grace);
    }
}

/// A call that has been queued; wait for it with [`PendingCall::wait_blocking`] or
/// [`PendingCall::wait`]. Dropping it abandons the call (a queued job is then skipped).
pub struct PendingCall {
    id: u64,
    reply: Arc<ReplySlot<Result<Value>>>,
    deadline: Instant,
    timeout: Duration,
    /// Other callers waiting when this call was queued: decides whether to spin.
    others_waiting: usize,
    shared: Arc<Shared>,
}

impl Drop for PendingCall {
    /// A caller that stops waiting (its deadline passed, or its future was dropped)
    /// cancels the job: skipped if still queued, interrupted if running.
    fn drop(&mut self) {
        self.shared.waiting_callers.fetch_sub(1, Ordering::Relaxed);
        if !self.reply.is_ready() {
            let cancel = SupervisorMsg::Cancel { job_id: self.id };
            let _ = self.shared.supervisor.send(cancel);
        }
    }
}

impl PendingCall {
    /// Blocks the current thread until the reply arrives or the deadline passes. The
    /// thread busy-waits briefly first unless more callers than workers are waiting.
    pub fn wait_blocking(self) -> Result<Value> {
        if self.shared.options.spin && self.others_waiting < self.shared.options.size {
            if let Some(reply) = self.reply.spin_take(CALLER_SPIN, CALLER_PURE_SPIN) {
                return reply;
            }
        }
        match self.reply.wait_until(self.deadline) {
            Some(reply) => reply,
            None => self.time_out(),
        }
    }

    /// Waits asynchronously until the reply arrives or the deadline passes. When this is
    /// the only call in flight the task first busy-waits briefly on its runtime thread:
    /// a short call answers before a task wake-up (one futex, ~25 µs) could. With other
    /// calls in flight it never does, so its runtime thread stays free to run them.
    pub async fn wait(self) -> Result<Value> {
        if self.shared.options.spin && self.others_waiting == 0 {
            if let Some(reply) = self.reply.spin_take(CALLER_SPIN, CALLER_PURE_SPIN) {
                return reply;
            }
        }
        let deadline = tokio::time::Instant::from_std(self.deadline);
        match tokio::time::timeout_at(deadline, self.reply.wait()).await {
            Ok(reply) => reply,
            Err(_) => self.time_out(),
        }
    }

    /// The deadline passed: use a reply that raced in, else answer `timeout` (dropping
    /// `self` then cancels the job).
    fn time_out(&self) -> Result<Value> {
        if let Some(reply) = self.reply.spin_take(Duration::ZERO, Duration::ZERO) {
            return reply;
        }
        Err(BridgeError::new(
            ErrorClass::Timeout,
            format!("no reply within {} ms", self.timeout.as_millis()),
        )
        .with_detail("timeout_ms", self.timeout.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(size: usize) -> PoolOptions {
        PoolOptions {
            size,
            queue_capacity: 16,
            cancel_grace: Duration::from_millis(250),
            module: "cerebros_service".into(),
            repo_path: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python"),
            python_executable: None,
            spin: true,
            start_timeout: Duration::from_secs(30),
            nice: 0,
        }
    }

    #[test]
    fn a_start_that_fails_part_way_stops_the_workers_it_started() {
        worker::SPAWN_HOOK.with(|hook| *hook.borrow_mut() = (2, Vec::new()));
        let err = Pool::start(options(3))
            .err()
            .expect("the third worker fails");
        assert!(err.message.contains("injected failure"), "{}", err.message);
        let started = worker::SPAWN_HOOK.with(|hook| std::mem::take(&mut hook.borrow_mut().1));
        assert_eq!(started.len(), 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !started.iter().all(|w| w.has_exited()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            started.iter().all(|w| w.has_exited()),
            "workers of a failed start are still running"
        );
    }
}
