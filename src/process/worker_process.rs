//! The `worker_process` mode: a pool of long-lived
//! `python -m cerebros_service --serve-stdio --module M` children, each speaking
//! newline-delimited JSON ([`super::protocol`]) over its stdin and stdout.
//!
//! * **Requests.** A call goes to the live child with the fewest requests in flight.
//!   Its line is written under a short lock, without blocking: what the pipe does not
//!   take at once is queued for the child's writer thread. Several requests may be in
//!   flight per child; the child answers them in order.
//! * **Replies.** One reader thread per child reads reply lines and fills the
//!   [`ReplySlot`] registered under the reply's id. It watches the child's pidfd too, so
//!   an exit is noticed even when a process the child started still holds the pipe.
//! * **Stderr.** One thread per child forwards its stderr, line by line, to `tracing`
//!   (target `cerebros.bridge.worker`, with the child's pid), keeping the last 64 KiB
//!   for error reports. The child points fd 1 and `sys.stdout` at stderr, so what ops
//!   print never reaches the protocol stream.
//! * **Timeouts.** At a request's deadline its caller gets `timeout` and the child's
//!   process group is killed; the child is reaped and replaced.
//! * **Cancellation.** A caller that stops waiting (its future is dropped: a cancelled
//!   run, Ctrl-C) while its request is still in flight has the child's process group
//!   killed at once, since a child cannot be told to stop one op; it is replaced. Other
//!   requests in flight on it fail with `subprocess_exit`, as after a crash.
//! * **Crashes.** A child that exits, segfaults or is killed is reaped and replaced;
//!   requests in flight on it fail with `subprocess_exit` (returncode, stderr excerpt).
//!   Its three threads end and its pipes are closed once it is reaped.
//!   A child that dies before it is ready is replaced after a growing delay.
//! * **Children are started** by one supervisor thread, which lives as long as the pool,
//!   so `PR_SET_PDEATHSIG` only fires when the host goes.

use super::child::{self, TailBuffer};
use super::protocol::{self, READY_ID};
use super::{Launch, ProcessOptions, SERVICE_PACKAGE};
use crate::core::config::Mode;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::invoker::PoolStats;
use crate::core::invoker::{BoxFuture, Invoker, Request};
use crate::core::payload::EXCERPT_CHARS;
use crate::inprocess::reply::ReplySlot;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of a child's stderr is kept for error excerpts.
const STDERR_TAIL: usize = 64 * 1024;

/// Longest stderr line forwarded to `tracing` as it is (longer ones are cut).
const LOG_LINE_CHARS: usize = 4096;

/// How long a dead child's stderr may take to reach its end before errors are built.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

/// Delays before restarting a child that died before it was ready.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long a caller sleeps between looks for a live child while all are restarting.
const NO_WORKER_POLL: Duration = Duration::from_millis(2);

type Reply = Arc<ReplySlot<Result<Value>>>;

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
/// })?;
/// assert_eq!(reply["n"], 1);
/// assert_eq!(pool.stats().workers_alive, pool.stats().workers);
/// # Ok::<(), cerebros_bridge::core::error::BridgeError>(())
/// ```
pub struct WorkerProcessInvoker {
    shared: Arc<Shared>,
}

struct Shared {
    options: ProcessOptions,
    launch: Launch,
    /// The current child of each slot (`None` until the first one is started).
    slots: Mutex<Vec<Option<Arc<Worker>>>>,
    events: Sender<Event>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    submitted: AtomicU64,
    replaced: AtomicU64,
    killed_at_deadline: AtomicU64,
}

enum Event {
    /// Start the child of `slot` and hand it over.
    Spawn {
        slot: usize,
        reply: Arc<ReplySlot<Result<Arc<Worker>>>>,
    },
    /// A child's reader saw it end; these requests were in flight on it.
    Died {
        worker: Arc<Worker>,
        orphans: Vec<Reply>,
    },
    /// Shutdown: kill what is left, reap, and stop.
    Stop,
}

/// One child process and the requests in flight on it.
struct Worker {
    slot: usize,
    generation: u64,
    pid: u32,
    writer: Mutex<Writer>,
    writer_wake: Condvar,
    pending: Mutex<Pending>,
    in_flight: AtomicUsize,
    /// Cleared as soon as the child is known to be dying (or was killed).
    alive: AtomicBool,
    /// The child's start-up report.
    ready: Reply,
    /// The start-up report was an error.
    ready_failed: AtomicBool,
    /// The process, until it is reaped (kills are sent only while it is here).
    process: Mutex<Option<Child>>,
    /// Set once the supervisor has reaped the child.
    reaped: AtomicBool,
    /// Killed by the bridge because a request on it timed out.
    killed_at_deadline: AtomicBool,
    /// Killed by the bridge because the caller of a request on it went away.
    killed_on_cancel: AtomicBool,
    stderr_tail: Mutex<TailBuffer>,
    stderr_done: Mutex<bool>,
    stderr_closed: Condvar,
}

struct Pending {
    /// No more requests are taken (the child is dying).
    closed: bool,
    replies: HashMap<u64, Reply>,
}

/// The child's stdin and the bytes waiting to go into it.
struct Writer {
    fd: Option<OwnedFd>,
    backlog: Vec<u8>,
    /// How much of `backlog` has been written.
    offset: usize,
}

impl Writer {
    fn is_idle(&self) -> bool {
        self.offset == self.backlog.len()
    }
}

impl Worker {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Registers a reply slot for request `id`; false when the child takes no more.
    fn register(&self, id: u64, reply: Reply) -> bool {
        let mut pending = self.pending.lock();
        if pending.closed {
            return false;
        }
        pending.replies.insert(id, reply);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Takes request `id` out of the in-flight set.
    fn take(&self, id: u64) -> Option<Reply> {
        let reply = self.pending.lock().replies.remove(&id);
        if reply.is_some() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        reply
    }

    /// Closes the in-flight set and returns what was in it.
    fn close_pending(&self) -> Vec<Reply> {
        let mut pending = self.pending.lock();
        pending.closed = true;
        let orphans: Vec<Reply> = pending.replies.drain().map(|(_, r)| r).collect();
        self.in_flight.fetch_sub(orphans.len(), Ordering::AcqRel);
        orphans
    }

    /// Writes `line` without blocking: what the pipe does not take now is queued for
    /// the writer thread, behind anything queued before it.
    fn send(&self, line: &[u8]) -> io::Result<()> {
        let mut writer = self.writer.lock();
        let Some(fd) = writer.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if writer.is_idle() {
            let mut written = 0;
            while written < line.len() {
                match child::write_some(fd, &line[written..]) {
                    Ok(n) => written += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
            if written == line.len() {
                return Ok(());
            }
            writer.backlog.clear();
            writer.offset = 0;
            writer.backlog.extend_from_slice(&line[written..]);
        } else {
            writer.backlog.extend_from_slice(line);
        }
        drop(writer);
        self.writer_wake.notify_one();
        Ok(())
    }

    /// Closes the child's stdin (it exits when it has answered what it read).
    fn close_stdin(&self) {
        let mut writer = self.writer.lock();
        writer.fd = None;
        writer.backlog = Vec::new();
        writer.offset = 0;
        drop(writer);
        self.writer_wake.notify_all();
    }

    /// Kills the child's process group, unless the child has been reaped already.
    fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        let process = self.process.lock();
        if process.is_some() {
            child::kill_group(self.pid);
        }
    }

    /// Why the bridge killed the child, if it did: "timed out" or "was cancelled" (of
    /// the request that cost it).
    fn killed_because(&self) -> Option<&'static str> {
        if self.killed_at_deadline.load(Ordering::Acquire) {
            Some("timed out")
        } else if self.killed_on_cancel.load(Ordering::Acquire) {
            Some("was cancelled")
        } else {
            None
        }
    }

    fn stderr_excerpt(&self) -> String {
        child::tail_excerpt(&self.stderr_tail.lock().text(), EXCERPT_CHARS)
    }
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
        let supervisor = shared.clone();
        std::thread::Builder::new()
            .name("cerebros-wp-supervisor".into())
            .spawn(move || supervise(supervisor, inbox))
            .map_err(|err| system_error(format!("cannot start the supervisor thread: {err}")))?;
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
            let worker = reply
                .wait_until(deadline)
                .unwrap_or_else(|| Err(system_error("the supervisor did not start a child")))?;
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

    /// Sends a request and returns what to wait on; `None` when no child is live now.
    fn try_send(&self, id: u64, line: &[u8]) -> Result<Option<Ticket>> {
        for _ in 0..=self.shared.options.pool_size {
            let Some(worker) = self.pick()? else {
                return Ok(None);
            };
            let reply = ReplySlot::new();
            if !worker.register(id, reply.clone()) {
                continue;
            }
            match worker.send(line) {
                Ok(()) => {
                    self.shared.submitted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(Ticket { worker, id, reply }));
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

    /// The live child with the fewest requests in flight.
    fn pick(&self) -> Result<Option<Arc<Worker>>> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(BridgeError::new(
                ErrorClass::Cancelled,
                "the worker process pool is shut down",
            ));
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
            .cloned())
    }

    fn line(&self, request: &Request) -> (u64, Vec<u8>) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        (
            id,
            protocol::encode_request(id, &request.op, &request.payload),
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

fn system_error(message: impl Into<String>) -> BridgeError {
    BridgeError::new(ErrorClass::SystemError, message)
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
                if let Some(ticket) = self.try_send(id, &line)? {
                    break ticket;
                }
                if Instant::now() >= deadline {
                    return Err(no_worker_error(request.timeout));
                }
                tokio::time::sleep(NO_WORKER_POLL).await;
            };
            drop(line);
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
            if let Some(ticket) = self.try_send(id, &line)? {
                break ticket;
            }
            if Instant::now() >= deadline {
                return Err(no_worker_error(request.timeout));
            }
            std::thread::sleep(NO_WORKER_POLL);
        };
        drop(line);
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

// -- the supervisor ---------------------------------------------------------------------------

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
                let started = start_child(&shared, slot, generations[slot]);
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
        match start_child(shared, slot, generations[slot]) {
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

/// Starts the child of `slot` with its three threads and makes it the slot's child.
fn start_child(shared: &Arc<Shared>, slot: usize, generation: u64) -> Result<Arc<Worker>> {
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(BridgeError::new(
            ErrorClass::Cancelled,
            "the worker process pool is shut down",
        ));
    }
    let mut command = shared.launch.command();
    command.args(["-m", SERVICE_PACKAGE, "--serve-stdio", "--module"]);
    command.arg(&shared.options.module);
    let mut process = command.spawn().map_err(|err| {
        let class = if err.kind() == io::ErrorKind::NotFound {
            ErrorClass::Dependency
        } else {
            ErrorClass::SystemError
        };
        BridgeError::new(
            class,
            format!("cannot start {}: {err}", shared.launch.python.display()),
        )
    })?;
    let pid = process.id();
    let pipes = (
        process.stdin.take().map(OwnedFd::from),
        process.stdout.take().map(OwnedFd::from),
        process.stderr.take().map(OwnedFd::from),
    );
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        child::kill_group(pid);
        let _ = process.wait();
        return Err(system_error("the worker process has no pipes"));
    };
    let setup = child::set_nonblocking(stdin.as_raw_fd())
        .and_then(|()| child::set_nonblocking(stdout.as_raw_fd()));
    if let Err(err) = setup {
        child::kill_group(pid);
        let _ = process.wait();
        return Err(system_error(format!(
            "cannot set up the worker's pipes: {err}"
        )));
    }
    let worker = Arc::new(Worker {
        slot,
        generation,
        pid,
        writer: Mutex::new(Writer {
            fd: Some(stdin),
            backlog: Vec::new(),
            offset: 0,
        }),
        writer_wake: Condvar::new(),
        pending: Mutex::new(Pending {
            closed: false,
            replies: HashMap::new(),
        }),
        in_flight: AtomicUsize::new(0),
        alive: AtomicBool::new(true),
        ready: ReplySlot::new(),
        ready_failed: AtomicBool::new(false),
        process: Mutex::new(Some(process)),
        reaped: AtomicBool::new(false),
        killed_at_deadline: AtomicBool::new(false),
        killed_on_cancel: AtomicBool::new(false),
        stderr_tail: Mutex::new(TailBuffer::new(STDERR_TAIL)),
        stderr_done: Mutex::new(false),
        stderr_closed: Condvar::new(),
    });
    let name = |what: &str| format!("cerebros-wp-{slot}.{generation}-{what}");
    let pidfd = child::pidfd_open(pid);
    let threads = [
        spawn_thread(name("out"), 8 << 20, {
            let (worker, events) = (worker.clone(), shared.events.clone());
            move || read_replies(worker, stdout, pidfd, events)
        }),
        spawn_thread(name("err"), 256 << 10, {
            let worker = worker.clone();
            move || forward_stderr(worker, stderr)
        }),
        spawn_thread(name("in"), 256 << 10, {
            let worker = worker.clone();
            move || write_requests(worker)
        }),
    ];
    if let Some(Err(err)) = threads.into_iter().find(io::Result::is_err) {
        worker.close_stdin();
        worker.kill();
        return Err(system_error(format!(
            "cannot start a worker process thread: {err}"
        )));
    }
    shared.slots.lock()[slot] = Some(worker.clone());
    Ok(worker)
}

fn spawn_thread(
    name: String,
    stack: usize,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(stack)
        .spawn(body)
        .map(drop)
}

// -- the per-child threads --------------------------------------------------------------------

/// Reads reply lines until the child's stdout ends or the child exits, then reports
/// the death to the supervisor with the requests that were in flight.
fn read_replies(
    worker: Arc<Worker>,
    stdout: OwnedFd,
    pidfd: Option<OwnedFd>,
    events: Sender<Event>,
) {
    let fd = stdout.as_raw_fd();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut ended = false;
    while !ended {
        let mut fds = [
            child::poll_entry(Some(fd), libc::POLLIN),
            child::poll_entry(pidfd.as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN),
        ];
        if child::poll(&mut fds, None).is_err() {
            break;
        }
        let exited = fds[1].revents != 0;
        if fds[0].revents != 0 || exited {
            let far = Instant::now() + Duration::from_secs(3600);
            ended = child::drain(fd, &mut buf, far, |data| {
                pending.extend_from_slice(data);
            });
            dispatch_lines(&worker, &mut pending, &mut scanned);
        }
        ended |= exited;
    }
    worker.alive.store(false, Ordering::Release);
    let orphans = worker.close_pending();
    let _ = events.send(Event::Died {
        worker: worker.clone(),
        orphans,
    });
}

/// Handles every complete line in `pending` and drops it from the buffer.
fn dispatch_lines(worker: &Worker, pending: &mut Vec<u8>, scanned: &mut usize) {
    let mut start = 0;
    while let Some(offset) = pending[*scanned..].iter().position(|b| *b == b'\n') {
        let end = *scanned + offset;
        handle_line(worker, &pending[start..end]);
        start = end + 1;
        *scanned = start;
    }
    pending.drain(..start);
    *scanned = pending.len();
    // Do not keep the memory of one huge reply for the child's whole life.
    if pending.capacity() > 4 << 20 && pending.len() < 64 << 10 {
        pending.shrink_to(64 << 10);
    }
}

fn handle_line(worker: &Worker, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match protocol::decode_reply(line) {
        Ok(protocol::Reply {
            id: Some(READY_ID),
            outcome,
        }) => {
            if outcome.is_err() {
                worker.ready_failed.store(true, Ordering::Release);
            }
            worker.ready.fill(outcome);
        }
        Ok(protocol::Reply {
            id: Some(id),
            outcome,
        }) => {
            if let Some(reply) = worker.take(id) {
                reply.fill(outcome);
            }
        }
        Ok(protocol::Reply { id: None, outcome }) => {
            let why = outcome.err().map(|e| e.message).unwrap_or_default();
            tracing::warn!(
                target: "cerebros.bridge.worker",
                pid = worker.pid,
                "the worker process could not read a request: {why}"
            );
        }
        Err(why) => {
            tracing::error!(
                target: "cerebros.bridge.worker",
                pid = worker.pid,
                "the worker process broke the protocol ({why}); killing it"
            );
            worker.kill();
        }
    }
}

/// Forwards the child's stderr to `tracing`, line by line, and keeps its tail.
fn forward_stderr(worker: Arc<Worker>, stderr: OwnedFd) {
    let fd = stderr.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let n = match child::read_some(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &buf[..n];
        worker.stderr_tail.lock().push(data);
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let (text, complete) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = LOG_LINE_CHARS.saturating_sub(line.len());
            cut |= text.len() > room;
            line.extend_from_slice(&text[..text.len().min(room)]);
            if complete {
                log_stderr_line(&worker, &line, cut);
                line.clear();
                cut = false;
            }
        }
    }
    if !line.is_empty() {
        log_stderr_line(&worker, &line, cut);
    }
    *worker.stderr_done.lock() = true;
    worker.stderr_closed.notify_all();
}

fn log_stderr_line(worker: &Worker, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let more = if cut { "…" } else { "" };
    tracing::info!(
        target: "cerebros.bridge.worker",
        pid = worker.pid,
        slot = worker.slot,
        "{text}{more}"
    );
}

/// Writes what `send` could not: waits for bytes in the backlog and for room in the
/// pipe. Ends when stdin is closed or broken.
fn write_requests(worker: Arc<Worker>) {
    let mut writer = worker.writer.lock();
    loop {
        let Some(fd) = writer.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        if writer.is_idle() {
            worker.writer_wake.wait(&mut writer);
            continue;
        }
        let offset = writer.offset;
        match child::write_some(fd, &writer.backlog[offset..]) {
            Ok(n) => {
                writer.offset += n;
                if writer.is_idle() {
                    writer.backlog = Vec::new();
                    writer.offset = 0;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                // Wait for room with the lock released; `fd` can only be closed under
                // the lock, and a stale poll just returns early.
                MutexGuard::unlocked(&mut writer, || {
                    let mut fds = [child::poll_entry(Some(fd), libc::POLLOUT)];
                    let _ = child::poll(&mut fds, Some(Duration::from_millis(100)));
                });
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                writer.fd = None;
                writer.backlog = Vec::new();
                writer.offset = 0;
                return;
            }
        }
    }
}
