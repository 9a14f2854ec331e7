//! Retry policy (DESIGN §2): only retryable classes, exponential backoff
//! `retry_backoff_ms * 2^retry` plus up to 10 % jitter.

use crate::core::error::ErrorClass;
use std::time::Duration;

/// When and how long to wait before trying a failed call again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub max_retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// The error classes that are retried.
    pub retry_on: Vec<ErrorClass>,
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            backoff: Duration::ZERO,
            retry_on: Vec::new(),
        }
    }

    /// Whether errors of `class` are retried at all (up to `max_retries` times).
    pub fn retries(&self, class: ErrorClass) -> bool {
        self.retry_on.contains(&class)
    }

    /// The wait after failed attempt `attempt` (1-based): `backoff * 2^(attempt-1)`
    /// plus a random 0–10 % so that many callers do not retry in lockstep.
    ///
    /// ```
    /// use cerebros_bridge::client::retry::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy { max_retries: 2, backoff: Duration::from_millis(750), retry_on: vec![] };
    /// let second = policy.delay(2);
    /// assert!(second >= Duration::from_millis(1500) && second <= Duration::from_millis(1650));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self.backoff.saturating_mul(1 << exponent);
        base + base.mul_f64(fastrand::f64() * 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            backoff: Duration::from_millis(750),
            retry_on: vec![ErrorClass::Timeout],
        }
    }

    #[test]
    fn retries_only_the_listed_classes() {
        assert!(policy().retries(ErrorClass::Timeout));
        assert!(!policy().retries(ErrorClass::Contract));
        assert!(!RetryPolicy::never().retries(ErrorClass::Timeout));
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        for (attempt, base) in [(1, 750), (2, 1500), (3, 3000)] {
            let d = policy().delay(attempt).as_millis() as u64;
            assert!(d >= base && d <= base + base / 10, "attempt {attempt}: {d}");
        }
    }
}
