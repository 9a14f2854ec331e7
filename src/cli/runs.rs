//! `cerebros-bridge runs list|show|resume|cancel|submit`: the runs in the store.

use super::output::{self, printable, EXIT_OK};
use super::run::{drive_with_progress, finish, print_report, with_worker};
use cerebros_bridge::core::config::store_path;
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::error::Result;
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::{run_document, RunRecord, RunState, Store, TrialState};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Arguments of `runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,

    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
}

/// The `runs` subcommands.
#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List the runs, newest first.
    List,
    /// Show one run and its trials.
    Show {
        /// The run id.
        run_id: String,
    },
    /// Finish an interrupted run (its process died): finished trials are kept, the others
    /// run. A cancelled or otherwise ended run is not resumed.
    Resume {
        /// The run id.
        run_id: String,
    },
    /// Cancel a run: at once if nobody drives it, else at its owner's next heartbeat.
    Cancel {
        /// The run id.
        run_id: String,
    },
    /// Queue a run for `cerebros-bridge serve` (the running server, or the next one to
    /// start, drives it); prints its id.
    Submit {
        /// The run spec (TOML; see examples/digits.toml).
        #[arg(value_name = "SPEC")]
        spec: PathBuf,
    },
}

/// Runs `runs …` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &RunsArgs) -> i32 {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(err) => return output::report_error(&err, args.json),
    };
    if let RunsCommand::Resume { run_id } = &args.command {
        return resume(&config, run_id, args.json);
    }
    let outcome = open_store(&config).and_then(|store| match &args.command {
        RunsCommand::List => list(&store, args.json),
        RunsCommand::Show { run_id } => show(&store, run_id, args.json),
        RunsCommand::Cancel { run_id } => cancel(&store, run_id, args.json),
        RunsCommand::Submit { spec } => submit(&store, spec, args.json),
        RunsCommand::Resume { .. } => unreachable!("handled above"),
    });
    outcome.unwrap_or_else(|err| output::report_error(&err, args.json))
}

fn open_store(config: &Config) -> Result<Store> {
    Store::open(&store_path(&config.store.url)?)
}

fn list(store: &Store, json: bool) -> Result<i32> {
    let runs = store.runs()?;
    if json {
        output::print_json(&json!({"runs": runs}), false);
        return Ok(EXIT_OK);
    }
    if runs.is_empty() {
        output::stdout_line(
            "no runs yet: start one with `cerebros-bridge run examples/digits.toml`",
        );
        return Ok(EXIT_OK);
    }
    output::stdout_line(&format!(
        "{:<30} {:<22} {:<12} {:>8} {:>14}  started",
        "run", "name", "status", "trials", "best"
    ));
    for run in &runs {
        output::stdout_line(&summary_line(run));
    }
    Ok(EXIT_OK)
}

fn summary_line(run: &RunRecord) -> String {
    format!(
        "{:<30} {:<22} {:<12} {:>8} {:>14}  {}",
        printable(&run.run_id),
        printable(&run.name),
        run.status.as_str(),
        format!("{}/{}", run.trials_completed, run.trials_planned),
        run.best_metric.map_or("-".into(), |m| format!("{m:.4}")),
        run.started_at.as_deref().unwrap_or("-")
    )
}

fn show(store: &Store, run_id: &str, json: bool) -> Result<i32> {
    let run = store.run(run_id)?;
    let trials = store.trials(run_id)?;
    if json {
        output::print_json(&run_document(&run, &trials), false);
    } else {
        print_report(&run, &trials);
        output::stdout_line("");
        for trial in &trials {
            let metric = trial
                .metrics
                .get(&run.objective)
                .map_or("-".into(), |m| m.to_string());
            let error = trial
                .error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str());
            let note = match (error, trial.status) {
                (Some(e), _) => format!("  ({})", printable(e)),
                (None, TrialState::Pruned) => format!(
                    "  (pruned after {} epochs)",
                    trial
                        .metrics
                        .get("epochs_run")
                        .map_or("?".into(), |n| n.to_string())
                ),
                (None, _) => String::new(),
            };
            let ran_on = trial.placement.as_ref().map_or(String::new(), |p| {
                let node = p.node_id.get(..12).unwrap_or(&p.node_id);
                format!(
                    "  [node {} on {}, pid {}]",
                    printable(node),
                    printable(&p.host),
                    p.worker_pid
                )
            });
            output::stdout_line(&format!(
                "{:>4} {:<34} {:<10} {} {}{}{}",
                trial.index,
                printable(&trial.trial_id),
                trial.status.as_str(),
                printable(&run.objective),
                metric,
                note,
                ran_on
            ));
        }
    }
    Ok(EXIT_OK)
}

fn cancel(store: &Store, run_id: &str, json: bool) -> Result<i32> {
    let status = store.request_cancel(run_id)?.as_str();
    if json {
        output::print_json(&json!({"run_id": run_id, "status": status}), false);
    } else {
        output::stdout_line(&format!("run {}: {status}", printable(run_id)));
    }
    Ok(EXIT_OK)
}

fn submit(store: &Store, spec: &Path, json: bool) -> Result<i32> {
    let spec = RunSpec::load(spec)?;
    let run_id = store.submit(&spec)?;
    if json {
        output::print_json(
            &json!({"run_id": run_id, "status": RunState::Queued}),
            false,
        );
    } else {
        output::stdout_line(&format!(
            "run {run_id}: queued; `cerebros-bridge serve` drives it (watch with `runs show {run_id}`)"
        ));
    }
    Ok(EXIT_OK)
}

fn resume(config: &Config, run_id: &str, json: bool) -> i32 {
    let outcome = with_worker(config, |runtime, worker| {
        let run = runtime.block_on(drive_with_progress(worker, run_id, json))?;
        let trials = worker.store().trials(run_id)?;
        Ok((run, trials))
    });
    finish(outcome, json)
}
