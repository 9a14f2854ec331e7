//! Integration tests of `cerebros-bridge bench`, run as a user would, from the
//! repository root.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary, run from the repository root without any inherited bridge settings.
fn bridge(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    cmd.args(args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CEREBROS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.output().expect("the binary runs")
}

/// Stdout parsed as one JSON document, with the exit code checked first.
fn json_of(output: &Output, code: i32) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("stdout is not one JSON document ({err}):\n{stdout}"))
}

/// `doc[path...]` is a number above zero.
fn positive(doc: &Value, path: &[&str]) -> f64 {
    let value = path.iter().fold(doc, |v, key| &v[*key]);
    let number = value
        .as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {doc}", path.join(".")));
    assert!(number > 0.0, "{} = {number} in {doc}", path.join("."));
    number
}

#[test]
fn bench_json_reports_every_mode_floor_and_ratio() {
    let output = bridge(&[
        "bench",
        "--modes",
        "in_process,worker_process",
        "--calls",
        "200",
        "--concurrency",
        "4",
        "--json",
    ]);
    let doc = json_of(&output, 0);
    for mode in ["in_process", "worker_process"] {
        for key in ["p50_us", "p99_us", "calls_per_s"] {
            positive(&doc, &["modes", mode, key]);
        }
        assert_eq!(positive(&doc, &["modes", mode, "calls"]), 200.0, "{doc}");
        assert_eq!(positive(&doc, &["concurrent", mode, "concurrency"]), 4.0);
        assert_eq!(positive(&doc, &["concurrent", mode, "calls"]), 200.0);
        positive(&doc, &["concurrent", mode, "calls_per_s"]);
    }
    assert!(doc["modes"].get("subprocess").is_none(), "{doc}");
    positive(&doc, &["cache_hit", "p50_us"]);
    positive(&doc, &["cache_hit", "p99_us"]);
    for floor in ["handoff", "inline", "pipe", "python_child", "python_start"] {
        positive(&doc, &["floors", &format!("{floor}_p50_us")]);
        positive(&doc, &["floors", &format!("{floor}_p99_us")]);
    }
    assert_eq!(doc["cache_hit"]["result_bytes"], 27, "{doc}");
    for ratio in [
        "worker_process_p50_over_pipe_floor",
        "worker_process_p50_over_in_process_p50",
        "in_process_p50_over_handoff_floor",
        "in_process_p50_over_inline_floor",
        "worker_process_p50_over_python_child_floor",
    ] {
        positive(&doc, &["ratios", ratio]);
    }
    // No subprocess figures, so no ratio that needs them.
    assert!(doc["ratios"]
        .get("subprocess_p50_over_in_process_p50")
        .is_none());
    positive(&doc, &["machine", "cores"]);
    assert!(
        doc["machine"]["python_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    positive(&doc, &["payload_bytes"]);
    assert!(doc["targets"]["worker_process_pipelined_calls_per_s"]["met"].is_boolean());
}

#[test]
fn bench_refuses_an_unknown_mode_as_a_config_error() {
    let output = bridge(&["bench", "--modes", "nope", "--json"]);
    let doc = json_of(&output, 2);
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["error"]["class"], "config", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"nope\""), "{message}");
    assert!(message.contains("in_process"), "{message}");

    // Without --json the error goes to stderr, with the same exit code.
    let plain = bridge(&["bench", "--modes", "in_process,nope"]);
    assert_eq!(plain.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("error[config]"));
}
