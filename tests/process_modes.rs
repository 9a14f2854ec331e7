//! What only the process modes do: process groups killed and reaped at the deadline,
//! the subprocess environment and output handling, the worker pool's pipelining,
//! replacement of dead children, stderr forwarding, shutdown and drop.

mod common;

use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, Mode};
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use cerebros_bridge::core::invoker::{Invoker, Request};
use cerebros_bridge::process::{self, ProcessOptions, WorkerProcessInvoker};
use common::{eventually, root, serial};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn config(mode: Mode, pool_size: usize) -> Config {
    let mut config = Config {
        mode,
        module: "fault_service".into(),
        repo_path: root().join("tests/fixtures"),
        ..Config::default()
    };
    config.invoke.max_retries = 0;
    config.invoke.pool_size = pool_size;
    config.invoke.default_timeout_ms = 30_000;
    config.cache.enabled = false;
    config
}

fn client(mode: Mode, pool_size: usize) -> Client {
    Client::start(&config(mode, pool_size)).expect("the client starts")
}

fn call_within(
    client: &Client,
    op: &str,
    payload: Value,
    timeout: Duration,
) -> Result<Value, BridgeError> {
    let options = CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    };
    client.call_blocking_with(op, payload, options)
}

/// `(state, pgrp)` of a process from `/proc/PID/stat`; `None` when it does not exist.
fn proc_stat(pid: i64) -> Option<(char, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Processes of group `pgid` that are not zombies.
fn live_group_members(pgid: i64) -> Vec<i64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(
            |pid| matches!(proc_stat(*pid), Some((state, pgrp)) if pgrp == pgid && state != 'Z'),
        )
        .collect()
}

/// Calls `spawn_grandchild` with a deadline and checks that neither the child nor the
/// grandchild it started survives, and that the child was reaped (no zombie).
fn assert_group_killed_and_reaped(client: &Client) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let start = Instant::now();
    let err = call_within(
        client,
        "spawn_grandchild",
        json!({"pid_file": pid_file, "seconds": 60, "hold": 60}),
        Duration::from_millis(1500),
    )
    .unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(start.elapsed() < Duration::from_millis(2500));
    let pids = std::fs::read_to_string(&pid_file).expect("the op wrote its pids");
    let pids: Vec<i64> = pids
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (child, grandchild) = (pids[0], pids[1]);
    assert!(
        eventually(Duration::from_secs(3), || live_group_members(child)
            .is_empty()),
        "processes of group {child} survive: {:?}",
        live_group_members(child)
    );
    assert!(
        eventually(Duration::from_secs(3), || proc_stat(child).is_none()),
        "child {child} was not reaped: {:?}",
        proc_stat(child)
    );
    assert!(!matches!(proc_stat(grandchild), Some((state, _)) if state != 'Z'));
}

// -- both modes -----------------------------------------------------------------------------

#[test]
fn subprocess_timeout_kills_the_whole_group_and_reaps_the_child() {
    let _serial = serial();
    assert_group_killed_and_reaped(&client(Mode::Subprocess, 1));
}

#[test]
fn worker_process_timeout_kills_the_whole_group_reaps_and_replaces_the_child() {
    let _serial = serial();
    let client = client(Mode::WorkerProcess, 1);
    assert_group_killed_and_reaped(&client);
    assert_eq!(
        client.call_blocking("echo", json!({"n": 1})).unwrap()["n"],
        1
    );
    let stats = client.stats().workers;
    assert_eq!(
        (
            stats.workers_alive,
            stats.workers_retired,
            stats.workers_replaced
        ),
        (1, 1, 1)
    );
}

#[test]
fn the_default_service_runs_in_the_venv_in_both_process_modes() {
    for mode in [Mode::Subprocess, Mode::WorkerProcess] {
        let mut config = config(mode, 1);
        config.module = "cerebros_service".into();
        config.repo_path = root().join("python");
        let client = Client::start(&config).unwrap();
        let health = client.call_blocking("health", json!({})).unwrap();
        assert_eq!(health["service"], "cerebros_service", "{mode}");
        let venv_python = common::venv_python();
        if venv_python.exists() {
            assert_eq!(health["executable"], venv_python.display().to_string());
            assert!(health["packages"]["numpy"].is_string(), "{mode}: {health}");
        }
    }
}

#[test]
fn an_unimportable_module_is_a_dependency_error_in_both_process_modes() {
    let mut config = config(Mode::WorkerProcess, 1);
    config.module = "no_such_service_module".into();
    let err = Client::start(&config).err().expect("start fails");
    assert_eq!(err.class, ErrorClass::Dependency, "{err}");
    assert!(err.message.contains("no_such_service_module"), "{err}");
    config.mode = Mode::Subprocess;
    let client = Client::start(&config).unwrap();
    let err = client.call_blocking("health", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::Dependency, "{err}");
}

#[test]
fn the_interpreter_is_an_absolute_path() {
    let python = process::resolve_python(None).unwrap();
    assert!(python.is_absolute(), "{}", python.display());
    let err = process::resolve_python(Some(Path::new("/nonexistent/bin/python"))).unwrap_err();
    assert_eq!(err.class, ErrorClass::Dependency);
    let err = process::resolve_python(Some(Path::new("no-such-python-xyz"))).unwrap_err();
    assert_eq!(err.class, ErrorClass::Dependency);
    assert!(err.message.contains("PATH"), "{err}");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("python3").is_file()));
    if on_path {
        let python = process::resolve_python(Some(Path::new("python3"))).unwrap();
        assert!(python.is_absolute(), "{}", python.display());
    }
}

// -- subprocess -----------------------------------------------------------------------------

#[test]
fn subprocess_passes_the_payload_and_its_ids_in_the_environment() {
    let client = client(Mode::Subprocess, 1);
    let payload = json!({
        "run_id": "r-1", "correlation_id": "c-2", "status": "succeeded", "trial_id": 7,
    });
    let env = client.call_blocking("environ", payload.clone()).unwrap();
    assert_eq!(env["CEREBROS_BRIDGE_OP"], "environ");
    assert_eq!(env["CEREBROS_BRIDGE_RUN_ID"], "r-1");
    assert_eq!(env["CEREBROS_BRIDGE_CORRELATION"], "c-2");
    assert_eq!(env["CEREBROS_BRIDGE_STATUS"], "succeeded");
    assert_eq!(env["CEREBROS_BRIDGE_TRIAL_ID"], "7");
    let sent: Value =
        serde_json::from_str(env["CEREBROS_BRIDGE_PAYLOAD"].as_str().unwrap()).unwrap();
    assert_eq!(sent, payload);
    // A payload of 64 KiB or more goes on stdin only.
    let big = json!({"run_id": "r-2", "blob": "b".repeat(70_000)});
    let env = client.call_blocking("environ", big).unwrap();
    assert_eq!(env["CEREBROS_BRIDGE_RUN_ID"], "r-2");
    assert!(env.get("CEREBROS_BRIDGE_PAYLOAD").is_none(), "{env}");
    assert!(env.get("CEREBROS_BRIDGE_CORRELATION").is_none(), "{env}");
}

#[test]
fn subprocess_reads_big_stderr_and_big_stdin_without_deadlock() {
    let client = client(Mode::Subprocess, 1);
    let start = Instant::now();
    let reply = call_within(
        &client,
        "write_stderr",
        json!({"bytes": 6_000_000, "pad": "p".repeat(3_000_000)}),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(reply["written"], 6_000_000);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn subprocess_exit_reports_the_return_code_and_both_excerpts() {
    let client = client(Mode::Subprocess, 1);
    let err = client
        .call_blocking("crash", json!({"code": 5}))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::SubprocessExit);
    assert_eq!(err.details["returncode"], 5);
    assert!(err.details.contains_key("stdout_excerpt"));
    assert!(err.details.contains_key("stderr_excerpt"));
    assert_eq!(err.op.as_deref(), Some("crash"));
}

#[test]
fn subprocess_runs_a_script_path() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.py");
    std::fs::write(
        &script,
        "import json, os, sys\n\
         op = sys.argv[sys.argv.index('--bridge-op') + 1]\n\
         payload = json.loads(sys.stdin.read() or '{}')\n\
         if op == 'bad':\n\
         \x20   print('not json'); sys.exit(0)\n\
         if op == 'refuse':\n\
         \x20   print(json.dumps({'ok': False, 'error': {'class': 'contract', 'message': 'no'}})); sys.exit(2)\n\
         print(json.dumps({'op': op, 'env_op': os.environ['CEREBROS_BRIDGE_OP'], 'payload': payload}))\n",
    )
    .unwrap();
    let mut config = config(Mode::Subprocess, 1);
    config.script_path = Some(script);
    let client = Client::start(&config).unwrap();
    let reply = client.call_blocking("anything", json!({"x": [1]})).unwrap();
    assert_eq!(
        reply,
        json!({"op": "anything", "env_op": "anything", "payload": {"x": [1]}})
    );
    let err = client.call_blocking("bad", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::ParseError, "{err}");
    assert_eq!(err.details["stdout_excerpt"], "not json");
    let err = client.call_blocking("refuse", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract, "{err}");
    config.script_path = Some(PathBuf::from("/nonexistent/run.py"));
    let err = Client::start(&config).err().unwrap();
    assert_eq!(err.class, ErrorClass::Config, "{err}");
}

#[test]
fn subprocess_shutdown_kills_running_calls_and_refuses_new_ones() {
    let _serial = serial();
    let client = Arc::new(client(Mode::Subprocess, 1));
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || client.call_blocking("sleep", json!({"seconds": 30})))
    };
    assert!(eventually(Duration::from_secs(5), || client
        .stats()
        .workers
        .workers_alive
        == 1));
    let start = Instant::now();
    assert_eq!(client.shutdown(Duration::from_millis(100)), 1);
    let err = caller.join().unwrap().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(err.class, ErrorClass::SubprocessExit, "{err}");
    assert_eq!(err.details["returncode"], -9);
    let err = client.call_blocking("echo", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::Cancelled);
}

// -- worker_process -------------------------------------------------------------------------

fn worker_pool(size: usize) -> Arc<WorkerProcessInvoker> {
    let options = ProcessOptions::from_config(&config(Mode::WorkerProcess, size));
    Arc::new(WorkerProcessInvoker::start(options).expect("the pool starts"))
}

fn request(op: &str, payload: Value, timeout: Duration) -> Request {
    Request {
        op: op.into(),
        payload: Arc::new(payload),
        timeout,
        traceparent: None,
    }
}

#[test]
fn worker_process_pipelines_many_requests_per_child() {
    let pool = worker_pool(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replies = runtime.block_on(async {
        let calls = (0..50).map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.invoke(request("echo", json!({"n": n}), Duration::from_secs(20)))
                    .await
            })
        });
        let mut replies = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            replies.push(call.await.unwrap().unwrap());
        }
        replies
    });
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["n"], n);
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.submitted, stats.workers_alive, stats.queued),
        (50, 1, 0)
    );
}

#[test]
fn worker_process_queues_a_big_payload_behind_a_busy_child() {
    let pool = worker_pool(1);
    let busy = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.invoke_blocking(request(
                "sleep",
                json!({"seconds": 1.0}),
                Duration::from_secs(20),
            ))
        })
    };
    // The sleep is on the child before the echo is sent.
    assert!(eventually(Duration::from_secs(10), || pool
        .stats()
        .submitted
        == 1));
    let blob = "z".repeat(4_000_000);
    let start = Instant::now();
    let reply = pool
        .invoke_blocking(request(
            "echo",
            json!({"blob": blob}),
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_eq!(reply["blob"].as_str().map(str::len), Some(4_000_000));
    // It waited for the rest of the sleep (an echo alone takes a few milliseconds).
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(busy.join().unwrap().unwrap()["slept"], 1.0);
}

#[test]
fn worker_process_sends_a_call_to_the_least_busy_child() {
    let _serial = serial();
    let pool = worker_pool(2);
    let busy = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.invoke_blocking(request(
                "sleep",
                json!({"seconds": 3.0}),
                Duration::from_secs(20),
            ))
        })
    };
    // One child is busy before the echo is sent.
    assert!(eventually(Duration::from_secs(10), || pool
        .stats()
        .submitted
        == 1));
    let start = Instant::now();
    pool.invoke_blocking(request("echo", json!({}), Duration::from_secs(20)))
        .unwrap();
    // The idle child answers at once; queued behind the sleep it would take ~3 s.
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "queued behind the sleep: {took:?}"
    );
    busy.join().unwrap().unwrap();
}

#[test]
fn worker_process_crash_fails_every_request_in_flight_and_replaces_the_child() {
    let pool = worker_pool(1);
    let crash = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.invoke_blocking(request(
                "crash",
                json!({"code": 7, "delay": 0.3}),
                Duration::from_secs(20),
            ))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // Queued on the same child, behind the crash.
    let behind = pool
        .invoke_blocking(request("echo", json!({}), Duration::from_secs(20)))
        .unwrap_err();
    let crashed = crash.join().unwrap().unwrap_err();
    for err in [&crashed, &behind] {
        assert_eq!(err.class, ErrorClass::SubprocessExit, "{err}");
        assert_eq!(err.details["returncode"], 7, "{err:?}");
        assert!(ErrorClass::SubprocessExit.retryable_by_default());
    }
    let reply = pool.invoke_blocking(request("echo", json!({"k": 1}), Duration::from_secs(20)));
    assert_eq!(reply.unwrap()["k"], 1);
    let stats = pool.stats();
    assert_eq!((stats.workers_alive, stats.workers_replaced), (1, 1));
}

#[test]
fn worker_process_timeout_fails_the_requests_behind_it_with_subprocess_exit() {
    let _serial = serial();
    let pool = worker_pool(1);
    let spin = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.invoke_blocking(request("spin", json!({}), Duration::from_millis(300)))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let behind = pool
        .invoke_blocking(request("echo", json!({}), Duration::from_secs(20)))
        .unwrap_err();
    assert_eq!(spin.join().unwrap().unwrap_err().class, ErrorClass::Timeout);
    assert_eq!(behind.class, ErrorClass::SubprocessExit, "{behind}");
    assert_eq!(behind.details["returncode"], -9, "{behind:?}");
    let stats = pool.stats();
    assert_eq!((stats.workers_retired, stats.workers_replaced), (1, 1));
}

#[test]
fn worker_process_replaces_a_child_killed_from_outside() {
    let pool = worker_pool(2);
    let pids = pool.child_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|pid| *pid > 0));
    // SAFETY: plain syscall on a child this test's pool started.
    unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(5), || {
        let stats = pool.stats();
        stats.workers_replaced == 1 && stats.workers_alive == 2
    }));
    let now = pool.child_pids();
    assert!(!now.contains(&pids[0]) && now.contains(&pids[1]), "{now:?}");
    for n in 0..4 {
        let reply = pool.invoke_blocking(request("echo", json!({"n": n}), Duration::from_secs(20)));
        assert_eq!(reply.unwrap()["n"], n);
    }
}

#[test]
fn worker_process_shutdown_closes_stdins_then_kills_and_drop_never_hangs() {
    let pool = worker_pool(2);
    let start = Instant::now();
    assert_eq!(
        pool.shutdown(Duration::from_secs(5)),
        0,
        "idle children exit at EOF"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    let err = pool
        .invoke_blocking(request("echo", json!({}), Duration::from_secs(1)))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Cancelled);

    let pool = worker_pool(1);
    let spinning = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.invoke_blocking(request("spin", json!({}), Duration::from_secs(30)))
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(pool.shutdown(Duration::from_millis(100)), 1);
    let err = spinning.join().unwrap().unwrap_err();
    assert_eq!(err.class, ErrorClass::Cancelled, "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));

    // Dropping a pool whose child spins in C holding the GIL.
    let pool = worker_pool(1);
    let caller = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let _ = pool.invoke_blocking(request(
                "hold_gil",
                json!({"seconds": 30}),
                Duration::from_millis(100),
            ));
        })
    };
    caller.join().unwrap();
    let start = Instant::now();
    drop(pool);
    // Drop kills the child at once: nowhere near the 30 s of its hold.
    assert!(start.elapsed() < Duration::from_secs(2));
}

// -- stderr forwarding ----------------------------------------------------------------------

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(String, String, String)>>>);

struct Recorder(Lines);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "cerebros.bridge.worker"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        #[derive(Default)]
        struct Visit(String, String);
        impl tracing::field::Visit for Visit {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = format!("{value:?}"),
                    "pid" => self.1 = format!("{value:?}"),
                    _ => {}
                }
            }
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "pid" {
                    self.1 = value.to_string();
                }
            }
        }
        let mut visit = Visit::default();
        event.record(&mut visit);
        let target = event.metadata().target().to_owned();
        self.0 .0.lock().push((target, visit.1, visit.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn recorded() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Lines::default();
        tracing::subscriber::set_global_default(Recorder(lines.clone()))
            .expect("no other global subscriber in this test binary");
        lines
    })
}

#[test]
fn worker_process_forwards_stderr_and_prints_to_tracing_with_the_pid() {
    let lines = recorded();
    let pool = worker_pool(1);
    let pid = pool.child_pids()[0].to_string();
    for (op, text) in [
        ("print_stdout", "marker-print-7f3a"),
        ("write_fd1", "marker-fd1-7f3a\n"),
    ] {
        let payload = json!({"line": text, "text": text});
        pool.invoke_blocking(request(op, payload, Duration::from_secs(20)))
            .unwrap();
    }
    let seen = |marker: &str| {
        lines.0.lock().iter().any(|(target, p, message)| {
            target == "cerebros.bridge.worker" && *p == pid && message.contains(marker)
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || seen("marker-print-7f3a")
            && seen("marker-fd1-7f3a")),
        "{:?}",
        lines.0.lock()
    );
}
