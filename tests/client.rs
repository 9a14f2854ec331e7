//! The client over the in-process pool: retries, cache, contracts, bad input and
//! results, async ops, overload, dead workers, GIL fairness.

mod common;

use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::contracts::{
    RunFinalizedV1, RunStartedV1, RunStatus, TrialReportedV1, TrialRequestedV1, TrialStatus,
};
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use common::{eventually, root, serial};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fault_config() -> Config {
    Config {
        module: "fault_service".into(),
        repo_path: root().join("tests/fixtures"),
        ..Config::default()
    }
}

fn client_with(edit: impl FnOnce(&mut Config)) -> Client {
    let mut config = fault_config();
    edit(&mut config);
    Client::start(&config).expect("the client starts")
}

fn count_of(client: &Client, key: &str) -> u64 {
    client
        .call_blocking("count_get", json!({"key": key}))
        .unwrap()["count"]
        .as_u64()
        .unwrap()
}

fn class_of(result: Result<Value, BridgeError>) -> ErrorClass {
    result.expect_err("the call must fail").class
}

#[test]
fn a_call_that_times_out_twice_succeeds_on_the_third_attempt_after_backoff() {
    let _serial = serial();
    let client = client_with(|c| {
        c.invoke.default_timeout_ms = 300;
        c.invoke.max_retries = 2;
        c.invoke.retry_backoff_ms = 750;
    });
    let start = Instant::now();
    let reply = client
        .call_blocking(
            "flaky",
            json!({"key": "retry-3", "fail_times": 2, "sleep_seconds": 2}),
        )
        .expect("the third attempt succeeds");
    let took = start.elapsed();
    assert_eq!(reply["attempt"], 3);
    // Two 300 ms timeouts plus 750 ms and 1500 ms of backoff (plus ≤ 10 % jitter): at
    // least 2850 ms, at most 3075 ms, and a second for the machine.
    assert!(took >= Duration::from_millis(2850), "{took:?}");
    assert!(took < Duration::from_millis(3075 + 1000), "{took:?}");
    assert_eq!(client.stats().retries, 2);
}

#[test]
fn retries_give_up_with_the_attempt_number_and_skip_non_retryable_classes() {
    let _serial = serial();
    let client = client_with(|c| {
        c.invoke.default_timeout_ms = 100;
        c.invoke.max_retries = 1;
        c.invoke.retry_backoff_ms = 10;
    });
    let err = client
        .call_blocking(
            "flaky",
            json!({"key": "retry-never", "fail_times": 9, "sleep_seconds": 1}),
        )
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(err.attempt, 2);
    assert_eq!(err.op.as_deref(), Some("flaky"));
    // Both sleeping workers are retired and replaced before the next call.
    assert!(eventually(Duration::from_secs(3), || {
        let w = client.stats().workers;
        w.workers_retired == 2 && w.workers_alive == 2
    }));
    let err = client
        .call_blocking("fail", json!({"message": "no retry"}))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Exception);
    assert_eq!(err.attempt, 1, "a Python exception is not retried");
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_concurrent_calls_run_python_once() {
    let client = Arc::new(client_with(|_| {}));
    let calls = (0..100).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            let options = CallOptions {
                cache_key: Some("single-flight".into()),
                ..CallOptions::default()
            };
            client
                .call_with(
                    "count",
                    json!({"key": "single-flight", "sleep_seconds": 0.1}),
                    options,
                )
                .await
        })
    });
    for call in futures_join(calls).await {
        assert_eq!(call["count"], 1);
    }
    let invoked = client
        .call("count_get", json!({"key": "single-flight"}))
        .await
        .unwrap();
    assert_eq!(invoked["count"], 1, "exactly one Python invocation");
    let stats = client.stats();
    assert_eq!(stats.cache.stores, 1);
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<Value, BridgeError>>>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap().unwrap());
    }
    out
}

#[test]
fn cached_results_expire_and_errors_are_never_cached() {
    // Generous TTL: the second call must land within it even on a loaded machine.
    let ttl = Duration::from_millis(500);
    let client = client_with(|c| c.cache.ttl_ms = ttl.as_millis() as u64);
    let keyed = |key: &str| CallOptions {
        cache_key: Some(key.into()),
        ..CallOptions::default()
    };
    let payload = json!({"key": "ttl"});
    client
        .call_blocking_with("count", payload.clone(), keyed("ttl"))
        .unwrap();
    client
        .call_blocking_with("count", payload.clone(), keyed("ttl"))
        .unwrap();
    assert_eq!(count_of(&client, "ttl"), 1, "the second call is a hit");
    std::thread::sleep(ttl + Duration::from_millis(100));
    client
        .call_blocking_with("count", payload, keyed("ttl"))
        .unwrap();
    assert_eq!(count_of(&client, "ttl"), 2, "the entry expired");
    // `fail` counts its calls under "failed" before it raises: each keyed call that
    // fails reaches Python again.
    for _ in 0..3 {
        let err = client
            .call_blocking_with("fail", json!({"key": "failed"}), keyed("fail"))
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Exception);
    }
    assert_eq!(
        count_of(&client, "failed"),
        3,
        "an error is never served from the cache"
    );
    let stats = client.stats();
    assert_eq!(
        stats.cache_hits, 1,
        "only the second `count` call was a hit"
    );
    assert_eq!(stats.cache.stores, 2, "the two `count` results, no error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_ops_are_validated_and_cached_by_the_seed_keys() {
    let client = client_with(|_| {});
    let started = RunStartedV1::new("run-c", "2026-11-28T00:00:00Z");
    let first = client.start_run(&started).await.unwrap();
    let second = client.start_run(&started).await.unwrap();
    assert_eq!(
        first, second,
        "same (run_id, pulse_id): served from the cache"
    );
    let mut pulsed = started.clone();
    pulsed.pulse_id = Some("p2".into());
    let third = client.start_run(&pulsed).await.unwrap();
    assert_eq!(
        third["calls"].as_u64(),
        Some(first["calls"].as_u64().unwrap() + 1)
    );

    let report = TrialReportedV1::new("run-c", "t1", TrialStatus::Succeeded);
    let a = client.record_trial(&report).await.unwrap();
    assert_eq!(client.record_trial(&report).await.unwrap(), a);
    let finalized = RunFinalizedV1::new("run-c", RunStatus::Succeeded);
    let f = client.finalize_run(&finalized).await.unwrap();
    assert_eq!(client.finalize_run(&finalized).await.unwrap(), f);

    let trial = TrialRequestedV1::new("run-c", "t2", 3, 42);
    let reported = client.run_trial(&trial).await.unwrap();
    assert_eq!(reported.trial_id, "t2");
    let mut bad = trial.clone();
    bad.parameters.insert("invalid_report".into(), json!(true));
    let err = client.run_trial(&bad).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ParseError);

    let unknown_version =
        json!({"contract": "run_started", "version": 2, "run_id": "r", "timestamp": "t"});
    let err = client.call("start_run", unknown_version).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert!(
        err.message.contains("expected version 1"),
        "{}",
        err.message
    );
    let wrong_contract =
        json!({"contract": "run_finalized", "version": 1, "run_id": "r", "status": "succeeded"});
    let err = client.call("start_run", wrong_contract).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    let missing = json!({"run_id": "r"});
    let err = client.call("start_run", missing).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert!(err.message.contains("timestamp"), "{}", err.message);
}

#[test]
fn bad_payloads_are_contract_errors() {
    let client = client_with(|c| c.invoke.max_payload_bytes = 2048);
    let mut deep = json!({});
    for _ in 0..300 {
        deep = json!({"d": deep});
    }
    assert_eq!(
        class_of(client.call_blocking("echo", deep)),
        ErrorClass::Contract
    );
    let big = json!({"data": "x".repeat(4096)});
    let err = client.call_blocking("echo", big).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert!(err.message.contains("max_payload_bytes"), "{}", err.message);
    assert_eq!(
        class_of(client.call_blocking("echo", json!([1, 2]))),
        ErrorClass::Contract
    );
    assert_eq!(
        class_of(client.call_blocking("echo", json!("text"))),
        ErrorClass::Contract
    );
    let mut ok = json!({});
    for _ in 0..200 {
        ok = json!({"d": ok});
    }
    client
        .call_blocking("echo", ok)
        .expect("200 levels are fine");
}

#[test]
fn ops_are_refused_by_name_and_results_must_be_json_dicts() {
    let client = client_with(|c| c.invoke.max_retries = 0);
    for op in [
        "_secret",
        "__init__",
        "__class__",
        "nope",
        "NotAnOp",
        "time",
        "a-b",
        "",
    ] {
        let err = client.call_blocking(op, json!({})).unwrap_err();
        assert_eq!(err.class, ErrorClass::Contract, "op {op:?}: {err}");
    }
    let err = client.call_blocking("__init__", json!({})).unwrap_err();
    assert!(err.message.contains("private"), "{}", err.message);
    for (op, what) in [
        ("return_set", "set"),
        ("return_object", "object"),
        ("return_list", "list"),
        ("return_nan", "NaN"),
        ("return_int", "int"),
    ] {
        let err = client.call_blocking(op, json!({})).unwrap_err();
        assert_eq!(err.class, ErrorClass::ParseError, "{op}: {err}");
        assert!(err.message.contains(what), "{op}: {}", err.message);
    }
    let err = client
        .call_blocking("missing_package", json!({}))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Dependency, "{err}");
    assert!(
        err.message.contains("cerebros_no_such_package"),
        "{}",
        err.message
    );
    let err = client
        .call_blocking("fail", json!({"message": "kaput"}))
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Exception);
    assert_eq!(err.details["type"], "ValueError");
    assert!(err.details["traceback"].as_str().unwrap().contains("kaput"));
    // The pool is unharmed by all of it.
    let big = client
        .call_blocking("big", json!({"bytes": 8_000_000}))
        .unwrap();
    assert_eq!(big["data"].as_str().unwrap().len(), 8_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only serialises timing-sensitive tests
async fn async_ops_are_awaited_and_cancellable() {
    let _serial = serial();
    let client = client_with(|c| c.invoke.max_retries = 0);
    let reply = client
        .call("async_echo", json!({"delay": 0.01, "n": 5}))
        .await
        .unwrap();
    assert_eq!(reply["async"], true);
    assert_eq!(reply["n"], 5);
    let options = CallOptions {
        timeout: Some(Duration::from_millis(200)),
        ..CallOptions::default()
    };
    let start = Instant::now();
    let err = client
        .call_with("async_spin", json!({}), options)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout);
    // The deadline (200 ms) + the cancel grace (250 ms) + 1 s.
    assert!(start.elapsed() < Duration::from_millis(1450));
    // Past the cancel grace: a worker whose op was not stopped would be retired by now.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        client.stats().workers.workers_retired,
        0,
        "the cancel landed in the loop"
    );
    let again = client.call("async_echo", json!({"n": 6})).await.unwrap();
    assert_eq!(again["n"], 6);
}

#[test]
fn payload_keys_cross_intact_beyond_what_a_worker_keeps_of_them() {
    // A worker keeps the Python strings of up to 1024 short keys (at most 64 bytes): more
    // distinct keys than that, some longer, sent twice (the second time partly from the
    // kept strings), all arrive as sent.
    let client = client_with(|config| config.invoke.pool_size = 1);
    let keys = (0..3000).map(|i| match i % 7 {
        0 => format!("{}{i}", "k".repeat(80)),
        1 => format!("é😀{i}"),
        _ => format!("key-{i}"),
    });
    let payload = Value::Object(keys.zip(0..).map(|(k, i)| (k, json!({"i": i}))).collect());
    for _ in 0..2 {
        assert_eq!(
            client.call_blocking("echo", payload.clone()).unwrap(),
            payload
        );
    }
}

#[test]
fn a_full_queue_answers_overloaded() {
    let _serial = serial();
    let client = Arc::new(client_with(|c| {
        c.invoke.pool_size = 1;
        c.invoke.queue_capacity = 1;
        c.invoke.max_retries = 0;
    }));
    let busy = {
        let client = client.clone();
        std::thread::spawn(move || client.call_blocking("sleep", json!({"seconds": 0.5})))
    };
    assert!(eventually(Duration::from_secs(2), || client
        .stats()
        .workers
        .queued
        == 0));
    std::thread::sleep(Duration::from_millis(50));
    let queued = {
        let client = client.clone();
        std::thread::spawn(move || client.call_blocking("echo", json!({"queued": true})))
    };
    assert!(eventually(Duration::from_secs(2), || client
        .stats()
        .workers
        .queued
        == 1));
    let err = client.call_blocking("echo", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::Overloaded);
    busy.join().unwrap().unwrap();
    assert_eq!(queued.join().unwrap().unwrap()["queued"], true);
}

#[test]
fn a_dead_worker_is_replaced() {
    let _serial = serial();
    let pool = common::fault_pool(2);
    pool.inject_worker_panic().unwrap();
    assert!(eventually(Duration::from_secs(3), || {
        let s = pool.stats();
        s.workers_replaced == 1 && s.workers_alive == 2
    }));
    for i in 0..10 {
        let reply = pool
            .submit("echo", json!({"i": i}), Duration::from_secs(5))
            .unwrap()
            .wait_blocking()
            .unwrap();
        assert_eq!(reply["i"], i);
    }
}

#[test]
fn a_busy_worker_does_not_starve_one_returning_from_sleep() {
    let _serial = serial();
    let client = Arc::new(client_with(|c| c.invoke.pool_size = 2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client.call_blocking("echo", json!({"n": n})).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        client
            .call_blocking("sleep", json!({"seconds": 0.05}))
            .unwrap();
        worst = worst.max(start.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let echoed: u64 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(echoed > 1000, "the flood ran: {echoed} calls");
    // A starved worker waits for the GIL for seconds (see `inprocess::pool`); a fair
    // hand-over takes a switch interval or two. The bound leaves a second for the machine.
    assert!(
        worst < Duration::from_millis(50 + 1000),
        "a 50 ms sleep took {worst:?} under load"
    );
}

#[tokio::test]
async fn call_blocking_refuses_to_block_an_async_runtime_thread() {
    let client = client_with(|_| {});
    let err = client.call_blocking("echo", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::SystemError);
    assert!(err.message.contains("call(..).await"));
}
