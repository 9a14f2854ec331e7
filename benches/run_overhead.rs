//! Bridge + store overhead per trial: a 1000-trial run whose `run_trial` does no work
//! (`tests/fixtures/fault_service.py`), driven by the real run worker into a real
//! SQLite store. `cargo bench --bench run_overhead`.

mod common;

use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::Config;
use cerebros_bridge::nas::run::{CancelSignal, RunWorker};
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const TRIALS: u32 = 1000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::load(None).expect("config");
    config.module = "fault_service".into();
    config.repo_path = root.join("tests/fixtures");
    let client = Arc::new(Client::start(&config).expect("bridge"));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("bench.db")).unwrap());
    let worker = RunWorker::new(client, store.clone(), dir.path().join("artifacts"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for parallelism in [1, 2] {
        let spec = RunSpec::from_toml_str(
            &format!(
                "name = \"overhead\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = {TRIALS}\nparallelism = {parallelism}\n"
            ),
            root,
        )
        .unwrap();
        let run_id = worker.create(&spec).unwrap();
        let start = Instant::now();
        let run = runtime
            .block_on(worker.drive(&run_id, CancelSignal::new()))
            .unwrap();
        let took = start.elapsed();
        assert_eq!(run.trials_completed, TRIALS);
        println!(
            "{TRIALS} trivial trials, parallelism {parallelism}: {:.3} s in all, {:.3} ms per trial \
             (start_run + run_trial + record_trial calls, 2 store transactions and an event per trial)",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e3 / TRIALS as f64
        );
    }
}
