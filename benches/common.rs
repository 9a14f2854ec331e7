//! Shared set-up for the benches: a client over the real `cerebros_service` and a
//! contract-sized payload (a `record_trial` report, ~400 bytes of JSON).
#![allow(dead_code)]

/// The same allocator as the CLI binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cerebros_bridge::client::Client;
use cerebros_bridge::config::Config;
use cerebros_bridge::contracts::{ContractV1, TrialReportedV1, TrialStatus};
use serde_json::{json, Value};

/// A `record_trial`-sized payload.
pub fn contract_payload() -> Value {
    let mut report = TrialReportedV1::new("run-bench-0001", "trial-0007", TrialStatus::Succeeded);
    report.metrics = json!({"val_accuracy": 0.9733, "val_loss": 0.0871, "params": 12_345})
        .as_object()
        .unwrap()
        .clone();
    report.parameters = json!({
        "levels": [[32, 16], [64]],
        "activation": "relu",
        "learning_rate": 0.0031,
        "p_lateral_connection": 0.5,
    })
    .as_object()
    .unwrap()
    .clone();
    report.artifact_uri = Some("file:///tmp/artifacts/run-bench-0001/trial-0007.npz".into());
    report.duration_ms = 1834;
    report.to_value()
}

/// A client configured like the CLI (`cerebros.toml`, env, defaults: 2 workers), with
/// retries off. Caching is on, but generic ops are only cached with a key, so echo
/// calls always reach Python.
pub fn client() -> Client {
    let mut config = Config::load(None).expect("config");
    config.invoke.max_retries = 0;
    Client::start(&config).expect("the bridge starts")
}

/// A client like [`client`] whose pool never busy-waits (callers and idle workers
/// park at once): the "plain futex hand-off" option.
pub fn parking_client() -> Client {
    let mut config = Config::load(None).expect("config");
    config.invoke.max_retries = 0;
    let mut options = cerebros_bridge::client::pool_options(&config);
    options.spin = false;
    let invoker = cerebros_bridge::invoker::InProcessInvoker::start(options).expect("pool");
    Client::with_invoker(std::sync::Arc::new(invoker), &config)
}

/// `calls` echo calls made by `tasks` tokio tasks at once on `runtime`; every call is
/// timed, and calls/s is over the wall time of the whole batch.
pub fn concurrent_echo(
    runtime: &tokio::runtime::Runtime,
    client: &std::sync::Arc<Client>,
    payload: &Value,
    tasks: u64,
    calls: u64,
) -> cerebros_bridge::bench::Summary {
    let per_task = (calls / tasks).max(1);
    let (mut latencies, wall) = runtime.block_on(async {
        let start = std::time::Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let client = client.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut own = Vec::with_capacity(per_task as usize);
                    for _ in 0..per_task {
                        let t = std::time::Instant::now();
                        client.call("echo", payload.clone()).await.unwrap();
                        own.push(t.elapsed());
                    }
                    own
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.unwrap());
        }
        (all, start.elapsed())
    });
    cerebros_bridge::bench::summarize(&mut latencies, wall)
}
