//! `cerebros-bridge bench`: the execution modes measured side by side in one run, with
//! the floors they are compared with (DESIGN §7, BENCHMARKS.md "Execution modes").
//!
//! For each mode: a client of that mode (retries off), warm-up calls, then sequential
//! calls from one plain thread through `Client::call_blocking`, the path a host uses
//! (per-call p50/p99, calls/s), then `--concurrency` tokio tasks on a 2-thread runtime
//! calling at once (calls/s; for `worker_process` this is the pipelined figure: many
//! requests in flight on its children). Then one cache-hit measurement (`in_process`,
//! explicit cache key) and the floors, each the best of three rounds: the pool's thread
//! hand-off with no Python; the in-process call's conversions and op inline on this
//! thread (the `in_process` floor); one JSON line through `cat`; the same line through a
//! minimal Python NDJSON echo child (the `worker_process` floor); a bare `python -c pass`
//! (the `subprocess` floor). Each mode's row shows its floor and its ratio to it.

use super::output::{self, EXIT_OK};
use super::runtime::{runtime, Threads};
use cerebros_bridge::bench::{self, HandoffEcho, PipeEcho, Summary};
use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, Mode};
use cerebros_bridge::core::error::{BridgeError, ErrorClass, Result};
use cerebros_bridge::core::payload;
use cerebros_bridge::process::resolve_python;
use clap::Args;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Most calls measured in `subprocess` mode (each costs a process start, 20–60 ms).
const SUBPROCESS_MAX_CALLS: u64 = 50;
/// Most calls measured in `worker_process` mode, and round trips through `cat`.
const WORKER_PROCESS_MAX_CALLS: u64 = 5_000;
/// Warm-up calls in `subprocess` mode (the others warm up with a tenth of their calls).
const SUBPROCESS_WARMUP: u64 = 2;
/// Rounds per floor; the round with the lowest p50 counts ([`bench::best_of`]).
const FLOOR_ROUNDS: usize = 3;
/// Starts of `python -c pass` per round of the `subprocess` floor.
const PYTHON_STARTS: u64 = 20;
/// How long running calls may finish when a mode's client is shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Targets of issue #3, checked in every run.
const TARGET_SUBPROCESS_OVER_IN_PROCESS: f64 = 1000.0;
const TARGET_WORKER_PROCESS_OVER_PIPE: f64 = 1.5;
const TARGET_PIPELINED_CALLS_PER_S: f64 = 100_000.0;
const TARGET_WORKER_PROCESS_OVER_IN_PROCESS: f64 = 3.0;
/// Target of issue #13: worker_process p50 within 1.5x of a minimal Python echo child.
const TARGET_WORKER_PROCESS_OVER_PYTHON_CHILD: f64 = 1.5;

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Modes to measure, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "in_process,worker_process,subprocess"
    )]
    modes: String,

    /// Calls per mode, sequential and concurrent (subprocess makes at most 50,
    /// worker_process at most 5000).
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    calls: u64,

    /// Callers at once (tokio tasks) for the concurrent figure.
    #[arg(long, value_name = "C", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,

    /// The op to call (it should return quickly; echo returns its payload).
    #[arg(long, value_name = "OP", default_value = "echo")]
    op: String,

    /// The payload: a JSON object, or @FILE [default: a record_trial contract, ~380 B].
    #[arg(long, value_name = "JSON|@FILE")]
    payload: Option<String>,

    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

/// What one mode measured.
struct ModeFigures {
    mode: Mode,
    sequential: Summary,
    concurrent: Summary,
    /// Tokio tasks that called at once.
    concurrency: u64,
}

/// Everything one `bench` run measured.
struct Report {
    modes: Vec<ModeFigures>,
    cache_hit: Summary,
    floors: Floors,
    python_version: String,
    payload_bytes: usize,
}

/// The floors of one run (DESIGN §7).
struct Floors {
    /// The pool's thread hand-off, no Python.
    handoff: Summary,
    /// The in-process call done inline on the calling thread: the `in_process` floor.
    inline: Summary,
    /// One JSON line through `cat`.
    pipe: Summary,
    /// One JSON line through a minimal Python echo child: the `worker_process` floor.
    python_child: Summary,
    /// `python -c pass`: the `subprocess` floor.
    python_start: Summary,
}

impl Floors {
    /// Every floor with its name, in the order they are printed.
    fn all(&self) -> [(&'static str, &Summary); 5] {
        [
            ("handoff", &self.handoff),
            ("inline", &self.inline),
            ("pipe", &self.pipe),
            ("python_child", &self.python_child),
            ("python_start", &self.python_start),
        ]
    }

    /// The floor a mode is compared with, and its name.
    fn of(&self, mode: Mode) -> (&'static str, &Summary) {
        match mode {
            Mode::InProcess => ("inline", &self.inline),
            Mode::WorkerProcess => ("python_child", &self.python_child),
            Mode::Subprocess => ("python_start", &self.python_start),
        }
    }
}

/// Runs `bench` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &BenchArgs) -> i32 {
    let prepared = parse_modes(&args.modes).and_then(|modes| {
        let config = Config::load(config_path)?;
        let payload = match &args.payload {
            Some(arg) => payload::load_payload_arg(arg, config.invoke.max_payload_bytes)?,
            None => bench::contract_payload(),
        };
        Ok((modes, config, payload))
    });
    let (modes, config, payload) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return output::report_error(&err, args.json),
    };
    match measure(&config, &modes, args, payload) {
        Ok(report) => {
            if args.json {
                output::print_json(&document(&report), true);
            } else {
                print_table(&report, args);
            }
            EXIT_OK
        }
        Err(err) => output::report_error(&err, args.json),
    }
}

/// Parses `--modes`: comma-separated mode names, each once; an unknown name or an empty
/// list is a `config` error.
fn parse_modes(list: &str) -> Result<Vec<Mode>> {
    let config_error = |message: String| {
        BridgeError::new(ErrorClass::Config, message)
            .with_detail("key", "modes")
            .with_detail("source", "--modes")
    };
    let mut modes = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let mode = name
            .parse::<Mode>()
            .map_err(|err| config_error(format!("--modes: {err}")))?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        return Err(config_error(
            "--modes: no mode given; expected a comma-separated list of in_process, worker_process, subprocess".into(),
        ));
    }
    Ok(modes)
}

/// The calls measured in `mode` when `--calls N` asks for `calls`.
fn calls_for(mode: Mode, calls: u64) -> u64 {
    match mode {
        Mode::InProcess => calls,
        Mode::WorkerProcess => calls.min(WORKER_PROCESS_MAX_CALLS),
        Mode::Subprocess => calls.min(SUBPROCESS_MAX_CALLS),
    }
}

fn warmup_for(mode: Mode, calls: u64) -> u64 {
    match mode {
        Mode::Subprocess => SUBPROCESS_WARMUP,
        _ => (calls / 10).max(10),
    }
}

fn system_error(what: &str, err: std::io::Error) -> BridgeError {
    BridgeError::new(ErrorClass::SystemError, format!("{what}: {err}")).with_source(err)
}

/// Says what is being measured, on stderr, unless the output is JSON.
fn progress(args: &BenchArgs, text: &str) {
    if !args.json {
        output::stderr_line(&format!("bench: {text}"));
    }
}

/// Measures every mode of `modes`, the cache hit and the floors.
fn measure(config: &Config, modes: &[Mode], args: &BenchArgs, payload: Value) -> Result<Report> {
    let runtime = runtime(Threads::Workers(2))?;
    let payload_line = serde_json::to_vec(&payload).unwrap_or_default();
    let shared_payload = Arc::new(payload.clone());
    let mut figures = Vec::new();
    let mut python_version = None;
    let mut cache_hit = None;

    progress(args, "floor: thread hand-off without Python");
    let handoff = bench::best_of(FLOOR_ROUNDS, || {
        let echo =
            HandoffEcho::start().map_err(|err| system_error("cannot start a thread", err))?;
        Ok(bench::sequential(args.calls, || {
            echo.call(&shared_payload);
        }))
    })?;

    let pipe_calls = args.calls.min(WORKER_PROCESS_MAX_CALLS);
    let pipe_warmup = warmup_for(Mode::WorkerProcess, pipe_calls);
    progress(args, "floor: one JSON line through `cat`");
    let pipe = bench::best_of(FLOOR_ROUNDS, || {
        let mut cat =
            PipeEcho::start(&payload_line).map_err(|err| system_error("cannot run cat", err))?;
        bench::try_sequential(pipe_warmup, pipe_calls, || cat.round_trip())
            .map_err(|err| system_error("round trip through cat", err))
    })?;

    let python = resolve_python(config.python_executable.as_deref())?;
    progress(
        args,
        "floor: one JSON line through a minimal Python echo child",
    );
    let python_child = bench::best_of(FLOOR_ROUNDS, || {
        let mut child = PipeEcho::python(&python, &payload_line)
            .map_err(|err| system_error("cannot run the Python echo child", err))?;
        bench::try_sequential(pipe_warmup, pipe_calls, || child.round_trip())
            .map_err(|err| system_error("round trip through the Python echo child", err))
    })?;
    progress(args, "floor: python -c pass");
    let python_start = bench::best_of(FLOOR_ROUNDS, || {
        let starts = PYTHON_STARTS.min(args.calls);
        bench::python_start(&python, SUBPROCESS_WARMUP, starts)
            .map_err(|err| system_error("cannot start python -c pass", err))
    })?;
    let mut inline = None;

    for &mode in modes {
        let mut mode_config = config.clone();
        mode_config.mode = mode;
        mode_config.invoke.max_retries = 0;
        let client = Arc::new(Client::start(&mode_config)?);
        if python_version.is_none() {
            let health = client.call_blocking("health", json!({}))?;
            python_version = health["python_version"].as_str().map(str::to_owned);
        }
        let calls = calls_for(mode, args.calls);
        progress(args, &format!("{mode}: {calls} sequential calls"));
        let sequential = bench::try_sequential(warmup_for(mode, calls), calls, || {
            client.call_blocking(&args.op, payload.clone()).map(drop)
        })?;
        progress(
            args,
            &format!("{mode}: {calls} calls from {} callers", args.concurrency),
        );
        let concurrent = runtime.block_on(bench::concurrent(args.concurrency, calls, {
            let client = client.clone();
            let op = args.op.clone();
            let payload = payload.clone();
            move || {
                let client = client.clone();
                let op = op.clone();
                let payload = payload.clone();
                async move { client.call(&op, payload).await.map(drop) }
            }
        }))?;
        if mode == Mode::InProcess {
            cache_hit = Some(measure_cache_hit(&runtime, &client, args)?);
            inline = Some(measure_inline(config, args, &payload)?);
        }
        client.shutdown(SHUTDOWN_GRACE);
        figures.push(ModeFigures {
            mode,
            sequential,
            concurrent,
            concurrency: args.concurrency.min(calls),
        });
    }
    let (cache_hit, inline) = match (cache_hit, inline) {
        (Some(hit), Some(inline)) => (hit, inline),
        _ => {
            // No in_process mode measured: a client of it for the cache hit and the
            // inline floor (which needs its interpreter).
            let mut in_process = config.clone();
            in_process.mode = Mode::InProcess;
            in_process.invoke.max_retries = 0;
            let client = Arc::new(Client::start(&in_process)?);
            let hit = measure_cache_hit(&runtime, &client, args)?;
            let inline = measure_inline(config, args, &payload)?;
            client.shutdown(SHUTDOWN_GRACE);
            (hit, inline)
        }
    };
    Ok(Report {
        modes: figures,
        cache_hit,
        floors: Floors {
            handoff,
            inline,
            pipe,
            python_child,
            python_start,
        },
        python_version: python_version.unwrap_or_default(),
        payload_bytes: payload_line.len(),
    })
}

/// The result cached for the cache-hit figure: small, as in the criterion bench
/// (`benches/bridge.rs`), so that the figure is the bridge's own cost; copying a larger
/// cached result adds what a clone of it costs.
fn cache_hit_payload() -> Value {
    json!({"run_id": "run-bench-0001"})
}

/// Cache hits from one tokio task: the first call stores the op's result for
/// [`cache_hit_payload`] under an explicit key, then every call is answered from the
/// cache. The hits pass an empty payload (a key names its result), so the figure is the
/// bridge's own cost: the look-up and the copy of the cached result.
fn measure_cache_hit(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<Client>,
    args: &BenchArgs,
) -> Result<Summary> {
    progress(args, "in_process: cache hits");
    let options = CallOptions {
        cache_key: Some(format!("cerebros-bridge-bench|{}", args.op)),
        ..CallOptions::default()
    };
    client.call_blocking_with(&args.op, cache_hit_payload(), options.clone())?;
    let client = client.clone();
    let op: Arc<str> = Arc::from(args.op.as_str());
    runtime.block_on(bench::concurrent(1, args.calls, move || {
        let client = client.clone();
        let op = op.clone();
        let options = options.clone();
        async move {
            client
                .call_with(&op, Value::Object(Map::new()), options)
                .await
                .map(drop)
        }
    }))
}

/// The `in_process` floor ([`bench::inline_floor`]), while an `in_process` client runs.
fn measure_inline(config: &Config, args: &BenchArgs, payload: &Value) -> Result<Summary> {
    progress(args, "floor: the in-process call inline on this thread");
    let warmup = warmup_for(Mode::InProcess, args.calls);
    bench::best_of(FLOOR_ROUNDS, || {
        bench::inline_floor(&config.module, &args.op, payload, warmup, args.calls)
    })
}

impl Report {
    fn mode(&self, mode: Mode) -> Option<&ModeFigures> {
        self.modes.iter().find(|f| f.mode == mode)
    }

    /// The ratios of issue #3 that this run's modes allow, by name.
    fn ratios(&self) -> Vec<(&'static str, f64)> {
        let p50 = |mode| self.mode(mode).map(|f| f.sequential.p50_us);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (in_process, worker, sub) = (
            p50(Mode::InProcess),
            p50(Mode::WorkerProcess),
            p50(Mode::Subprocess),
        );
        let floors = &self.floors;
        [
            ("subprocess_p50_over_in_process_p50", ratio(sub, in_process)),
            (
                "worker_process_p50_over_pipe_floor",
                ratio(worker, Some(floors.pipe.p50_us)),
            ),
            (
                "worker_process_p50_over_in_process_p50",
                ratio(worker, in_process),
            ),
            (
                "in_process_p50_over_handoff_floor",
                ratio(in_process, Some(floors.handoff.p50_us)),
            ),
            (
                "in_process_p50_over_inline_floor",
                ratio(in_process, Some(floors.inline.p50_us)),
            ),
            (
                "worker_process_p50_over_python_child_floor",
                ratio(worker, Some(floors.python_child.p50_us)),
            ),
            (
                "subprocess_p50_over_python_start_floor",
                ratio(sub, Some(floors.python_start.p50_us)),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }

    /// Each target of issue #3 this run can check: (name, measured, target, met, what).
    fn targets(&self) -> Vec<Target> {
        let ratios = self.ratios();
        let ratio = |name: &str| ratios.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let mut targets = Vec::new();
        if let Some(value) = ratio("subprocess_p50_over_in_process_p50") {
            targets.push(Target::at_least(
                "subprocess_over_in_process",
                "subprocess p50 / in_process p50",
                value,
                TARGET_SUBPROCESS_OVER_IN_PROCESS,
            ));
        }
        if let Some(value) = ratio("worker_process_p50_over_pipe_floor") {
            targets.push(Target::at_most(
                "worker_process_over_pipe_floor",
                "worker_process p50 / cat pipe floor",
                value,
                TARGET_WORKER_PROCESS_OVER_PIPE,
            ));
        }
        if let Some(value) = ratio("worker_process_p50_over_python_child_floor") {
            targets.push(Target::at_most(
                "worker_process_over_python_child_floor",
                "worker_process p50 / Python child floor",
                value,
                TARGET_WORKER_PROCESS_OVER_PYTHON_CHILD,
            ));
        }
        if let Some(worker) = self.mode(Mode::WorkerProcess) {
            targets.push(Target::at_least(
                "worker_process_pipelined_calls_per_s",
                "worker_process pipelined calls/s",
                worker.concurrent.calls_per_s,
                TARGET_PIPELINED_CALLS_PER_S,
            ));
        }
        if let Some(value) = ratio("worker_process_p50_over_in_process_p50") {
            targets.push(Target::at_least(
                "worker_process_over_in_process",
                "worker_process p50 / in_process p50",
                value,
                TARGET_WORKER_PROCESS_OVER_IN_PROCESS,
            ));
        }
        targets
    }
}

/// One target of issue #3 and whether this run met it.
struct Target {
    name: &'static str,
    label: &'static str,
    value: f64,
    bound: f64,
    at_least: bool,
}

impl Target {
    fn at_least(name: &'static str, label: &'static str, value: f64, bound: f64) -> Target {
        Target {
            name,
            label,
            value,
            bound,
            at_least: true,
        }
    }

    fn at_most(name: &'static str, label: &'static str, value: f64, bound: f64) -> Target {
        Target {
            name,
            label,
            value,
            bound,
            at_least: false,
        }
    }

    fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.bound
        } else {
            self.value <= self.bound
        }
    }

    fn relation(&self) -> &'static str {
        if self.at_least {
            ">="
        } else {
            "<="
        }
    }
}

/// Rounds for the JSON document: µs and ratios to 3 decimals, rates to whole calls.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `--json` document (DESIGN §7).
fn document(report: &Report) -> Value {
    let mut modes = Map::new();
    let mut concurrent = Map::new();
    for f in &report.modes {
        let s = &f.sequential;
        modes.insert(
            f.mode.as_str().into(),
            json!({
                "p50_us": round3(s.p50_us),
                "p99_us": round3(s.p99_us),
                "calls_per_s": s.calls_per_s.round(),
                "calls": s.calls,
            }),
        );
        let c = &f.concurrent;
        concurrent.insert(
            f.mode.as_str().into(),
            json!({
                "concurrency": f.concurrency,
                "calls_per_s": c.calls_per_s.round(),
                "calls": c.calls,
                "p50_us": round3(c.p50_us),
                "p99_us": round3(c.p99_us),
            }),
        );
    }
    let ratios: Map<String, Value> = report
        .ratios()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(round3(value))))
        .collect();
    let targets: Map<String, Value> = report
        .targets()
        .into_iter()
        .map(|t| {
            let doc = json!({
                "value": round3(t.value),
                "target": format!("{} {}", t.relation(), t.bound),
                "met": t.met(),
            });
            (t.name.to_owned(), doc)
        })
        .collect();
    let mut floors = Map::new();
    for (name, floor) in report.floors.all() {
        floors.insert(format!("{name}_p50_us"), json!(round3(floor.p50_us)));
        floors.insert(format!("{name}_p99_us"), json!(round3(floor.p99_us)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "modes": modes,
        "concurrent": concurrent,
        "cache_hit": {
            "p50_us": round3(report.cache_hit.p50_us),
            "p99_us": round3(report.cache_hit.p99_us),
            "calls": report.cache_hit.calls,
            "result_bytes": cache_hit_payload().to_string().len(),
        },
        "floors": floors,
        "ratios": ratios,
        "targets": targets,
        "machine": {"cores": cores, "python_version": report.python_version},
        "payload_bytes": report.payload_bytes,
    })
}

/// A latency in µs with a precision that suits its size.
fn micros(us: f64) -> String {
    match us {
        us if us < 10.0 => format!("{us:.2}"),
        us if us < 1000.0 => format!("{us:.1}"),
        us => format!("{us:.0}"),
    }
}

/// The human-readable report.
fn print_table(report: &Report, args: &BenchArgs) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let line = |text: String| output::stdout_line(&text);
    line(format!(
        "op {}, payload {} B, {} cores, Python {}",
        args.op, report.payload_bytes, cores, report.python_version
    ));
    line(String::new());
    line(format!(
        "{:<21} {:>6} {:>10} {:>10} {:>10}   {:>16}   {}",
        "mode", "calls", "p50 µs", "p99 µs", "calls/s", "concurrent/s", "floor p50 µs"
    ));
    for f in &report.modes {
        let s = &f.sequential;
        let (floor_name, floor) = report.floors.of(f.mode);
        line(format!(
            "{:<21} {:>6} {:>10} {:>10} {:>10.0}   {:>9.0} (C={:<3}) {:>8} ({floor_name}, {:.2}x)",
            f.mode.as_str(),
            s.calls,
            micros(s.p50_us),
            micros(s.p99_us),
            s.calls_per_s,
            f.concurrent.calls_per_s,
            f.concurrency,
            micros(floor.p50_us),
            s.p50_us / floor.p50_us.max(f64::MIN_POSITIVE),
        ));
    }
    let row = |name: &str, s: &Summary| {
        format!(
            "{:<21} {:>6} {:>10} {:>10} {:>10.0}",
            name,
            s.calls,
            micros(s.p50_us),
            micros(s.p99_us),
            s.calls_per_s
        )
    };
    for (name, floor) in report.floors.all() {
        line(row(&format!("floor: {name}"), floor));
    }
    line(row("cache hit", &report.cache_hit));
    line(String::new());
    for (name, value) in report.ratios() {
        line(format!("{:<40} {:>10.2}", name, value));
    }
    let targets = report.targets();
    if !targets.is_empty() {
        line(String::new());
    }
    for t in targets {
        line(format!(
            "target {:<38} {:>12.2} {} {:<8} {}",
            t.label,
            t.value,
            t.relation(),
            t.bound,
            if t.met() { "met" } else { "NOT met" }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_order_once_and_bad_names_are_config_errors() {
        assert_eq!(
            parse_modes("subprocess, in_process,subprocess").unwrap(),
            vec![Mode::Subprocess, Mode::InProcess]
        );
        let err = parse_modes("in_process,nope").unwrap_err();
        assert_eq!(err.class, ErrorClass::Config);
        assert!(err.message.contains("\"nope\""), "{}", err.message);
        assert_eq!(parse_modes(" , ").unwrap_err().class, ErrorClass::Config);
    }

    #[test]
    fn process_modes_are_capped() {
        assert_eq!(calls_for(Mode::InProcess, 20_000), 20_000);
        assert_eq!(calls_for(Mode::WorkerProcess, 20_000), 5_000);
        assert_eq!(calls_for(Mode::Subprocess, 20_000), 50);
        assert_eq!(calls_for(Mode::Subprocess, 7), 7);
    }

    fn summary(p50_us: f64, calls_per_s: f64) -> Summary {
        Summary {
            calls: 10,
            p50_us,
            p99_us: p50_us * 2.0,
            calls_per_s,
        }
    }

    #[test]
    fn ratios_and_targets_follow_the_measured_modes() {
        let figures = |mode, p50, rate| ModeFigures {
            mode,
            sequential: summary(p50, 1e6 / p50),
            concurrent: summary(p50, rate),
            concurrency: 4,
        };
        let report = Report {
            modes: vec![
                figures(Mode::InProcess, 10.0, 100_000.0),
                figures(Mode::WorkerProcess, 60.0, 50_000.0),
            ],
            cache_hit: summary(0.5, 1e6),
            floors: Floors {
                handoff: summary(2.0, 5e5),
                inline: summary(4.0, 2.5e5),
                pipe: summary(50.0, 2e4),
                python_child: summary(30.0, 3e4),
                python_start: summary(12_000.0, 80.0),
            },
            python_version: "3.11.7".into(),
            payload_bytes: 380,
        };
        let doc = document(&report);
        assert_eq!(doc["ratios"]["worker_process_p50_over_in_process_p50"], 6.0);
        assert_eq!(doc["ratios"]["worker_process_p50_over_pipe_floor"], 1.2);
        assert_eq!(doc["ratios"]["in_process_p50_over_handoff_floor"], 5.0);
        assert_eq!(doc["ratios"]["in_process_p50_over_inline_floor"], 2.5);
        assert_eq!(
            doc["ratios"]["worker_process_p50_over_python_child_floor"],
            2.0
        );
        assert_eq!(doc["floors"]["python_start_p50_us"], 12_000.0);
        assert!(doc["ratios"]
            .get("subprocess_p50_over_python_start_floor")
            .is_none());
        assert_eq!(
            doc["targets"]["worker_process_over_python_child_floor"]["met"],
            false
        );
        assert!(doc["ratios"]
            .get("subprocess_p50_over_in_process_p50")
            .is_none());
        assert_eq!(
            doc["targets"]["worker_process_over_pipe_floor"]["met"],
            true
        );
        assert_eq!(
            doc["targets"]["worker_process_pipelined_calls_per_s"]["met"],
            false
        );
        assert_eq!(doc["concurrent"]["worker_process"]["concurrency"], 4);
        assert_eq!(doc["machine"]["python_version"], "3.11.7");
    }
}
