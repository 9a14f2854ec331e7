//! Processes and cancellation (issue 9, items 7 and 9): a replaced worker child leaves
//! no thread or pipe behind; a lone surrogate in a result is a `parse_error` that the
//! worker survives; dropping a call stops its work in every mode; a caller joining an
//! identical call in flight waits only its own deadline; Ctrl-C ends `call` with 130
//! even when the service module meddles with SIGINT.
//!
//! Service modules: `services/proc_ticker.py`, `services/proc_signals.py`,
//! `services/proc_slow_import.py`.

use crate::common::{eventually, root, thread_count};
use crate::{service_config, services};
use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, Mode};
use cerebros_bridge::core::error::ErrorClass;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cancel grace every test here runs with (the default).
const GRACE: Duration = Duration::from_millis(250);

/// Set in a copy of this test binary that runs one test alone (see [`alone`]).
const ALONE_ENV: &str = "CEREBROS_HOSTILE_PROC_ALONE";

fn config(mode: Mode, module: &str) -> Config {
    let mut config = service_config(mode, module);
    config.invoke.cancel_grace_ms = GRACE.as_millis() as u64;
    config
}

fn ticker(mode: Mode) -> Client {
    Client::start(&config(mode, "proc_ticker")).expect("the client starts")
}

/// Runs the calling test `name` alone in a fresh copy of this test binary and returns
/// false; in that copy, returns true so the test runs its body. Process-wide counts
/// (threads, fds) need a process where no other test runs.
fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE_ENV).is_some() {
        return true;
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE_ENV, "1")
        .status()
        .expect("the test binary runs");
    assert!(status.success(), "{name} failed in its own process");
    false
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Item 7: 30 crashed and replaced children cost no thread and no fd; closing the
/// client gives back what starting it took. Before the fix each replaced child left
/// its writer thread and its stdin pipe behind, for good.
#[test]
fn replaced_worker_children_leave_no_threads_or_fds() {
    if !alone("proc::replaced_worker_children_leave_no_threads_or_fds") {
        return;
    }
    const SLACK: usize = 3;
    let (threads_before_start, fds_before_start) = (thread_count(), fd_count());
    let client = ticker(Mode::WorkerProcess);
    client.call_blocking("echo", json!({})).unwrap();
    let (threads, fds) = (thread_count(), fd_count());
    for _ in 0..30 {
        let err = client.call_blocking("crash", json!({})).unwrap_err();
        assert_eq!(err.class, ErrorClass::SubprocessExit, "{err}");
    }
    client.call_blocking("echo", json!({})).unwrap();
    let settled = eventually(Duration::from_secs(10), || {
        thread_count() <= threads + SLACK && fd_count() <= fds + SLACK
    });
    assert!(
        settled,
        "after 30 replacements: {} threads (was {threads}), {} fds (was {fds})",
        thread_count(),
        fd_count()
    );
    client.shutdown(GRACE);
    drop(client);
    let closed = eventually(Duration::from_secs(10), || {
        thread_count() <= threads_before_start + SLACK && fd_count() <= fds_before_start + SLACK
    });
    assert!(
        closed,
        "after close: {} threads (was {threads_before_start}), {} fds (was {fds_before_start})",
        thread_count(),
        fd_count()
    );
}

/// Item 7: a result holding a lone surrogate (not Unicode text) is a `parse_error`
/// in every mode, as is already the case in process; the worker survives it and
/// serves the next call. An exception whose message holds one still reaches its
/// caller as `exception`. Before the fix the worker child was killed as a protocol
/// break (`subprocess_exit`).
#[test]
fn a_lone_surrogate_is_a_parse_error_the_worker_survives() {
    for mode in Mode::ALL {
        let client = ticker(mode);
        let err = client.call_blocking("surrogate", json!({})).unwrap_err();
        assert_eq!(err.class, ErrorClass::ParseError, "{mode}: {err}");
        let err = client
            .call_blocking("raise_surrogate", json!({}))
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Exception, "{mode}: {err}");
        let reply = client.call_blocking("echo", json!({"n": 1})).unwrap();
        assert_eq!(reply["n"], 1, "{mode}");
        let stats = client.stats();
        assert_eq!(stats.workers.workers_replaced, 0, "{mode}: {stats:?}");
    }
}

/// Item 9: dropping a pending call (what `runs cancel`, Ctrl-C and a trial timeout
/// do) stops its work within the cancel grace in every mode: the op's marker file
/// stops growing. Before the fix `worker_process` and `subprocess` children went on.
#[test]
fn dropping_a_call_stops_its_work_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    // One runtime for the whole test: dropping a runtime waits for its blocking tasks,
    // which would hide a `subprocess` call that goes on after its future is dropped.
    let runtime = runtime();
    for mode in Mode::ALL {
        let client = ticker(mode);
        let marker = dir.path().join(format!("{mode}.ticks"));
        let call = client.call("tick", json!({"path": marker.to_str().unwrap()}));
        let started = runtime.block_on(async {
            tokio::select! {
                outcome = call => panic!("{mode}: tick ended: {outcome:?}"),
                started = async {
                    let limit = Instant::now() + Duration::from_secs(30);
                    while file_len(&marker) == 0 && Instant::now() < limit {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    file_len(&marker) > 0
                } => started,
            }
        });
        assert!(started, "{mode}: the op never started");
        // The call's future is gone: its work must stop within the grace.
        std::thread::sleep(GRACE + Duration::from_secs(1));
        let stopped_at = file_len(&marker);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            file_len(&marker),
            stopped_at,
            "{mode}: the cancelled op is still writing"
        );
        let reply = client.call_blocking("echo", json!({"n": 2})).unwrap();
        assert_eq!(reply["n"], 2, "{mode}: the next call is served");
    }
}

/// Item 9, `worker_process`: a request queued behind a cancelled one on the same child
/// gets what a crash gives it (`subprocess_exit`, retried by default), at once. Before
/// the fix it waited behind the cancelled op until its own deadline.
#[test]
fn a_request_behind_a_cancelled_one_gets_subprocess_exit() {
    let client = ticker(Mode::WorkerProcess);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ticks");
    let behind = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        ..CallOptions::default()
    };
    let (err, waited) = runtime().block_on(async {
        let cancelled = client.call("tick", json!({"path": marker.to_str().unwrap()}));
        let queued = client.call_with("echo", json!({}), behind);
        tokio::pin!(queued);
        tokio::select! {
            biased; // `tick` is sent first, `echo` queued behind it
            outcome = cancelled => panic!("tick ended: {outcome:?}"),
            outcome = &mut queued => panic!("echo overtook tick: {outcome:?}"),
            () = async {
                while file_len(&marker) == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        // `tick` is dropped here; `echo` was queued behind it on the only child.
        let start = Instant::now();
        (queued.await.unwrap_err(), start.elapsed())
    });
    assert_eq!(err.class, ErrorClass::SubprocessExit, "{err}");
    assert!(err.message.contains("cancelled"), "{err}");
    assert!(waited < GRACE + Duration::from_secs(1), "waited {waited:?}");
}

/// Item 9: a caller that joins an identical call in flight (single flight in the
/// cache) waits at most its own deadline, not the leader's. Before the fix it waited
/// for the leader (4 s here).
#[test]
fn a_caller_joining_a_call_in_flight_waits_only_its_own_deadline() {
    let mut config = config(Mode::InProcess, "proc_ticker");
    config.cache.enabled = true;
    let client = Client::start(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let payload = json!({"path": dir.path().join("t").to_str().unwrap(), "seconds": 4});
    let options = |timeout_ms| CallOptions {
        timeout: Some(Duration::from_millis(timeout_ms)),
        cache_key: Some("proc-single-flight".into()),
        max_retries: Some(0),
    };
    let joiner_timeout = Duration::from_millis(500);
    let (leader, (joiner, waited)) = runtime().block_on(async {
        let leader = client.call_with("tick", payload.clone(), options(30_000));
        let joiner = async {
            // Let the leader open the flight first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let start = Instant::now();
            let outcome = client
                .call_with("tick", payload.clone(), options(500))
                .await;
            (outcome, start.elapsed())
        };
        tokio::join!(leader, joiner)
    });
    let err = joiner.unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(
        waited < joiner_timeout + GRACE + Duration::from_secs(1),
        "the joiner waited {waited:?}"
    );
    assert_eq!(leader.unwrap()["done"], true);
}

/// `call OP` on the CLI, in `mode`, over the hostile module `module`, output discarded.
fn cli_call(mode: Mode, module: &str, op: &str, payload: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    command
        .args(["call", op, "--mode", mode.as_str(), "--timeout-ms", "30000"])
        .args(["--payload", payload])
        .env("CEREBROS_MODULE", module)
        .env("CEREBROS_REPO", services())
        .env("CEREBROS_MAX_RETRIES", "0")
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Sends SIGINT to `child` and returns its exit status and how long it took to end
/// (`None` if it was still running 10 s later; it is then killed).
fn interrupt(child: &mut std::process::Child) -> (Option<std::process::ExitStatus>, Duration) {
    let interrupted = Instant::now();
    // SAFETY: a plain kill(2) of our own child, which has not been reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let mut status = None;
    eventually(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let waited = interrupted.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, waited)
}

/// How long after Ctrl-C the CLI must be gone: the second the feature promises, plus
/// the grace and a second of slack.
const CTRL_C_BOUND: Duration = Duration::from_millis(1000 + 250 + 1000);

/// Whether process `pid` is gone (or a zombie).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Item 9: Ctrl-C (SIGINT to the CLI) ends `call` with exit status 130 within a
/// second in every mode, although the service module imports `signal` and
/// `subprocess` and installs a SIGINT handler of its own; the op stops. Before the fix
/// `in_process` ignored Ctrl-C until the call ended, and the process modes died of
/// the signal (no exit status).
#[test]
fn ctrl_c_ends_call_with_130_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for mode in Mode::ALL {
        let marker = dir.path().join(format!("{mode}.ticks"));
        let payload = json!({"path": marker.to_str().unwrap()}).to_string();
        let mut child = cli_call(mode, "proc_signals", "tick", &payload)
            .spawn()
            .unwrap();
        let started = eventually(Duration::from_secs(30), || file_len(&marker) > 0);
        assert!(started, "{mode}: the op never started");
        let (status, waited) = interrupt(&mut child);
        let status = status.unwrap_or_else(|| panic!("{mode}: the CLI ignored Ctrl-C for 10 s"));
        assert_eq!(status.code(), Some(130), "{mode}: {status:?}");
        assert!(
            waited < CTRL_C_BOUND,
            "{mode}: exited {waited:?} after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(300));
        let stopped_at = file_len(&marker);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(file_len(&marker), stopped_at, "{mode}: the op still runs");
    }
}

/// Item 9: Ctrl-C during start-up, while the service module is being imported (it
/// installed a SIGINT handler of its own first, then takes 30 s), ends `call` with
/// 130 within a second too, and the importing process is gone. A handler set from
/// Python is noticed at once; `SIG_IGN` is undone within the CLI's 10 ms guard tick,
/// so that case waits 200 ms before Ctrl-C. Before the fix `in_process` ignored it
/// until the import ended and the process modes died of the signal (no exit status).
#[test]
fn ctrl_c_during_a_slow_import_ends_call_with_130() {
    let dir = tempfile::tempdir().unwrap();
    for mode in Mode::ALL {
        for (handler, pause) in [("swallow", 0), ("ignore", 200)] {
            let marker = dir.path().join(format!("{mode}-{handler}.pid"));
            let mut child = cli_call(mode, "proc_slow_import", "echo", "{}")
                .env("PROC_IMPORT_MARKER", &marker)
                .env("PROC_SIGINT", handler)
                .spawn()
                .unwrap();
            let importing = eventually(Duration::from_secs(30), || file_len(&marker) > 0);
            assert!(importing, "{mode}/{handler}: the import never began");
            std::thread::sleep(Duration::from_millis(pause));
            let (status, waited) = interrupt(&mut child);
            let status = status
                .unwrap_or_else(|| panic!("{mode}/{handler}: the CLI ignored Ctrl-C for 10 s"));
            assert_eq!(status.code(), Some(130), "{mode}/{handler}: {status:?}");
            assert!(
                waited < CTRL_C_BOUND,
                "{mode}/{handler}: exited {waited:?} after Ctrl-C"
            );
            let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
            assert!(
                eventually(Duration::from_secs(2), || process_gone(pid)),
                "{mode}/{handler}: the importing process {pid} still runs"
            );
        }
    }
}
