//! Integration tests of the `cerebros-bridge` binary: `call` and `validate`, run as
//! a user would, from the repository root.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one run of the binary produced.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    /// Stdout parsed as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output when it differs.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a `--json` failure of `class` and returns its error object.
    fn expect_error(&self, code: i32, class: &str) -> Value {
        self.expect_code(code);
        let doc = self.json();
        assert_eq!(doc["ok"], false, "{doc}");
        assert_eq!(doc["error"]["class"], class, "{doc}");
        doc["error"].clone()
    }
}

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One binary at a time: each starts an interpreter, and the machine is small.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary, run from the repository root without any inherited bridge settings.
fn bridge(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    cmd.args(args).current_dir(root());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CEREBROS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// The binary pointed at the fault-injection service of `tests/fixtures`.
fn fault_bridge(args: &[&str]) -> Command {
    let mut cmd = bridge(args);
    cmd.env("CEREBROS_MODULE", "fault_service")
        .env("CEREBROS_REPO", "tests/fixtures");
    cmd
}

/// Runs `cmd` to completion.
fn run(mut cmd: Command) -> Outcome {
    let _one_at_a_time = serial();
    let started = Instant::now();
    let out = cmd.output().expect("the binary runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A file under the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("cerebros-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, content).expect("temp file written");
        TempFile(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn call_health_reports_ok() {
    let out = run(bridge(&["call", "health", "--json"]));
    out.expect_code(0);
    assert_eq!(out.json()["status"], "ok");
    assert_eq!(out.stdout.trim().lines().count(), 1, "--json is one line");
}

#[test]
fn call_echo_round_trips_the_payload() {
    let payload = json!({"a": [1, 2, {"b": "ü"}]});
    let out = run(bridge(&[
        "call",
        "echo",
        "--payload",
        &payload.to_string(),
        "--json",
    ]));
    out.expect_code(0);
    assert_eq!(out.json(), payload);
}

#[test]
fn call_echo_pretty_prints_without_json_flag() {
    let out = run(bridge(&["call", "echo", "--payload", r#"{"n": 1}"#]));
    out.expect_code(0);
    assert!(out.stdout.lines().count() > 1, "{}", out.stdout);
    assert_eq!(out.json(), json!({"n": 1}));
}

#[test]
fn call_echo_reads_the_payload_from_a_file() {
    let file = TempFile::new("payload.json", r#"{"from": "file", "n": [1.5]}"#);
    let arg = format!("@{}", file.path());
    let out = run(bridge(&["call", "echo", "--payload", &arg, "--json"]));
    out.expect_code(0);
    assert_eq!(out.json(), json!({"from": "file", "n": [1.5]}));
}

#[test]
fn malformed_payload_is_a_contract_error() {
    let out = run(bridge(&["call", "echo", "--payload", "{\"a\": ", "--json"]));
    let err = out.expect_error(2, "contract");
    assert!(err["message"].is_string(), "{err}");
}

#[test]
fn malformed_payload_without_json_goes_to_stderr() {
    let out = run(bridge(&["call", "echo", "--payload", "{nope"]));
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("error[contract]: "), "{}", out.stderr);
}

#[test]
fn array_payload_is_a_contract_error() {
    let out = run(bridge(&["call", "echo", "--payload", "[1, 2]", "--json"]));
    let err = out.expect_error(2, "contract");
    assert!(err["message"].as_str().unwrap().contains("array"), "{err}");
}

#[test]
fn private_and_dunder_ops_are_refused() {
    for op in ["__init__", "_private"] {
        let out = run(bridge(&["call", op, "--json"]));
        out.expect_error(2, "contract");
    }
}

#[test]
fn unknown_op_is_a_contract_error() {
    let out = run(bridge(&["call", "nope", "--json"]));
    let err = out.expect_error(2, "contract");
    assert!(
        err["message"].as_str().unwrap().contains("unknown op"),
        "{err}"
    );
}

#[test]
fn unknown_mode_exits_2_naming_the_choices() {
    let out = run(bridge(&["call", "health", "--mode", "fast"]));
    out.expect_code(2);
    assert!(out.stderr.contains("fast"), "{}", out.stderr);
    assert!(out.stderr.contains("in_process"), "{}", out.stderr);
    let out = run(bridge(&["call", "health", "--mode", "fast", "--json"]));
    out.expect_error(2, "config");
}

#[test]
fn unknown_config_key_exits_2_naming_it() {
    let file = TempFile::new("bad.toml", "[invoke]\npool_sise = 2\n");
    let out = run(bridge(&["--config", &file.path(), "call", "health"]));
    out.expect_code(2);
    assert!(out.stderr.contains("pool_sise"), "{}", out.stderr);
    let out = run(bridge(&[
        "call",
        "health",
        "--json",
        "--config",
        &file.path(),
    ]));
    let err = out.expect_error(2, "config");
    assert!(
        err["message"].as_str().unwrap().contains("pool_sise"),
        "{err}"
    );
}

#[test]
fn zero_pool_size_from_env_exits_2_naming_the_key() {
    let mut cmd = bridge(&["call", "health"]);
    cmd.env("CEREBROS_POOL_SIZE", "0");
    let out = run(cmd);
    out.expect_code(2);
    assert!(out.stderr.contains("invoke.pool_size"), "{}", out.stderr);
}

#[test]
fn help_documents_exit_codes() {
    for args in [&["--help"][..], &["call", "--help"][..]] {
        let out = run(bridge(args));
        out.expect_code(0);
        assert!(out.stdout.contains("Exit codes"), "{}", out.stdout);
        assert!(out.stdout.contains("timeout"), "{}", out.stdout);
    }
}

#[test]
fn validate_passes_in_this_repo() {
    let out = run(bridge(&["validate", "--json"]));
    out.expect_code(0);
    let doc = out.json();
    assert_eq!(doc["ok"], true, "{doc}");
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let expected = [
        "config",
        "enabled",
        "python",
        "interpreter",
        "packages",
        "repo_path",
        "module",
        "ops",
        "store",
        "mode",
        "mlflow",
        "telemetry",
        "executor",
    ];
    assert_eq!(names, expected);
    for check in doc["checks"].as_array().unwrap() {
        assert_ne!(check["status"], "fail", "{check}");
    }
    let ops = &doc["checks"][names.iter().position(|n| *n == "ops").unwrap()];
    assert_eq!(
        ops["detail"],
        "cerebros_service: 14 ops: echo, finalize_run, health, ray_cancel, ray_connect, \
         ray_disconnect, ray_end_run, ray_start_run, ray_submit, ray_wait, record_trial, \
         run_trial, start_run, sync_mlflow"
    );
}

#[test]
fn validate_text_has_a_line_per_check_and_a_summary() {
    let out = run(bridge(&["validate"]));
    out.expect_code(0);
    assert!(out.stdout.contains("ok    config: "), "{}", out.stdout);
    assert!(out.stdout.contains("0 failed"), "{}", out.stdout);
}

#[test]
fn validate_fails_on_a_missing_repo_path_and_goes_on() {
    let mut cmd = bridge(&["validate", "--json"]);
    cmd.env("CEREBROS_REPO", "/nonexistent");
    let out = run(cmd);
    out.expect_code(1);
    let doc = out.json();
    assert_eq!(doc["ok"], false);
    let repo = named_check(&doc, "repo_path");
    assert_eq!(repo["status"], "fail", "{repo}");
    assert!(
        repo["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "{repo}"
    );
    let store = named_check(&doc, "store");
    assert_eq!(store["status"], "ok", "later checks still run: {store}");
}

#[test]
fn validate_text_shows_fail_and_hint() {
    let mut cmd = bridge(&["validate"]);
    cmd.env("CEREBROS_REPO", "/nonexistent");
    let out = run(cmd);
    out.expect_code(1);
    assert!(out.stdout.contains("FAIL  repo_path: "), "{}", out.stdout);
    assert!(out.stdout.contains("  hint: "), "{}", out.stdout);
}

#[test]
fn validate_reports_every_bad_variable_and_goes_on_with_the_rest() {
    let mut cmd = bridge(&["validate", "--json"]);
    cmd.env("CEREBROS_POOL_SIZE", "0")
        .env("CEREBROS_EXECUTOR", "bogus")
        .env("CEREBROS_REPO", root().join("tests/fixtures"))
        .env("CEREBROS_MODULE", "fault_service");
    let out = run(cmd);
    out.expect_code(1);
    let doc = out.json();
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks[0]["name"], "config");
    assert_eq!(checks[0]["status"], "fail");
    let detail = checks[0]["detail"].as_str().unwrap();
    assert!(detail.contains("invoke.pool_size"), "{detail}");
    assert!(detail.contains("executor.kind"), "{detail}");
    let hint = checks[0]["hint"].as_str().unwrap();
    assert!(hint.contains("CEREBROS_POOL_SIZE"), "{hint}");
    assert!(hint.contains("CEREBROS_EXECUTOR"), "{hint}");
    // The variables that are right still count: the service module named by them loads.
    let failed: Vec<&Value> = checks.iter().filter(|c| c["status"] == "fail").collect();
    assert_eq!(failed.len(), 1, "only the config fails: {failed:?}");
    let module = named_check(&doc, "module");
    assert_eq!(module["status"], "ok", "{module}");
    assert!(
        module["detail"]
            .as_str()
            .unwrap()
            .starts_with("fault_service"),
        "{module}"
    );
}

#[test]
fn validate_with_a_bad_config_file_goes_on_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cerebros.toml");
    std::fs::write(&file, "[invoke]\npool_size = \"two\"\n").unwrap();
    let out = run(bridge(&[
        "validate",
        "--json",
        "--config",
        file.to_str().unwrap(),
    ]));
    out.expect_code(1);
    let doc = out.json();
    let config = &doc["checks"][0];
    assert_eq!(config["status"], "fail", "{config}");
    assert!(
        config["hint"]
            .as_str()
            .unwrap()
            .ends_with("later checks use the defaults"),
        "{config}"
    );
    let module = named_check(&doc, "module");
    assert_eq!(module["status"], "ok", "{module}");
}

/// The check called `name` in a `validate --json` document.
fn named_check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let checks = doc["checks"].as_array().expect("a checks list");
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doc}"))
}

#[test]
fn a_raising_op_is_an_exception_with_its_traceback() {
    let out = run(fault_bridge(&["call", "fail", "--json"]));
    let err = out.expect_error(1, "exception");
    let traceback = err["details"]["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains("ValueError"), "{err}");
}

#[test]
fn a_raising_op_prints_its_traceback_on_stderr() {
    let out = run(fault_bridge(&["call", "fail"]));
    out.expect_code(1);
    assert!(out.stderr.contains("error[exception]: "), "{}", out.stderr);
    assert!(out.stderr.contains("ValueError"), "{}", out.stderr);
}

#[test]
fn a_late_call_times_out_and_the_process_exits_promptly() {
    let mut cmd = fault_bridge(&[
        "call",
        "sleep",
        "--payload",
        r#"{"seconds": 30}"#,
        "--timeout-ms",
        "300",
        "--json",
    ]);
    cmd.env("CEREBROS_MAX_RETRIES", "0");
    let out = run(cmd);
    out.expect_error(4, "timeout");
    // The deadline plus the process's own start-up, generously: far below the 30 s sleep.
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn an_unreadable_result_is_a_parse_error() {
    let out = run(fault_bridge(&["call", "return_set", "--json"]));
    out.expect_error(1, "parse_error");
}

#[test]
fn a_fifo_nobody_writes_to_as_spec_or_config_is_read_as_empty_at_once() {
    // Opening it waited for a writer in open(2), where Ctrl-C did nothing.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.display().to_string();
    let spec = run(bridge(&["run", &fifo, "--json"]));
    assert_eq!(spec.code, 2, "{}", spec.stderr);
    assert!(spec.stdout.contains("name is required"), "{}", spec.stdout);
    let config = run(bridge(&["--config", &fifo, "validate", "--json"]));
    assert_ne!(config.code, -1, "{}", config.stderr);
    assert!(spec.elapsed < Duration::from_secs(30) && config.elapsed < Duration::from_secs(30));
}

#[test]
fn a_traceback_is_shown_for_an_exception_not_for_an_error_the_service_meant() {
    // A bad dataset is the service's `contract` error: its message says it all, and a
    // traceback under it buried the line that matters.
    let meant = run(bridge(&["call", "start_run", "--payload", "{}"]));
    assert_eq!(meant.code, 2, "{}", meant.stderr);
    assert!(
        meant.stderr.starts_with("error[contract]"),
        "{}",
        meant.stderr
    );
    assert!(!meant.stderr.contains("Traceback"), "{}", meant.stderr);
    let raised = run(fault_bridge(&["call", "fail", "--payload", "{}"]));
    assert!(
        raised.stderr.starts_with("error[exception]"),
        "{}",
        raised.stderr
    );
    assert!(raised.stderr.contains("Traceback"), "{}", raised.stderr);
}

#[test]
fn a_start_up_past_a_tiny_deadline_is_a_timeout_in_every_mode() {
    // worker_process answered `system_error` when even spawning its children took longer.
    for mode in ["in_process", "worker_process", "subprocess"] {
        for _ in 0..3 {
            let out = run(bridge(&[
                "call",
                "health",
                "--timeout-ms",
                "1",
                "--mode",
                mode,
                "--json",
            ]));
            let doc: Value = serde_json::from_str(&out.stdout).unwrap();
            if doc["ok"] == true {
                continue; // done within the millisecond
            }
            assert_eq!(doc["error"]["class"], "timeout", "{mode}: {doc}");
            assert_eq!(out.code, 4, "{mode}");
        }
    }
}
