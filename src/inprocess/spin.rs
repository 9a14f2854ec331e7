//! Bounded busy-waiting, used where a wake-up through the kernel (~25 µs per futex
//! wake-up on the VMs this runs on) would cost more than the wait itself.
//!
//! The first microseconds spin on the CPU; after that the waiter yields its core
//! between checks (`sched_yield`), so on a machine with two cores a waiting thread
//! does not take CPU time from the threads that would produce what it waits for.

use std::time::{Duration, Instant};

/// Checks `ready` until it returns true (→ `true`) or `budget` has passed (→ `false`),
/// spinning for the first `pure_spin` and yielding the core between checks after that.
pub fn wait_until(budget: Duration, pure_spin: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited >= budget {
            return ready();
        }
        if waited >= pure_spin {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_when_ready_or_after_the_budget() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(1), Duration::ZERO, || {
            n += 1;
            n > 100
        }));
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_micros(200),
            Duration::from_micros(50),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_micros(200));
    }
}
