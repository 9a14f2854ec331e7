//! Shared set-up for the benches: a client over the real `cerebros_service` and a
//! contract-sized payload (a `record_trial` report, ~400 bytes of JSON).
#![allow(dead_code)]

/// The same allocator as the CLI binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::Config;
use serde_json::Value;

/// A `record_trial`-sized payload (the CLI's `bench` uses the same one).
pub fn contract_payload() -> Value {
    cerebros_bridge::bench::contract_payload()
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
    let invoker =
        cerebros_bridge::inprocess::invoker::InProcessInvoker::start(options).expect("pool");
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
    let client = client.clone();
    let payload = payload.clone();
    let call = move || {
        let client = client.clone();
        let payload = payload.clone();
        async move { client.call("echo", payload).await.map(drop) }
    };
    runtime
        .block_on(cerebros_bridge::bench::concurrent(tasks, calls, call))
        .expect("echo succeeds")
}
