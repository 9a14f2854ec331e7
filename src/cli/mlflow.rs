//! `cerebros-bridge mlflow sync`: flush the store's MLflow outbox now, and list the items
//! parked as `failed` (they can never sync as they are).

use super::output::{self, printable, EXIT_FAILURE, EXIT_OK};
use super::runtime::{runtime, Threads};
use cerebros_bridge::core::config::{store_path, Config};
use cerebros_bridge::core::error::{BridgeError, ErrorClass, Result};
use cerebros_bridge::nas::store::{FailedItem, LeaseHolder, Store};
use cerebros_bridge::nas::sync::{FlushReport, MlflowSync, SyncSettings};
use clap::{Args, Subcommand};
use serde::Serialize;
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
    /// MLFLOW_TRACKING_URI) and list the items parked as failed; prints {"synced",
    /// "pending", "failed", "errors", "failed_items"} with --json.
    #[command(
        after_help = "Exit codes:\n  0  nothing is left pending (items parked as failed may remain: they are listed)\n  1  some items are still pending (MLflow unreachable, an item failing for now, or held by a sync still running)\n  2  invalid config"
    )]
    Sync {
        /// First put the items parked as failed back to pending (once what made them
        /// fail is fixed, e.g. a larger invoke.max_payload_bytes).
        #[arg(long)]
        retry_failed: bool,
    },
}

/// What `mlflow sync --json` prints: the flush's report and every parked item.
#[derive(Debug, Serialize)]
struct SyncOutput {
    #[serde(flatten)]
    report: FlushReport,
    /// Items parked as `failed`, this flush's and earlier ones.
    failed_items: Vec<FailedItem>,
}

/// Runs `mlflow …` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &MlflowArgs) -> i32 {
    let outcome = Config::load(config_path).and_then(|config| match args.command {
        MlflowCommand::Sync { retry_failed } => sync(&config, retry_failed),
    });
    match outcome {
        Ok((uri, out)) => {
            if args.json {
                output::print_json(&serde_json::to_value(&out).unwrap_or_default(), false);
            } else {
                print_report(&uri, &out);
            }
            if out.report.pending == 0 {
                EXIT_OK
            } else {
                EXIT_FAILURE
            }
        }
        Err(err) => output::report_error(&err, args.json),
    }
}

/// One forced flush of the outbox: every pending item, due or not.
fn sync(config: &Config, retry_failed: bool) -> Result<(String, SyncOutput)> {
    let store_file = store_path(&config.store.url)?;
    let store = Arc::new(Store::open(&store_file)?);
    if !cerebros_bridge::nas::sync::enabled(config) {
        return Err(BridgeError::new(
            ErrorClass::Config,
            "MLflow sync is off (mlflow.tracking_uri = \"off\"); set mlflow.tracking_uri or MLFLOW_TRACKING_URI to sync",
        ));
    }
    let settings = SyncSettings::from_config(config, &store_file);
    let uri = settings.tracking_uri().to_owned();
    if retry_failed {
        store.outbox_retry_failed()?;
    }
    let report = if store.outbox_counts()?.pending == 0 {
        // Nothing to do: no need to start Python at all.
        FlushReport::default()
    } else {
        flush(&settings, store.clone())?
    };
    let failed_items = store.outbox_failed_items()?;
    Ok((
        uri,
        SyncOutput {
            report,
            failed_items,
        },
    ))
}

fn flush(settings: &SyncSettings, store: Arc<Store>) -> Result<FlushReport> {
    let runtime = runtime(Threads::Caller)?;
    let sync = MlflowSync::start(settings, store, LeaseHolder::current())?;
    let report = runtime.block_on(sync.flush(false));
    sync.shutdown();
    report
}

fn print_report(uri: &str, out: &SyncOutput) {
    let report = &out.report;
    output::stdout_line(&format!(
        "MLflow ({uri}): {} synced, {} pending, {} failed",
        report.synced, report.pending, report.failed
    ));
    for error in &report.errors {
        let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("");
        let what = describe(
            field("run_id"),
            error.get("trial_id").and_then(Value::as_str),
        );
        let parked = if error.get("parked") == Some(&Value::Bool(true)) {
            ", parked"
        } else {
            ""
        };
        output::stdout_line(&format!(
            "  {}: {} ({}{parked})",
            printable(&what),
            printable(field("message")),
            printable(field("class"))
        ));
    }
    if !out.failed_items.is_empty() {
        output::stdout_line(&format!(
            "{} parked as failed (they can never sync as they are; `cerebros-bridge mlflow sync --retry-failed` tries them again):",
            out.failed_items.len()
        ));
        for item in &out.failed_items {
            let what = describe(&item.run_id, item.trial_id.as_deref());
            output::stdout_line(&format!(
                "  {}: {}",
                printable(&what),
                printable(&item.error)
            ));
        }
    }
    if report.pending > 0 {
        let why = if report.outage.is_some() {
            "MLflow is unreachable; the items stay pending: run `cerebros-bridge mlflow sync` again once it answers"
        } else {
            "some items are still pending (failing for now, or held by a sync still running): run `cerebros-bridge mlflow sync` again later"
        };
        output::stdout_line(why);
    }
}

/// `run ID` or `trial ID`.
fn describe(run_id: &str, trial_id: Option<&str>) -> String {
    match trial_id {
        Some(trial) if !trial.is_empty() => format!("trial {trial}"),
        _ => format!("run {run_id}"),
    }
}
