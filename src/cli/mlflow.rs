//! `cerebros-bridge mlflow sync`: flush the store's MLflow outbox now.

use super::output::{self, EXIT_FAILURE, EXIT_OK};
use cerebros_bridge::config::Config;
use cerebros_bridge::error::{BridgeError, ErrorClass, Result};
use cerebros_bridge::store::{self, Store};
use cerebros_bridge::sync::{FlushReport, MlflowSync, SyncSettings};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Arguments of `mlflow`.
#[derive(Debug, Args)]
pub struct MlflowArgs {
    #[command(subcommand)]
    command: MlflowCommand,

    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
}

/// The `mlflow` subcommands.
#[derive(Debug, Subcommand)]
enum MlflowCommand {
    /// Sync every pending run and trial to MLflow now (mlflow.tracking_uri, or
    /// MLFLOW_TRACKING_URI); prints {"synced", "pending", "failed", "errors"} with --json.
    #[command(
        after_help = "Exit codes:\n  0  every item tried was synced\n  1  some could not be synced; they stay pending\n  2  invalid config"
    )]
    Sync,
}

/// Runs `mlflow …` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &MlflowArgs) -> i32 {
    let outcome = Config::load(config_path).and_then(|config| match args.command {
        MlflowCommand::Sync => sync(&config),
    });
    match outcome {
        Ok((uri, report)) => {
            if args.json {
                output::print_json(&serde_json::to_value(&report).unwrap_or_default(), false);
            } else {
                print_report(&uri, &report);
            }
            if report.failed == 0 {
                EXIT_OK
            } else {
                EXIT_FAILURE
            }
        }
        Err(err) => output::report_error(&err, args.json),
    }
}

/// One forced flush of the outbox: every pending item, due or not.
fn sync(config: &Config) -> Result<(String, FlushReport)> {
    let store_file = store::store_path(&config.store.url)?;
    let store = Arc::new(Store::open(&store_file)?);
    if !cerebros_bridge::sync::enabled(config) {
        return Err(BridgeError::new(
            ErrorClass::Config,
            "MLflow sync is off (mlflow.tracking_uri = \"off\"); set mlflow.tracking_uri or MLFLOW_TRACKING_URI to sync",
        ));
    }
    let settings = SyncSettings::from_config(config, &store_file);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            BridgeError::new(
                ErrorClass::SystemError,
                format!("cannot start a runtime: {e}"),
            )
        })?;
    let pending = store.outbox_counts()?.pending;
    if pending == 0 {
        // Nothing to do: no need to start Python at all.
        return Ok((settings.tracking_uri().to_owned(), FlushReport::default()));
    }
    let sync = MlflowSync::start(&settings, store)?;
    let report = runtime.block_on(sync.flush(false));
    sync.shutdown();
    Ok((settings.tracking_uri().to_owned(), report?))
}

fn print_report(uri: &str, report: &FlushReport) {
    output::stdout_line(&format!(
        "MLflow ({uri}): {} synced, {} pending, {} failed",
        report.synced, report.pending, report.failed
    ));
    for error in &report.errors {
        let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("");
        let what = match field("trial_id") {
            "" => format!("run {}", field("run_id")),
            trial => format!("trial {trial}"),
        };
        output::stdout_line(&format!(
            "  {what}: {} ({})",
            field("message"),
            field("class")
        ));
    }
    if report.outage.is_some() && report.pending > 0 {
        output::stdout_line(
            "MLflow is unreachable; the items stay pending: run `cerebros-bridge mlflow sync` again once it answers",
        );
    }
}
