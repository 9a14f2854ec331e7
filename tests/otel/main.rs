//! OpenTelemetry export (DESIGN §14), end to end through the CLI: a real OTLP/HTTP
//! collector on a loopback port ([`receiver`]) receives the spans of `call` (one trace,
//! joined by the op's Python context in every mode) and of a small NAS run (`run` →
//! `trial` → `cerebros.bridge.invoke`), also when the run is stopped with Ctrl-C; an
//! unreachable collector delays the CLI by at most `telemetry.flush_timeout_ms`; with no
//! endpoint nothing is exported; `--log-format json` lines carry the trace ids.

#[path = "../common/mod.rs"]
mod common;
mod receiver;

use common::scratch::{Outcome, Scratch};
use common::{root, serial};
use receiver::{black_hole, Received, Receiver};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Variables of the environment the CLI must not inherit from the test's.
const OTEL_VARS: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The CLI on the fault-injection service, without inherited bridge or telemetry
/// settings.
fn bridge(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    cmd.args(args).current_dir(root()).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CEREBROS_") {
            cmd.env_remove(&name);
        }
    }
    for var in OTEL_VARS.into_iter().chain(["RUST_LOG"]) {
        cmd.env_remove(var);
    }
    cmd.env("CEREBROS_MODULE", "fault_service")
        .env("CEREBROS_REPO", "tests/fixtures");
    cmd
}

fn outcome(mut cmd: Command) -> Outcome {
    Outcome::of(cmd.output().expect("the CLI runs"))
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn a_call_is_one_trace_that_the_op_joins_in_every_mode() {
    let _serial = serial();
    for mode in ["in_process", "worker_process", "subprocess"] {
        let collector = Receiver::start();
        let mut cmd = bridge(&["call", "trace_context", "--mode", mode]);
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
            .env("OTEL_SERVICE_NAME", "otel-test");
        let out = outcome(cmd);
        assert_eq!(out.code, 0, "{mode}: {out:?}");
        let spans = collector.wait_for(1);
        assert_eq!(spans.len(), 1, "{mode}: one span: {spans:#?}");
        let invoke = &spans[0];
        assert_eq!(invoke.name, "cerebros.bridge.invoke");
        assert_eq!(invoke.service, "otel-test");
        assert!(invoke.parent.is_empty(), "a call is a root span");
        assert_eq!(invoke.attr("op"), "trace_context");
        assert_eq!(invoke.attr("mode"), mode);
        assert_eq!(invoke.attr("attempt"), 1);
        assert!(invoke.attr("duration_ms").as_f64().unwrap() > 0.0);
        assert_ne!(invoke.status, 2, "{invoke:?}");
        let events: Vec<&str> = invoke.events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(events, ["start", "stop"], "{mode}");
        // The op's Python context is the invoke span: a span it starts is its child.
        assert_eq!(out.json["trace_id"], invoke.trace_id.as_str(), "{mode}");
        assert_eq!(out.json["span_id"], invoke.span_id.as_str(), "{mode}");
    }
}

#[test]
fn spans_go_over_grpc_too() {
    let _serial = serial();
    let collector = Receiver::start_grpc();
    let mut cmd = bridge(&["call", "trace_context"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let out = outcome(cmd);
    assert_eq!(out.code, 0, "{out:?}");
    let spans = collector.wait_for(1);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].name, "cerebros.bridge.invoke");
    assert_eq!(out.json["trace_id"], spans[0].trace_id.as_str());
}

#[test]
fn a_failed_call_is_an_error_span_with_its_class_and_excerpts() {
    let _serial = serial();
    let collector = Receiver::start();
    let long = "x".repeat(5000);
    let payload = format!(r#"{{"message": "{long}"}}"#);
    let mut cmd = bridge(&["call", "fail", "--payload", &payload]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url);
    let out = outcome(cmd);
    assert_eq!(out.code, 1, "{out:?}");
    let spans = collector.wait_for(1);
    let invoke = &named(&spans, "cerebros.bridge.invoke")[0];
    assert_eq!(
        invoke.service, "cerebros-bridge",
        "the default service name"
    );
    assert_eq!(invoke.status, 2, "status ERROR: {invoke:?}");
    assert_eq!(invoke.attr("error_class"), "exception");
    let (_, start) = invoke
        .events
        .iter()
        .find(|(name, _)| name == "start")
        .expect("a start event");
    let excerpt = start["payload_excerpt"].as_str().unwrap();
    assert_eq!(
        excerpt.chars().count(),
        1024,
        "cut to 1024 chars: {excerpt}"
    );
    let (_, exception) = invoke
        .events
        .iter()
        .find(|(name, _)| name == "exception")
        .expect("an exception event");
    assert_eq!(exception["error_class"], "exception");
    let message = exception["error_excerpt"].as_str().unwrap();
    assert_eq!(message.chars().count(), 1024, "{message}");
}

#[test]
fn a_run_is_one_trace_of_trials_and_their_calls() {
    let _serial = serial();
    let collector = Receiver::start();
    let scratch = Scratch::new("otel-run", 3, 2);
    let mut cmd = scratch.command(&["run", &scratch.spec(), "--json"], None);
    for var in OTEL_VARS {
        cmd.env_remove(var);
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("NAS_FIXTURE_SLEEP", "0");
    let out = outcome(cmd);
    assert_eq!(out.code, 0, "{out:?}");
    let run_id = out.json["run"]["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();
    // run + 3 trials + start_run, 3 run_trial, record_trial(s), finalize_run.
    let spans = collector.wait_for(9);
    let runs = named(&spans, "run");
    assert_eq!(runs.len(), 1, "{spans:#?}");
    let run = runs[0];
    assert!(run.parent.is_empty(), "the run is the trace's root");
    assert_eq!(run.attr("run_id"), run_id.as_str());
    assert_eq!(run.attr("run.name"), "otel-run");
    assert_eq!(run.attr("dataset"), "sklearn:iris");
    assert_eq!(run.attr("objective"), "val_accuracy");
    assert_eq!(run.attr("status"), "succeeded");
    assert_eq!(run.attr("trials_completed"), 3);
    assert!(run.attr("best_metric").as_f64().is_some(), "{run:?}");
    assert!(
        spans.iter().all(|s| s.trace_id == run.trace_id),
        "one trace: {spans:#?}"
    );

    let trials = named(&spans, "trial");
    assert_eq!(trials.len(), 3, "{trials:#?}");
    let mut indexes: Vec<i64> = trials
        .iter()
        .map(|t| t.attr("index").as_i64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    for trial in &trials {
        assert_eq!(trial.parent, run.span_id, "a trial's parent is its run");
        assert_eq!(trial.attr("status"), "succeeded");
        assert!(
            trial.attr("objective_value").as_f64().is_some(),
            "{trial:?}"
        );
        let calls: Vec<&Received> = named(&spans, "cerebros.bridge.invoke")
            .into_iter()
            .filter(|call| call.parent == trial.span_id)
            .collect();
        let ops: Vec<&str> = calls
            .iter()
            .map(|c| c.attr("op").as_str().unwrap())
            .collect();
        assert!(ops.contains(&"run_trial"), "{trial:?}: {ops:?}");
    }
    for op in ["start_run", "finalize_run"] {
        let call = named(&spans, "cerebros.bridge.invoke")
            .into_iter()
            .find(|c| c.attr("op") == op)
            .unwrap_or_else(|| panic!("a {op} span: {spans:#?}"));
        assert_eq!(call.parent, run.span_id, "{op} runs under the run");
        assert_eq!(call.attr("run_id"), run_id.as_str());
    }
}

#[test]
fn ctrl_c_flushes_the_spans_of_a_cancelled_run() {
    let _serial = serial();
    let collector = Receiver::start();
    let scratch = Scratch::new("otel-cancel", 40, 2);
    let mut cmd = scratch.command(&["run", &scratch.spec(), "--json"], None);
    for var in OTEL_VARS {
        cmd.env_remove(var);
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Two trials of 0.5 s each are under way well before this.
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = Outcome::of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 130, "{out:?}");
    let spans = collector.wait_for(1);
    let run = named(&spans, "run");
    assert_eq!(run.len(), 1, "the run span was flushed: {spans:#?}");
    assert_eq!(run[0].attr("status"), "cancelled");
}

#[test]
fn an_unreachable_collector_delays_the_cli_by_at_most_the_flush_timeout() {
    let _serial = serial();
    let baseline = {
        let started = Instant::now();
        let out = outcome(bridge(&["call", "health"]));
        assert_eq!(out.code, 0, "{out:?}");
        started.elapsed()
    };
    let flush = Duration::from_millis(1000);
    // A collector that accepts and never answers, and a port nobody listens on.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for endpoint in [black_hole(), refused] {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[telemetry]\notlp_endpoint = \"{endpoint}\"\nflush_timeout_ms = {}\n",
                flush.as_millis()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let mut cmd = bridge(&["call", "health"]);
        cmd.arg("--config").arg(config.path());
        let out = outcome(cmd);
        let took = started.elapsed();
        assert_eq!(out.code, 0, "{endpoint}: the call succeeds: {out:?}");
        assert_eq!(out.json["status"], "ok");
        // The deadline is the feature: the flush timeout plus a generous margin for
        // a loaded machine.
        let limit = baseline + flush + Duration::from_secs(3);
        assert!(took < limit, "{endpoint}: {took:?}, baseline {baseline:?}");
    }
}

#[test]
fn nothing_is_exported_without_an_endpoint() {
    let _serial = serial();
    let collector = Receiver::start();
    // The variable the OTLP library itself would read: the bridge builds no exporter.
    let mut cmd = bridge(&["call", "trace_context"]);
    cmd.env(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("{}/v1/traces", collector.url),
    );
    let out = outcome(cmd);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json,
        serde_json::json!({}),
        "no trace context in Python"
    );
    // A sample ratio of 0 exports nothing either, while 1 does.
    for (ratio, expected) in [(0.0, 0), (1.0, 1)] {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[telemetry]\notlp_endpoint = \"{}\"\nsample_ratio = {ratio:.1}\n",
                collector.url
            ),
        )
        .unwrap();
        let mut cmd = bridge(&["call", "health"]);
        cmd.arg("--config").arg(config.path());
        assert_eq!(outcome(cmd).code, 0);
        assert_eq!(
            collector.wait_for(expected).len(),
            expected,
            "ratio {ratio}"
        );
    }
}

#[test]
fn json_log_lines_carry_the_trace_and_span_ids() {
    let _serial = serial();
    let collector = Receiver::start();
    let mut cmd = bridge(&["call", "fail", "--log-format", "json", "-v"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url);
    let out = outcome(cmd);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let exception = lines
        .iter()
        .find(|l| l["fields"]["event"] == "exception")
        .unwrap_or_else(|| panic!("an exception line: {}", out.stderr));
    let spans = collector.wait_for(1);
    let invoke = &named(&spans, "cerebros.bridge.invoke")[0];
    assert_eq!(
        exception["openTelemetry"]["traceId"],
        invoke.trace_id.as_str()
    );
    assert_eq!(
        exception["openTelemetry"]["spanId"],
        invoke.span_id.as_str()
    );

    // Without an exporter the lines still carry ids.
    let out = outcome(bridge(&["call", "fail", "--log-format", "json", "-v"]));
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("\"exception\""))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    let line: Value = serde_json::from_str(line).unwrap();
    let trace_id = line["openTelemetry"]["traceId"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "{line}");
}

#[test]
fn a_bad_endpoint_is_a_config_error_naming_the_key() {
    for endpoint in ["https://collector:4318", "collector:4318", "http://:4318"] {
        let mut cmd = bridge(&["call", "health"]);
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        let out = outcome(cmd);
        assert_eq!(out.code, 2, "{endpoint}: {out:?}");
        assert!(
            out.stderr.contains("telemetry.otlp_endpoint")
                && out.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{endpoint}: {}",
            out.stderr
        );
    }
}
