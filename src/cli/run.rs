//! `cerebros-bridge run SPEC`: a whole NAS run with a progress display, and the pieces
//! `runs resume` shares with it (driving a run, showing progress, the final report).

use super::output::{self, printable, EXIT_FAILURE, EXIT_OK};
use super::runtime::{runtime, Threads};
use super::stdio;
use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::store_path;
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::error::Result;
use cerebros_bridge::nas::artifacts;
use cerebros_bridge::nas::executor::ExecutorSettings;
use cerebros_bridge::nas::run::{CancelSignal, RunEvent, RunWorker};
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::{
    run_document, RunRecord, RunState, Store, TrialRecord, TrialState,
};
use cerebros_bridge::nas::sync;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exit code of a run that was cancelled (as for SIGINT).
pub const EXIT_CANCELLED: i32 = 130;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run spec (TOML; see examples/digits.toml).
    #[arg(value_name = "SPEC")]
    spec: PathBuf,

    /// Print one JSON document on stdout: {"run": {...}, "trials": [...]}.
    #[arg(long)]
    json: bool,
}

/// Runs `run` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &RunArgs) -> i32 {
    let prepared = Config::load(config_path).and_then(|config| {
        let spec = RunSpec::load(&args.spec)?;
        Ok((config, spec))
    });
    let (config, spec) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return output::report_error(&err, args.json),
    };
    let outcome = with_worker(&config, |runtime, worker| {
        let run_id = worker.create(&spec)?;
        if !args.json {
            output::stderr_line(&format!(
                "run {run_id}: {} on {}, {} trials",
                printable(&spec.name),
                printable(&spec.dataset),
                spec.budget.trials
            ));
        }
        let run = runtime.block_on(drive_with_progress(worker, &run_id, args.json))?;
        let trials = worker.store().trials(&run_id)?;
        Ok((run, trials))
    });
    finish(outcome, args.json)
}

/// Starts a client, the store and a run worker, runs `body` on a fresh runtime, and
/// shuts the client down afterwards.
pub fn with_worker<T>(
    config: &Config,
    body: impl FnOnce(&tokio::runtime::Runtime, &RunWorker) -> Result<T>,
) -> Result<T> {
    let runtime = runtime(Threads::Workers(2))?;
    let store_file = store_path(&config.store.url)?;
    let store = Arc::new(Store::open(&store_file)?);
    let artifact_dir = artifacts::artifact_dir(&store_file);
    let client = Arc::new(Client::start(config)?);
    let executor = ExecutorSettings::from_config(config);
    // An unreachable cluster is the config error of the command, not a failed run.
    let connected = if executor.is_ray() {
        runtime.block_on(executor.connect(&client)).map(drop)
    } else {
        Ok(())
    };
    let outcome = connected.and_then(|()| {
        let mut worker =
            RunWorker::new(client.clone(), store, artifact_dir).with_executor(executor.clone());
        if sync::enabled(config) {
            worker = worker.with_mlflow(sync::SyncSettings::from_config(config, &store_file));
        }
        body(&runtime, &worker)
    });
    if executor.is_ray() {
        runtime.block_on(executor.disconnect(&client));
    }
    client.shutdown(Duration::from_millis(500));
    outcome
}

/// Drives `run_id` with a progress display on stderr; Ctrl-C cancels it cleanly.
pub async fn drive_with_progress(
    worker: &RunWorker,
    run_id: &str,
    quiet: bool,
) -> Result<RunRecord> {
    let cancel = CancelSignal::new();
    let on_interrupt = cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            output::stderr_line(
                "\ncancelling: running trials are being stopped; finished ones are kept",
            );
            on_interrupt.cancel();
        }
    });
    let before = worker.store().run(run_id)?;
    let progress = (!quiet).then(|| Progress::new(&before));
    let events = worker.subscribe();
    let display = progress.clone().map(|p| tokio::spawn(p.follow(events)));
    let outcome = worker.drive(run_id, cancel).await;
    interrupt.abort();
    if let Some(display) = display {
        display.abort();
    }
    if let Some(progress) = progress {
        progress.bar.finish_and_clear();
    }
    outcome
}

/// The progress display: a bar on a terminal, one line per trial otherwise.
#[derive(Clone)]
struct Progress {
    bar: ProgressBar,
    objective: String,
    minimize: bool,
    planned: u64,
    terminal: bool,
}

impl Progress {
    fn new(run: &RunRecord) -> Progress {
        let bar = terminal_bar(run.trials_planned as u64);
        let terminal = bar.is_some();
        let bar = bar.unwrap_or_else(ProgressBar::hidden);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} trials {pos}/{len} [{bar:30}] {msg} · eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_position(run.trials_completed as u64);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            objective: run.objective.clone(),
            minimize: run.direction == "minimize",
            planned: run.trials_planned as u64,
            terminal,
        }
    }

    async fn follow(self, mut events: tokio::sync::broadcast::Receiver<RunEvent>) {
        let mut best: Option<f64> = None;
        while let Ok(event) = events.recv().await {
            if event.kind != "ml.run.trial" {
                continue;
            }
            let metric = event.data["metrics"]
                .get(&self.objective)
                .and_then(Value::as_f64);
            if let Some(m) = metric {
                let better = best.is_none_or(|b| if self.minimize { m < b } else { m > b });
                if better {
                    best = Some(m);
                }
            }
            self.bar.inc(1);
            let best_text = best.map_or("-".to_owned(), |b| format!("{b:.4}"));
            self.bar
                .set_message(format!("best {} {best_text}", self.objective));
            if !self.terminal {
                let index = event.data["index"].as_u64().unwrap_or(0);
                let status = event.data["status"].as_str().unwrap_or("?");
                let took = event.data["duration_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
                let value = metric.map_or("-".to_owned(), |m| format!("{m:.4}"));
                output::stderr_line(&format!(
                    "trial {:>3}/{} {status:<9} {} {value} ({took:.1} s) best {best_text}",
                    index + 1,
                    self.planned,
                    self.objective
                ));
            }
        }
    }
}

/// A progress bar drawn on the CLI's stderr, when that is a terminal.
fn terminal_bar(len: u64) -> Option<ProgressBar> {
    if !stdio::stderr_is_terminal() {
        return None;
    }
    let write = stdio::stderr_file().ok()?;
    let read = write.try_clone().ok()?;
    let term = console::Term::read_write_pair(read, write);
    Some(ProgressBar::with_draw_target(
        Some(len),
        ProgressDrawTarget::term(term, 20),
    ))
}

/// Prints the outcome of a run (or resume) and returns the exit code.
pub fn finish(outcome: Result<(RunRecord, Vec<TrialRecord>)>, json: bool) -> i32 {
    match outcome {
        Ok((run, trials)) => {
            if json {
                output::print_json(&run_document(&run, &trials), false);
            } else {
                print_report(&run, &trials);
            }
            match run.status {
                RunState::Succeeded => EXIT_OK,
                RunState::Cancelled => EXIT_CANCELLED,
                _ => EXIT_FAILURE,
            }
        }
        Err(err) => output::report_error(&err, json),
    }
}

/// The human report: status, the best trials, where the best model is.
pub fn print_report(run: &RunRecord, trials: &[TrialRecord]) {
    let out = output::stdout_line;
    out(&format!(
        "run {} ({}): {} — {} of {} trials finished",
        printable(&run.run_id),
        printable(&run.name),
        run.status,
        run.trials_completed,
        run.trials_planned
    ));
    if let Some(error) = &run.error {
        out(&format!("error: {}", printable(error)));
    }
    let mut ranked: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.status == TrialState::Succeeded)
        .collect();
    let metric = |t: &TrialRecord| t.metrics.get(&run.objective).and_then(Value::as_f64);
    ranked.sort_by(|a, b| {
        let (a, b) = (metric(a).unwrap_or(f64::NAN), metric(b).unwrap_or(f64::NAN));
        let order = a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
        if run.direction == "minimize" {
            order
        } else {
            order.reverse()
        }
    });
    if !ranked.is_empty() {
        out(&format!(
            "\n{:<5} {:<34} {:>12} {:>9} {:>9}  levels",
            "rank", "trial", run.objective, "params", "seconds"
        ));
        for (rank, trial) in ranked.iter().take(5).enumerate() {
            out(&format!(
                "{:<5} {:<34} {:>12} {:>9} {:>9.1}  {}",
                rank + 1,
                printable(&trial.trial_id),
                metric(trial).map_or("-".into(), |m| format!("{m:.4}")),
                trial
                    .metrics
                    .get("params")
                    .map_or("-".into(), |p| p.to_string()),
                trial.duration_ms as f64 / 1e3,
                trial
                    .parameters
                    .get("levels")
                    .map_or("-".into(), |l| printable(&l.to_string()).into_owned()),
            ));
        }
    }
    let failed = trials
        .iter()
        .filter(|t| t.status == TrialState::Failed)
        .count();
    if failed > 0 {
        out(&format!(
            "\n{failed} trial(s) failed; see `runs show {}`",
            printable(&run.run_id)
        ));
    }
    let pruned = trials
        .iter()
        .filter(|t| t.status == TrialState::Pruned)
        .count();
    if pruned > 0 {
        out(&format!("\n{pruned} trial(s) pruned early as hopeless"));
    }
    if let Some(best) = ranked.first() {
        if let Some(uri) = &best.artifact_uri {
            out(&format!(
                "\nbest model: {} ({} = {})",
                printable(uri),
                run.objective,
                metric(best).map_or("-".into(), |m| format!("{m:.4}"))
            ));
        }
    }
    if run.status == RunState::Interrupted {
        // A cancelled run has ended: `runs resume` refuses it.
        out(&format!(
            "resume with: cerebros-bridge runs resume {}",
            printable(&run.run_id)
        ));
    }
}
