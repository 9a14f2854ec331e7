//! One worker thread: attached to the interpreter for its whole life, it takes jobs
//! from the pool's queue, runs the op and fills the caller's reply slot.

use super::{Job, Message, Shared, SupervisorMsg, WORKER_PURE_SPIN, WORKER_SPIN};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::inprocess::convert;
use crate::inprocess::op_rules;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use serde_json::Value;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pyo3::create_exception!(
    cerebros_bridge,
    BridgeCallTimeout,
    pyo3::exceptions::PyBaseException,
    "Raised inside an op whose caller's deadline passed. It derives from BaseException so that `except Exception` does not swallow it."
);

/// What the pool and the supervisor see of a worker.
pub(crate) struct WorkerState {
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    /// `threading.get_ident()` of the worker thread (0 until it has attached).
    py_ident: AtomicU64,
    /// Id of the job being run (0 when idle). Written only while holding the GIL, so a
    /// canceller holding the GIL sees a value that cannot change under it.
    current_job: AtomicU64,
    /// Job id a cancellation exception was raised for (0 when none is pending).
    cancel_sent: AtomicU64,
    retired: AtomicBool,
    exited: AtomicBool,
    /// Whether this worker is counted in the pool's stuck-worker count (exactly one of
    /// `retire` and the thread's exit takes it out again).
    counted_stuck: AtomicBool,
}

impl WorkerState {
    pub(crate) fn is_serving(&self) -> bool {
        self.py_ident.load(Ordering::Acquire) != 0 && !self.is_retired() && !self.has_exited()
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    /// Takes the worker out of service, counting it in `stuck` until its thread exits.
    pub(crate) fn retire(&self, stuck: &AtomicU64) {
        self.counted_stuck.store(true, Ordering::SeqCst);
        stuck.fetch_add(1, Ordering::SeqCst);
        self.retired.store(true, Ordering::SeqCst);
        if self.exited.load(Ordering::SeqCst) {
            self.uncount_stuck(stuck);
        }
    }

    /// Called when the thread ends.
    fn mark_exited(&self, stuck: &AtomicU64) {
        self.exited.store(true, Ordering::SeqCst);
        if self.retired.load(Ordering::SeqCst) {
            self.uncount_stuck(stuck);
        }
    }

    fn uncount_stuck(&self, stuck: &AtomicU64) {
        if self.counted_stuck.swap(false, Ordering::SeqCst) {
            stuck.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn current_job(&self) -> Option<u64> {
        match self.current_job.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    pub(crate) fn python_ident(&self) -> u64 {
        self.py_ident.load(Ordering::Acquire)
    }

    /// Raises [`BridgeCallTimeout`] in this worker's thread if, and only if, it is still
    /// running `job_id`. Must be called while attached: holding the GIL keeps the
    /// worker from finishing or starting a job in between the check and the raise.
    pub(crate) fn raise_timeout_in(&self, py: Python<'_>, job_id: u64) -> bool {
        if self.current_job.load(Ordering::Acquire) != job_id {
            return false;
        }
        let exc = py.get_type::<BridgeCallTimeout>();
        self.cancel_sent.store(job_id, Ordering::Release);
        // SAFETY: attached (we hold `py`); the ident is a live Python thread's ident
        // and the exception type object outlives the call.
        let hit =
            unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(self.python_ident() as _, exc.as_ptr()) };
        hit == 1
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook, for spawns made on this thread: from which slot on they fail, and
    /// the workers they started.
    pub(super) static SPAWN_HOOK: std::cell::RefCell<(usize, Vec<Arc<WorkerState>>)> =
        const { std::cell::RefCell::new((usize::MAX, Vec::new())) };
}

/// Starts worker `generation` for `slot`.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    slot: usize,
    generation: u64,
) -> Result<Arc<WorkerState>> {
    #[cfg(test)]
    if SPAWN_HOOK.with(|hook| slot >= hook.borrow().0) {
        return Err(BridgeError::new(
            ErrorClass::SystemError,
            "cannot start a worker thread: injected failure",
        ));
    }
    let state = Arc::new(WorkerState {
        slot,
        generation,
        py_ident: AtomicU64::new(0),
        current_job: AtomicU64::new(0),
        cancel_sent: AtomicU64::new(0),
        retired: AtomicBool::new(false),
        exited: AtomicBool::new(false),
        counted_stuck: AtomicBool::new(false),
    });
    let thread_shared = shared.clone();
    let thread_state = state.clone();
    std::thread::Builder::new()
        .name(format!("cerebros-py-{slot}.{generation}"))
        .spawn(move || run(thread_shared, thread_state))
        .map_err(|e| {
            BridgeError::new(
                ErrorClass::SystemError,
                format!("cannot start a worker thread: {e}"),
            )
            .with_source(e)
        })?;
    #[cfg(test)]
    SPAWN_HOOK.with(|hook| hook.borrow_mut().1.push(state.clone()));
    Ok(state)
}

/// Tells the supervisor when a worker thread ends other than by shutdown or
/// retirement (a panic), and keeps the stuck-worker count right.
struct ExitGuard {
    shared: Arc<Shared>,
    state: Arc<WorkerState>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.state.mark_exited(&self.shared.stuck);
        if !self.state.is_retired() && std::thread::panicking() {
            let _ = self.shared.supervisor.send(SupervisorMsg::WorkerDied {
                worker: self.state.clone(),
            });
        }
    }
}

fn run(shared: Arc<Shared>, state: Arc<WorkerState>) {
    super::priority::lower_current_thread(shared.options.nice);
    let _guard = ExitGuard {
        shared: shared.clone(),
        state: state.clone(),
    };
    Python::attach(|py| {
        // SAFETY: plain FFI query of the current thread's id.
        let ident = unsafe { pyo3::ffi::PyThread_get_thread_ident() } as u64;
        state.py_ident.store(ident, Ordering::Release);
        let mut ops = OpTable::new(shared.module.bind(py).clone());
        if ops.loads.is_some() {
            shared.text_payloads.store(true, Ordering::Relaxed);
        }
        loop {
            if state.is_retired() {
                return;
            }
            if shared.shutting_down.load(Ordering::Acquire) {
                cancel_queued(&shared);
                return;
            }
            // Keep the GIL while work is queued; release it only to wait.
            let Some(message) = shared.jobs.pop() else {
                py.detach(|| wait_for_job(&shared));
                continue;
            };
            match message {
                Message::Call(job) => execute(py, &shared, &state, &mut ops, job),
                Message::Panic => panic!("injected worker panic (fault injection)"),
            }
        }
    });
}

/// Waits, GIL released, until a job is probably queued. Only one idle worker spins at
/// a time. With no caller waiting, the next job most likely comes from a caller busy
/// with its last reply: spin on the CPU for it. With callers waiting on an empty queue,
/// their threads have replies to process: yield the core to them between checks.
fn wait_for_job(shared: &Shared) {
    let may_spin = shared.options.spin && shared.jobs.spinners() == 0;
    let pure_spin = if shared.waiting_callers.load(Ordering::Relaxed) == 0 {
        WORKER_SPIN
    } else {
        WORKER_PURE_SPIN
    };
    shared.jobs.wait_for_item(WORKER_SPIN, pure_spin, may_spin);
}

fn cancel_queued(shared: &Shared) {
    while let Some(message) = shared.jobs.pop() {
        if let Message::Call(job) = message {
            job.reply.fill(Err(BridgeError::new(
                ErrorClass::Cancelled,
                "the worker pool shut down before the call ran",
            )
            .with_op(job.op.clone())));
        }
    }
}

fn execute<'py>(
    py: Python<'py>,
    shared: &Shared,
    state: &WorkerState,
    ops: &mut OpTable<'py>,
    job: Job,
) {
    // The caller gave up (dropped its handle, or its deadline passed while queued):
    // don't run the op.
    if Arc::strong_count(&job.reply) == 1 || Instant::now() >= job.deadline {
        return;
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| call_op(py, state, ops, &job)));
    let result = outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(op = %job.op, "worker panicked while running an op: {what}");
        Err(BridgeError::new(
            ErrorClass::SystemError,
            format!("the worker panicked while running the op: {what}"),
        ))
    });
    let result = result.map_err(|err| {
        // The pool's shutdown cancels the calls still running: a cancel, not a deadline
        // (`timeout` is a class callers retry).
        let closing = shared.shutting_down.load(Ordering::Acquire);
        if closing && err.class == ErrorClass::Timeout && Instant::now() < job.deadline {
            BridgeError::new(
                ErrorClass::Cancelled,
                "the call was cancelled: the bridge was closed while it ran",
            )
        } else {
            err
        }
    });
    job.reply
        .fill(result.map_err(|e| e.with_op(job.op.clone())));
}

fn call_op<'py>(
    py: Python<'py>,
    state: &WorkerState,
    ops: &mut OpTable<'py>,
    job: &Job,
) -> Result<Value> {
    let func = ops.resolve(&job.op)?;
    let from_text = match (&job.text, &ops.loads) {
        (Some(text), Some(loads)) => convert::text_to_python(loads, text),
        _ => None,
    };
    let argument = match from_text {
        Some(argument) => argument,
        None => convert::to_python(py, &job.payload)?,
    };
    let trace = job
        .traceparent
        .as_deref()
        .and_then(|traceparent| op_rules::enter_trace(py, traceparent));
    state.current_job.store(job.id, Ordering::Release);
    let outcome = func
        .call1((argument,))
        .and_then(|result| ops.await_if_coroutine(result));
    state.current_job.store(0, Ordering::Release);
    if state.cancel_sent.swap(0, Ordering::AcqRel) != 0 {
        // The cancel may have been raised after the op returned: clear it so it can
        // never land in the next job.
        // SAFETY: attached; a NULL exception clears this thread's pending one.
        unsafe {
            pyo3::ffi::PyThreadState_SetAsyncExc(state.python_ident() as _, std::ptr::null_mut());
        }
    }
    if let Some(token) = trace {
        op_rules::leave_trace(token);
    }
    match outcome {
        Ok(result) => convert::from_python(&result),
        Err(err) if err.is_instance_of::<BridgeCallTimeout>(py) => Err(BridgeError::new(
            ErrorClass::Timeout,
            "the call was cancelled at its deadline",
        )),
        Err(err) => Err(convert::exception_error(py, &err)),
    }
}

/// The ops a worker has resolved, its asyncio event loop for `async def` ops, and
/// `orjson.loads` for payloads sent as text.
struct OpTable<'py> {
    module: Bound<'py, PyModule>,
    resolved: HashMap<String, Bound<'py, PyAny>>,
    event_loop: Option<Bound<'py, PyAny>>,
    /// `orjson.loads`, for payloads sent as text (`None` when orjson is not installed).
    loads: Option<Bound<'py, PyAny>>,
}

impl<'py> OpTable<'py> {
    fn new(module: Bound<'py, PyModule>) -> Self {
        let loads = module
            .py()
            .import("orjson")
            .and_then(|orjson| orjson.getattr("loads"))
            .ok();
        OpTable {
            module,
            resolved: HashMap::new(),
            event_loop: None,
            loads,
        }
    }

    /// The function for `op`, resolved by the op rules ([`op_rules::resolve`]) the first
    /// time this worker sees it and looked up in this worker's table afterwards.
    fn resolve(&mut self, op: &str) -> Result<Bound<'py, PyAny>> {
        if let Some(func) = self.resolved.get(op) {
            return Ok(func.clone());
        }
        let func = op_rules::resolve(&self.module, op)?;
        self.resolved.insert(op.to_owned(), func.clone());
        Ok(func)
    }

    /// Runs a coroutine to completion through pyo3-async-runtimes on this worker's
    /// own asyncio loop; any other result is returned as it is.
    fn await_if_coroutine(&mut self, result: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = result.py();
        if result.is_instance_of::<PyDict>() || !result.hasattr(pyo3::intern!(py, "__await__"))? {
            return Ok(result);
        }
        let event_loop = match &self.event_loop {
            Some(event_loop) => event_loop.clone(),
            None => py.import("asyncio")?.call_method0("new_event_loop")?,
        };
        let locals = pyo3_async_runtimes::TaskLocals::new(event_loop.clone());
        let awaited = pyo3_async_runtimes::into_future_with_locals(&locals, result)?;
        let outcome = pyo3_async_runtimes::tokio::run_until_complete(event_loop.clone(), awaited);
        match outcome {
            Ok(value) => {
                self.event_loop = Some(event_loop);
                Ok(value.into_bound(py))
            }
            Err(err) => {
                // A cancelled or failed coroutine may leave tasks behind: start the next
                // async op on a fresh loop.
                let _ = event_loop.call_method0("close");
                self.event_loop = None;
                Err(err)
            }
        }
    }
}
