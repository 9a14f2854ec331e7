//! The `Bridge` class: a [`Client`] owned by Python.
//!
//! `Bridge(...)` loads the configuration like the CLI does (`config` file, else
//! `CEREBROS_CONFIG`, else `./cerebros.toml`, else defaults; then the environment) and
//! applies its keyword arguments on top. `call` converts the payload while holding the
//! GIL, then releases it for the whole wait: in `in_process` mode the pool's worker
//! threads need it to run the op (holding it would deadlock until the deadline). While
//! waiting on the main thread, it still notices Ctrl-C: it checks for signals every
//! [`SIGNAL_POLL`] and abandons (cancels) the call when a handler raises.

use super::errors::to_py_err;
use super::{host, payload};
use crate::client::{CallOptions, Client};
use crate::core::config::{Config, Mode, MAX_POOL_SIZE, MAX_RETRIES, MAX_TIMEOUT_MS};
use crate::core::error::{BridgeError, ErrorClass};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyType;
use serde_json::Value;
use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often a call waiting on the main thread checks for signals (Ctrl-C).
pub const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Bridges that are not closed yet, for the `atexit` hook.
static OPEN: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// What a `Bridge` shares with the calls in flight on other threads.
struct Inner {
    client: Client,
    closed: AtomicBool,
    mode: Mode,
    module: String,
    pool_size: usize,
    default_timeout_ms: u64,
    cancel_grace: Duration,
}

impl Inner {
    /// Stops the client once, waiting up to `grace` for running calls.
    fn close(&self, grace: Duration) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.client.shutdown(grace);
        }
    }
}

impl Drop for Inner {
    /// A bridge dropped without `close()` stops its workers without waiting (the GIL
    /// may be held here, and workers need it to finish).
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// A bridge client: calls ops of a Python service module through the configured mode.
///
/// `Bridge(config=None, module=None, repo_path=None, mode=None, pool_size=None,
/// timeout_ms=None, max_retries=None)`; each `None` keeps the value of the configuration
/// (file, environment, defaults). A `with` block closes it.
#[pyclass(module = "cerebros_service._bridge", name = "Bridge", frozen)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[pymethods]
impl Bridge {
    /// Loads the configuration, applies the arguments and starts the client (in
    /// `in_process` mode: the worker pool, importing the service module). Raises
    /// `ConfigError` for an invalid value, `DependencyError` when the bridge is disabled
    /// or the module cannot be imported.
    #[new]
    #[pyo3(signature = (config=None, module=None, repo_path=None, mode=None, pool_size=None, timeout_ms=None, max_retries=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config: Option<PathBuf>,
        module: Option<String>,
        repo_path: Option<PathBuf>,
        mode: Option<String>,
        pool_size: Option<Bound<'_, PyAny>>,
        timeout_ms: Option<Bound<'_, PyAny>>,
        max_retries: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // Their ranges are the configuration's, which says more of a value in range there.
        let fail = |err: BridgeError| to_py_err(py, &err);
        let pool_size =
            whole_number(pool_size.as_ref(), "pool_size", MAX_POOL_SIZE).map_err(fail)?;
        let timeout_ms =
            whole_number(timeout_ms.as_ref(), "timeout_ms", MAX_TIMEOUT_MS).map_err(fail)?;
        let max_retries =
            whole_number(max_retries.as_ref(), "max_retries", MAX_RETRIES).map_err(fail)?;
        let arguments = Arguments {
            config,
            module,
            repo_path,
            mode,
            pool_size,
            timeout_ms,
            max_retries,
        };
        let mut config = arguments.config().map_err(|e| to_py_err(py, &e))?;
        if config.python_executable.is_none() {
            // The process modes start children with the host's interpreter.
            config.python_executable = host::host_executable(py);
        }
        let client = py
            .detach(|| Client::start(&config))
            .map_err(|e| to_py_err(py, &e))?;
        let inner = Arc::new(Inner {
            client,
            closed: AtomicBool::new(false),
            mode: config.mode,
            module: config.module.clone(),
            pool_size: config.invoke.pool_size,
            default_timeout_ms: config.invoke.default_timeout_ms,
            cancel_grace: Duration::from_millis(config.invoke.cancel_grace_ms),
        });
        let mut open = OPEN.lock();
        open.retain(|weak| weak.strong_count() > 0);
        open.push(Arc::downgrade(&inner));
        Ok(Bridge { inner })
    }

    /// Calls `op` with `payload` (a dict of JSON-like values) and returns its result
    /// dict. `timeout_ms` overrides the default deadline of each attempt; `cache_key`
    /// caches the result under that key; `max_retries` overrides the retries. The GIL is
    /// released while the call runs. Raises the `BridgeError` subclass of the failure.
    #[pyo3(signature = (op, payload, timeout_ms=None, *, cache_key=None, max_retries=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        op: &str,
        payload: &Bound<'py, PyAny>,
        timeout_ms: Option<Bound<'py, PyAny>>,
        cache_key: Option<String>,
        max_retries: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fail = |err: BridgeError| to_py_err(py, &err.with_op(op));
        self.check_open(py)?;
        let timeout_ms = whole_number(timeout_ms.as_ref(), "timeout_ms", MAX_TIMEOUT_MS);
        let timeout = timeout_ms
            .and_then(|t| t.map(per_call_timeout).transpose())
            .map_err(fail)?;
        let max_retries =
            whole_number(max_retries.as_ref(), "max_retries", MAX_RETRIES).map_err(fail)?;
        let payload = payload::from_python(payload, "payload").map_err(fail)?;
        let options = CallOptions {
            timeout,
            cache_key,
            max_retries,
        };
        let (inner, op) = (self.inner.clone(), op.to_owned());
        let outcome = py.detach(move || wait_for(&inner.client, &op, payload, options));
        match outcome {
            Ok(Ok(value)) => Ok(pythonize::pythonize(py, &value)?),
            Ok(Err(err)) => Err(to_py_err(py, &err)),
            Err(interrupted) => Err(interrupted),
        }
    }

    /// Counters and worker state: `mode`, `calls`, `errors` (by class), `retries`,
    /// `cache_hits`, `cache_misses`, `cache` (the cache's own counters), `workers`,
    /// `workers_alive`, `workers_retired`, `workers_stuck`, `workers_replaced`, `queued`,
    /// `submitted`, and `closed`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut stats = serde_json::to_value(self.inner.client.stats())
            .map_err(|e| to_py_err(py, &system_error(format!("cannot report stats: {e}"))))?;
        if let Value::Object(map) = &mut stats {
            map.insert("closed".into(), Value::Bool(self.closed()));
        }
        Ok(pythonize::pythonize(py, &stats)?)
    }

    /// Stops the bridge: no new calls; running calls get up to `invoke.cancel_grace_ms`
    /// to finish, then are cancelled; queued calls fail with `CallCancelledError`.
    /// Idempotent. The GIL is released while it waits.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || inner.close(inner.cancel_grace));
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The execution mode: `in_process`, `worker_process` or `subprocess`.
    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode.as_str()
    }

    /// The service module whose functions are the ops.
    #[getter]
    fn module(&self) -> &str {
        &self.inner.module
    }

    /// The number of workers.
    #[getter]
    fn pool_size(&self) -> usize {
        self.inner.pool_size
    }

    /// The default deadline of a call, in milliseconds.
    #[getter]
    fn timeout_ms(&self) -> u64 {
        self.inner.default_timeout_ms
    }

    /// Returns the bridge itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the bridge; exceptions propagate.
    #[pyo3(signature = (exc_type=None, exc_value=None, traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = (exc_type, exc_value, traceback);
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Bridge(mode={:?}, module={:?}, pool_size={}, closed={})",
            self.inner.mode.as_str(),
            self.inner.module,
            self.inner.pool_size,
            if self.closed() { "True" } else { "False" }
        )
    }
}

impl Bridge {
    /// `CallCancelledError` once the bridge is closed.
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if !self.closed() {
            return Ok(());
        }
        let err = BridgeError::new(ErrorClass::Cancelled, "the bridge is closed");
        Err(to_py_err(py, &err))
    }
}

/// Closes every open bridge; registered with `atexit` so that worker threads stop
/// while the interpreter can still let them finish.
#[pyfunction]
#[pyo3(name = "_close_all")]
pub fn close_all(py: Python<'_>) {
    let open: Vec<Arc<Inner>> = OPEN.lock().drain(..).filter_map(|w| w.upgrade()).collect();
    let stuck: u64 = py.detach(move || {
        for inner in &open {
            inner.close(inner.cancel_grace);
        }
        // Threads still in a call were just cancelled: those that heed it end at once.
        // Only in_process workers are threads of this interpreter.
        let running = || -> u64 {
            open.iter()
                .filter(|inner| inner.mode == Mode::InProcess)
                .map(|inner| {
                    let workers = inner.client.stats().workers;
                    workers.workers_alive as u64 + workers.workers_stuck
                })
                .sum()
        };
        let grace = open.iter().map(|inner| inner.cancel_grace).max();
        let deadline = Instant::now() + grace.unwrap_or_default() + SIGNAL_POLL;
        while running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        running()
    });
    if stuck > 0 {
        // What follows is CPython's doing, not ours: say why before it happens.
        let message = format!(
            "cerebros_service._bridge: {stuck} worker thread(s) still run a call that ignored \
             its cancellation; CPython before 3.14 aborts a process (SIGABRT) whose \
             non-Python threads are running Python when it exits. Run ops that may not stop \
             with mode=\"worker_process\".\n"
        );
        if let Ok(stderr) = py.import("sys").and_then(|sys| sys.getattr("stderr")) {
            let _ = stderr.call_method1("write", (message,));
            let _ = stderr.call_method0("flush");
        }
    }
}

/// The constructor's arguments, applied over the loaded configuration.
struct Arguments {
    config: Option<PathBuf>,
    module: Option<String>,
    repo_path: Option<PathBuf>,
    mode: Option<String>,
    pool_size: Option<usize>,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
}

impl Arguments {
    /// The configuration file/environment/defaults with the arguments on top, validated.
    /// A key set here reports `Bridge(<argument>=...)` as its source in messages.
    fn config(self) -> Result<Config, BridgeError> {
        let mut config = Config::load(self.config.as_deref())?;
        let mut set = |key: &str, argument: &str| {
            config
                .env_overrides
                .insert(key.to_owned(), format!("Bridge({argument}=...)"));
        };
        let mode = self.mode.map(|m| (m.parse::<Mode>(), m));
        if self.module.is_some() {
            set("module", "module");
        }
        if self.repo_path.is_some() {
            set("repo_path", "repo_path");
        }
        if mode.is_some() {
            set("mode", "mode");
        }
        if self.pool_size.is_some() {
            set("invoke.pool_size", "pool_size");
        }
        if self.timeout_ms.is_some() {
            set("invoke.default_timeout_ms", "timeout_ms");
        }
        if self.max_retries.is_some() {
            set("invoke.max_retries", "max_retries");
        }
        if let Some(module) = self.module {
            config.module = module;
        }
        if let Some(repo_path) = self.repo_path {
            config.repo_path = std::env::current_dir()
                .map(|cwd| cwd.join(&repo_path))
                .unwrap_or(repo_path);
        }
        if let Some((parsed, text)) = mode {
            config.mode = parsed.map_err(|err| {
                BridgeError::new(
                    ErrorClass::Config,
                    format!("mode = {text:?} (from Bridge(mode=...)): {err}"),
                )
                .with_detail("key", "mode")
                .with_detail("source", "Bridge(mode=...)")
            })?;
        }
        if let Some(pool_size) = self.pool_size {
            config.invoke.pool_size = pool_size;
        }
        if let Some(timeout_ms) = self.timeout_ms {
            config.invoke.default_timeout_ms = timeout_ms;
        }
        if let Some(max_retries) = self.max_retries {
            config.invoke.max_retries = max_retries;
        }
        config.validate()?;
        Ok(config)
    }
}

/// A per-call deadline: at least 1 ms (`whole_number` bounds it at 24 h).
fn per_call_timeout(timeout_ms: u64) -> Result<Duration, BridgeError> {
    if timeout_ms >= 1 {
        return Ok(Duration::from_millis(timeout_ms));
    }
    Err(BridgeError::new(
        ErrorClass::Config,
        format!(
            "timeout_ms = {timeout_ms}: expected a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"
        ),
    )
    .with_detail("key", "timeout_ms"))
}

/// A whole-number argument from 0 to `max` (`None` kept). Anything else — a bool, a
/// float, a negative or huge int — is a `config` error naming the argument, not the bare
/// `OverflowError` or `TypeError` of a typed extraction.
fn whole_number<T: TryFrom<u64>>(
    value: Option<&Bound<'_, PyAny>>,
    name: &str,
    max: u64,
) -> Result<Option<T>, BridgeError> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let number = match value.is_instance_of::<pyo3::types::PyBool>() {
        true => None,
        false => value.extract::<u64>().ok().filter(|n| *n <= max),
    };
    match number.and_then(|n| T::try_from(n).ok()) {
        Some(number) => Ok(Some(number)),
        None => {
            let shown = value
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "?".into());
            Err(BridgeError::new(
                ErrorClass::Config,
                format!("{name} = {shown}: expected a whole number from 0 to {max}"),
            )
            .with_detail("key", name))
        }
    }
}

fn system_error(message: String) -> BridgeError {
    BridgeError::new(ErrorClass::SystemError, message)
}

/// Runs the call to completion on this thread's runtime (detached from the
/// interpreter), checking for signals every [`SIGNAL_POLL`]: when a handler raises
/// (Ctrl-C's `KeyboardInterrupt`), the call is dropped, which cancels it, and the
/// exception is returned. Off the main thread the check does nothing (CPython runs signal
/// handlers on the main thread only). It is not skipped there by asking `threading` which
/// thread this is: that runs Python code, where a signal arriving at that moment would be
/// handled and its exception lost.
fn wait_for(
    client: &Client,
    op: &str,
    payload: Value,
    options: CallOptions,
) -> Result<Result<Value, BridgeError>, PyErr> {
    thread_local! {
        static RUNTIME: OnceCell<Result<tokio::runtime::Runtime, String>> = const { OnceCell::new() };
    }
    RUNTIME.with(|cell| {
        let runtime = cell.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        });
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => {
                return Ok(Err(system_error(format!(
                    "cannot start a runtime for the call: {e}"
                ))))
            }
        };
        runtime.block_on(async {
            let call = client.call_with(op, payload, options);
            tokio::pin!(call);
            loop {
                match tokio::time::timeout(SIGNAL_POLL, &mut call).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(_) => Python::attach(|py| py.check_signals())?,
                }
            }
        })
    })
}
