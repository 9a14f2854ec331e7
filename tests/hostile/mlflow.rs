//! MLflow sync against what goes wrong around it (issue 9, item 11), through the CLI and a
//! real MLflow: a syncer killed while it holds leases, leases a live syncer holds, a
//! tracking server that accepts connections but never answers, and items MLflow can never
//! take. (Several processes creating one new tracking database at once: in
//! `tests/python/test_mlflow_sync.py`.)

use crate::common::scratch::{Outcome, Scratch};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Outcome {
    fn counts(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let count = |key: &str| self.json[key].as_u64();
        (count("synced"), count("pending"), count("failed"))
    }
}

/// The fixture's runs under the name `iris-hostile-mlflow`, 3 trials of 4 epochs.
fn scratch() -> Scratch {
    Scratch::new("iris-hostile-mlflow", 3, 4)
}

impl Scratch {
    /// A whole run with sync off: its trials and its end wait in the outbox.
    fn queued_run(&self) -> Outcome {
        let spec = self.path("spec.toml").display().to_string();
        let run = self.cli(&["run", &spec, "--json"], Some("off"));
        assert_eq!(run.code, 0, "{run:?}");
        run
    }

    fn sync(&self, extra: &[&str]) -> Outcome {
        let mut args = vec!["mlflow", "sync"];
        args.extend_from_slice(extra);
        self.cli(&args, None)
    }

    fn connection(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.path("store.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    fn sql(&self, statement: &str) {
        self.connection().execute_batch(statement).unwrap();
    }

    /// The first value of `query`, `None` while the store or its tables do not exist.
    fn query(&self, query: &str) -> Option<i64> {
        if !self.path("store.db").exists() {
            return None;
        }
        self.connection()
            .query_row(query, [], |r| r.get::<_, i64>(0))
            .ok()
    }
}

/// A loopback port that accepts connections (the kernel's backlog) and never answers:
/// a tracking server that hangs.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    (listener, uri)
}

/// Polls `condition` every 50 ms for up to `limit`.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

#[test]
fn the_leases_of_a_killed_syncer_do_not_hold_up_mlflow_sync() {
    let scratch = scratch();
    let (_server, hanging) = silent_server();
    let spec = scratch.path("spec.toml").display().to_string();
    // A run whose sync hangs on the server, killed (with its children) while it holds
    // the leases of its run's items.
    let mut run = scratch.command(&["run", &spec, "--json"], Some(&hanging));
    run.env("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = run.spawn().unwrap();
    let leased = wait_for(Duration::from_secs(120), || {
        scratch.query("SELECT COUNT(*) FROM mlflow_outbox WHERE lease_owner IS NOT NULL") > Some(0)
    });
    // SAFETY: signals the process group this test created for the run.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    child.wait().unwrap();
    assert!(leased, "the run's sync never leased an item");
    let queued = scratch
        .query("SELECT COUNT(*) FROM mlflow_outbox WHERE status = 'pending'")
        .unwrap() as u64;

    let sync = scratch.sync(&["--json"]);
    assert_eq!(sync.code, 0, "{sync:?}");
    assert_eq!(sync.counts(), (Some(queued), Some(0), Some(0)), "{sync:?}");
}

#[test]
fn mlflow_sync_does_not_claim_success_while_items_stay_pending() {
    let scratch = scratch();
    scratch.queued_run();
    // Another syncer, alive as far as anyone can tell, holds the run for a long while.
    scratch.sql(
        "UPDATE mlflow_outbox SET lease_owner = 'another-syncer', lease_until_ms = 9000000000000",
    );
    let sync = scratch.sync(&["--json"]);
    assert_eq!(sync.code, 1, "{sync:?}");
    assert_eq!(sync.counts(), (Some(0), Some(4), Some(0)), "{sync:?}");
    let text = scratch.sync(&[]);
    assert_eq!(text.code, 1, "{text:?}");
    assert!(text.stdout.contains("still pending"), "{text:?}");
}

#[test]
fn the_end_of_a_run_waits_for_its_sync_at_most_flush_timeout_ms() {
    let scratch = scratch();
    let (_server, hanging) = silent_server();
    std::fs::write(
        scratch.path("cerebros.toml"),
        "[mlflow]\nflush_timeout_ms = 1000\n",
    )
    .unwrap();
    let spec = scratch.path("spec.toml").display().to_string();
    let mut run = scratch.command(&["run", &spec, "--json"], Some(&hanging));
    // Each sync call hangs until its own deadline (60 s), the one in flight when the
    // run ends included.
    run.env("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        .env("CEREBROS_CONFIG", scratch.path("cerebros.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = run.spawn().unwrap();
    let ended = "SELECT COUNT(*) FROM model_runs WHERE status IN ('succeeded', 'failed')";
    let ran = wait_for(Duration::from_secs(120), || scratch.query(ended) == Some(1));
    let run_ended = Instant::now();
    let outcome = Outcome::of(child.wait_with_output().unwrap());
    let waited = run_ended.elapsed();
    assert!(ran, "the run did not end: {outcome:?}");
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert_eq!(outcome.json["run"]["status"], "succeeded", "{outcome:?}");
    // 1 s of flush, 0.5 s of client shutdown grace, and a generous margin.
    assert!(
        waited < Duration::from_secs(5),
        "the run's end waited {waited:?}: {outcome:?}"
    );
    assert!(
        outcome.stderr.contains("mlflow.flush_timeout_ms = 1000"),
        "{outcome:?}"
    );
}

#[test]
fn an_item_that_can_never_sync_is_parked_as_failed_and_listed() {
    let scratch = scratch();
    let run = scratch.queued_run();
    let run_id = run.json["run"]["run_id"].as_str().unwrap().to_owned();
    let trial = |index: usize| {
        run.json["trials"][index]["trial_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Trial 0's result is over invoke.max_payload_bytes (16 MiB); trial 1 has a metric
    // name MLflow refuses.
    scratch.sql(&format!(
        "UPDATE model_trials SET metrics = json_set(metrics, '$.blob', hex(zeroblob(8500000)))
             WHERE trial_id = '{}';
         UPDATE model_trials SET metrics = json_set(metrics, '$.\"bad?name\"', 1.0)
             WHERE trial_id = '{}';",
        trial(0),
        trial(1)
    ));

    let first = scratch.sync(&["--json"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.counts(), (Some(2), Some(0), Some(2)), "{first:?}");
    let errors = first.json["errors"].as_array().unwrap();
    assert!(errors.iter().all(|e| e["parked"] == true), "{first:?}");
    let failed = first.json["failed_items"].as_array().unwrap();
    // Listed in the order the items were queued, and the two trials finish in either order.
    let mut parked: Vec<(&str, &str)> = failed
        .iter()
        .map(|f| {
            assert_eq!(f["run_id"], run_id.as_str());
            (
                f["trial_id"].as_str().unwrap(),
                f["error"].as_str().unwrap(),
            )
        })
        .collect();
    parked.sort();
    assert_eq!(parked.len(), 2, "{first:?}");
    assert_eq!(parked[0].0, trial(0));
    assert!(parked[0].1.contains("max_payload_bytes"), "{first:?}");
    assert_eq!(parked[1].0, trial(1));
    assert!(parked[1].1.contains("INVALID_PARAMETER_VALUE"), "{first:?}");

    // Nothing is tried again, nothing is pending, and the parked items stay listed.
    let again = scratch.sync(&["--json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.counts(), (Some(0), Some(0), Some(0)), "{again:?}");
    assert_eq!(again.json["failed_items"], first.json["failed_items"]);
    let text = scratch.sync(&[]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("2 parked as failed"), "{text:?}");
    assert!(
        text.stdout.contains(&format!("trial {}", trial(1))),
        "{text:?}"
    );

    // Once the cause is fixed, --retry-failed syncs them.
    scratch.sql(&format!(
        "UPDATE model_trials SET metrics = json_remove(metrics, '$.blob', '$.\"bad?name\"')
             WHERE trial_id IN ('{}', '{}');",
        trial(0),
        trial(1)
    ));
    let retried = scratch.sync(&["--retry-failed", "--json"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert_eq!(retried.counts(), (Some(2), Some(0), Some(0)), "{retried:?}");
    assert_eq!(retried.json["failed_items"], serde_json::json!([]));
}
