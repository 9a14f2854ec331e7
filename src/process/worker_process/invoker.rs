//! [`WorkerProcessInvoker`]: the pool hosts hold. It starts the children through the
//! supervisor, sends each request to the live child with the fewest in flight, and
//! waits for the reply or the deadline (then kills the child; a dropped wait does too).

use super::worker::Worker;
use super::{shut_down_error, supervisor, Event, Reply, Shared};
use crate::core::config::Mode;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::invoker::{BoxFuture, Invoker, PoolStats, Request};
use crate::inprocess::reply::ReplySlot;
use crate::inprocess::spin;
use crate::process::protocol::{self, READY_ID};
use crate::process::{Launch, ProcessOptions};
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a caller sleeps between looks for a live child while all are restarting.
const NO_WORKER_POLL: Duration = Duration::from_millis(2);
/// How long the caller of the only request in flight busy-waits for its reply before it
/// parks (a thread) or yields to its runtime (a task). A child answers a contract-sized
/// request in a few tens of µs, and waking a parked caller would add one more kernel
/// wake-up (~25–40 µs across the CPUs of the VMs this runs on) to the two the pipes cost.
const REPLY_SPIN: Duration = Duration::from_micros(150);
/// How much of [`REPLY_SPIN`] is pure spinning; after it the caller yields its core
/// between looks, so the child and the reply reader can run on it.
const REPLY_PURE_SPIN: Duration = Duration::from_micros(5);

/// The `worker_process` mode's invoker.
///
/// ```
/// use cerebros_bridge::core::config::Config;
/// use cerebros_bridge::core::invoker::{Invoker, Request};
/// use cerebros_bridge::process::{ProcessOptions, WorkerProcessInvoker};
/// use std::time::Duration;
/// let pool = WorkerProcessInvoker::start(ProcessOptions::from_config(&Config::default()))?;
/// let reply = pool.invoke_blocking(Request {
///     op: "echo".into(),
///     payload: serde_json::json!({"n": 1}).into(),
///     timeout: Duration::from_secs(5),
///     traceparent: None,
/// })?;
/// assert_eq!(reply["n"], 1);
/// assert_eq!(pool.stats().workers_alive, pool.stats().workers);
/// # Ok::<(), cerebros_bridge::core::error::BridgeError>(())
/// ```
pub struct WorkerProcessInvoker {
    shared: Arc<Shared>,
}

impl WorkerProcessInvoker {
    /// Resolves the interpreter, starts `pool_size` children and waits until each has
    /// imported the service module. A module that cannot be imported is a `dependency`
    /// error, as in the `in_process` mode.
    pub fn start(options: ProcessOptions) -> Result<WorkerProcessInvoker> {
        if options.pool_size == 0 {
            return Err(BridgeError::new(
                ErrorClass::Config,
                "invoke.pool_size = 0: expected at least 1 worker process",
            ));
        }
        let launch = Launch::resolve(&options)?;
        let (events, inbox) = crossbeam_channel::unbounded();
        let size = options.pool_size;
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; size]),
            options,
            launch,
            events,
            next_id: AtomicU64::new(READY_ID + 1),
            shutting_down: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            killed_at_deadline: AtomicU64::new(0),
        });
        supervisor::spawn(shared.clone(), inbox)?;
        // From here on, dropping `invoker` shuts everything down again.
        let invoker = WorkerProcessInvoker { shared };
        let started: Vec<_> = (0..size)
            .map(|slot| {
                let reply = ReplySlot::new();
                let _ = invoker.shared.events.send(Event::Spawn {
                    slot,
                    reply: reply.clone(),
                });
                reply
            })
            .collect();
        let start_timeout = invoker.shared.options.start_timeout;
        let deadline = Instant::now() + start_timeout;
        for reply in started {
            let worker = reply.wait_until(deadline).unwrap_or_else(|| {
                // Spawning alone took the start-up's whole deadline (a tiny one).
                Err(BridgeError::new(
                    ErrorClass::Timeout,
                    format!(
                        "no worker process was started within {} ms (invoke.start_timeout_ms)",
                        start_timeout.as_millis()
                    ),
                )
                .with_detail("start_timeout_ms", start_timeout.as_millis() as u64))
            })?;
            match worker.ready.wait_until(deadline) {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => {
                    return Err(BridgeError::new(
                        ErrorClass::Timeout,
                        format!(
                            "worker process {} did not report ready within {} ms \
                             (invoke.start_timeout_ms)",
                            worker.pid,
                            start_timeout.as_millis()
                        ),
                    )
                    .with_detail("start_timeout_ms", start_timeout.as_millis() as u64)
                    .with_detail("stderr_excerpt", worker.stderr_excerpt()))
                }
            }
        }
        Ok(invoker)
    }

    /// The pids of the current children, by slot (0 for a slot being restarted).
    pub fn child_pids(&self) -> Vec<u32> {
        self.shared
            .slots
            .lock()
            .iter()
            .map(|w| w.as_ref().filter(|w| w.is_alive()).map_or(0, |w| w.pid))
            .collect()
    }

    /// The absolute path of the interpreter the children run.
    pub fn python(&self) -> &std::path::Path {
        &self.shared.launch.python
    }

    /// One try at sending a request before `deadline`: what to wait on, `None` to try
    /// again after [`NO_WORKER_POLL`] (no child is live now), or the error of a request
    /// that found no child in time (`timeout` is its deadline, for the message).
    fn send_before(
        &self,
        id: u64,
        line: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Option<Ticket>> {
        match self.try_send(id, line)? {
            Some(ticket) => Ok(Some(ticket)),
            None if Instant::now() >= deadline => Err(no_worker_error(timeout)),
            None => Ok(None),
        }
    }

    /// Sends a request and returns what to wait on; `None` when no child is live now.
    fn try_send(&self, id: u64, line: &[u8]) -> Result<Option<Ticket>> {
        for _ in 0..=self.shared.options.pool_size {
            let Some((worker, others)) = self.pick()? else {
                return Ok(None);
            };
            let reply = ReplySlot::new();
            if !worker.register(id, reply.clone()) {
                continue;
            }
            match worker.send(line) {
                Ok(()) => {
                    self.shared.submitted.fetch_add(1, Ordering::Relaxed);
                    let alone = others == 0;
                    return Ok(Some(Ticket {
                        worker,
                        id,
                        reply,
                        alone,
                    }));
                }
                Err(_) => {
                    // The child is going away; its reader will report it.
                    worker.take(id);
                    worker.alive.store(false, Ordering::Release);
                }
            }
        }
        Ok(None)
    }

    /// The live child with the fewest requests in flight, and how many requests are in
    /// flight on all children.
    fn pick(&self) -> Result<Option<(Arc<Worker>, usize)>> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(shut_down_error());
        }
        let slots = self.shared.slots.lock();
        let live = slots.iter().flatten().filter(|w| w.is_alive());
        let total: usize = live
            .clone()
            .map(|w| w.in_flight.load(Ordering::Acquire))
            .sum();
        if total >= self.shared.options.pool_size + self.shared.options.queue_capacity {
            return Err(BridgeError::new(
                ErrorClass::Overloaded,
                format!(
                    "{total} requests are in flight; retry later or raise invoke.queue_capacity"
                ),
            ));
        }
        Ok(live
            .min_by_key(|w| w.in_flight.load(Ordering::Acquire))
            .map(|w| (w.clone(), total)))
    }

    fn line(&self, request: &Request) -> (u64, Vec<u8>) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        (
            id,
            protocol::encode_traced_request(
                id,
                &request.op,
                &request.payload,
                request.traceparent.as_deref(),
            ),
        )
    }

    /// The deadline passed: use a reply that raced in, else kill the child.
    fn time_out(&self, ticket: &Ticket, timeout: Duration) -> Result<Value> {
        if let Some(reply) = ticket.reply.spin_take(Duration::ZERO, Duration::ZERO) {
            return reply;
        }
        let worker = &ticket.worker;
        if worker.take(ticket.id).is_none() {
            // The reply raced in between the two looks.
            if let Some(reply) = ticket.reply.spin_take(Duration::ZERO, Duration::ZERO) {
                return reply;
            }
        }
        if !worker.killed_at_deadline.swap(true, Ordering::AcqRel) {
            self.shared
                .killed_at_deadline
                .fetch_add(1, Ordering::Relaxed);
        }
        worker.kill();
        Err(BridgeError::new(
            ErrorClass::Timeout,
            format!(
                "no reply within {} ms; worker process {} was killed and is being replaced",
                timeout.as_millis(),
                worker.pid
            ),
        )
        .with_detail("timeout_ms", timeout.as_millis() as u64)
        .with_detail("pid", worker.pid))
    }
}

/// A request sent to a child.
struct Ticket {
    worker: Arc<Worker>,
    id: u64,
    reply: Reply,
    /// No other request was in flight when it was sent: its caller may spin.
    alone: bool,
}

impl Ticket {
    /// The reply, if it arrives while the caller spins (only the caller of the only
    /// request in flight does: with more, the CPUs are better left to the children).
    /// The spinning caller reads the child's stdout itself.
    fn spin_for_reply(&self) -> Option<Result<Value>> {
        if !self.alone {
            return None;
        }
        let arrived = spin::wait_until(REPLY_SPIN, REPLY_PURE_SPIN, || {
            self.reply.is_ready() || {
                self.worker.poll_replies();
                self.reply.is_ready()
            }
        });
        if arrived {
            self.reply.spin_take(Duration::ZERO, Duration::ZERO)
        } else {
            None
        }
    }
}

impl Drop for Ticket {
    /// A request still in flight when its caller stops waiting (the future was
    /// dropped) is cancelled: the child cannot be told to stop one op, so it is killed
    /// (and replaced). After a reply or a timeout the request is no longer in flight
    /// and nothing happens.
    fn drop(&mut self) {
        if self.worker.take(self.id).is_some() {
            self.worker.killed_on_cancel.store(true, Ordering::Release);
            self.worker.kill();
        }
    }
}

fn no_worker_error(timeout: Duration) -> BridgeError {
    BridgeError::new(
        ErrorClass::SubprocessExit,
        format!(
            "no worker process was running within {} ms (they are being restarted)",
            timeout.as_millis()
        ),
    )
}

impl Invoker for WorkerProcessInvoker {
    fn mode(&self) -> Mode {
        Mode::WorkerProcess
    }

    fn invoke(&self, request: Request) -> BoxFuture<'_, Result<Value>> {
        Box::pin(async move {
            let deadline = Instant::now() + request.timeout;
            let (id, line) = self.line(&request);
            let ticket = loop {
                match self.send_before(id, &line, deadline, request.timeout)? {
                    Some(ticket) => break ticket,
                    None => tokio::time::sleep(NO_WORKER_POLL).await,
                }
            };
            drop(line);
            if let Some(reply) = ticket.spin_for_reply() {
                return reply;
            }
            let until = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(until, ticket.reply.wait()).await {
                Ok(reply) => reply,
                Err(_) => self.time_out(&ticket, request.timeout),
            }
        })
    }

    fn invoke_blocking(&self, request: Request) -> Result<Value> {
        let deadline = Instant::now() + request.timeout;
        let (id, line) = self.line(&request);
        let ticket = loop {
            match self.send_before(id, &line, deadline, request.timeout)? {
                Some(ticket) => break ticket,
                None => std::thread::sleep(NO_WORKER_POLL),
            }
        };
        drop(line);
        if let Some(reply) = ticket.spin_for_reply() {
            return reply;
        }
        match ticket.reply.wait_until(deadline) {
            Some(reply) => reply,
            None => self.time_out(&ticket, request.timeout),
        }
    }

    /// `workers`: children configured; `workers_alive`: children live now;
    /// `workers_replaced`: children restarted after they died or were killed (at a
    /// deadline included); `workers_retired`: children killed at a request's deadline;
    /// `queued`: requests waiting behind another on their child.
    fn stats(&self) -> PoolStats {
        let slots = self.shared.slots.lock();
        let live: Vec<&Arc<Worker>> = slots.iter().flatten().filter(|w| w.is_alive()).collect();
        let in_flight: usize = live
            .iter()
            .map(|w| w.in_flight.load(Ordering::Acquire))
            .sum();
        let busy = live
            .iter()
            .filter(|w| w.in_flight.load(Ordering::Acquire) > 0)
            .count();
        PoolStats {
            workers: self.shared.options.pool_size,
            workers_alive: live.len(),
            workers_retired: self.shared.killed_at_deadline.load(Ordering::Relaxed),
            workers_stuck: 0,
            workers_replaced: self.shared.replaced.load(Ordering::Relaxed),
            queued: in_flight - busy,
            submitted: self.shared.submitted.load(Ordering::Relaxed),
        }
    }

    /// Refuses new requests, closes the children's stdins (each exits once it has
    /// answered what it read), waits up to `grace`, then kills the children left; their
    /// requests fail with `cancelled`. Returns how many had to be killed.
    fn shutdown(&self, grace: Duration) -> usize {
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let workers: Vec<Arc<Worker>> =
            self.shared.slots.lock().iter().flatten().cloned().collect();
        for worker in &workers {
            worker.close_stdin();
        }
        let deadline = Instant::now() + grace;
        let running = |w: &&Arc<Worker>| !w.reaped.load(Ordering::Acquire);
        while Instant::now() < deadline && workers.iter().any(|w| running(&w)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left: Vec<&Arc<Worker>> = workers.iter().filter(running).collect();
        for worker in &left {
            worker.kill();
        }
        let _ = self.shared.events.send(Event::Stop);
        left.len()
    }
}

impl Drop for WorkerProcessInvoker {
    /// Shuts the pool down, waiting at most `invoke.cancel_grace_ms` for the children.
    fn drop(&mut self) {
        self.shutdown(self.shared.options.grace);
    }
}
