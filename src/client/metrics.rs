//! Per-call metrics through the [`metrics`] facade: every client call (cache
//! hits and failures after retries included) counts in [`CALLS_TOTAL`] and times in
//! [`CALL_DURATION_SECONDS`].
//!
//! Nothing is recorded until a host installs a `metrics` recorder and calls [`enable`]
//! (`cerebros-bridge serve` does both in `serve::metrics`). Until then a call pays one
//! relaxed atomic load: no clock read, no label is built or allocated.

use crate::core::error::ErrorClass;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Counter of client calls, labelled `op`, `mode` and `outcome` (`ok` or the error class).
pub const CALLS_TOTAL: &str = "cerebros_bridge_calls_total";

/// Histogram of client call durations in seconds, labelled `op` and `mode`.
pub const CALL_DURATION_SECONDS: &str = "cerebros_bridge_call_duration_seconds";

/// Upper bounds (seconds) of the [`CALL_DURATION_SECONDS`] buckets: calls range from
/// echoes of a few microseconds to trials that train for minutes.
pub const CALL_DURATION_BUCKETS: [f64; 22] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The `op` label of ops whose name is not a plain identifier of at most
/// [`MAX_OP_LABEL_CHARS`] characters.
pub const OTHER_OP: &str = "other";

/// The longest op name used as a label as it is.
pub const MAX_OP_LABEL_CHARS: usize = 64;

/// The `outcome` label of a call that succeeded.
pub const OK: &str = "ok";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts recording calls into the installed `metrics` recorder. Call it once the
/// recorder is installed; there is no way back (recorders are process-wide for good).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether calls are being recorded.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `op` label of `op`: the name itself when it is a plain identifier (ASCII letters,
/// digits and `_`, not starting with a digit) of at most [`MAX_OP_LABEL_CHARS`]
/// characters, else [`OTHER_OP`], so what callers send cannot grow the label set
/// without bound.
pub fn op_label(op: &str) -> &str {
    let plain = op.len() <= MAX_OP_LABEL_CHARS
        && op.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && op.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        op
    } else {
        OTHER_OP
    }
}

/// The start of a call, when calls are being recorded.
pub(crate) fn call_started() -> Option<Instant> {
    is_enabled().then(Instant::now)
}

/// Records a call that started at `started` ([`call_started`]; `None`: not recorded)
/// and ended with `failure` (`None` on success).
pub(crate) fn record_call(
    started: Option<Instant>,
    op: &str,
    mode: &'static str,
    failure: Option<ErrorClass>,
) {
    let Some(started) = started else {
        return;
    };
    let seconds = started.elapsed().as_secs_f64();
    let op = op_label(op).to_owned();
    let outcome = failure.map_or(OK, ErrorClass::as_str);
    ::metrics::counter!(CALLS_TOTAL, "op" => op.clone(), "mode" => mode, "outcome" => outcome)
        .increment(1);
    ::metrics::histogram!(CALL_DURATION_SECONDS, "op" => op, "mode" => mode).record(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn plain_identifiers_are_their_own_label_and_anything_else_is_other() {
        for op in ["echo", "run_trial", "_private", "A1", &"x".repeat(64)] {
            assert_eq!(op_label(op), op);
        }
        let long = "x".repeat(65);
        for op in [
            "",
            "1abc",
            "a-b",
            "a.b",
            "a b",
            "é",
            "op\n",
            "{}",
            long.as_str(),
        ] {
            assert_eq!(op_label(op), OTHER_OP, "{op:?}");
        }
    }

    #[test]
    fn the_buckets_rise_from_microseconds_to_minutes() {
        assert!(CALL_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CALL_DURATION_BUCKETS[0], 1e-5);
        assert_eq!(
            CALL_DURATION_BUCKETS[CALL_DURATION_BUCKETS.len() - 1],
            300.0
        );
    }

    /// Counts the metrics registered with it.
    #[derive(Default)]
    struct Registrations(AtomicUsize);

    impl Recorder for Registrations {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            self.0.fetch_add(1, Ordering::Relaxed);
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            self.0.fetch_add(1, Ordering::Relaxed);
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            self.0.fetch_add(1, Ordering::Relaxed);
            Histogram::noop()
        }
    }

    // No unit test of this crate calls `enable` (tests/metrics.rs does, in its own
    // process): the guard is off here, whatever recorder listens.
    #[test]
    fn until_enabled_a_call_reaches_no_recorder() {
        let recorder = Registrations::default();
        ::metrics::with_local_recorder(&recorder, || {
            assert!(!is_enabled());
            let started = call_started();
            assert!(started.is_none(), "no clock read while disabled");
            record_call(started, "echo", "in_process", None);
            record_call(started, "echo", "in_process", Some(ErrorClass::Timeout));
            // The recorder does listen: the same records with a start time reach it.
            assert_eq!(recorder.0.load(Ordering::Relaxed), 0);
            record_call(Some(Instant::now()), "echo", "in_process", None);
        });
        assert_eq!(
            recorder.0.load(Ordering::Relaxed),
            2,
            "a counter and a histogram"
        );
    }
}
