//! Criterion benches of the in-process bridge: echo round trips from a plain thread
//! and from tokio tasks, 16 concurrent async callers, and cache hits.
//! `cargo bench --bench bridge`; figures and their reading are in BENCHMARKS.md.

mod common;

use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::invoker::Request;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn payloads() -> [(&'static str, Value); 2] {
    [
        ("contract", common::contract_payload()),
        ("small", serde_json::json!({"run_id": "run-bench-0001"})),
    ]
}

fn plain_thread(c: &mut Criterion) {
    let client = common::client();
    let mut group = c.benchmark_group("plain_thread");
    group.throughput(Throughput::Elements(1));
    for (name, payload) in payloads() {
        let shared = Arc::new(payload.clone());
        group.bench_with_input(BenchmarkId::new("echo_invoker", name), &shared, |b, p| {
            let invoker = client.invoker();
            b.iter(|| {
                let request = Request {
                    op: "echo".into(),
                    payload: p.clone(),
                    timeout: Duration::from_secs(5),
                    traceparent: None,
                };
                invoker.invoke_blocking(request).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("echo_client", name), &payload, |b, p| {
            b.iter(|| client.call_blocking("echo", p.clone()).unwrap())
        });
    }
    group.finish();
}

/// The wall time of `calls` echo calls made by `tasks` tokio tasks at once.
fn run_tasks(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<Client>,
    payload: &Value,
    tasks: u64,
    calls: u64,
) -> Duration {
    let summary = common::concurrent_echo(runtime, client, payload, tasks, calls);
    Duration::from_secs_f64(calls as f64 / summary.calls_per_s)
}

fn tokio_tasks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Arc::new(common::client());
    let mut group = c.benchmark_group("tokio");
    group.throughput(Throughput::Elements(1));
    for (name, payload) in payloads() {
        group.bench_with_input(
            BenchmarkId::new("echo_one_in_flight", name),
            &payload,
            |b, p| b.iter_custom(|iters| run_tasks(&runtime, &client, p, 1, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("echo_16_concurrent_callers", name),
            &payload,
            |b, p| b.iter_custom(|iters| run_tasks(&runtime, &client, p, 16, iters)),
        );
    }
    group.bench_function("cache_hit", |b| {
        let options = CallOptions {
            cache_key: Some("bench-hit".into()),
            ..CallOptions::default()
        };
        let small = serde_json::json!({"run_id": "r"});
        runtime
            .block_on(client.call_with("echo", small.clone(), options.clone()))
            .unwrap();
        b.iter_custom(|iters| {
            let client = client.clone();
            let options = options.clone();
            let small = small.clone();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let reply = client.call_with("echo", small.clone(), options.clone());
                        reply.await.unwrap();
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    targets = plain_thread, tokio_tasks
}
criterion_main!(benches);
