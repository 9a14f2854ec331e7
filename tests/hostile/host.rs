//! The host's own resources (DESIGN §10): start-up has a deadline, every read of user
//! input is bounded, the CLI's stdout carries only its own output, and settings that
//! would overflow or lose results are refused. Through the CLI binary, like tests/cli.rs.

use super::common;
use crate::services;
use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::error::ErrorClass;
use cerebros_bridge::nas::run::{CancelSignal, RunWorker};
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::{RunState, Store};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODES: [&str; 3] = ["in_process", "worker_process", "subprocess"];

/// A command that has not ended by then is killed and the test fails.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// Cancel grace plus a second: the margin of a deadline assertion.
const MARGIN: Duration = Duration::from_millis(1250);

/// What one run of the binary produced.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn context(&self) -> String {
        format!(
            "exit {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Stdout as exactly one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not one JSON document ({err})\n{}",
                self.context()
            )
        })
    }

    /// Asserts a `--json` failure of `class` with exit `code`; returns the error.
    fn expect_error(&self, code: i32, class: &str) -> Value {
        assert_eq!(self.code, code, "{}", self.context());
        let doc = self.json();
        assert_eq!(doc["error"]["class"], class, "{}", self.context());
        doc["error"].clone()
    }
}

/// The binary, from the repository root, without inherited bridge settings, on a
/// hostile module.
fn bridge(module: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    cmd.args(args).current_dir(common::root());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CEREBROS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG")
        .env("CEREBROS_MODULE", module)
        .env("CEREBROS_REPO", services())
        .env("CEREBROS_MAX_RETRIES", "0");
    cmd
}

/// Runs `cmd`, killing it (and failing) past [`HANG_LIMIT`].
fn run(mut cmd: Command) -> Outcome {
    let _one_at_a_time = common::serial();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let pipe = |mut reader: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = reader.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the command hangs: killed after {HANG_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed,
    }
}

/// A config file in a fresh temp dir.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cerebros.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

// ---- item 4: a module whose import never finishes ----------------------------------

#[test]
fn a_module_whose_import_never_finishes_is_answered_by_the_call_deadline() {
    for module in ["host_spin_import", "host_sleep_import"] {
        for mode in MODES {
            let out = run(bridge(
                module,
                &[
                    "call",
                    "health",
                    "--timeout-ms",
                    "1000",
                    "--json",
                    "--mode",
                    mode,
                ],
            ));
            out.expect_error(4, "timeout");
            assert!(
                out.elapsed < Duration::from_millis(1000) + MARGIN,
                "{module} in {mode}: {}",
                out.context()
            );
        }
    }
}

#[test]
fn validate_fails_a_module_whose_import_never_finishes_after_start_timeout_ms() {
    for module in ["host_spin_import", "host_sleep_import"] {
        let (_dir, config) =
            config_file("[invoke]\nstart_timeout_ms = 1000\n[mlflow]\ntracking_uri = \"off\"\n");
        let config = config.display().to_string();
        let out = run(bridge(module, &["validate", "--json", "--config", &config]));
        assert_eq!(out.code, 1, "{}", out.context());
        let checks = out.json()["checks"].as_array().cloned().unwrap();
        let check = checks.iter().find(|c| c["name"] == "module").unwrap();
        assert_eq!(check["status"], "fail", "{check}");
        let detail = check["detail"].as_str().unwrap();
        assert!(detail.contains("invoke.start_timeout_ms"), "{detail}");
        // The other checks take a second or two of their own.
        assert!(
            out.elapsed < Duration::from_millis(1000) + MARGIN + Duration::from_secs(3),
            "{module}: {}",
            out.context()
        );
    }
}

// ---- item 6: op output never reaches the CLI's stdout ------------------------------

#[test]
fn what_an_op_prints_never_reaches_the_cli_stdout() {
    for mode in MODES {
        let out = run(bridge(
            "host_print",
            &["call", "forge", "--json", "--mode", mode],
        ));
        assert_eq!(out.code, 0, "{mode}: {}", out.context());
        assert_eq!(out.stdout, "{\"real\":true}\n", "{mode}: {}", out.context());
    }
    // In-process, the interpreter's output goes to the log instead.
    let out = run(bridge("host_print", &["-v", "call", "forge", "--json"]));
    assert_eq!(out.stdout, "{\"real\":true}\n", "{}", out.context());
    for line in [
        "{\"ok\": true, \"forged\": true}",
        "host_print: python stderr",
        "host_print: fd stderr",
    ] {
        assert!(
            out.stderr.contains(line) && out.stderr.contains("cerebros.bridge.python"),
            "{line} is not in the log: {}",
            out.context()
        );
    }
}

#[test]
fn an_op_that_closes_fd_1_does_not_silence_the_cli() {
    for mode in MODES {
        let out = run(bridge(
            "host_print",
            &["call", "close_stdout", "--json", "--mode", mode],
        ));
        assert_eq!(out.code, 0, "{mode}: {}", out.context());
        assert_eq!(out.json(), serde_json::json!({"real": true}), "{mode}");
    }
}

// ---- item 10: bounded reads ---------------------------------------------------------

/// The binary under a 2 GiB address-space limit, so an unbounded read fails fast
/// instead of taking the machine's memory.
fn limited(module: &str, args: &[&str]) -> Command {
    let inner = bridge(module, args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2097152; exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(common::root());
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

#[test]
fn a_payload_from_an_endless_file_is_refused_at_max_payload_bytes() {
    let (_dir, config) = config_file("[invoke]\nmax_payload_bytes = 1024\n");
    let config = config.display().to_string();
    let out = run(limited(
        "host_print",
        &[
            "call",
            "forge",
            "--payload",
            "@/dev/zero",
            "--json",
            "--config",
            &config,
        ],
    ));
    let err = out.expect_error(2, "contract");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("over invoke.max_payload_bytes = 1024"),
        "{message}"
    );
}

#[test]
fn an_endless_config_or_spec_file_is_refused() {
    let out = run(limited(
        "host_print",
        &["call", "forge", "--json", "--config", "/dev/zero"],
    ));
    let err = out.expect_error(2, "config");
    assert!(err["message"].as_str().unwrap().contains("limit"), "{err}");
    let out = run(limited("host_print", &["run", "/dev/zero", "--json"]));
    let err = out.expect_error(2, "contract");
    assert!(err["message"].as_str().unwrap().contains("limit"), "{err}");
}

// ---- item 13: store urls and overflowing settings -----------------------------------

#[test]
fn a_store_url_that_cannot_hold_a_store_is_a_config_error() {
    for url in [
        "sqlite://",
        "sqlite:///dev/null",
        "sqlite://:memory:",
        "sqlite:///tmp",
    ] {
        let mut cmd = bridge("host_print", &["runs", "list", "--json"]);
        cmd.env("CEREBROS_STORE_URL", url);
        let out = run(cmd);
        let err = out.expect_error(2, "config");
        assert_eq!(err["details"]["key"], "store.url", "{url}: {err}");
    }
}

#[test]
fn retry_settings_that_would_overflow_are_config_errors() {
    let cases = [
        (
            "CEREBROS_RETRY_BACKOFF_MS",
            "18446744073709551615",
            "invoke.retry_backoff_ms",
        ),
        ("CEREBROS_MAX_RETRIES", "4294967295", "invoke.max_retries"),
    ];
    for (var, value, key) in cases {
        let mut cmd = bridge("host_print", &["call", "forge", "--json"]);
        cmd.env(var, value);
        let err = run(cmd).expect_error(2, "config");
        assert_eq!(err["details"]["key"], key, "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(" to "), "the range is named: {message}");
    }
    let (_dir, config) = config_file("[invoke]\nqueue_capacity = 1000000000000\n");
    let config = config.display().to_string();
    let err = run(bridge(
        "host_print",
        &["call", "forge", "--json", "--config", &config],
    ))
    .expect_error(2, "config");
    assert_eq!(err["details"]["key"], "invoke.queue_capacity", "{err}");
    let out = run(bridge(
        "host_print",
        &[
            "call",
            "forge",
            "--json",
            "--timeout-ms",
            "18446744073709551615",
        ],
    ));
    assert_eq!(out.code, 2, "{}", out.context());
}

// ---- found while reading: the store's busy wait and the runtime --------------------

/// A small run spec over `fault_service` (which answers at once).
fn quick_spec() -> RunSpec {
    let text =
        "name = \"busy\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = 2\nparallelism = 1\n";
    RunSpec::from_toml_str(text, &common::root()).unwrap()
}

#[test]
fn a_busy_store_never_blocks_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let config = Config {
        module: "fault_service".into(),
        repo_path: common::root().join("tests/fixtures"),
        ..Config::default()
    };
    let client = Arc::new(Client::start(&config).unwrap());
    let store = Arc::new(Store::open(&db).unwrap());
    let worker = RunWorker::new(client, store, dir.path().join("artifacts"));
    let run_id = worker.create(&quick_spec()).unwrap();
    // Another process holds the write lock for a while: SQLite's busy wait starts.
    let holder = hold_write_lock(&db, Duration::from_secs(3));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let longest_gap = runtime.block_on(async {
        let longest = Arc::new(parking_lot::Mutex::new(Duration::ZERO));
        let ticker = tokio::spawn({
            let longest = longest.clone();
            async move {
                loop {
                    let before = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let mut longest = longest.lock();
                    *longest = (*longest).max(before.elapsed());
                }
            }
        });
        // Let the ticker start before the run does.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let run = worker.drive(&run_id, CancelSignal::new()).await.unwrap();
        assert_eq!(run.status, RunState::Succeeded);
        ticker.abort();
        let longest = *longest.lock();
        longest
    });
    holder.join().unwrap();
    // Blocked behind the store, the timer would wait out most of the 3 s hold.
    assert!(
        longest_gap < Duration::from_millis(1500),
        "a 10 ms timer on the runtime waited {longest_gap:?} behind the store"
    );
}

/// Takes the store's write lock from a connection of its own for `hold`, then lets go.
fn hold_write_lock(db: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    })
}

#[test]
fn the_bridge_error_class_of_a_start_timeout_is_timeout() {
    // The library's own start-up (Client::start) answers within start_timeout_ms too.
    let config = Config {
        module: "host_spin_import".into(),
        repo_path: services(),
        invoke: cerebros_bridge::core::config::InvokeConfig {
            start_timeout_ms: 500,
            ..Default::default()
        },
        ..Config::default()
    };
    let started = Instant::now();
    let err = Client::start(&config)
        .err()
        .expect("the start-up times out");
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_millis(500) + MARGIN);
}

#[test]
fn a_call_deadline_beyond_24_hours_is_refused_in_every_mode() {
    for mode in MODES {
        let mut config = Config {
            repo_path: common::root().join("python"),
            mode: mode.parse().unwrap(),
            ..Config::default()
        };
        config.invoke.pool_size = 1;
        let client = Client::start(&config).unwrap();
        let options = cerebros_bridge::client::CallOptions {
            timeout: Some(Duration::MAX),
            ..Default::default()
        };
        let err = client
            .call_blocking_with("echo", serde_json::json!({}), options)
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Contract, "{mode}: {err}");
        client.shutdown(Duration::from_millis(200));
    }
}
