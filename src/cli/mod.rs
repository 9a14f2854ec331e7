//! The command line: argument parsing, logging set-up and dispatch to subcommands.

mod bench;
mod call;
mod interrupt;
mod logging;
mod mlflow;
pub mod output;
mod run;
mod runs;
mod runtime;
mod serve;
pub mod stdio;
mod validate;

use cerebros_bridge::core::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes, shown in `--help`.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure (the op raised, returned an unreadable result, the bridge failed,
     or a `validate` check failed)
  2  bad input: invalid payload, op name, option or configuration (contract, config)
  3  a dependency is missing: the bridge is disabled, or the service module or a
     package it needs cannot be imported (dependency)
  4  the call did not finish before its deadline (timeout)
  130  interrupted by Ctrl-C (`call`: the call was cancelled)";

/// Runs the cerebros NAS service from Rust, in-process, with hard per-call timeouts.
#[derive(Debug, Parser)]
#[command(name = "cerebros-bridge", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Config file (default: $CEREBROS_CONFIG, else ./cerebros.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// How log lines are written on stderr: text, or json (one object per line, with
    /// the OpenTelemetry trace and span ids).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    log_format: logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check the environment: config, interpreter, packages, service module, store.
    #[command(
        after_help = "Exit codes:\n  0  no check failed (warnings allowed)\n  1  at least one check failed"
    )]
    Validate(validate::ValidateArgs),
    /// Call one op of the service module and print its result.
    #[command(after_help = EXIT_CODES_HELP)]
    Call(call::CallArgs),
    /// Run a whole NAS run from a spec, with a progress display (Ctrl-C cancels).
    #[command(
        after_help = "Exit codes:\n  0  the run succeeded\n  1  it failed\n  2  invalid spec or config (or the service refused the run's values)\n  3  a package the run needs is missing (e.g. keras for trainer = \"keras\")\n  130  it was cancelled"
    )]
    Run(run::RunArgs),
    /// The runs in the store: list, show, resume, cancel, submit.
    Runs(runs::RunsArgs),
    /// Serve the HTTP API, the run queue and the live run page (Ctrl-C stops).
    Serve(serve::ServeArgs),
    /// MLflow, a view of the store: `mlflow sync` flushes the pending runs and trials.
    Mlflow(mlflow::MlflowArgs),
    /// Measure the execution modes side by side: per-call p50/p99, calls/s alone and
    /// with concurrent callers, cache hits, and the hand-off and pipe floors.
    #[command(after_help = EXIT_CODES_HELP)]
    Bench(bench::BenchArgs),
}

/// Parses the command line, sets up logging and runs the subcommand; returns the
/// process exit code. Errors in the arguments themselves exit 2 through clap.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let captured = stdio::capture();
    let config_path = cli.config.as_deref();
    // A config that does not load is the command's to report; it exports nothing.
    let telemetry = Config::load(config_path)
        .map(|config| config.telemetry)
        .unwrap_or_default();
    if let Err(err) = logging::init(cli.verbose, cli.log_format, &telemetry) {
        return output::report_error(&err, false);
    }
    if let Err(err) = captured {
        tracing::warn!("cannot keep the interpreter's output off stdout: {err}");
    }
    let code = match &cli.command {
        Command::Validate(args) => validate::run(config_path, args),
        Command::Call(args) => call::run(config_path, args),
        Command::Run(args) => run::run(config_path, args),
        Command::Runs(args) => runs::run(config_path, args),
        Command::Serve(args) => serve::run(config_path, args),
        Command::Mlflow(args) => mlflow::run(config_path, args),
        Command::Bench(args) => bench::run(config_path, args),
    };
    logging::finish();
    code
}
