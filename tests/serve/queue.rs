//! The durable run queue: FIFO, `serve.max_concurrent_runs`, and runs queued from a
//! shell before any server runs.

use crate::harness::Scratch;
use serde_json::Value;
use std::time::Duration;

const RUN_LIMIT: Duration = Duration::from_secs(180);

/// (started_at, finished_at) of a finished run document.
fn span(doc: &Value) -> (String, String) {
    (
        doc["run"]["started_at"].as_str().unwrap().to_owned(),
        doc["run"]["finished_at"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn one_run_at_a_time_in_the_order_they_were_submitted() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[("NAS_FIXTURE_SLEEP", "0.2")]);
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        ids.push(server.submit(&scratch.spec(name, 2)).await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let doc = server.wait_for_status(id, &["succeeded"], RUN_LIMIT).await;
        spans.push(span(&doc));
    }
    for pair in spans.windows(2) {
        let ((_, first_end), (second_start, _)) = (&pair[0], &pair[1]);
        assert!(
            first_end <= second_start,
            "runs overlapped or ran out of order: {spans:?}"
        );
    }
}

#[tokio::test]
async fn max_concurrent_runs_drives_that_many_at_once() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path("two.toml"),
        "[serve]\nmax_concurrent_runs = 2\n",
    )
    .unwrap();
    let config = scratch.path("two.toml").display().to_string();
    let server = scratch.serve(&[("CEREBROS_CONFIG", &config), ("NAS_FIXTURE_SLEEP", "0.5")]);
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(server.submit(&scratch.spec(name, 4)).await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let doc = server.wait_for_status(id, &["succeeded"], RUN_LIMIT).await;
        spans.push(span(&doc));
    }
    let (a_start, a_end) = &spans[0];
    let (b_start, b_end) = &spans[1];
    assert!(
        b_start < a_end && a_start < b_end,
        "a and b overlapped: {spans:?}"
    );
    let first_end = a_end.min(b_end);
    assert!(
        &spans[2].0 >= first_end,
        "c started only when a slot was free: {spans:?}"
    );
}

#[tokio::test]
async fn runs_submitted_from_a_shell_wait_for_the_next_server() {
    let scratch = Scratch::new();
    scratch.spec("shell", 2);
    let spec = scratch.path("shell.toml").display().to_string();
    let output = scratch
        .command(&["runs", "submit", &spec, "--json"], &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let queued: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(queued["status"], "queued");
    let run_id = queued["run_id"].as_str().unwrap().to_owned();
    let output = scratch
        .command(&["runs", "show", &run_id, "--json"], &[])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["run"]["status"], "queued", "nothing drives it yet");
    let output = scratch
        .command(&["runs", "submit", "/nonexistent.toml", "--json"], &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a missing spec is bad input");

    let server = scratch.serve(&[]);
    let done = server
        .wait_for_status(&run_id, &["succeeded"], RUN_LIMIT)
        .await;
    assert_eq!(done["trials"].as_array().unwrap().len(), 2);
    // Queued while the server runs, from another process: picked up without a bell.
    let output = scratch
        .command(&["runs", "submit", &spec, "--json"], &[])
        .output()
        .unwrap();
    let queued: Value = serde_json::from_slice(&output.stdout).unwrap();
    let second = queued["run_id"].as_str().unwrap();
    server
        .wait_for_status(second, &["succeeded"], RUN_LIMIT)
        .await;
}
