//! NAS runs end to end through the CLI, on real training (iris) with the knobs of
//! `tests/fixtures/nas_fixture.py`: failed trials, kill -9 and resume, cancellation.

mod common;

use common::{trials_by_index, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A scratch folder with a spec of `trials` trials and its own store.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(trials: u32) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("spec.toml"),
            common::iris_spec("iris-test", trials, 8),
        )
        .unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str], envs: &[(&str, String)]) -> Command {
        let mut command = common::nas_cli(&self.path("store.db"), args);
        command
            .env("NAS_FIXTURE_LOG", self.path("trials.log"))
            .env_remove("NAS_FIXTURE_SLEEP")
            .env_remove("NAS_FIXTURE_FAIL_INDEX")
            .stdin(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        command
    }

    fn run(&self, args: &[&str], envs: &[(&str, String)]) -> (i32, Value, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args, envs).output().unwrap();
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (
            status.code().unwrap_or(-1),
            json,
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }

    /// What `runs show RUN_ID` prints (text, not JSON).
    fn show_text(&self, run_id: &str) -> String {
        let output = self
            .command(&["runs", "show", run_id], &[])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&self, args: &[&str], envs: &[(&str, String)]) -> Child {
        self.command(args, envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn spec(&self) -> String {
        self.path("spec.toml").display().to_string()
    }

    /// How often each trial id started, from the fixture's log.
    fn starts(&self) -> std::collections::BTreeMap<String, usize> {
        let log = std::fs::read_to_string(self.path("trials.log")).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in log.lines() {
            *counts.entry(line.to_owned()).or_insert(0) += 1;
        }
        counts
    }

    fn finished_trials(&self) -> Vec<Value> {
        let store = cerebros_bridge::nas::store::Store::open(&self.path("store.db")).unwrap();
        let runs = store.runs().unwrap();
        let Some(run) = runs.first() else {
            return Vec::new();
        };
        store
            .trials(&run.run_id)
            .unwrap()
            .into_iter()
            .filter(|t| t.status == cerebros_bridge::nas::store::TrialState::Succeeded)
            .map(|t| serde_json::to_value(t).unwrap())
            .collect()
    }
}

#[test]
fn a_run_records_every_trial_and_goes_on_after_a_failed_one() {
    let scratch = Scratch::new(4);
    let (code, doc, stderr) = scratch.run(
        &["run", &scratch.spec(), "--json"],
        &[("NAS_FIXTURE_FAIL_INDEX", "1".into())],
    );
    assert_eq!(code, 0, "{stderr}");
    let run = &doc["run"];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trials_completed"], 4);
    for key in [
        "run_id",
        "objective",
        "direction",
        "best_metric",
        "best_trial_id",
        "started_at",
        "finished_at",
        "mlflow_run_id",
    ] {
        assert!(run.get(key).is_some(), "run.{key} missing");
    }
    let trials = trials_by_index(&doc);
    assert_eq!(trials.len(), 4);
    assert_eq!(trials[1]["status"], "failed");
    assert_eq!(trials[1]["error"]["class"], "exception");
    for trial in [&trials[0], &trials[2], &trials[3]] {
        assert_eq!(trial["status"], "succeeded");
        assert!(trial["metrics"]["val_accuracy"].as_f64().unwrap() > 0.0);
        let uri = trial["artifact_uri"].as_str().unwrap();
        assert!(
            Path::new(uri.trim_start_matches("file://")).is_file(),
            "{uri}"
        );
    }
    let run_id = run["run_id"].as_str().unwrap();
    let (code, shown, _) = scratch.run(&["runs", "show", run_id, "--json"], &[]);
    assert_eq!(code, 0);
    assert_eq!(shown["run"]["best_trial_id"], run["best_trial_id"]);
    let (_, listed, _) = scratch.run(&["runs", "list", "--json"], &[]);
    assert_eq!(listed["runs"][0]["run_id"], run_id);
    assert_eq!(listed["runs"][0]["trials_completed"], 4);
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_best_trial() {
    let trials = 8;
    // The uninterrupted reference run, in its own store.
    let reference = Scratch::new(trials);
    let (code, expected, stderr) = reference.run(&["run", &reference.spec(), "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");

    let scratch = Scratch::new(trials);
    let slow = [("NAS_FIXTURE_SLEEP", "0.4".to_string())];
    let mut child = scratch.spawn(&["run", &scratch.spec(), "--json"], &slow);
    wait_for(Duration::from_secs(60), || {
        scratch.finished_trials().len() >= 3
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_resume = scratch.finished_trials();
    assert!(
        before_resume.len() < trials as usize,
        "the run finished before the kill"
    );

    let (_, listed, _) = scratch.run(&["runs", "list", "--json"], &[]);
    let run_id = listed["runs"][0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed["runs"][0]["status"], "interrupted",
        "recognised from the dead owner"
    );
    assert!(
        scratch
            .show_text(&run_id)
            .contains("resume with: cerebros-bridge runs resume"),
        "an interrupted run says how to finish it"
    );

    let (code, resumed, stderr) = scratch.run(&["runs", "resume", &run_id, "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(resumed["run"]["status"], "succeeded");
    let after = trials_by_index(&resumed);
    assert_eq!(after.len(), trials as usize);
    assert!(after.iter().all(|t| t["status"] == "succeeded"));
    // Trials finished before the kill are untouched and did not run again.
    let starts = scratch.starts();
    for kept in &before_resume {
        let id = kept["trial_id"].as_str().unwrap();
        let now = after.iter().find(|t| t["trial_id"] == id).unwrap();
        assert_eq!(
            now["finished_at"], kept["finished_at"],
            "trial {id} was rewritten"
        );
        assert_eq!(now["metrics"], kept["metrics"]);
        assert_eq!(starts[id], 1, "trial {id} ran twice");
    }
    // Same seed, same trials: the same best trial as the uninterrupted run.
    let index_of_best = |doc: &Value| {
        let best = doc["run"]["best_trial_id"].as_str().unwrap().to_owned();
        trials_by_index(doc)
            .iter()
            .find(|t| t["trial_id"] == best.as_str())
            .unwrap()["index"]
            .clone()
    };
    assert_eq!(index_of_best(&resumed), index_of_best(&expected));
    assert_eq!(
        resumed["run"]["best_metric"],
        expected["run"]["best_metric"]
    );
    for (a, b) in after.iter().zip(trials_by_index(&expected)) {
        assert_eq!(
            a["metrics"]["val_accuracy"], b["metrics"]["val_accuracy"],
            "trial {}",
            a["index"]
        );
    }
}

#[test]
fn runs_cancel_stops_a_running_run_and_keeps_finished_trials() {
    let scratch = Scratch::new(12);
    let slow = [("NAS_FIXTURE_SLEEP", "0.5".to_string())];
    let child = scratch.spawn(&["run", &scratch.spec(), "--json"], &slow);
    wait_for(Duration::from_secs(60), || {
        scratch.finished_trials().len() >= 2
    });
    let (_, listed, _) = scratch.run(&["runs", "list", "--json"], &[]);
    let run_id = listed["runs"][0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(listed["runs"][0]["status"], "running");
    let (code, answer, _) = scratch.run(&["runs", "cancel", &run_id, "--json"], &[]);
    assert_eq!(code, 0);
    assert_eq!(answer["status"], "cancelling");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["run"]["status"], "cancelled");
    let finished = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .count();
    assert!((2..12).contains(&finished), "{finished} finished");
    let shown = scratch.show_text(&run_id);
    assert!(
        !shown.contains("resume with"),
        "a cancelled run has ended; `runs resume` refuses it: {shown}"
    );
    assert!(doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] != "running"));
}

#[test]
fn ctrl_c_cancels_cleanly() {
    let scratch = Scratch::new(12);
    let slow = [("NAS_FIXTURE_SLEEP", "0.5".to_string())];
    let child = scratch.spawn(&["run", &scratch.spec(), "--json"], &slow);
    wait_for(Duration::from_secs(60), || {
        !scratch.finished_trials().is_empty()
    });
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["run"]["status"], "cancelled");
    assert!(doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["status"] == "succeeded"));
}

#[test]
fn an_invalid_spec_is_refused_naming_the_key() {
    let scratch = Scratch::new(0);
    let (code, doc, _) = scratch.run(&["run", &scratch.spec(), "--json"], &[]);
    assert_eq!(code, 2);
    assert_eq!(doc["error"]["class"], "contract");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("budget.trials"));
}

/// No MLflow sync: the runs below test the search, and start faster without it.
fn no_mlflow() -> [(&'static str, String); 1] {
    [("MLFLOW_TRACKING_URI", "off".to_string())]
}

/// A spec of `trials` iris trials, one at a time, searched by TPE and pruned by ASHA.
fn tpe_asha_spec(trials: u32) -> String {
    common::iris_spec("iris-tpe", trials, 8).replace("parallelism = 2", "parallelism = 1")
        + "[search]\nstrategy = \"tpe\"\npruner = \"asha\"\n"
}

/// The trials that ended (succeeded, failed or pruned) of the only run of `scratch`.
fn ended_trials(scratch: &Scratch) -> usize {
    let store = cerebros_bridge::nas::store::Store::open(&scratch.path("store.db")).unwrap();
    let Some(run) = store.runs().unwrap().into_iter().next() else {
        return 0;
    };
    let trials = store.trials(&run.run_id).unwrap();
    trials.iter().filter(|t| t.status.is_completed()).count()
}

#[test]
fn a_tpe_run_resumed_midway_ends_with_the_trials_of_an_uninterrupted_one_and_prunes() {
    // TPE models the history after its 10 startup trials: the kill comes after them.
    let trials = 14;
    let reference = Scratch::new(trials);
    std::fs::write(reference.path("spec.toml"), tpe_asha_spec(trials)).unwrap();
    let (code, expected, stderr) =
        reference.run(&["run", &reference.spec(), "--json"], &no_mlflow());
    assert_eq!(code, 0, "{stderr}");

    let scratch = Scratch::new(trials);
    std::fs::write(scratch.path("spec.toml"), tpe_asha_spec(trials)).unwrap();
    let slow = [
        ("NAS_FIXTURE_SLEEP", "0.3".to_string()),
        no_mlflow()[0].clone(),
    ];
    let mut child = scratch.spawn(&["run", &scratch.spec(), "--json"], &slow);
    wait_for(Duration::from_secs(60), || ended_trials(&scratch) >= 11);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        ended_trials(&scratch) < trials as usize,
        "the run finished before the kill"
    );
    let (_, listed, _) = scratch.run(&["runs", "list", "--json"], &no_mlflow());
    let run_id = listed["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let (code, resumed, stderr) = scratch.run(&["runs", "resume", &run_id, "--json"], &no_mlflow());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(resumed["run"]["status"], "succeeded");

    let (after, before) = (trials_by_index(&resumed), trials_by_index(&expected));
    assert_eq!(after.len(), trials as usize);
    // The same architectures (the artifacts' digests differ: they hold the run id).
    let architecture = |t: &Value| {
        let mut parameters = t["parameters"].clone();
        parameters.as_object_mut().unwrap().remove("artifact");
        parameters
    };
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a["status"], b["status"], "trial {}", a["index"]);
        assert_eq!(architecture(a), architecture(b), "trial {}", a["index"]);
        assert_eq!(a["metrics"], b["metrics"], "trial {}", a["index"]);
    }
    assert_eq!(
        resumed["run"]["best_trial_id"]
            .as_str()
            .map(|b| &b[b.len() - 4..]),
        expected["run"]["best_trial_id"]
            .as_str()
            .map(|b| &b[b.len() - 4..])
    );

    // ASHA pruned some trials: recorded with the epochs they ran, no artifact, no error,
    // counted as completed, never the best.
    let pruned: Vec<&Value> = after.iter().filter(|t| t["status"] == "pruned").collect();
    assert!(!pruned.is_empty(), "no trial was pruned");
    for trial in &pruned {
        let ran = trial["metrics"]["epochs_run"].as_u64().unwrap();
        assert!((1..8).contains(&ran), "{trial}");
        assert_eq!(
            trial["metrics"]["curve"]["val_accuracy"]
                .as_array()
                .unwrap()
                .len() as u64,
            ran
        );
        assert!(
            trial["artifact_uri"].is_null() && trial["error"].is_null(),
            "{trial}"
        );
        assert_ne!(resumed["run"]["best_trial_id"], trial["trial_id"]);
    }
    assert_eq!(resumed["run"]["trials_completed"], trials);
    let (code, shown, _) = scratch.run(&["runs", "show", &run_id, "--json"], &[]);
    assert_eq!(code, 0);
    assert_eq!(trials_by_index(&shown), after);
    let output = scratch
        .command(&["runs", "show", &run_id], &[])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let id = pruned[0]["trial_id"].as_str().unwrap();
    let line = text.lines().find(|l| l.contains(id)).unwrap();
    assert!(
        line.contains(" pruned ") && line.contains("(pruned after "),
        "{text}"
    );
    assert!(text.contains("trial(s) pruned early"), "{text}");
}

#[test]
fn an_unknown_search_strategy_is_refused_naming_the_key() {
    let scratch = Scratch::new(2);
    let spec = common::iris_spec("bad", 2, 2) + "[search]\nstrategy = \"grid\"\n";
    std::fs::write(scratch.path("spec.toml"), spec).unwrap();
    let (code, doc, _) = scratch.run(&["run", &scratch.spec(), "--json"], &[]);
    assert_eq!(code, 2);
    assert_eq!(doc["error"]["class"], "contract");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("search.strategy"), "{message}");
}

#[test]
fn no_trial_starts_once_the_wall_clock_budget_is_spent() {
    let scratch = Scratch::new(2);
    let spec = common::iris_spec("budget", 200, 2)
        .replace("parallelism = 2", "parallelism = 2\nmax_seconds = 1");
    std::fs::write(scratch.path("spec.toml"), spec).unwrap();
    let slow = [
        ("NAS_FIXTURE_SLEEP", "0.3".to_string()),
        no_mlflow()[0].clone(),
    ];
    let (code, doc, stderr) = scratch.run(&["run", &scratch.spec(), "--json"], &slow);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded");
    let completed = doc["run"]["trials_completed"].as_u64().unwrap();
    // About 1 s / 0.3 s per trial, 2 at a time; never the 200 planned.
    assert!((2..40).contains(&completed), "{completed} trials");
    let trials = trials_by_index(&doc);
    assert_eq!(
        trials.len() as u64,
        completed,
        "only started trials are recorded"
    );
    assert!(trials.iter().all(|t| t["status"] == "succeeded"));
}
