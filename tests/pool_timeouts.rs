//! Timeouts stop Python: spinning, BaseException-swallowing, sleeping and GIL-holding
//! ops are all answered at the deadline; cancellable ones are cancelled, the others
//! cost their worker, which is replaced so the pool keeps its size.

mod common;

use cerebros_bridge::core::error::ErrorClass;
use common::{eventually, fault_pool, serial, thread_count};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_millis(250);
/// Timeout + grace + 1 s: a generous bound for every answer. The ops that cannot be
/// stopped run for [`STUCK_SECONDS`], well past it, so a caller kept waiting for them fails.
const ANSWER_BOUND: Duration = Duration::from_millis(300 + 250 + 1000);
/// How long the ops that ignore cancellation (`swallow`, `hold_gil`) run.
const STUCK_SECONDS: f64 = 3.0;

fn timed_call(
    pool: &cerebros_bridge::inprocess::pool::Pool,
    op: &str,
    payload: Value,
) -> (
    Duration,
    Result<Value, cerebros_bridge::core::error::BridgeError>,
) {
    let start = Instant::now();
    let result = pool
        .submit(op, payload, TIMEOUT)
        .and_then(|pending| pending.wait_blocking());
    (start.elapsed(), result)
}

fn assert_timed_out(
    elapsed: Duration,
    result: Result<Value, cerebros_bridge::core::error::BridgeError>,
) {
    let err = result.expect_err("the call must time out");
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(
        elapsed >= TIMEOUT,
        "answered before the deadline: {elapsed:?}"
    );
    assert!(elapsed < ANSWER_BOUND, "answered late: {elapsed:?}");
}

/// All `size` workers serve at once: each of `size` `rendezvous` calls waits (without the
/// GIL) until all `size` have arrived, which happens only when `size` workers run them
/// together; in a pool short of a worker the first calls give up after 10 s, unmet.
fn assert_full_size(pool: &cerebros_bridge::inprocess::pool::Pool, size: usize) {
    static MEETINGS: AtomicUsize = AtomicUsize::new(0);
    let key = format!("full-size-{}", MEETINGS.fetch_add(1, Ordering::Relaxed));
    let payload = json!({"key": key, "parties": size, "seconds": 10});
    let pending: Vec<_> = (0..size)
        .map(|_| {
            pool.submit("rendezvous", payload.clone(), Duration::from_secs(30))
                .unwrap()
        })
        .collect();
    for call in pending {
        let reply = call.wait_blocking().expect("rendezvous succeeds");
        assert_eq!(
            reply["met"],
            true,
            "the pool did not run {size} calls at once: {:?}",
            pool.stats()
        );
    }
}

#[test]
fn a_spinning_op_is_cancelled_and_keeps_its_worker() {
    let _serial = serial();
    let pool = fault_pool(2);
    let (elapsed, result) = timed_call(&pool, "spin", json!({}));
    assert_timed_out(elapsed, result);
    // The cancellation lands: the worker comes back without being retired.
    assert!(eventually(Duration::from_secs(2), || pool.stats().queued == 0));
    std::thread::sleep(GRACE + Duration::from_millis(100));
    let stats = pool.stats();
    assert_eq!(stats.workers_retired, 0, "{stats:?}");
    assert_eq!(stats.workers_alive, 2);
    assert_full_size(&pool, 2);
}

#[test]
fn a_loop_that_swallows_base_exception_costs_its_worker_not_the_pool() {
    let _serial = serial();
    let pool = fault_pool(2);
    let (elapsed, result) = timed_call(&pool, "swallow", json!({"seconds": STUCK_SECONDS}));
    assert_timed_out(elapsed, result);
    assert!(eventually(Duration::from_secs(2), || pool
        .stats()
        .workers_retired
        == 1));
    assert!(eventually(Duration::from_secs(2), || pool
        .stats()
        .workers_alive
        == 2));
    assert_eq!(pool.stats().workers_stuck, 1);
    // The swallowing thread still holds a core; the pool still has its full size.
    assert_full_size(&pool, 2);
    // Once the loop ends, its thread is gone (and burns no core in the next test).
    assert!(eventually(Duration::from_secs(10), || pool
        .stats()
        .workers_stuck
        == 0));
}

#[test]
fn a_sleeping_op_is_answered_at_the_deadline_and_its_worker_replaced() {
    let _serial = serial();
    let pool = fault_pool(2);
    let (elapsed, result) = timed_call(&pool, "sleep", json!({"seconds": 60}));
    assert_timed_out(elapsed, result);
    assert!(eventually(Duration::from_secs(2), || pool
        .stats()
        .workers_retired
        == 1));
    assert!(eventually(Duration::from_secs(2), || pool
        .stats()
        .workers_alive
        == 2));
    assert_full_size(&pool, 2);
}

#[test]
fn c_code_holding_the_gil_cannot_delay_the_caller() {
    let _serial = serial();
    let pool = fault_pool(2);
    let (elapsed, result) = timed_call(&pool, "hold_gil", json!({"seconds": STUCK_SECONDS}));
    assert_timed_out(elapsed, result);
    // Once the C call returns, the pool recovers its full size.
    assert!(eventually(Duration::from_secs(10), || {
        let s = pool.stats();
        s.workers_alive == 2 && s.workers_stuck == 0
    }));
    assert_full_size(&pool, 2);
}

#[test]
fn a_hundred_timeouts_leave_no_threads_behind() {
    let _serial = serial();
    let pool = fault_pool(2);
    // Warm up: the first calls may start lazily created threads.
    pool.submit("echo", json!({}), TIMEOUT)
        .unwrap()
        .wait_blocking()
        .unwrap();
    let before = thread_count();
    for _ in 0..100 {
        let result = pool
            .submit("spin", json!({}), Duration::from_millis(20))
            .unwrap()
            .wait_blocking();
        assert_eq!(result.unwrap_err().class, ErrorClass::Timeout);
    }
    assert!(eventually(Duration::from_secs(3), || thread_count() <= before));
    let stats = pool.stats();
    assert_eq!(stats.workers_stuck, 0, "{stats:?}");
    assert_eq!(stats.workers_alive, 2);
    pool.submit("echo", json!({"ok": 1}), TIMEOUT)
        .unwrap()
        .wait_blocking()
        .unwrap();
}

#[test]
fn a_late_cancel_never_lands_in_the_next_call() {
    let _serial = serial();
    let pool = fault_pool(1);
    // Sleeps that finish right around their deadline race the canceller; the echo
    // that follows on the same worker must never see the cancellation.
    let mut timeouts = 0;
    for i in 0..150 {
        let seconds = 0.004 + (i % 5) as f64 * 0.0005;
        let raced = pool
            .submit(
                "sleep",
                json!({"seconds": seconds}),
                Duration::from_millis(5),
            )
            .unwrap()
            .wait_blocking();
        if raced.is_err() {
            timeouts += 1;
        }
        let next = pool
            .submit("echo", json!({"i": i}), Duration::from_secs(5))
            .unwrap()
            .wait_blocking();
        assert_eq!(next.expect("the next call is untouched")["i"], i);
    }
    assert!(timeouts > 0, "the race was never exercised");
}

#[test]
fn shutdown_does_not_wait_on_a_stuck_worker() {
    let _serial = serial();
    let pool = fault_pool(1);
    let pending = pool
        .submit(
            "hold_gil",
            json!({"seconds": STUCK_SECONDS}),
            Duration::from_secs(10),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let limit = Duration::from_millis(100);
    let left = pool.shutdown(limit);
    // Its limit + 1 s, far below the STUCK_SECONDS it would take to wait for the worker.
    assert!(
        start.elapsed() < limit + Duration::from_secs(1),
        "shutdown waited {:?}",
        start.elapsed()
    );
    assert_eq!(left, 1);
    drop(pending);
    let err = pool.submit("echo", json!({}), TIMEOUT).err().unwrap();
    assert_eq!(err.class, ErrorClass::Cancelled);
}

#[test]
fn a_call_running_when_the_pool_shuts_down_is_cancelled_not_timed_out() {
    // `timeout` is a class callers retry; a call stopped by close() must read as cancelled.
    let _serial = serial();
    let pool = fault_pool(1);
    let pending = pool
        .submit("spin", json!({}), Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    pool.shutdown(Duration::from_millis(100));
    let err = pending.wait_blocking().expect_err("the call was stopped");
    assert_eq!(err.class, ErrorClass::Cancelled, "{err}");
}
