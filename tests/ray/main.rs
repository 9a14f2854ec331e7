//! The `ray` executor end to end (DESIGN §12): the CLI drives NAS runs whose trials run
//! as Ray tasks on a real two-node local cluster (`cluster.rs`), with the knobs of
//! `tests/fixtures/ray_fixture.py`: spread over nodes, same results as `local`, hard
//! timeouts, a killed worker, a node leaving the cluster, a killed driver then
//! `runs resume`, `runs cancel`.

mod cluster;
#[path = "../common/mod.rs"]
mod common;
// The OTLP collector of the telemetry tests: trial spans say where the trial ran.
#[allow(dead_code)]
#[path = "../otel/receiver.rs"]
mod receiver;

use cluster::{cluster, is_gone, Cluster};
use common::{trials_by_index, wait_for};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch folder with a spec and its own store.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(trials: u32, budget: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = common::iris_spec("iris-ray", trials, 4);
        if !budget.is_empty() {
            spec = spec.replace("trial_timeout_ms = 30000", budget);
        }
        std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self) -> String {
        self.path("spec.toml").display().to_string()
    }

    /// The CLI on the fixture module, trials on `cluster` (or `local` without one).
    fn command(&self, args: &[&str], on: Option<&Cluster>) -> Command {
        let mut command = common::nas_cli(&self.path("store.db"), args);
        command
            .env("CEREBROS_MODULE", "ray_fixture")
            .env("CEREBROS_RETRY_BACKOFF_MS", "10")
            .env("RAY_AUTH_MODE", cluster::AUTH_MODE)
            .env_remove("CEREBROS_EXECUTOR")
            .env_remove("CEREBROS_EXECUTOR_ADDRESS")
            .stdin(Stdio::null());
        if let Some(cluster) = on {
            command
                .env("CEREBROS_EXECUTOR", "ray")
                .env("CEREBROS_EXECUTOR_ADDRESS", &cluster.address);
        }
        command
    }

    fn run(&self, args: &[&str], on: Option<&Cluster>) -> (i32, Value, String) {
        Scratch::outcome(self.command(args, on))
    }

    fn outcome(mut command: Command) -> (i32, Value, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().unwrap();
        (
            status.code().unwrap_or(-1),
            serde_json::from_slice(&stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }

    fn spawn(&self, args: &[&str], on: &Cluster) -> Child {
        self.command(args, Some(on))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The id of the only run of the store, once it exists.
    fn run_id(&self) -> String {
        let mut id = String::new();
        wait_for(Duration::from_secs(60), || {
            let (_, listed, _) = self.run(&["runs", "list", "--json"], None);
            id = listed["runs"][0]["run_id"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            !id.is_empty()
        });
        id
    }

    fn show(&self, run_id: &str) -> Value {
        self.run(&["runs", "show", run_id, "--json"], None).1
    }
}

/// The pids that started trial `trial_id`.
fn pids_of(cluster: &Cluster, trial_id: &str) -> Vec<i32> {
    cluster
        .started()
        .into_iter()
        .filter(|(t, _)| t == trial_id)
        .map(|(_, pid)| pid)
        .collect()
}

#[test]
fn eight_trials_spread_over_both_nodes_with_the_results_of_the_local_executor() {
    let cluster = cluster();
    let scratch = Scratch::new(8, "");
    let collector = receiver::Receiver::start();
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], Some(&cluster));
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url);
    let (code, on_ray, stderr) = Scratch::outcome(command);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(on_ray["run"]["status"], "succeeded", "{on_ray}");
    let trials = trials_by_index(&on_ray);
    assert_eq!(trials.len(), 8);
    let mut nodes = BTreeSet::new();
    for trial in &trials {
        assert_eq!(trial["status"], "succeeded", "{trial}");
        let placement = &trial["placement"];
        nodes.insert(placement["node_id"].as_str().unwrap().to_owned());
        assert!(placement["worker_pid"].as_u64().unwrap() > 0);
        assert!(!placement["host"].as_str().unwrap().is_empty());
    }
    assert_eq!(nodes.len(), 2, "the trials ran on {nodes:?}");
    // Each trial's span carries its placement.
    let spans = collector.wait_for(9);
    let mut traced = BTreeMap::new();
    for span in spans.iter().filter(|s| s.name == "trial") {
        traced.insert(span.attr("index").as_u64().unwrap(), span.clone());
    }
    assert_eq!(traced.len(), 8, "{spans:#?}");
    for trial in &trials {
        let span = &traced[&trial["index"].as_u64().unwrap()];
        let placement = &trial["placement"];
        assert_eq!(span.attr("node_id"), &placement["node_id"], "{span:?}");
        assert_eq!(span.attr("node_host"), &placement["host"], "{span:?}");
        assert_eq!(
            span.attr("worker_pid"),
            &placement["worker_pid"],
            "{span:?}"
        );
    }

    // `runs show` tells where each trial ran.
    let run_id = on_ray["run"]["run_id"].as_str().unwrap();
    let shown = scratch.command(&["runs", "show", run_id], None).output();
    let text = String::from_utf8_lossy(&shown.unwrap().stdout).into_owned();
    assert_eq!(text.matches("[node ").count(), 8, "{text}");

    // The same spec on the local executor: the same trials, metric for metric.
    let local = Scratch::new(8, "");
    let (code, on_local, stderr) = local.run(&["run", &local.spec(), "--json"], None);
    assert_eq!(code, 0, "{stderr}");
    for (ray, local) in trials.iter().zip(trials_by_index(&on_local)) {
        assert_eq!(ray["metrics"], local["metrics"], "trial {}", ray["index"]);
        let without_artifact = |t: &Value| {
            let mut parameters = t["parameters"].clone();
            parameters.as_object_mut().unwrap().remove("artifact");
            parameters
        };
        assert_eq!(without_artifact(ray), without_artifact(&local));
        assert!(local["placement"].is_null());
    }
}

#[test]
fn a_trial_that_ends_before_its_submission_is_acknowledged_is_recorded_once() {
    // The driver replies to each submission 50 ms late, so the trivial trial has ended,
    // and the run's wait returned it, before the host hears it was submitted: its end
    // must still reach its trial, and only once.
    let cluster = cluster();
    cluster.knob("trivial", "1");
    cluster.knob("slow_submit", "0.05");
    let scratch = Scratch::new(16, "");
    let spec = std::fs::read_to_string(scratch.spec()).unwrap();
    std::fs::write(
        scratch.spec(),
        spec.replace("parallelism = 2", "parallelism = 4"),
    )
    .unwrap();
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], Some(&cluster));
    command.env("RAY_FIXTURE_DIR", &cluster.knobs);
    let (code, doc, stderr) = Scratch::outcome(command);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["trials_completed"], 16, "{}", doc["run"]);
    for trial in trials_by_index(&doc) {
        assert_eq!(trial["status"], "succeeded", "{trial}");
        assert_eq!(trial["attempts"], 1, "{trial}");
        assert!(
            trial["placement"]["worker_pid"].as_u64().unwrap() > 0,
            "{trial}"
        );
    }
}

#[test]
fn a_trial_past_its_timeout_is_killed_and_the_run_goes_on() {
    let cluster = cluster();
    cluster.knob("spin", "1");
    let scratch = Scratch::new(4, "trial_timeout_ms = 3000");
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], Some(&cluster));
    let output = command.env("CEREBROS_MAX_RETRIES", "1").output().unwrap();
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    let trials = trials_by_index(&doc);
    let spun = &trials[1];
    assert_eq!(spun["status"], "failed", "{spun}");
    assert_eq!(spun["error"]["class"], "timeout", "{spun}");
    assert_eq!(spun["attempts"], 2, "retried once by our policy: {spun}");
    for other in [&trials[0], &trials[2], &trials[3]] {
        assert_eq!(other["status"], "succeeded", "{other}");
    }
    // The worker processes that spun were killed by the force-cancel (a retry may time
    // out before a fresh worker even starts it, on a busy machine).
    let pids = pids_of(&cluster, spun["trial_id"].as_str().unwrap());
    assert!(!pids.is_empty(), "{:?}", cluster.started());
    wait_for(Duration::from_secs(15), || pids.iter().all(|p| is_gone(*p)));
}

#[test]
fn a_worker_killed_mid_trial_fails_that_attempt_and_the_trial_is_retried() {
    let cluster = cluster();
    cluster.knob("sleep", "3");
    let scratch = Scratch::new(2, "");
    let mut driver = scratch.spawn(&["run", &scratch.spec(), "--json"], &cluster);
    wait_for(Duration::from_secs(60), || !cluster.started().is_empty());
    let (victim_trial, victim) = cluster.started()[0].clone();
    // SAFETY: a plain signal send to a Ray worker this test's cluster started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    assert_retried_once_elsewhere(&scratch, &mut driver, &victim_trial, victim);
}

#[test]
fn a_node_that_leaves_the_cluster_mid_trial_has_its_trial_retried_on_another() {
    let cluster = cluster();
    cluster.knob("sleep", "4");
    let scratch = Scratch::new(2, "");
    let mut driver = scratch.spawn(&["run", &scratch.spec(), "--json"], &cluster);
    // One CPU per node: the two trials run one on each node.
    wait_for(Duration::from_secs(60), || cluster.started().len() == 2);
    let started = cluster.started();
    let (victim_trial, victim) = started
        .iter()
        .find(|(_, pid)| cluster.on_second_node(*pid))
        .cloned()
        .unwrap_or_else(|| panic!("no trial on the second node: {started:?}"));
    cluster.replace_second_node();
    // The leaving node's raylet took its workers with it.
    wait_for(Duration::from_secs(30), || is_gone(victim));
    assert_retried_once_elsewhere(&scratch, &mut driver, &victim_trial, victim);
}

/// The run `driver` drives succeeds, and trial `victim_trial`, whose first attempt ran in
/// the worker `victim`, succeeded on its second attempt in another worker.
fn assert_retried_once_elsewhere(
    scratch: &Scratch,
    driver: &mut Child,
    victim_trial: &str,
    victim: i32,
) {
    assert!(driver.wait().unwrap().success());
    let doc = scratch.show(&scratch.run_id());
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    let retried = trials_by_index(&doc)
        .into_iter()
        .find(|t| t["trial_id"] == victim_trial)
        .unwrap();
    assert_eq!(retried["status"], "succeeded", "{retried}");
    assert_eq!(retried["attempts"], 2, "{retried}");
    assert_ne!(retried["placement"]["worker_pid"], victim, "{retried}");
}

#[test]
fn a_driver_killed_with_sigkill_is_interrupted_and_resumes_with_no_trial_run_twice() {
    let cluster = cluster();
    cluster.knob("sleep", "2");
    let scratch = Scratch::new(6, "");
    let mut driver = scratch.spawn(&["run", &scratch.spec(), "--json"], &cluster);
    let run_id = scratch.run_id();
    wait_for(Duration::from_secs(90), || {
        trials_by_index(&scratch.show(&run_id))
            .iter()
            .any(|t| t["status"] == "succeeded")
    });
    driver.kill().unwrap(); // SIGKILL
    driver.wait().unwrap();
    let before = scratch.show(&run_id);
    assert_eq!(before["run"]["status"], "interrupted", "{before}");
    let finished: Vec<String> = trials_by_index(&before)
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .map(|t| t["trial_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(finished.len() < 6, "the run finished before the kill");
    // Ray ends the dead driver's tasks: every worker that was running one exits.
    let orphans: Vec<i32> = cluster
        .started()
        .into_iter()
        .filter(|(t, _)| !finished.contains(t))
        .map(|(_, pid)| pid)
        .collect();
    wait_for(Duration::from_secs(60), || {
        orphans.iter().all(|p| is_gone(*p))
    });

    let (code, resumed, stderr) =
        scratch.run(&["runs", "resume", &run_id, "--json"], Some(&cluster));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(resumed["run"]["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["run"]["trials_completed"], 6);
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for (trial, _) in cluster.started() {
        *starts.entry(trial).or_default() += 1;
    }
    for trial in &finished {
        assert_eq!(starts[trial], 1, "{trial} ran again after the resume");
    }
    for trial in trials_by_index(&resumed) {
        assert_eq!(trial["status"], "succeeded", "{trial}");
    }
}

#[test]
fn runs_cancel_stops_the_trials_in_flight_within_seconds() {
    let cluster = cluster();
    cluster.knob("sleep", "120");
    let scratch = Scratch::new(4, "trial_timeout_ms = 300000");
    let mut driver = scratch.spawn(&["run", &scratch.spec(), "--json"], &cluster);
    wait_for(Duration::from_secs(60), || cluster.started().len() == 2);
    let run_id = scratch.run_id();
    let in_flight: Vec<i32> = cluster.started().into_iter().map(|(_, p)| p).collect();
    let asked = Instant::now();
    let (code, _, stderr) = scratch.run(&["runs", "cancel", &run_id, "--json"], None);
    assert_eq!(code, 0, "{stderr}");
    wait_for(Duration::from_secs(10), || {
        in_flight.iter().all(|p| is_gone(*p))
    });
    let stopped = asked.elapsed();
    driver.wait().unwrap();
    let doc = scratch.show(&run_id);
    assert_eq!(doc["run"]["status"], "cancelled", "{doc}");
    for trial in trials_by_index(&doc) {
        assert_ne!(trial["status"], "running", "{trial}");
    }
    assert!(stopped < Duration::from_secs(10), "{stopped:?}");
}

#[test]
fn a_trial_asking_more_than_any_node_has_is_refused_at_the_start() {
    // Each node of the test cluster has one CPU: a trial asking two would wait for good,
    // each attempt ending at trial_timeout_ms as if it were slow.
    let cluster = cluster();
    let scratch = Scratch::new(2, "trial_timeout_ms = 30000\ntrial_cpus = 2");
    let command = scratch.command(&["run", &scratch.spec(), "--json"], Some(&cluster));
    let started = Instant::now();
    let (code, doc, stderr) = Scratch::outcome(command);
    assert_eq!(code, 2, "{doc} {stderr}");
    assert_eq!(doc["error"]["class"], "contract", "{doc}");
    assert_eq!(doc["error"]["details"]["key"], "budget.trial_cpus", "{doc}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_unreachable_cluster_is_a_config_error_naming_the_address() {
    let scratch = Scratch::new(1, "");
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], None);
    let output = command
        .env("CEREBROS_EXECUTOR", "ray")
        .env("CEREBROS_EXECUTOR_ADDRESS", "127.0.0.1:1")
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_ne!(output.status.code(), Some(0));
    let error = &doc["error"];
    assert_eq!(error["class"], "config", "{doc}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.1:1") && message.contains("ray start --head"),
        "{message}"
    );
}

#[test]
fn an_address_where_something_else_listens_is_a_config_error_within_the_join_deadline() {
    // A port that accepts connections and never answers as Ray does (another service, a
    // typo): ray.init would wait minutes; the run refuses it within 30 s, naming it.
    let address = silent_listener();
    let scratch = Scratch::new(1, "");
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], None);
    command
        .env("CEREBROS_EXECUTOR", "ray")
        .env("CEREBROS_EXECUTOR_ADDRESS", &address);
    let started = Instant::now();
    let (code, doc, stderr) = Scratch::outcome(command);
    assert_eq!(code, 2, "{doc} {stderr}");
    let error = &doc["error"];
    assert_eq!(error["class"], "config", "{doc}");
    assert_eq!(error["details"]["address"], address.as_str(), "{doc}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no Ray cluster answered there within 30 s"),
        "{doc}"
    );
    // The deadline is the feature: 30 s, then the run's own shutdown; far from minutes.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}

/// A port that accepts connections and never answers as Ray does; its address.
fn silent_listener() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    address
}

#[test]
fn a_run_no_command_connected_first_gets_the_same_config_error() {
    // `serve` drives queued runs with no `ray_connect` of its own before them: the run's
    // start connects, with the same deadline and the same error as `run`.
    use cerebros_bridge::client::Client;
    use cerebros_bridge::core::config::{Config, ExecutorKind};
    use cerebros_bridge::core::error::ErrorClass;
    use cerebros_bridge::nas::executor::ExecutorSettings;
    use cerebros_bridge::nas::run::{CancelSignal, RunWorker};
    use cerebros_bridge::nas::spec::RunSpec;
    use cerebros_bridge::nas::store::{RunState, Store};
    let address = silent_listener();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        module: "ray_fixture".into(),
        repo_path: common::root().join("tests/fixtures"),
        ..Config::default()
    };
    config.executor.kind = ExecutorKind::Ray;
    config.executor.address = Some(address.clone());
    let client = std::sync::Arc::new(Client::start(&config).unwrap());
    let store = std::sync::Arc::new(Store::open(&dir.path().join("runs.db")).unwrap());
    let worker = RunWorker::new(client.clone(), store, dir.path().join("artifacts"))
        .with_executor(ExecutorSettings::from_config(&config));
    let spec = RunSpec::from_toml_str(&common::iris_spec("w", 1, 1), &common::root()).unwrap();
    let run_id = worker.create(&spec).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let err = runtime
        .block_on(worker.drive(&run_id, CancelSignal::new()))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Config, "{err}");
    assert_eq!(err.details["address"], address.as_str(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
    let run = worker.store().run(&run_id).unwrap();
    assert_eq!(run.status, RunState::Failed, "{run:?}");
    client.shutdown(Duration::from_millis(200));
}

#[test]
fn an_unset_address_starts_a_local_ray_whatever_ray_address_says() {
    // Unset means a local Ray started by the run (DESIGN §12). Ray itself would connect to
    // RAY_ADDRESS, or to the address file an earlier `ray start` left in /tmp/ray, and wait
    // there for a cluster that may be long gone: here nobody listens at RAY_ADDRESS.
    let scratch = Scratch::new(2, "");
    let mut command = scratch.command(&["run", &scratch.spec(), "--json"], None);
    command
        .env("CEREBROS_EXECUTOR", "ray")
        .env("RAY_ADDRESS", "127.0.0.1:1");
    let started = Instant::now();
    let (code, doc, stderr) = Scratch::outcome(command);
    assert_eq!(code, 0, "after {:?}: {stderr}", started.elapsed());
    assert_eq!(doc["run"]["trials_completed"], 2, "{}", doc["run"]);
    for trial in trials_by_index(&doc) {
        assert!(trial["placement"]["node_id"].is_string(), "{trial}");
    }
}

#[test]
fn a_ray_op_called_from_the_cli_leaves_no_local_ray_behind() {
    // `call ray_connect` starts a local Ray in the CLI's interpreter; the CLI then exited
    // with Ray's threads running (a crash, once) and left its processes behind.
    let scratch = Scratch::new(1, "");
    let ray_tmp = tempfile::tempdir().unwrap();
    let mut command = scratch.command(&["call", "ray_connect", "--payload", "{}", "--json"], None);
    command.env("RAY_TMPDIR", ray_tmp.path());
    let (code, doc, stderr) = Scratch::outcome(command);
    let marker = ray_tmp.path().display().to_string();
    let leftovers = |marker: &str| -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // Ray renames its workers (`ray::IDLE`); they inherit RAY_TMPDIR.
                ["cmdline", "environ"].iter().any(|file| {
                    std::fs::read(format!("/proc/{pid}/{file}"))
                        .is_ok_and(|text| String::from_utf8_lossy(&text).contains(marker))
                })
            })
            .collect()
    };
    let mut left = leftovers(&marker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = leftovers(&marker);
    }
    for pid in &left {
        // SAFETY: plain kill(2) of a process this test's CLI started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "Ray processes left behind: {left:?}");
    assert_eq!(code, 0, "{doc} {stderr}");
    assert_eq!(doc["nodes"], 1, "{doc}");
}
