//! Per-call percentiles for the bridge's speed goals, and RSS over 1M echo calls.
//! `cargo bench --bench latency` (add `-- --quick` for a shorter run). Prints one table;
//! BENCHMARKS.md records it.

mod common;

use cerebros_bridge::bench::{self, Summary};
use cerebros_bridge::client::CallOptions;
use cerebros_bridge::core::invoker::Request;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn row(name: &str, s: Summary) {
    println!(
        "{name:<44} p50 {:>8.2} µs   p99 {:>9.2} µs   {:>9.0} calls/s",
        s.p50_us, s.p99_us, s.calls_per_s
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The client's rows: a plain thread, one tokio task, 16 tokio tasks.
fn client_rows(
    rt: &tokio::runtime::Runtime,
    client: &Arc<cerebros_bridge::client::Client>,
    prefix: &str,
    name: &str,
    payload: &Value,
    calls: u64,
) {
    row(
        &format!("{prefix}plain thread, client.call_blocking, {name}"),
        bench::sequential(calls, || {
            client.call_blocking("echo", payload.clone()).unwrap();
        }),
    );
    row(
        &format!("{prefix}tokio task, 1 in flight, {name}"),
        common::concurrent_echo(rt, client, payload, 1, calls),
    );
    row(
        &format!("{prefix}tokio, 16 concurrent callers, {name}"),
        common::concurrent_echo(rt, client, payload, 16, calls),
    );
}

/// Issue #13's typed helper: `Client::record_trial` with a `TrialReportedV1` (the contract
/// payload's report), from a plain thread through a current-thread runtime, as
/// `call_blocking` does. Each call names another trial, so none is a cache hit; the service's
/// `record_trial` checks the report in Python before acknowledging it.
fn typed_record_trial(
    client: &cerebros_bridge::client::Client,
    contract: &Value,
    calls: u64,
) -> Summary {
    use cerebros_bridge::core::contracts::{ContractV1, TrialReportedV1};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut report =
        TrialReportedV1::from_value(contract).expect("the contract payload is a report");
    let mut index = 0u64;
    bench::sequential(calls, || {
        index += 1;
        report.trial_id = format!("trial-{index}");
        runtime.block_on(client.record_trial(&report)).unwrap();
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--concurrency-only") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = Arc::new(common::client());
        for _ in 0..4 {
            row(
                "tokio, 16 concurrent callers, small",
                common::concurrent_echo(&rt, &client, &json!({"run_id": "r"}), 16, 100_000),
            );
        }
        return;
    }
    let n: u64 = if quick { 20_000 } else { 200_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Arc::new(common::client());
    let contract = common::contract_payload();
    let small = json!({"run_id": "run-bench-0001"});
    println!(
        "payload sizes: contract {} B, small {} B",
        contract.to_string().len(),
        small.to_string().len()
    );

    for (name, payload) in [("contract", &contract), ("small", &small)] {
        row(
            &format!("floor: inline on this thread, no hand-off, {name}"),
            // The interpreter is up: `client` started it.
            bench::inline_floor("cerebros_service", "echo", payload, n / 10, n).unwrap(),
        );
        let shared = Arc::new(payload.clone());
        let invoker = client.invoker().clone();
        row(
            &format!("plain thread, invoker, {name}"),
            bench::sequential(n, || {
                let request = Request {
                    op: "echo".into(),
                    payload: shared.clone(),
                    timeout: Duration::from_secs(5),
                    traceparent: None,
                };
                invoker.invoke_blocking(request).unwrap();
            }),
        );
        client_rows(&rt, &client, "", name, payload, n);
    }
    row(
        "plain thread, typed client.record_trial, contract",
        typed_record_trial(&client, &contract, n),
    );
    // The option not taken: hand-offs through the kernel only (no busy-waiting).
    let parking = Arc::new(common::parking_client());
    for (name, payload) in [("contract", &contract), ("small", &small)] {
        client_rows(&rt, &parking, "no spinning: ", name, payload, n / 10);
    }
    parking.shutdown(Duration::from_millis(100));
    let hit = CallOptions {
        cache_key: Some("hit".into()),
        ..CallOptions::default()
    };
    let hits = rt.block_on(async {
        client
            .call_with("echo", small.clone(), hit.clone())
            .await
            .unwrap();
        let mut latencies = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            client
                .call_with("echo", small.clone(), hit.clone())
                .await
                .unwrap();
            latencies.push(t.elapsed());
        }
        bench::summarize(&mut latencies, start.elapsed())
    });
    row("cache hit (tokio task, client.call_with)", hits);

    let million: u64 = if quick { 200_000 } else { 1_000_000 };
    let before = rss_kib();
    let mut samples = Vec::new();
    for i in 0..million {
        client.call_blocking("echo", contract.clone()).unwrap();
        if i % (million / 10) == 0 {
            samples.push(rss_kib());
        }
    }
    let after = rss_kib();
    println!(
        "RSS over {million} echo calls: {:.1} MiB before, {:.1} MiB after ({:+.1} MiB); samples MiB: {:?}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after as f64 - before as f64) / 1024.0,
        samples.iter().map(|k| (*k as f64 / 102.4).round() / 10.0).collect::<Vec<_>>()
    );
}
