//! `cerebros-bridge call OP`: one call of one op, its result on stdout. Ctrl-C cancels
//! the call (its work stops in every mode) and exits 130.

use super::interrupt::{Interrupts, EXIT_INTERRUPTED};
use super::output::{self, EXIT_OK};
use super::runtime::{runtime, Threads};
use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, Mode, MAX_TIMEOUT_MS};
use cerebros_bridge::core::error::{BridgeError, ErrorClass, Result};
use cerebros_bridge::nas::executor::ExecutorSettings;
use cerebros_bridge::{core::payload, inprocess::interpreter};
use clap::Args;
use pyo3::Python;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long running calls may finish once the result is in.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Arguments of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The op: a public function of the service module (e.g. health, echo).
    #[arg(value_name = "OP")]
    op: String,

    /// The payload: a JSON object, or @FILE to read it from a file [default: {}].
    #[arg(long, value_name = "JSON|@FILE")]
    payload: Option<String>,

    /// Execution mode, overriding the config: in_process, worker_process or subprocess.
    #[arg(long, value_name = "M")]
    mode: Option<String>,

    /// Deadline of each attempt in milliseconds (default: invoke.default_timeout_ms).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    timeout_ms: Option<u64>,

    /// Print one JSON document on stdout (the result, or {"ok": false, "error": ...}).
    #[arg(long)]
    json: bool,
}

/// Runs `call` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &CallArgs) -> i32 {
    let interrupted = BridgeError::new(
        ErrorClass::Cancelled,
        "interrupted (Ctrl-C): the call was cancelled",
    )
    .with_op(&args.op);
    let json = args.json;
    // Before anything imports the service module (see `interrupt`).
    let report_interrupted = {
        let err = interrupted.clone();
        move || {
            output::report_error(&err, json);
        }
    };
    let interrupts = match Interrupts::install(report_interrupted) {
        Ok(interrupts) => interrupts,
        Err(err) => {
            let message = format!("cannot install the Ctrl-C handler: {err}");
            let err = BridgeError::new(ErrorClass::SystemError, message).with_source(err);
            return output::report_error(&err, json);
        }
    };
    let outcome = call(config_path, args, &interrupts);
    // The outcome is reported once: by this thread, or by the watcher that ends the
    // process when Ctrl-C was not answered in time.
    if !interrupts.claim_report() {
        return EXIT_INTERRUPTED;
    }
    match outcome {
        Ok(Some(result)) => {
            output::print_json(&result, json);
            EXIT_OK
        }
        Ok(None) => {
            output::report_error(&interrupted, json);
            EXIT_INTERRUPTED
        }
        Err(err) => output::report_error(&err, json),
    }
}

/// Starts the client and makes the call: its result, or `None` when Ctrl-C came first
/// (the call's future is then dropped, which stops its work in every mode).
fn call(
    config_path: Option<&Path>,
    args: &CallArgs,
    interrupts: &Interrupts,
) -> Result<Option<Value>> {
    let mut config = load_config(config_path, args.mode.as_deref())?;
    let payload = parse_payload(args.payload.as_deref(), &config)?;
    // The call's deadline covers the bridge's start-up too.
    let timeout_ms = args.timeout_ms.unwrap_or(config.invoke.default_timeout_ms);
    config.invoke.start_timeout_ms = config.invoke.start_timeout_ms.min(timeout_ms);
    if config.mode == Mode::InProcess {
        // The interpreter's main thread is this one: the only one that may set the
        // wakeup fd (and the one an in-process import runs on).
        interpreter::ensure_started(config.python_executable.as_deref())?;
        if let Err(err) = Python::attach(|py| interrupts.watch_python(py)) {
            tracing::warn!("Ctrl-C may not reach the CLI while a Python handler is set: {err}");
        }
    }
    let client = Client::start(&config)?;
    interrupts.settle();
    let options = CallOptions {
        timeout: args.timeout_ms.map(Duration::from_millis),
        ..CallOptions::default()
    };
    let runtime = runtime(Threads::Caller)?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = client.call_with(&args.op, payload, options) => outcome.map(Some),
            () = interrupts.wait() => Ok(None),
        }
    });
    if config.mode == Mode::InProcess && args.op.starts_with("ray_") && args.op != "ray_disconnect"
    {
        // A `ray_*` op may have made this interpreter a Ray driver (`ray_connect` starts a
        // local Ray): shut it down as `run` does, or the exit tears Ray's threads down
        // under them (a crash) and leaves the local Ray's processes behind.
        runtime.block_on(ExecutorSettings::from_config(&config).disconnect(&client));
    }
    client.shutdown(SHUTDOWN_GRACE);
    outcome
}

/// Loads the configuration and applies the `--mode` override.
fn load_config(path: Option<&Path>, mode: Option<&str>) -> Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(name) = mode {
        config.mode = parse_mode(name)?;
    }
    Ok(config)
}

/// Parses a `--mode` value into a `config` error that says what is accepted.
fn parse_mode(name: &str) -> Result<Mode> {
    name.parse::<Mode>().map_err(|err| {
        BridgeError::new(ErrorClass::Config, format!("--mode: {err}"))
            .with_detail("key", "mode")
            .with_detail("source", "--mode")
            .with_source(err)
    })
}

/// The payload of `--payload` (JSON text or @FILE), `{}` when absent.
fn parse_payload(arg: Option<&str>, config: &Config) -> Result<Value> {
    payload::load_payload_arg(arg.unwrap_or("{}"), config.invoke.max_payload_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_parse_and_bad_ones_are_config_errors() {
        assert_eq!(parse_mode("in_process").unwrap(), Mode::InProcess);
        let err = parse_mode("fast").unwrap_err();
        assert_eq!(err.class, ErrorClass::Config);
        assert!(err.message.contains("\"fast\""), "{}", err.message);
        assert!(err.message.contains("in_process"), "{}", err.message);
    }
}
