//! MLflow sync end to end, through the CLI and a real MLflow: runs on iris with the
//! `nas_fixture` service, read back with `MlflowClient` (the venv's Python). A run syncs
//! one parent and a child per trial; syncing again duplicates nothing; with the tracking
//! server down a run still completes, warns once and leaves its items pending, and
//! `mlflow sync` flushes them once a real `mlflow server` answers.

mod common;

use common::scratch::{Outcome, Scratch};

use serde_json::Value;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Reads an MLflow experiment back: every run with its parent, status, tags, metrics,
/// the length of its `curve/val_loss` history and its artifacts, as JSON on stdout.
const READ_BACK: &str = r#"
import json, sys
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name(sys.argv[2])
runs = client.search_runs([experiment.experiment_id]) if experiment else []
out = []
for run in runs:
    rid = run.info.run_id
    out.append({
        "id": rid,
        "parent": run.data.tags.get("mlflow.parentRunId"),
        "status": run.info.status,
        "tags": run.data.tags,
        "metrics": run.data.metrics,
        "params": run.data.params,
        "curve": len(client.get_metric_history(rid, "curve/val_loss")),
        "artifacts": [f.path for f in client.list_artifacts(rid)],
    })
print(json.dumps(out))
"#;

/// The fixture's runs under the name `iris-mlflow`, 3 trials of 6 epochs.
fn scratch() -> Scratch {
    Scratch::new("iris-mlflow", 3, 6)
}

impl Scratch {
    fn run(&self, tracking_uri: Option<&str>) -> Outcome {
        let spec = self.path("spec.toml").display().to_string();
        self.cli(&["run", &spec, "--json"], tracking_uri)
    }

    /// `run` against the default tracking URI with a flush window of 5 minutes instead
    /// of 30 s: on shared cores MLflow's first start (creating its database) can take
    /// longer than 30 s, and this run must end with everything synced.
    fn run_patiently(&self) -> Outcome {
        let config = self.path("patient.toml");
        std::fs::write(&config, "[mlflow]\nflush_timeout_ms = 300000\n").unwrap();
        let spec = self.path("spec.toml").display().to_string();
        let mut command = self.command(&["run", &spec, "--json"], None);
        command.env("CEREBROS_CONFIG", &config);
        Outcome::of(command.output().unwrap())
    }

    fn sync(&self, tracking_uri: Option<&str>) -> Outcome {
        self.cli(&["mlflow", "sync", "--json"], tracking_uri)
    }

    fn sql(&self, statement: &str) {
        let conn = rusqlite::Connection::open(self.path("store.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch(statement).unwrap();
    }
}

fn python() -> PathBuf {
    common::venv_python()
}

/// Every MLflow run of the test experiment at `uri`.
fn read_back(uri: &str) -> Vec<Value> {
    let output = Command::new(python())
        .args(["-c", READ_BACK, uri, "iris-mlflow"])
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "read-back failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// Checks the MLflow view of one stored run: its parent and one child per trial, with
/// the ids, metrics, curves and artifacts the store holds.
fn assert_mirrors(runs: &[Value], doc: &Value) {
    let run = &doc["run"];
    let parent_id = run["mlflow_run_id"].as_str().expect("the parent's id");
    let parent = runs
        .iter()
        .find(|r| r["id"] == parent_id)
        .expect("the parent run");
    assert_eq!(parent["parent"], Value::Null);
    assert_eq!(parent["status"], "FINISHED");
    assert_eq!(parent["tags"]["run_id"], run["run_id"]);
    assert_eq!(parent["tags"]["correlation_id"], run["run_id"]);
    assert_eq!(parent["tags"]["status"], "succeeded");
    assert_eq!(parent["params"]["budget.trials"], "3");
    assert_eq!(
        parent["metrics"]["best_val_accuracy"].as_f64(),
        run["best_metric"].as_f64()
    );
    let children: Vec<&Value> = runs.iter().filter(|r| r["parent"] == parent_id).collect();
    let trials = doc["trials"].as_array().unwrap();
    assert_eq!(children.len(), trials.len());
    for trial in trials {
        let child_id = trial["mlflow_run_id"].as_str().expect("the child's id");
        let child = children
            .iter()
            .find(|c| c["id"] == child_id)
            .expect("the trial's child run");
        assert_eq!(child["tags"]["cerebros.trial_id"], trial["trial_id"]);
        assert_eq!(child["status"], "FINISHED");
        assert_eq!(
            child["metrics"]["val_accuracy"].as_f64(),
            trial["metrics"]["val_accuracy"].as_f64()
        );
        assert_eq!(child["curve"], trial["metrics"]["epochs_run"]);
        assert_eq!(
            child["params"]["levels"],
            serde_json::to_string(&trial["parameters"]["levels"]).unwrap()
        );
        let artifact = Path::new(trial["artifact_uri"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(child["artifacts"], serde_json::json!([artifact]));
    }
}

fn assert_counts(outcome: &Outcome, synced: u64, pending: u64, failed: u64) {
    let doc = &outcome.json;
    let counts = (
        doc["synced"].as_u64(),
        doc["pending"].as_u64(),
        doc["failed"].as_u64(),
    );
    assert_eq!(
        counts,
        (Some(synced), Some(pending), Some(failed)),
        "stdout: {}\nstderr: {}",
        outcome.stdout,
        outcome.stderr
    );
}

#[test]
fn a_run_syncs_one_parent_and_a_child_per_trial_and_syncing_again_duplicates_nothing() {
    let scratch = scratch();
    let run = scratch.run_patiently();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    // The default tracking URI: mlflow.db beside the store.
    let uri = format!("sqlite:///{}", scratch.path("mlflow.db").display());
    assert!(scratch.path("mlflow.db").is_file());
    let runs = read_back(&uri);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_mirrors(&runs, &run.json);
    assert_counts(&scratch.sync(None), 0, 0, 0);

    // Forget that anything was synced, in the store only: the retried sync must find
    // every MLflow run by its tag and create none.
    scratch.sql(
        "UPDATE mlflow_outbox SET status = 'pending', synced_at = NULL;
         UPDATE model_runs SET mlflow_run_id = NULL;
         UPDATE model_trials SET mlflow_run_id = NULL;",
    );
    let again = scratch.sync(None);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_counts(&again, 4, 0, 0);
    let after = read_back(&uri);
    assert_eq!(after.len(), 4, "{after:?}");
    let run_id = run.json["run"]["run_id"].as_str().unwrap();
    let shown = scratch.cli(&["runs", "show", run_id, "--json"], None);
    assert_eq!(
        shown.json["run"]["mlflow_run_id"],
        run.json["run"]["mlflow_run_id"]
    );
    assert_mirrors(&after, &shown.json);
}

/// A `mlflow server` on loopback, killed (its whole process group) when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &Path) -> Server {
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(python())
            .args([
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ])
            .args(["--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("server.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("server-artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Server { child }
    }

    fn wait_until_it_answers(&mut self, port: u16, limit: Duration, dir: &Path) {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                    && answer.contains(" 200 ")
                {
                    return;
                }
            }
            let exited = self.child.try_wait().unwrap();
            let log = || std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            assert!(exited.is_none(), "mlflow server exited: {}", log());
            assert!(
                started.elapsed() < limit,
                "mlflow server did not answer within {limit:?}: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: signals the process group this test created for the server.
        unsafe {
            libc::kill(-group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_outage_warns_once_keeps_items_pending_and_mlflow_sync_flushes_them_later() {
    let scratch = scratch();
    let port = free_loopback_port(); // closed again: nothing listens there yet
    let uri = format!("http://127.0.0.1:{port}");

    let run = scratch.run(Some(&uri));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json["run"]["status"], "succeeded");
    assert_eq!(run.json["run"]["mlflow_run_id"], Value::Null);
    let trials = run.json["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    for trial in trials {
        assert_eq!(trial["status"], "succeeded");
        assert!(trial["metrics"]["val_accuracy"].as_f64().unwrap() > 0.0);
        assert_eq!(trial["mlflow_run_id"], Value::Null);
    }
    let warnings = run.stderr.matches("MLflow sync is failing").count();
    assert_eq!(warnings, 1, "one warning per outage: {}", run.stderr);
    assert_eq!(run.stderr.matches("WARN").count(), 1, "{}", run.stderr);

    // Still down: nothing synced, everything pending, a non-zero exit.
    let down = scratch.sync(Some(&uri));
    assert_eq!(down.code, 1, "{}", down.stderr);
    assert_counts(&down, 0, 4, 1);
    assert_eq!(down.json["errors"][0]["class"], "system_error");

    let mut server = Server::start(port, scratch.dir.path());
    server.wait_until_it_answers(port, Duration::from_secs(90), scratch.dir.path());
    let flushed = scratch.sync(Some(&uri));
    assert_eq!(flushed.code, 0, "{}", flushed.stderr);
    assert_counts(&flushed, 4, 0, 0);
    assert_counts(&scratch.sync(Some(&uri)), 0, 0, 0);

    let run_id = run.json["run"]["run_id"].as_str().unwrap();
    let shown = scratch.cli(&["runs", "show", run_id, "--json"], Some(&uri));
    let runs = read_back(&uri);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_mirrors(&runs, &shown.json);
    drop(server);
}
