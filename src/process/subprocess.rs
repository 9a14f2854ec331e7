//! The `subprocess` mode: one Python process per call (the seed's design).
//!
//! Each call runs `python -X faulthandler -m cerebros_service --bridge-op OP --module M`
//! (or `python script_path --bridge-op OP` when `script_path` is set) with the payload
//! on stdin and, when under 64 KiB, in `CEREBROS_BRIDGE_PAYLOAD`. The result is the JSON
//! object on stdout; a failed op exits non-zero with `{"ok": false, "error": {...}}`
//! there. The child runs in its own process group: at the deadline, or as soon as the
//! caller stops waiting (its future is dropped: a cancelled run, Ctrl-C), the whole
//! group is killed and the child reaped; after a normal exit, processes the child left
//! in its group are killed too, so nothing of a call outlives it.

use super::child::{self, Cancel, Running};
use super::protocol::{self, OneShotOutput};
use super::{Launch, ProcessOptions, SERVICE_PACKAGE};
use crate::core::config::Mode;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::invoker::PoolStats;
use crate::core::invoker::{BoxFuture, Invoker, Request};
use crate::core::payload::{excerpt, EXCERPT_CHARS};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Payloads under this many bytes of JSON also go in `CEREBROS_BRIDGE_PAYLOAD`.
pub const PAYLOAD_ENV_LIMIT: usize = 64 * 1024;

/// The variable a call's W3C trace context travels in (the name OpenTelemetry's
/// environment carriers use).
const TRACEPARENT_ENV: &str = "TRACEPARENT";

/// Environment variables set for the child from the payload's fields.
const PAYLOAD_FIELD_ENV: [(&str, &str); 4] = [
    ("run_id", "CEREBROS_BRIDGE_RUN_ID"),
    ("correlation_id", "CEREBROS_BRIDGE_CORRELATION"),
    ("status", "CEREBROS_BRIDGE_STATUS"),
    ("trial_id", "CEREBROS_BRIDGE_TRIAL_ID"),
];

/// The `subprocess` mode's invoker.
///
/// ```
/// use cerebros_bridge::core::config::Config;
/// use cerebros_bridge::core::invoker::{Invoker, Request};
/// use cerebros_bridge::process::{ProcessOptions, SubprocessInvoker};
/// use std::time::Duration;
/// let invoker = SubprocessInvoker::start(ProcessOptions::from_config(&Config::default()))?;
/// let reply = invoker.invoke_blocking(Request {
///     op: "echo".into(),
///     payload: serde_json::json!({"n": 1}).into(),
///     timeout: Duration::from_secs(10),
///     traceparent: None,
/// })?;
/// assert_eq!(reply["n"], 1);
/// # Ok::<(), cerebros_bridge::core::error::BridgeError>(())
/// ```
pub struct SubprocessInvoker {
    inner: Arc<Inner>,
}

struct Inner {
    options: ProcessOptions,
    launch: Launch,
    running: Running,
    shutting_down: AtomicBool,
    calls: AtomicU64,
    killed_at_deadline: AtomicU64,
}

impl SubprocessInvoker {
    /// Resolves the interpreter (an absolute path, once) and checks `script_path`.
    pub fn start(options: ProcessOptions) -> Result<SubprocessInvoker> {
        if let Some(script) = &options.script_path {
            if !script.is_file() {
                return Err(BridgeError::new(
                    ErrorClass::Config,
                    format!(
                        "script_path = {:?}: the file does not exist",
                        script.display().to_string()
                    ),
                )
                .with_detail("key", "script_path"));
            }
        }
        let launch = Launch::resolve(&options)?;
        Ok(SubprocessInvoker {
            inner: Arc::new(Inner {
                options,
                launch,
                running: Running::default(),
                shutting_down: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                killed_at_deadline: AtomicU64::new(0),
            }),
        })
    }

    /// The absolute path of the interpreter every call runs.
    pub fn python(&self) -> &std::path::Path {
        &self.inner.launch.python
    }
}

impl Inner {
    /// Runs one call to its end, its deadline or, when `cancel` is given, until it is
    /// raised.
    fn call(&self, request: &Request, cancel: Option<&Cancel>) -> Result<Value> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(BridgeError::new(
                ErrorClass::Cancelled,
                "the subprocess invoker is shut down",
            ));
        }
        if self.running.len() >= self.options.queue_capacity {
            return Err(BridgeError::new(
                ErrorClass::Overloaded,
                format!(
                    "{} processes are running already; retry later or raise invoke.queue_capacity",
                    self.options.queue_capacity
                ),
            ));
        }
        if cancel.is_some_and(Cancel::is_cancelled) {
            return Err(BridgeError::new(
                ErrorClass::Cancelled,
                "the call was cancelled before it started",
            ));
        }
        let deadline = Instant::now() + request.timeout;
        let body = serde_json::to_vec(&*request.payload).map_err(|err| {
            BridgeError::new(
                ErrorClass::Contract,
                format!("the payload cannot be written as JSON: {err}"),
            )
            .with_source(err)
        })?;
        let command = self.command(request, &body);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let run = child::run_tracked(command, &body, deadline, Some(&self.running), cancel)
            .map_err(|err| self.launch.spawn_error("run", err))?;
        if !run.stderr.is_empty() {
            tracing::debug!(
                target: "cerebros.bridge.subprocess",
                pid = run.pid,
                op = %request.op,
                returncode = run.returncode,
                stderr = %child::tail_excerpt(&run.stderr.text(), EXCERPT_CHARS),
                "child stderr"
            );
        }
        if run.cancelled {
            return Err(BridgeError::new(
                ErrorClass::Cancelled,
                format!(
                    "the call was cancelled; the process group of pid {} was killed",
                    run.pid
                ),
            )
            .with_detail("pid", run.pid));
        }
        if run.timed_out {
            self.killed_at_deadline.fetch_add(1, Ordering::Relaxed);
            return Err(BridgeError::new(
                ErrorClass::Timeout,
                format!(
                    "no reply within {} ms; the process group of pid {} was killed",
                    request.timeout.as_millis(),
                    run.pid
                ),
            )
            .with_detail("timeout_ms", request.timeout.as_millis() as u64)
            .with_detail("pid", run.pid));
        }
        interpret(&run)
    }

    fn command(&self, request: &Request, body: &[u8]) -> Command {
        let (op, payload) = (request.op.as_str(), &*request.payload);
        let mut command = self.launch.command();
        match &self.options.script_path {
            Some(script) => {
                command.arg(script).args(["--bridge-op", op]);
            }
            None => {
                command.args(["-m", SERVICE_PACKAGE, "--bridge-op", op, "--module"]);
                command.arg(&self.options.module);
            }
        }
        command.env("CEREBROS_BRIDGE_OP", op);
        match std::str::from_utf8(body) {
            Ok(text) if body.len() < PAYLOAD_ENV_LIMIT => {
                command.env("CEREBROS_BRIDGE_PAYLOAD", text);
            }
            _ => {
                command.env_remove("CEREBROS_BRIDGE_PAYLOAD");
            }
        }
        // The call's trace context (never one the host itself was started with).
        match &request.traceparent {
            Some(traceparent) => command.env(TRACEPARENT_ENV, traceparent),
            None => command.env_remove(TRACEPARENT_ENV),
        };
        for (field, var) in PAYLOAD_FIELD_ENV {
            match payload.get(field).and_then(env_text) {
                Some(text) => command.env(var, text),
                None => command.env_remove(var),
            };
        }
        command
    }
}

/// A payload field as an environment value: strings as they are, numbers and booleans
/// as JSON; nothing for null, containers and text holding NUL.
fn env_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => return None,
    };
    (!text.contains('\0')).then_some(text)
}

/// The outcome of a call from what its process left.
fn interpret(run: &child::Run) -> Result<Value> {
    if run.stdout_overflow {
        return Err(BridgeError::new(
            ErrorClass::ParseError,
            format!("the result is over {} bytes of output", child::STDOUT_LIMIT),
        )
        .with_detail("returncode", run.returncode));
    }
    let output = protocol::read_one_shot(&run.stdout);
    if run.returncode == 0 {
        return match output {
            OneShotOutput::Object(object) => {
                object.into_result().map_err(|err| with_output(err, run))
            }
            OneShotOutput::NotAnObject(kind) => Err(with_output(
                BridgeError::new(
                    ErrorClass::ParseError,
                    format!("the result must be a JSON object, got {kind}"),
                ),
                run,
            )),
            OneShotOutput::Unreadable(why) => Err(with_output(
                BridgeError::new(
                    ErrorClass::ParseError,
                    format!("the result is unreadable: {why}"),
                ),
                run,
            )),
        };
    }
    if let OneShotOutput::Object(object) = &output {
        if let Some(err) = protocol::one_shot_error(&object.doc) {
            return Err(err);
        }
    }
    Err(with_output(
        BridgeError::new(
            ErrorClass::SubprocessExit,
            format!(
                "the Python process (pid {}) {} without a result",
                run.pid,
                child::describe_returncode(run.returncode)
            ),
        ),
        run,
    ))
}

/// Adds `returncode`, `pid` and the stdout and stderr excerpts to `err`.
fn with_output(err: BridgeError, run: &child::Run) -> BridgeError {
    let stdout = String::from_utf8_lossy(&run.stdout);
    err.with_detail("returncode", run.returncode)
        .with_detail("pid", run.pid)
        .with_detail("stdout_excerpt", excerpt(stdout.trim(), EXCERPT_CHARS))
        .with_detail(
            "stderr_excerpt",
            child::tail_excerpt(&run.stderr.text(), EXCERPT_CHARS),
        )
}

impl Invoker for SubprocessInvoker {
    fn mode(&self) -> Mode {
        Mode::Subprocess
    }

    /// Runs the process on tokio's blocking pool: no runtime thread waits for it.
    /// Dropping the future kills the process group at once.
    fn invoke(&self, request: Request) -> BoxFuture<'_, Result<Value>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let cancel = Arc::new(Cancel::new().map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("cannot create the call's cancellation: {err}"),
                )
                .with_source(err)
            })?);
            let _cancel_on_drop = CancelOnDrop(cancel.clone());
            tokio::task::spawn_blocking(move || inner.call(&request, Some(&cancel)))
                .await
                .unwrap_or_else(|err| {
                    Err(BridgeError::new(
                        ErrorClass::SystemError,
                        format!("the call's blocking task failed: {err}"),
                    )
                    .with_source(err))
                })
        })
    }

    fn invoke_blocking(&self, request: Request) -> Result<Value> {
        self.inner.call(&request, None)
    }

    /// There is no standing pool: `workers` and `workers_alive` are the processes running
    /// now, `workers_retired` those killed at a deadline, `submitted` the calls made.
    fn stats(&self) -> PoolStats {
        let running = self.inner.running.len();
        PoolStats {
            workers: running,
            workers_alive: running,
            workers_retired: self.inner.killed_at_deadline.load(Ordering::Relaxed),
            workers_stuck: 0,
            workers_replaced: 0,
            queued: 0,
            submitted: self.inner.calls.load(Ordering::Relaxed),
        }
    }

    /// Refuses new calls, waits up to `grace` for running processes, then kills the
    /// groups of those left (their callers get `subprocess_exit` with returncode -9).
    /// Returns how many were killed.
    fn shutdown(&self, grace: Duration) -> usize {
        self.inner.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while self.inner.running.len() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.running.kill_all()
    }
}

/// Raises a call's [`Cancel`] when the future waiting for it goes away (a no-op once
/// the call has ended).
struct CancelOnDrop(Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Drop for SubprocessInvoker {
    /// Kills the processes of calls still running (their callers dropped their
    /// futures: a blocking caller cannot outlive the invoker it borrows). Never waits.
    fn drop(&mut self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.running.kill_all();
    }
}
