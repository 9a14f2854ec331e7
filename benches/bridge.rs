//! Criterion benches of the in-process bridge: echo round trips from a plain thread
//! and from tokio tasks, 16 concurrent async callers, and cache hits.
//! `cargo bench --bench bridge`; figures and their reading are in BENCHMARKS.md.

mod common;

use cerebros_bridge::client::CallOptions;
use cerebros_bridge::invoker::Request;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn plain_thread(c: &mut Criterion) {
    let client = common::client(2);
    let payload = common::contract_payload();
    let mut group = c.benchmark_group("plain_thread");
    group.throughput(Throughput::Elements(1));
    group.bench_function("echo_invoker", |b| {
        let invoker = client.invoker();
        b.iter(|| {
            let request = Request {
                op: "echo".into(),
                payload: payload.clone(),
                timeout: Duration::from_secs(5),
            };
            invoker.invoke_blocking(request).unwrap()
        })
    });
    group.bench_function("echo_client_call_blocking", |b| {
        b.iter(|| client.call_blocking("echo", payload.clone()).unwrap())
    });
    group.finish();
}

fn tokio_tasks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Arc::new(common::client(2));
    let payload = common::contract_payload();
    let mut group = c.benchmark_group("tokio");
    group.throughput(Throughput::Elements(1));
    group.bench_function("echo_one_in_flight", |b| {
        b.iter_custom(|iters| {
            let client = client.clone();
            let payload = payload.clone();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.call("echo", payload.clone()).await.unwrap();
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    group.bench_function("echo_16_concurrent_callers", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(16);
            let client = client.clone();
            let payload = payload.clone();
            runtime.block_on(async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..16)
                    .map(|_| {
                        let client = client.clone();
                        let payload = payload.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                client.call("echo", payload.clone()).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * 16) as f64)
            })
        })
    });
    group.bench_function("cache_hit", |b| {
        let options = CallOptions {
            cache_key: Some("bench-hit".into()),
            ..CallOptions::default()
        };
        let small = serde_json::json!({"run_id": "r"});
        b.iter_custom(|iters| {
            let client = client.clone();
            let options = options.clone();
            let small = small.clone();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    client
                        .call_with("echo", small.clone(), options.clone())
                        .await
                        .unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        client
                            .call_with("echo", small.clone(), options.clone())
                            .await
                            .unwrap();
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
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = plain_thread, tokio_tasks
}
criterion_main!(benches);
