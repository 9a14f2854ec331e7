//! One conformance suite, run against every execution mode with the same expectations
//! (DESIGN §2: "all three give the same results and the same error classes for the same
//! call"). Each case is a plain function taking the mode; the `conformance!` macro makes
//! one test per (mode, case), named `<mode>::<case>`, so
//! `cargo test --test conformance worker_process` runs one mode.
//!
//! The service is the fault-injection module `tests/fixtures/fault_service.py`, without
//! retries, so each error is the first attempt's.
//!
//! `crash` (`os._exit`) and `segfault` are run in the process modes only: in
//! `in_process` they would end the test process itself.

mod common;

use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, Mode};
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use common::{root, serial};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The deadline of the timeout cases.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How late a timeout may be answered: the deadline + the cancel grace (250 ms) + 1 s.
const ANSWER_BOUND: Duration = Duration::from_millis(300 + 250 + 1000);
/// How long `hold_gil` holds the GIL: well past [`ANSWER_BOUND`], so a caller kept
/// waiting for the C call fails.
const HOLD_SECONDS: f64 = 3.0;

fn config(mode: Mode) -> Config {
    let mut config = Config {
        mode,
        module: "fault_service".into(),
        repo_path: root().join("tests/fixtures"),
        ..Config::default()
    };
    config.invoke.max_retries = 0;
    config.invoke.pool_size = 2;
    config.invoke.default_timeout_ms = 30_000;
    config.cache.enabled = false;
    config
}

fn client(mode: Mode) -> Client {
    Client::start(&config(mode)).expect("the client starts")
}

fn call(client: &Client, op: &str, payload: Value) -> Result<Value, BridgeError> {
    client.call_blocking(op, payload)
}

fn call_within(
    client: &Client,
    op: &str,
    payload: Value,
    timeout: Duration,
) -> (Duration, Result<Value, BridgeError>) {
    let options = CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    };
    let start = Instant::now();
    let result = client.call_blocking_with(op, payload, options);
    (start.elapsed(), result)
}

fn error_of(mode: Mode, result: Result<Value, BridgeError>) -> BridgeError {
    match result {
        Ok(value) => panic!("{mode}: the call must fail, got {value}"),
        Err(err) => err,
    }
}

fn nested_unicode() -> Value {
    json!({
        "run_id": "r-ünï-😀",
        "text": "tab\tnewline\nquote\" backslash\\ nul\u{0} bell\u{7} 中文 🧠",
        "numbers": [0, -1, 1.5, 1e-300, 12345678901234567i64, u64::MAX, -9007199254740993i64],
        "flags": [true, false, null],
        "nested": {"a": {"b": {"c": [[], {}, [{"d": "ë"}]]}}, "": "empty key", "é": 1},
        "deep": (0..40).fold(json!("bottom"), |inner, _| json!([inner])),
    })
}

// -- the cases ------------------------------------------------------------------------------

fn echo_round_trips_nested_unicode(mode: Mode) {
    let client = client(mode);
    let payload = nested_unicode();
    let reply = call(&client, "echo", payload.clone()).expect("echo succeeds");
    assert_eq!(reply, payload, "{mode}");
}

fn health_answers(mode: Mode) {
    let client = client(mode);
    let reply = call(&client, "health", json!({})).expect("health succeeds");
    assert_eq!(reply, json!({"status": "ok"}), "{mode}");
}

fn unknown_private_and_non_function_ops_are_contract_errors(mode: Mode) {
    let client = client(mode);
    for op in ["nope", "_secret", "__init__", "NotAnOp"] {
        let err = error_of(mode, call(&client, op, json!({})));
        assert_eq!(err.class, ErrorClass::Contract, "{mode} {op}: {err}");
        assert_eq!(err.op.as_deref(), Some(op));
    }
}

fn a_raising_op_is_an_exception_with_type_and_traceback(mode: Mode) {
    let client = client(mode);
    let err = error_of(mode, call(&client, "fail", json!({"message": "bad ü"})));
    assert_eq!(err.class, ErrorClass::Exception, "{mode}: {err}");
    assert_eq!(err.details["type"], "ValueError", "{mode}");
    assert_eq!(err.details["message"], "bad ü", "{mode}");
    let traceback = err.details["traceback"].as_str().unwrap_or_default();
    assert!(
        traceback.contains("ValueError: bad ü"),
        "{mode}: {traceback}"
    );
    assert!(
        traceback.contains("fault_service.py"),
        "{mode}: {traceback}"
    );
    assert!(
        err.message.contains("ValueError"),
        "{mode}: {}",
        err.message
    );
}

fn unreadable_results_are_parse_errors(mode: Mode) {
    let client = client(mode);
    for op in [
        "return_set",
        "return_object",
        "return_nan",
        "return_infinity",
        "return_uuid",
        "return_enum",
        "return_date",
        "return_list",
        "return_int",
    ] {
        let err = error_of(mode, call(&client, op, json!({})));
        assert_eq!(err.class, ErrorClass::ParseError, "{mode} {op}: {err}");
    }
}

fn a_spinning_op_times_out_at_the_deadline(mode: Mode) {
    let _serial = serial();
    let client = client(mode);
    let (took, result) = call_within(&client, "spin", json!({}), TIMEOUT);
    let err = error_of(mode, result);
    assert_eq!(err.class, ErrorClass::Timeout, "{mode}: {err}");
    assert!(took >= TIMEOUT, "{mode}: answered early, {took:?}");
    assert!(took < ANSWER_BOUND, "{mode}: answered late, {took:?}");
    // The pool serves on.
    assert_eq!(
        call(&client, "echo", json!({"after": "spin"})).unwrap()["after"],
        "spin"
    );
}

/// C code holding the GIL: the process modes kill the process at the deadline; in
/// `in_process` the caller is still answered at the deadline (the worker is retired,
/// and the interpreter is busy until the C call returns, [`HOLD_SECONDS`] later).
fn an_op_holding_the_gil_times_out_at_the_deadline(mode: Mode) {
    let _serial = serial();
    let client = client(mode);
    let (took, result) = call_within(
        &client,
        "hold_gil",
        json!({"seconds": HOLD_SECONDS}),
        TIMEOUT,
    );
    let err = error_of(mode, result);
    assert_eq!(err.class, ErrorClass::Timeout, "{mode}: {err}");
    assert!(took >= TIMEOUT, "{mode}: answered early, {took:?}");
    assert!(took < ANSWER_BOUND, "{mode}: answered late, {took:?}");
    let start = Instant::now();
    assert_eq!(call(&client, "echo", json!({"n": 1})).unwrap()["n"], 1);
    if mode != Mode::InProcess {
        // The process holding the GIL is gone: no wait for the rest of its hold (2.7 s);
        // a fresh process answers well within 1.5 s.
        let took = start.elapsed();
        assert!(took < Duration::from_millis(1500), "{mode}: {took:?}");
    }
}

fn an_op_that_prints_to_stdout_still_returns_its_result(mode: Mode) {
    let client = client(mode);
    let reply = call(
        &client,
        "print_stdout",
        json!({"line": "{\"id\": 1, \"ok\": true}"}),
    );
    assert_eq!(reply.unwrap(), json!({"printed": true}), "{mode}");
    let reply = call(&client, "write_fd1", json!({"text": "not json\n"}));
    assert_eq!(reply.unwrap(), json!({"written": true}), "{mode}");
    assert_eq!(
        call(&client, "echo", json!({"k": 2})).unwrap(),
        json!({"k": 2})
    );
}

fn an_8_mb_result_comes_back_whole(mode: Mode) {
    let client = client(mode);
    let reply = call(&client, "big", json!({"bytes": 8_000_000})).expect("big succeeds");
    let data = reply["data"].as_str().expect("a string");
    assert_eq!(data.len(), 8_000_000, "{mode}");
    assert!(data.bytes().all(|b| b == b'x'));
}

/// `sys.exit(3)`, `SystemExit` and `KeyboardInterrupt` raised by an op are that op's
/// `exception` (not a dying process: a `subprocess_exit` would be retried, running the
/// op's side effects again).
fn an_op_raising_system_exit_is_an_exception(mode: Mode) {
    let client = client(mode);
    for (kind, type_name) in [
        ("exit", "SystemExit"),
        ("SystemExit", "SystemExit"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
    ] {
        let err = error_of(mode, call(&client, "raise_base", json!({"kind": kind})));
        assert_eq!(err.class, ErrorClass::Exception, "{mode} {kind}: {err}");
        assert_eq!(err.details["type"], type_name, "{mode} {kind}");
    }
    assert_eq!(call(&client, "echo", json!({"n": 5})).unwrap()["n"], 5);
}

/// What the in-process converter refuses in a result, every mode refuses, with the same
/// class: integers beyond 64 bits (JSON would silently make them floats), dict keys that
/// are not strings (JSON would make them strings) and nesting deeper than 256 levels.
fn results_beyond_json_limits_are_parse_errors(mode: Mode) {
    let client = client(mode);
    let int_result = |digits: String| call(&client, "return_int_value", json!({"digits": digits}));
    for digits in [
        "1267650600228229401496703205376".to_owned(), // 2**100
        "18446744073709551616".to_owned(),            // 2**64
        "-9223372036854775809".to_owned(),            // -2**63 - 1
    ] {
        let err = error_of(mode, int_result(digits.clone()));
        assert_eq!(err.class, ErrorClass::ParseError, "{mode} {digits}: {err}");
    }
    assert_eq!(
        int_result(u64::MAX.to_string()).unwrap(),
        json!({"n": u64::MAX})
    );
    assert_eq!(
        int_result(i64::MIN.to_string()).unwrap(),
        json!({"n": i64::MIN})
    );
    let err = error_of(mode, call(&client, "return_int_keys", json!({})));
    assert_eq!(err.class, ErrorClass::ParseError, "{mode}: {err}");
    assert!(err.message.contains("key of type int"), "{mode}: {err}");
    for depth in [257, 300, 950] {
        let err = error_of(mode, call(&client, "return_deep", json!({"depth": depth})));
        assert_eq!(err.class, ErrorClass::ParseError, "{mode} {depth}: {err}");
    }
    let reply = call(&client, "return_deep", json!({"depth": 256})).expect("256 levels cross");
    assert!(reply["deep"].is_array(), "{mode}");
}

/// Payloads are held to the same limits in every mode: 256 levels cross, 257 are a
/// `contract` error before any op runs.
fn payloads_beyond_json_limits_are_contract_errors(mode: Mode) {
    let client = client(mode);
    let deep =
        |depth: usize| json!({"a": (0..depth - 2).fold(json!([]), |inner, _| json!([inner]))});
    assert_eq!(
        call(&client, "echo", deep(256)).unwrap(),
        deep(256),
        "{mode}"
    );
    let err = error_of(mode, call(&client, "echo", deep(257)));
    assert_eq!(err.class, ErrorClass::Contract, "{mode}: {err}");
}

/// An op that returns while a (non-daemon) thread it started runs on returns its result
/// at once: the thread does not hold the reply back (in `subprocess` mode it kept the
/// process from exiting until the deadline).
fn an_op_leaving_a_thread_running_still_returns(mode: Mode) {
    let client = client(mode);
    let (took, result) = call_within(
        &client,
        "leave_thread",
        json!({"seconds": 8}),
        Duration::from_secs(5),
    );
    assert_eq!(
        result.expect("the op returned"),
        json!({"left": true}),
        "{mode}"
    );
    assert!(took < Duration::from_secs(4), "{mode}: {took:?}");
}

/// Process modes only: `os._exit(3)`.
fn an_exiting_process_is_a_subprocess_exit(mode: Mode) {
    let client = client(mode);
    let err = error_of(mode, call(&client, "crash", json!({"code": 3})));
    assert_eq!(err.class, ErrorClass::SubprocessExit, "{mode}: {err}");
    assert_eq!(err.details["returncode"], 3, "{mode}: {err:?}");
    assert!(
        err.details.contains_key("stderr_excerpt"),
        "{mode}: {err:?}"
    );
    assert_eq!(call(&client, "echo", json!({"n": 3})).unwrap()["n"], 3);
}

/// Process modes only: SIGSEGV.
fn a_segfault_is_a_subprocess_exit(mode: Mode) {
    let client = client(mode);
    let err = error_of(mode, call(&client, "segfault", json!({})));
    assert_eq!(err.class, ErrorClass::SubprocessExit, "{mode}: {err}");
    assert_eq!(err.details["returncode"], -11, "{mode}: {err:?}");
    let stderr = err.details["stderr_excerpt"].as_str().unwrap_or_default();
    assert!(stderr.contains("Segmentation fault"), "{mode}: {stderr}");
    assert!(stderr.chars().count() <= 1024, "{mode}");
    assert_eq!(call(&client, "echo", json!({"n": 4})).unwrap()["n"], 4);
}

/// Every kind of failure on one client, then a normal echo.
fn echo_still_works_after_every_failure(mode: Mode) {
    let _serial = serial();
    let client = client(mode);
    let classes = |op: &str, payload: Value, timeout: Duration| {
        call_within(&client, op, payload, timeout)
            .1
            .err()
            .map(|e| e.class)
    };
    let long = Duration::from_secs(30);
    assert_eq!(classes("nope", json!({}), long), Some(ErrorClass::Contract));
    assert_eq!(
        classes("fail", json!({}), long),
        Some(ErrorClass::Exception)
    );
    assert_eq!(
        classes("return_set", json!({}), long),
        Some(ErrorClass::ParseError)
    );
    assert_eq!(
        classes("spin", json!({}), TIMEOUT),
        Some(ErrorClass::Timeout)
    );
    assert_eq!(
        classes("hold_gil", json!({"seconds": 0.5}), TIMEOUT),
        Some(ErrorClass::Timeout)
    );
    assert_eq!(classes("print_stdout", json!({}), long), None);
    assert_eq!(classes("big", json!({"bytes": 1_000_000}), long), None);
    if mode != Mode::InProcess {
        assert_eq!(
            classes("crash", json!({}), long),
            Some(ErrorClass::SubprocessExit)
        );
        assert_eq!(
            classes("segfault", json!({}), long),
            Some(ErrorClass::SubprocessExit)
        );
    }
    let payload = nested_unicode();
    assert_eq!(
        call(&client, "echo", payload.clone()).unwrap(),
        payload,
        "{mode}"
    );
    let stats = client.stats();
    assert_eq!(stats.mode, mode.as_str());
    if mode == Mode::WorkerProcess {
        assert_eq!(
            stats.workers.workers_alive, stats.workers.workers,
            "{stats:?}"
        );
    }
}

// -- one test per (mode, case) ---------------------------------------------------------------

/// `conformance!(name, mode, extra cases…)`: a module `name` with one test per common
/// case and per extra case.
macro_rules! conformance {
    ($mode_name:ident, $mode:expr $(, $extra:ident)* $(,)?) => {
        mod $mode_name {
            conformance!(@cases $mode;
                echo_round_trips_nested_unicode,
                health_answers,
                unknown_private_and_non_function_ops_are_contract_errors,
                a_raising_op_is_an_exception_with_type_and_traceback,
                unreadable_results_are_parse_errors,
                a_spinning_op_times_out_at_the_deadline,
                an_op_holding_the_gil_times_out_at_the_deadline,
                an_op_that_prints_to_stdout_still_returns_its_result,
                an_8_mb_result_comes_back_whole,
                echo_still_works_after_every_failure,
                an_op_raising_system_exit_is_an_exception,
                results_beyond_json_limits_are_parse_errors,
                payloads_beyond_json_limits_are_contract_errors,
                an_op_leaving_a_thread_running_still_returns
                $(, $extra)*
            );
        }
    };
    (@cases $mode:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                super::$case($mode);
            }
        )*
    };
}

// `crash` and `segfault` would end the test process itself in `in_process` mode.
conformance!(in_process, cerebros_bridge::core::config::Mode::InProcess);
conformance!(
    worker_process,
    cerebros_bridge::core::config::Mode::WorkerProcess,
    an_exiting_process_is_a_subprocess_exit,
    a_segfault_is_a_subprocess_exit,
);
conformance!(
    subprocess,
    cerebros_bridge::core::config::Mode::Subprocess,
    an_exiting_process_is_a_subprocess_exit,
    a_segfault_is_a_subprocess_exit,
);
