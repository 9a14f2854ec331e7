//! Criterion benches of the execution modes (issue #3): one echo round trip of the
//! contract payload per mode, `worker_process` pipelined from 16 tokio tasks, and the
//! two floors the modes are compared with (the pool's thread hand-off without Python,
//! one JSON line through `cat`). `cargo bench --bench modes`; the per-call percentiles
//! come from `cerebros-bridge bench`, and both are recorded in BENCHMARKS.md.

mod common;

use cerebros_bridge::bench::{self, HandoffEcho, PipeEcho};
use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::{Config, Mode};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::sync::Arc;
use std::time::Duration;

/// A client of `mode`, configured like the CLI (`cerebros.toml`, env, defaults), with
/// retries off.
fn client(mode: Mode) -> Client {
    let mut config = Config::load(None).expect("config");
    config.mode = mode;
    config.invoke.max_retries = 0;
    Client::start(&config).expect("the bridge starts")
}

/// Sequential echo calls from this thread, in every mode.
fn echo_per_mode(c: &mut Criterion) {
    let payload = bench::contract_payload();
    let mut group = c.benchmark_group("modes/echo");
    group.throughput(Throughput::Elements(1));
    for mode in Mode::ALL {
        let client = client(mode);
        if mode == Mode::Subprocess {
            // 20–60 ms per call: few, flat samples.
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .measurement_time(Duration::from_secs(5));
        }
        group.bench_function(mode.as_str(), |b| {
            b.iter(|| client.call_blocking("echo", payload.clone()).unwrap())
        });
        client.shutdown(Duration::from_millis(500));
    }
    group.finish();
}

/// `worker_process` with 16 tokio tasks calling at once (requests pipelined on its
/// children): the time per call is the batch's wall time over its calls.
fn worker_process_pipelined(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Arc::new(client(Mode::WorkerProcess));
    let payload = bench::contract_payload();
    let mut group = c.benchmark_group("modes/worker_process_pipelined");
    group.throughput(Throughput::Elements(1));
    group.bench_function("16_callers", |b| {
        b.iter_custom(|calls| {
            let (client, payload) = (client.clone(), payload.clone());
            let call = move || {
                let (client, payload) = (client.clone(), payload.clone());
                async move { client.call("echo", payload).await.map(drop) }
            };
            let summary = runtime
                .block_on(bench::concurrent(16, calls, call))
                .unwrap();
            Duration::from_secs_f64(calls as f64 / summary.calls_per_s)
        })
    });
    group.finish();
    client.shutdown(Duration::from_millis(500));
}

/// The floors: the pool's hand-off with no Python, and a line through `cat`.
fn floors(c: &mut Criterion) {
    let payload = Arc::new(bench::contract_payload());
    let line = serde_json::to_vec(&*payload).unwrap();
    let mut group = c.benchmark_group("modes/floor");
    group.throughput(Throughput::Elements(1));
    let echo = HandoffEcho::start().unwrap();
    group.bench_function("handoff", |b| b.iter(|| echo.call(&payload)));
    drop(echo);
    let mut cat = PipeEcho::start(&line).unwrap();
    group.bench_function("pipe_cat", |b| b.iter(|| cat.round_trip().unwrap()));
    group.finish();
}

criterion_group!(benches, floors, echo_per_mode, worker_process_pipelined);
criterion_main!(benches);
