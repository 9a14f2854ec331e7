//! The run worker in-process: lifecycle events on the broadcast channel, the store's
//! records, and ownership of a run.

mod common;

use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::Config;
use cerebros_bridge::nas::run::{CancelSignal, RunWorker};
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::{Owner, RunState, Store};
use std::sync::Arc;

fn worker(dir: &std::path::Path) -> RunWorker {
    let config = Config {
        module: "fault_service".into(),
        repo_path: common::root().join("tests/fixtures"),
        ..Config::default()
    };
    let client = Arc::new(Client::start(&config).unwrap());
    let store = Arc::new(Store::open(&dir.join("runs.db")).unwrap());
    RunWorker::new(client, store, dir.join("artifacts"))
}

fn spec(trials: u32) -> RunSpec {
    let text = format!(
        "name = \"w\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = {trials}\nparallelism = 2\n"
    );
    RunSpec::from_toml_str(&text, &common::root()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_broadcasts_its_lifecycle_and_stores_every_trial() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker(dir.path());
    let mut events = worker.subscribe();
    let run_id = worker.create(&spec(5)).unwrap();
    let run = worker.drive(&run_id, CancelSignal::new()).await.unwrap();
    assert_eq!(run.status, RunState::Succeeded);
    assert_eq!(run.trials_completed, 5);
    // fault_service reports val_accuracy = 0.5 + index / 100: the last trial is best.
    assert_eq!(
        run.best_trial_id.as_deref(),
        Some(format!("{run_id}-t004").as_str())
    );
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.run_id, run_id);
        kinds.push(event.kind);
    }
    assert_eq!(kinds.first(), Some(&"ml.run.start"));
    assert_eq!(kinds.iter().filter(|k| **k == "ml.run.trial").count(), 5);
    assert_eq!(kinds.last(), Some(&"ml.run.stop"));
    let stored: Vec<String> = worker
        .store()
        .events(&run_id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(stored.contains(&"ml.run.start".to_string()));
    assert_eq!(stored.iter().filter(|k| *k == "ml.run.trial").count(), 5);
    let trials = worker.store().trials(&run_id).unwrap();
    assert_eq!(
        trials.iter().map(|t| t.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    // Driving an ended run again is refused: nothing runs twice.
    let err = worker
        .drive(&run_id, CancelSignal::new())
        .await
        .unwrap_err();
    assert!(err.message.contains("already ended"), "{}", err.message);
}

#[test]
fn a_run_held_by_a_live_owner_cannot_be_claimed_and_a_dead_owner_means_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    // Opening again finds the schema in place.
    drop(Store::open(&dir.path().join("s.db")).unwrap());
    store.create_run("r1", &spec(2)).unwrap();
    assert_eq!(store.run("r1").unwrap().status, RunState::Queued);
    // A live owner on this host (our parent process, e.g. cargo) holds the run.
    let parent = std::os::unix::process::parent_id();
    let stat = std::fs::read_to_string(format!("/proc/{parent}/stat")).unwrap();
    let start = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    let live = Owner {
        pid: parent,
        start,
        ..Owner::current()
    };
    store.claim("r1", &live).unwrap();
    assert_eq!(store.run("r1").unwrap().status, RunState::Running);
    let err = store.claim("r1", &Owner::current()).unwrap_err();
    assert!(
        err.message.contains("is being driven by process"),
        "{}",
        err.message
    );
    // The same run owned by a process that no longer exists is interrupted and claimable.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let dead = Owner {
        pid,
        ..Owner::current()
    };
    let store2 = Store::open(&dir.path().join("s.db")).unwrap();
    store2.create_run("r2", &spec(2)).unwrap();
    store2.claim("r2", &dead).unwrap();
    assert_eq!(store2.run("r2").unwrap().status, RunState::Interrupted);
    store2.claim("r2", &Owner::current()).unwrap();
    assert_eq!(store2.run("r2").unwrap().status, RunState::Running);
}
