//! Tests of the MLflow outbox: leasing, syncing, parking, revisions, and a store of the
//! previous schema.

use super::*;
use crate::nas::spec::RunSpec;
use crate::nas::store::test_support::trial;
use crate::nas::store::{RunEnd, TrialState};

fn store_with_run(dir: &tempfile::TempDir) -> (Store, String) {
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let spec: RunSpec = RunSpec::from_toml_str(
        "name = \"t\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = 2\n",
        dir.path(),
    )
    .unwrap();
    store.create_run("r1", &spec).unwrap();
    (store, "r1".into())
}

const MINUTE: Duration = Duration::from_secs(60);

/// A holder in a process that has exited.
fn gone_holder() -> LeaseHolder {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let mut holder = LeaseHolder::current();
    holder.process.pid = pid;
    holder.id = format!("gone:{pid}");
    holder
}

#[test]
fn recording_enqueues_and_syncing_writes_the_ids_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = store_with_run(&dir);
    let (a, b) = (LeaseHolder::current(), LeaseHolder::current());
    store
        .record_trial(&trial(&run, 0, TrialState::Succeeded), None)
        .unwrap();
    store
        .record_trial(&trial(&run, 1, TrialState::Failed), None)
        .unwrap();
    store.finish_run(&run, RunEnd::Succeeded, None).unwrap();
    assert_eq!(store.outbox_counts().unwrap().pending, 3);

    let items = store.outbox_lease(&a, 0, MINUTE, true, 10).unwrap();
    let kinds: Vec<_> = items.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [OutboxKind::Trial, OutboxKind::Trial, OutboxKind::Run]
    );
    // Another syncer (of this live process) finds the run leased.
    assert!(store
        .outbox_lease(&b, 0, MINUTE, false, 10)
        .unwrap()
        .is_empty());

    assert!(store
        .outbox_synced(&items[0], Some("p1"), Some("c1"))
        .unwrap());
    store.outbox_failed(&items[1], "down", 5_000).unwrap();
    store.outbox_release(&a.id).unwrap();
    assert_eq!(
        store.run(&run).unwrap().mlflow_run_id.as_deref(),
        Some("p1")
    );
    let synced = store.trial(&run, "r1-t000").unwrap().unwrap();
    assert_eq!(synced.mlflow_run_id.as_deref(), Some("c1"));
    assert_eq!(
        store.outbox_counts().unwrap(),
        OutboxCounts {
            pending: 2,
            synced: 1,
            failed: 0
        }
    );
    // The failed item waits for its retry time unless forced.
    let due = store.outbox_lease(&b, 1_000, MINUTE, true, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, OutboxKind::Run);
    store.outbox_release(&b.id).unwrap();
    let forced = store.outbox_lease(&b, 1_000, MINUTE, false, 10).unwrap();
    assert_eq!(forced.len(), 2);
    assert_eq!(forced[0].attempts, 1);
}

#[test]
fn the_leases_of_a_holder_whose_process_is_gone_are_freed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = store_with_run(&dir);
    store
        .record_trial(&trial(&run, 0, TrialState::Succeeded), None)
        .unwrap();
    let gone = gone_holder();
    assert_eq!(
        store
            .outbox_lease(&gone, 0, MINUTE, false, 10)
            .unwrap()
            .len(),
        1
    );
    let items = store
        .outbox_lease(&LeaseHolder::current(), 0, MINUTE, false, 10)
        .unwrap();
    assert_eq!(items.len(), 1, "a dead holder's lease blocks nothing");
}

#[test]
fn a_parked_item_is_listed_until_enqueued_again_or_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = store_with_run(&dir);
    let holder = LeaseHolder::current();
    store
        .record_trial(&trial(&run, 0, TrialState::Succeeded), None)
        .unwrap();
    let items = store.outbox_lease(&holder, 0, MINUTE, false, 10).unwrap();
    assert!(store.outbox_park(&items[0], "too big").unwrap());
    let counts = store.outbox_counts().unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 1));
    let failed = store.outbox_failed_items().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "too big");
    assert_eq!(failed[0].trial_id.as_deref(), Some("r1-t000"));
    assert_eq!(failed[0].attempts, 1);
    assert!(failed[0].failed_at.is_some());
    assert!(store
        .outbox_lease(&holder, 0, MINUTE, false, 10)
        .unwrap()
        .is_empty());

    // Recorded again (a resume ran it again): pending, as a fresh item.
    store
        .record_trial(&trial(&run, 0, TrialState::Succeeded), None)
        .unwrap();
    let again = store.outbox_lease(&holder, 0, MINUTE, true, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (items[0].id, 0));
    assert!(store.outbox_park(&again[0], "still too big").unwrap());

    assert_eq!(store.outbox_retry_failed().unwrap(), 1);
    assert!(store.outbox_failed_items().unwrap().is_empty());
    assert_eq!(store.outbox_counts().unwrap().pending, 1);
}

#[test]
fn an_item_enqueued_again_while_leased_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = store_with_run(&dir);
    let holder = LeaseHolder::current();
    store
        .record_trial(&trial(&run, 0, TrialState::Cancelled), None)
        .unwrap();
    let items = store.outbox_lease(&holder, 0, MINUTE, true, 10).unwrap();
    store
        .record_trial(&trial(&run, 0, TrialState::Succeeded), None)
        .unwrap();
    assert!(!store
        .outbox_synced(&items[0], Some("p"), Some("c"))
        .unwrap());
    assert!(!store.outbox_park(&items[0], "refused").unwrap());
    assert_eq!(store.outbox_counts().unwrap().pending, 1);
    let again = store.outbox_lease(&holder, 0, MINUTE, true, 10).unwrap();
    assert_eq!(again[0].revision, 2);
    assert!(store
        .outbox_synced(&again[0], Some("p"), Some("c"))
        .unwrap());
    assert_eq!(store.outbox_counts().unwrap().pending, 0);
}

#[test]
fn a_store_of_the_previous_schema_keeps_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &crate::nas::store::schema::MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO model_runs (run_id, name, status, objective, direction, dataset_id,
                 seed, spec, trials_planned, created_at)
             VALUES ('r1', 'old', 'succeeded', 'val_accuracy', 'maximize', 'd', 1, '{}', 1, 'x');
             INSERT INTO mlflow_outbox (kind, run_id, created_at, attempts, lease_owner,
                 lease_until_ms)
             VALUES ('run', 'r1', 'x', 3, '123:456:789', 9000000000000);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.outbox_counts().unwrap().pending, 1);
    // An old lease names no process: it is kept until it expires.
    let holder = LeaseHolder::current();
    assert!(store
        .outbox_lease(&holder, 0, MINUTE, false, 10)
        .unwrap()
        .is_empty());
    let items = store
        .outbox_lease(&holder, 9_000_000_000_001, MINUTE, false, 10)
        .unwrap();
    assert_eq!((items.len(), items[0].attempts), (1, 3));
}
