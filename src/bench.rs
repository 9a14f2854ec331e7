//! Measuring calls: per-call latencies summarised as percentiles, and throughput.
//! Used by the benches and by the CLI's `bench`, so that every figure in BENCHMARKS.md
//! is a true per-call percentile, not a mean over batches.
//!
//! Besides the timing helpers ([`sequential`], [`try_sequential`], [`concurrent`],
//! [`summarize`]) this module holds the *floors* the execution modes are compared with
//! (DESIGN §7):
//!
//! * [`HandoffEcho`]: the in-process pool's thread hand-off with no Python — a dedicated
//!   echo thread that takes requests and answers through the same [`ReplySlot`] with the
//!   same spin-then-park budgets as the pool ([`crate::inprocess::pool`]'s `*_SPIN` constants);
//! * [`inline_floor`]: the `in_process` call's conversions and op done on the calling
//!   thread, attached to the interpreter: what the pool's hand-off adds to;
//! * [`PipeEcho`]: one JSON line through a child and back, over pipes: through `cat`
//!   ([`PipeEcho::start`]), what the `worker_process` mode's transport costs before any
//!   Python runs; through a minimal Python NDJSON echo ([`PipeEcho::python`]), what a
//!   Python child that parses and writes each line costs with no bridge code;
//! * [`python_start`]: a bare `python -c pass`, the floor of the `subprocess` mode.

use crate::core::contracts::{ContractV1, TrialReportedV1, TrialStatus};
use crate::inprocess::pool::{CALLER_PURE_SPIN, CALLER_SPIN, WORKER_PURE_SPIN, WORKER_SPIN};
use crate::inprocess::reply::ReplySlot;
use crossbeam_queue::ArrayQueue;
use serde::Serialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Percentiles of a set of per-call latencies, and the rate they were made at.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Calls measured.
    pub calls: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Calls per second over the whole measurement (wall time).
    pub calls_per_s: f64,
}

/// Times `calls` sequential calls of `call` (after `calls / 10` warm-up calls).
pub fn sequential(calls: u64, mut call: impl FnMut()) -> Summary {
    let infallible = try_sequential(calls / 10, calls, || {
        call();
        Ok::<(), Infallible>(())
    });
    match infallible {
        Ok(summary) => summary,
        Err(never) => match never {},
    }
}

/// Times `calls` sequential calls of `call` after `warmup` untimed ones; stops at the
/// first error and returns it.
pub fn try_sequential<E>(
    warmup: u64,
    calls: u64,
    mut call: impl FnMut() -> Result<(), E>,
) -> Result<Summary, E> {
    for _ in 0..warmup {
        call()?;
    }
    let mut latencies = Vec::with_capacity(calls as usize);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call()?;
        latencies.push(t.elapsed());
    }
    Ok(summarize(&mut latencies, start.elapsed()))
}

/// Makes `calls` calls in all from `tasks` tokio tasks at once (the first
/// `calls % tasks` tasks make one call more), each task calling sequentially; every
/// call is timed and calls/s is over the wall time of the whole batch. Must run inside
/// a tokio runtime. Returns the first error any task met (the others finish first).
pub async fn concurrent<F, Fut, E>(tasks: u64, calls: u64, call: F) -> Result<Summary, E>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let tasks = tasks.clamp(1, calls.max(1));
    let call = Arc::new(call);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let share = calls / tasks + u64::from(task < calls % tasks);
            let call = call.clone();
            tokio::spawn(async move {
                let mut own = Vec::with_capacity(share as usize);
                for _ in 0..share {
                    let t = Instant::now();
                    call().await?;
                    own.push(t.elapsed());
                }
                Ok::<_, E>(own)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls as usize);
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok(Ok(own)) => latencies.extend(own),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            // A task that panicked: pass the panic on.
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    let wall = start.elapsed();
    match first_error {
        Some(err) => Err(err),
        None => Ok(summarize(&mut latencies, wall)),
    }
}

/// Runs `rounds` measurements and keeps the one with the lowest p50: how the floors are
/// taken, since a floor is the best a path can do and one round can land badly (on a
/// 2-vCPU VM, two threads that the scheduler puts on one CPU hand off ~30× slower than
/// two on different CPUs, and a pipe round trip ~10× faster). Stops at the first error.
pub fn best_of<E>(
    rounds: usize,
    mut round: impl FnMut() -> Result<Summary, E>,
) -> Result<Summary, E> {
    let mut best: Option<Summary> = None;
    for _ in 0..rounds.max(1) {
        let summary = round()?;
        if best.is_none_or(|b| summary.p50_us < b.p50_us) {
            best = Some(summary);
        }
    }
    Ok(best.expect("at least one round ran"))
}

/// Summarises per-call latencies measured over `wall` time.
pub fn summarize(latencies: &mut [Duration], wall: Duration) -> Summary {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[index].as_secs_f64() * 1e6
    };
    Summary {
        calls: latencies.len() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        calls_per_s: latencies.len() as f64 / wall.as_secs_f64().max(1e-9),
    }
}

/// The benches' contract-sized payload: a `record_trial` report (`TrialReportedV1`
/// with metrics, parameters and an artifact URI; about 380 bytes of JSON).
pub fn contract_payload() -> Value {
    let mut report = TrialReportedV1::new("run-bench-0001", "trial-0007", TrialStatus::Succeeded);
    if let Value::Object(metrics) =
        json!({"val_accuracy": 0.9733, "val_loss": 0.0871, "params": 12_345})
    {
        report.metrics = metrics;
    }
    if let Value::Object(parameters) = json!({
        "levels": [[32, 16], [64]],
        "activation": "relu",
        "learning_rate": 0.0031,
        "p_lateral_connection": 0.5,
    }) {
        report.parameters = parameters;
    }
    report.artifact_uri = Some("file:///tmp/artifacts/run-bench-0001/trial-0007.npz".into());
    report.duration_ms = 1834;
    report.to_value()
}

// -- the hand-off floor -----------------------------------------------------------------------

type EchoJob = (Arc<Value>, Arc<ReplySlot<Arc<Value>>>);

struct EchoShared {
    jobs: ArrayQueue<EchoJob>,
    /// The echo thread is parked (or about to park): a caller must unpark it.
    parked: AtomicBool,
    /// Callers waiting for a reply (decides how the idle echo thread spins, as in the pool).
    waiting: AtomicUsize,
    stop: AtomicBool,
}

/// The in-process pool's thread hand-off without Python: a dedicated thread that
/// answers every request with its own payload.
///
/// It waits for work the way an idle pool worker does (spin for the pool's `WORKER_SPIN` — on
/// the CPU while no caller waits, yielding between checks while callers wait — then
/// park), and a caller waits for its reply the way a lone pool caller does
/// ([`ReplySlot::spin_take`] for the pool's `CALLER_SPIN`, then park). So
/// `in_process p50 − hand-off p50` is what converting the payload and running Python
/// cost.
///
/// ```
/// use cerebros_bridge::bench::HandoffEcho;
/// use std::sync::Arc;
/// let echo = HandoffEcho::start()?;
/// let payload = Arc::new(serde_json::json!({"n": 1}));
/// assert_eq!(echo.call(&payload)["n"], 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct HandoffEcho {
    shared: Arc<EchoShared>,
    thread: Option<JoinHandle<()>>,
}

impl HandoffEcho {
    /// Starts the echo thread.
    pub fn start() -> io::Result<HandoffEcho> {
        let shared = Arc::new(EchoShared {
            jobs: ArrayQueue::new(1024),
            parked: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let own = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cerebros-bench-echo".into())
            .spawn(move || echo_loop(&own))?;
        Ok(HandoffEcho {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `payload` to the echo thread and waits for it to come back.
    pub fn call(&self, payload: &Arc<Value>) -> Arc<Value> {
        let shared = &self.shared;
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        let reply = ReplySlot::new();
        let mut job = (payload.clone(), reply.clone());
        while let Err(back) = shared.jobs.push(job) {
            job = back;
            std::thread::yield_now();
        }
        fence(Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
        let value = reply
            .spin_take(CALLER_SPIN, CALLER_PURE_SPIN)
            .or_else(|| reply.wait_until(Instant::now() + Duration::from_secs(3600)))
            .unwrap_or_else(|| payload.clone());
        shared.waiting.fetch_sub(1, Ordering::Relaxed);
        value
    }
}

impl Drop for HandoffEcho {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn echo_loop(shared: &EchoShared) {
    loop {
        if let Some((payload, reply)) = shared.jobs.pop() {
            reply.fill(payload);
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let pure_spin = if shared.waiting.load(Ordering::Relaxed) == 0 {
            WORKER_SPIN
        } else {
            WORKER_PURE_SPIN
        };
        let work = || !shared.jobs.is_empty() || shared.stop.load(Ordering::Relaxed);
        if crate::inprocess::spin::wait_until(WORKER_SPIN, pure_spin, work) {
            continue;
        }
        shared.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if shared.jobs.is_empty() && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
    }
}

// -- the pipe floor ---------------------------------------------------------------------------

/// One JSON line through a child and back, over its stdin and stdout pipes: through
/// `cat`, the transport of the `worker_process` mode with no Python and no JSON work;
/// through [`PipeEcho::python`], a minimal Python child that parses and re-encodes it.
///
/// ```no_run
/// use cerebros_bridge::bench::PipeEcho;
/// let mut cat = PipeEcho::start(br#"{"n": 1}"#)?;
/// cat.round_trip()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct PipeEcho {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    echoed: Vec<u8>,
    /// Whether the child sends the very bytes back (`cat`) or a re-encoding (Python).
    verbatim: bool,
}

/// The minimal Python NDJSON echo child: readline, `json.loads`, `json.dumps`, write.
const PYTHON_ECHO: &str = r#"import json, sys
for line in sys.stdin:
    sys.stdout.write(json.dumps(json.loads(line)) + "\n")
    sys.stdout.flush()
"#;

impl PipeEcho {
    /// Starts `cat`; each round trip sends `line` (a newline is added when missing).
    pub fn start(line: &[u8]) -> io::Result<PipeEcho> {
        PipeEcho::spawn(Command::new("cat"), line, true)
    }

    /// Starts `python` running a minimal NDJSON echo (no bridge code): each round trip
    /// sends `line`, which must be one JSON document, and reads its re-encoding back.
    pub fn python(python: &Path, line: &[u8]) -> io::Result<PipeEcho> {
        let mut command = Command::new(python);
        command.args(["-c", PYTHON_ECHO]);
        PipeEcho::spawn(command, line, false)
    }

    fn spawn(mut command: Command, line: &[u8], verbatim: bool) -> io::Result<PipeEcho> {
        let mut line = line.to_vec();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the echo child started without pipes"));
        };
        let capacity = line.len().max(8192);
        Ok(PipeEcho {
            child,
            stdin: Some(stdin),
            stdout: BufReader::with_capacity(capacity, stdout),
            echoed: Vec::with_capacity(line.len()),
            line,
            verbatim,
        })
    }

    /// The bytes sent per round trip, newline included.
    pub fn line_len(&self) -> usize {
        self.line.len()
    }

    /// Writes the line and reads one line back (the same bytes, from `cat`).
    pub fn round_trip(&mut self) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        stdin.write_all(&self.line)?;
        self.echoed.clear();
        self.stdout.read_until(b'\n', &mut self.echoed)?;
        let complete = self.echoed.len() > 1 && self.echoed.ends_with(b"\n");
        if !complete || (self.verbatim && self.echoed != self.line) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the echo child sent {} bytes back for {}",
                    self.echoed.len(),
                    self.line.len()
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for PipeEcho {
    /// Closes the child's stdin (it exits) and reaps it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// -- the in_process and subprocess floors -----------------------------------------------------

/// The `in_process` floor: `calls` calls (after `warmup`) of `op` of the imported
/// `module`, each with `payload` converted to Python and its result converted back with
/// the bridge's own conversions, on the calling thread while attached to the interpreter:
/// the same work as an in-process call without the pool's hand-off. The interpreter must
/// already be started with `module` importable (an `in_process` client is running).
pub fn inline_floor(
    module: &str,
    op: &str,
    payload: &Value,
    warmup: u64,
    calls: u64,
) -> crate::core::error::Result<Summary> {
    use crate::core::error::{BridgeError, ErrorClass};
    use crate::inprocess::convert::{from_python, to_python};
    use pyo3::prelude::*;
    Python::attach(|py| {
        let function = py
            .import(module)
            .and_then(|m| m.getattr(op))
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("inline floor: cannot find {module}.{op}: {err}"),
                )
            })?;
        try_sequential(warmup, calls, || {
            let argument = to_python(py, payload)?;
            let result = function.call1((argument,)).map_err(|err| {
                BridgeError::new(
                    ErrorClass::Exception,
                    format!("inline floor: {module}.{op} raised: {err}"),
                )
            })?;
            from_python(&result).map(drop)
        })
    })
}

/// The `subprocess` floor: `runs` starts (after `warmup`) of `python -c pass`, each
/// timed from spawn to exit.
pub fn python_start(python: &Path, warmup: u64, runs: u64) -> io::Result<Summary> {
    try_sequential(warmup, runs, || {
        let status = Command::new(python)
            .args(["-c", "pass"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} -c pass exited with {status}",
                python.display()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_echo_child_answers_each_line_and_python_starts() {
        let python = crate::process::resolve_python(None).unwrap();
        let mut echo = PipeEcho::python(&python, br#"{"a": [1, 2.5, "x"]}"#).unwrap();
        for _ in 0..3 {
            echo.round_trip().unwrap();
        }
        assert_eq!(python_start(&python, 0, 2).unwrap().calls, 2);
        let missing = Path::new("/nonexistent/python");
        assert!(python_start(missing, 0, 1).is_err());
    }

    #[test]
    fn percentiles_of_known_latencies() {
        let mut l: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = summarize(&mut l, Duration::from_millis(10));
        assert_eq!(s.calls, 100);
        assert!((s.p50_us - 50.0).abs() <= 1.0);
        assert!((s.p99_us - 99.0).abs() <= 1.0);
        assert!((s.calls_per_s - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn best_of_keeps_the_lowest_median() {
        let medians = [30.0, 10.0, 20.0];
        let mut i = 0;
        let best = best_of(3, || {
            let mut l = vec![Duration::from_secs_f64(medians[i] * 1e-6)];
            i += 1;
            Ok::<_, ()>(summarize(&mut l, Duration::from_millis(1)))
        })
        .unwrap();
        assert_eq!((i, best.p50_us.round()), (3, 10.0));
    }

    #[test]
    fn try_sequential_warms_up_and_stops_at_the_first_error() {
        let mut n = 0;
        let s = try_sequential(3, 10, || {
            n += 1;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!((n, s.calls), (13, 10));
        let mut m = 0;
        let failed = try_sequential(0, 10, || {
            m += 1;
            if m == 4 {
                Err("fourth")
            } else {
                Ok(())
            }
        });
        assert_eq!((failed, m), (Err("fourth"), 4));
    }

    #[test]
    fn concurrent_makes_exactly_the_calls_asked_for() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let s = runtime
            .block_on(concurrent(3, 10, move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), ()>(())
                }
            }))
            .unwrap();
        assert_eq!((s.calls, made.load(Ordering::Relaxed)), (10, 10));
        let failed = runtime.block_on(concurrent(4, 8, || async { Err::<(), _>("no") }));
        assert_eq!(failed, Err("no"));
    }

    #[test]
    fn the_contract_payload_is_a_valid_record_trial_report() {
        let payload = contract_payload();
        let report = TrialReportedV1::from_value(&payload).unwrap();
        assert_eq!(report.trial_id, "trial-0007");
        assert!(payload.to_string().len() > 300);
    }

    #[test]
    fn hand_off_echo_answers_from_its_thread_also_after_parking() {
        let echo = HandoffEcho::start().unwrap();
        let payload = Arc::new(json!({"n": 1}));
        for _ in 0..100 {
            assert_eq!(echo.call(&payload)["n"], 1);
        }
        // Long enough for the echo thread to stop spinning and park.
        std::thread::sleep(Duration::from_millis(20));
        assert!(Arc::ptr_eq(&echo.call(&payload), &payload));
    }

    #[test]
    fn pipe_echo_round_trips_a_line_through_cat() {
        let mut cat = PipeEcho::start(br#"{"n": 1}"#).unwrap();
        assert_eq!(cat.line_len(), 9);
        for _ in 0..10 {
            cat.round_trip().unwrap();
        }
    }
}
