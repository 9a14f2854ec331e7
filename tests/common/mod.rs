//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod scratch;

use cerebros_bridge::inprocess::pool::{Pool, PoolOptions};
use parking_lot::{Mutex, MutexGuard};
use std::path::PathBuf;
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python the bridges under test use: `$VIRTUAL_ENV/bin/python` (as
/// `make test-pythons` sets it), else the project's `.venv/bin/python`.
pub fn venv_python() -> PathBuf {
    cerebros_bridge::inprocess::interpreter::find_python(None)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// Options for a pool over the fault-injection service in `tests/fixtures`.
pub fn fault_options(size: usize) -> PoolOptions {
    PoolOptions {
        size,
        queue_capacity: 1024,
        cancel_grace: Duration::from_millis(250),
        module: "fault_service".into(),
        repo_path: root().join("tests/fixtures"),
        python_executable: None,
        spin: true,
        start_timeout: Duration::from_secs(30),
        nice: 0,
    }
}

/// A started pool over the fault-injection service.
pub fn fault_pool(size: usize) -> Pool {
    Pool::start(fault_options(size)).expect("the fault pool starts")
}

/// Timing-sensitive tests take this lock so they do not share the two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
}

/// Number of OS threads in this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Polls `condition` every millisecond for up to `limit`.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

/// Waits until `condition` holds, looking every 50 ms; fails the test after `limit`.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The trials of a run document (`run --json`, `runs show --json`), in index order.
pub fn trials_by_index(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut trials = doc["trials"].as_array().cloned().unwrap_or_default();
    trials.sort_by_key(|t| t["index"].as_u64());
    trials
}

/// A small real NAS run spec on iris (fast trials) with `trials` trials of `epochs` epochs.
pub fn iris_spec(name: &str, trials: u32, epochs: u32) -> String {
    format!(
        r#"
name = "{name}"
dataset = "sklearn:iris"
seed = 11
[search_space]
minimum_levels = 1
maximum_levels = 2
minimum_units_per_level = 1
maximum_units_per_level = 2
minimum_neurons_per_unit = 4
maximum_neurons_per_unit = 16
[budget]
trials = {trials}
epochs = {epochs}
batch_size = 16
patience = 3
parallelism = 2
trial_timeout_ms = 30000
"#
    )
}

/// The CLI binary set up for a NAS run on the fixture module `nas_fixture`, with its store
/// at `store` and the repository root as working directory.
pub fn nas_cli(store: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    command
        .args(args)
        .current_dir(root())
        .env(
            "CEREBROS_STORE_URL",
            format!("sqlite://{}", store.display()),
        )
        .env("CEREBROS_MODULE", "nas_fixture")
        .env("CEREBROS_REPO", root().join("tests/fixtures"));
    command
}
