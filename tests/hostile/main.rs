//! The hostile suite (DESIGN §10): service modules that lie, hang, print, crash or reach
//! past their own call, run against every mode where the case applies. Each test here
//! failed before the fix it guards. The hostile Python modules live in `services/`.

#[path = "../common/mod.rs"]
mod common;
mod host;
mod mlflow;
mod nas;
mod ops;
mod proc;

use cerebros_bridge::core::config::{Config, Mode};
use std::path::PathBuf;

/// Every execution mode, for the cases that apply to all three.
const MODES: [Mode; 3] = [Mode::InProcess, Mode::WorkerProcess, Mode::Subprocess];

/// The folder of the hostile service modules.
fn services() -> PathBuf {
    common::root().join("tests/hostile/services")
}

/// A configuration for `module` from [`services`] in `mode`: one worker, no retries, no
/// cache and 30 s per call, so that a test sees exactly what one call does.
fn service_config(mode: Mode, module: &str) -> Config {
    let mut config = Config {
        mode,
        module: module.into(),
        repo_path: services(),
        ..Config::default()
    };
    config.invoke.max_retries = 0;
    config.invoke.pool_size = 1;
    config.invoke.default_timeout_ms = 30_000;
    config.cache.enabled = false;
    config
}
