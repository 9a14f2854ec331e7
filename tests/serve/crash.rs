//! A server killed with `kill -9` while it drives one run and another waits: the next
//! server resumes the first and starts the second; no trial runs twice.

use crate::harness::Scratch;
use cerebros_bridge::nas::store::{Store, TrialState};
use std::time::{Duration, Instant};

const RUN_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn a_killed_server_loses_nothing_and_runs_no_trial_twice() {
    let scratch = Scratch::new();
    let slow = [("NAS_FIXTURE_SLEEP", "0.4")];
    let mut server = scratch.serve(&slow);
    let running = server.submit(&scratch.spec("running", 8)).await;
    let queued = server.submit(&scratch.spec("queued", 3)).await;
    // Kill it once a few of the first run's trials are stored.
    let store = Store::open(&scratch.path("store.db")).unwrap();
    let finished = |run_id: &str| {
        store
            .trials(run_id)
            .unwrap()
            .iter()
            .filter(|t| t.status == TrialState::Succeeded)
            .count()
    };
    let deadline = Instant::now() + RUN_LIMIT;
    while finished(&running) < 3 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    let before: Vec<_> = store
        .trials(&running)
        .unwrap()
        .into_iter()
        .filter(|t| t.status == TrialState::Succeeded)
        .collect();
    assert!(before.len() < 8, "the run finished before the kill");
    assert_eq!(store.run(&running).unwrap().status.as_str(), "interrupted");
    assert_eq!(store.run(&queued).unwrap().status.as_str(), "queued");

    let server = scratch.serve(&slow);
    let resumed = server
        .wait_for_status(&running, &["succeeded"], RUN_LIMIT)
        .await;
    let second = server
        .wait_for_status(&queued, &["succeeded"], RUN_LIMIT)
        .await;
    assert_eq!(resumed["trials"].as_array().unwrap().len(), 8);
    assert_eq!(second["trials"].as_array().unwrap().len(), 3);
    let starts = scratch.starts();
    for kept in &before {
        assert_eq!(
            starts[&kept.trial_id], 1,
            "trial {} ran twice",
            kept.trial_id
        );
        let now = resumed["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trial_id"] == kept.trial_id.as_str())
            .unwrap();
        assert_eq!(
            now["finished_at"],
            kept.finished_at.as_deref().unwrap(),
            "rewritten"
        );
    }
    for trial in second["trials"].as_array().unwrap() {
        assert_eq!(starts[trial["trial_id"].as_str().unwrap()], 1);
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_promptly_and_the_next_one_finishes_its_run() {
    let scratch = Scratch::new();
    let slow = [("NAS_FIXTURE_SLEEP", "0.5")];
    let mut server = scratch.serve(&slow);
    let run_id = server.submit(&scratch.spec("stopped", 8)).await;
    let store = Store::open(&scratch.path("store.db")).unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    while store.run(&run_id).unwrap().trials_completed < 2 {
        assert!(Instant::now() < deadline, "no progress before SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, took) = server.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "a clean stop (after {took:?})");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert_eq!(store.run(&run_id).unwrap().status.as_str(), "interrupted");
    let finished: Vec<String> = store
        .trials(&run_id)
        .unwrap()
        .into_iter()
        .filter(|t| t.status == TrialState::Succeeded)
        .map(|t| t.trial_id)
        .collect();
    let server = scratch.serve(&slow);
    let done = server
        .wait_for_status(&run_id, &["succeeded"], RUN_LIMIT)
        .await;
    assert_eq!(done["trials"].as_array().unwrap().len(), 8);
    let starts = scratch.starts();
    for id in &finished {
        assert_eq!(
            starts[id], 1,
            "trial {id}, finished before the stop, ran again"
        );
    }
}

#[tokio::test]
async fn without_auto_resume_a_killed_run_waits_for_the_api() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path("no-resume-config.toml"),
        "[serve]\nauto_resume = false\n",
    )
    .unwrap();
    let config = scratch.path("no-resume-config.toml").display().to_string();
    let envs = [
        ("CEREBROS_CONFIG", config.as_str()),
        ("NAS_FIXTURE_SLEEP", "0.4"),
    ];
    let mut server = scratch.serve(&envs);
    let run_id = server.submit(&scratch.spec("manual", 6)).await;
    server
        .wait_for_status(&run_id, &["running"], RUN_LIMIT)
        .await;
    server.kill();
    let server = scratch.serve(&envs);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.run(&run_id).await["run"]["status"], "interrupted");
    let response = server
        .post(
            &format!("/api/runs/{run_id}/resume"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(response.status().as_u16(), 202);
    server
        .wait_for_status(&run_id, &["succeeded"], RUN_LIMIT)
        .await;
}
