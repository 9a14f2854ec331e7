//! Measuring calls: per-call latencies summarised as percentiles, and throughput.
//! Used by the `latency` bench (and the CLI's `bench`), so that every figure in
//! BENCHMARKS.md is a true per-call percentile, not a mean over batches.

use serde::Serialize;
use std::time::{Duration, Instant};

/// Percentiles of a set of per-call latencies, and the rate they were made at.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Calls measured.
    pub calls: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Calls per second over the whole measurement (wall time).
    pub calls_per_s: f64,
}

/// Times `calls` sequential calls of `call` (after `calls / 10` warm-up calls).
pub fn sequential(calls: u64, mut call: impl FnMut()) -> Summary {
    for _ in 0..calls / 10 {
        call();
    }
    let mut latencies = Vec::with_capacity(calls as usize);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call();
        latencies.push(t.elapsed());
    }
    summarize(&mut latencies, start.elapsed())
}

/// Summarises per-call latencies measured over `wall` time.
pub fn summarize(latencies: &mut [Duration], wall: Duration) -> Summary {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[index].as_secs_f64() * 1e6
    };
    Summary {
        calls: latencies.len() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        calls_per_s: latencies.len() as f64 / wall.as_secs_f64().max(1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_latencies() {
        let mut l: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = summarize(&mut l, Duration::from_millis(10));
        assert_eq!(s.calls, 100);
        assert!((s.p50_us - 50.0).abs() <= 1.0);
        assert!((s.p99_us - 99.0).abs() <= 1.0);
        assert!((s.calls_per_s - 10_000.0).abs() < 1.0);
    }
}
