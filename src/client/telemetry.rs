//! Telemetry (DESIGN §5), mirroring the seed's `[:cerebros, :bridge, :invoke, ...]`:
//! every client call is a `cerebros.bridge.invoke` span (fields `op`, `run_id`,
//! `correlation_id`, `mode`) holding one `start` event per attempt and then a `stop`
//! or `exception` event with `attempt`, `duration_ms`, `returncode` and excerpts of at
//! most [`EXCERPT_CHARS`] characters. Excerpts are only built when a subscriber
//! listens, so disabled telemetry costs nothing on the hot path.

use crate::core::error::BridgeError;
use crate::core::payload::excerpt;
use serde_json::Value;
use std::time::Duration;
use tracing::Level;

pub use crate::core::payload::EXCERPT_CHARS;

/// Target and name of the invoke span and its events.
pub const INVOKE: &str = "cerebros.bridge.invoke";

/// The span around one client call (all its attempts).
pub fn invoke_span(op: &str, payload: &Value, mode: &str) -> tracing::Span {
    tracing::span!(
        target: INVOKE,
        Level::DEBUG,
        "cerebros.bridge.invoke",
        op,
        run_id = field_str(payload, "run_id"),
        correlation_id = field_str(payload, "correlation_id"),
        mode,
    )
}

fn field_str<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

fn json_excerpt(value: &Value) -> String {
    excerpt(&value.to_string(), EXCERPT_CHARS)
}

/// An attempt starts.
pub fn start(attempt: u32, payload: &Value) {
    if tracing::enabled!(target: INVOKE, Level::DEBUG) {
        tracing::debug!(
            target: INVOKE,
            event = "start",
            attempt,
            payload_excerpt = %json_excerpt(payload),
        );
    }
}

/// An attempt succeeded.
pub fn stop(attempt: u32, took: Duration, result: &Value) {
    if tracing::enabled!(target: INVOKE, Level::DEBUG) {
        tracing::debug!(
            target: INVOKE,
            event = "stop",
            attempt,
            duration_ms = took.as_secs_f64() * 1e3,
            returncode = 0,
            result_excerpt = %json_excerpt(result),
        );
    }
}

/// An attempt failed; `retrying` says whether another attempt follows.
pub fn exception(attempt: u32, took: Duration, err: &BridgeError, retrying: bool) {
    let returncode = err.details.get("returncode").and_then(Value::as_i64);
    let stderr = err
        .details
        .get("stderr_excerpt")
        .and_then(Value::as_str)
        .map(|s| excerpt(s, EXCERPT_CHARS));
    tracing::info!(
        target: INVOKE,
        event = "exception",
        attempt,
        duration_ms = took.as_secs_f64() * 1e3,
        error_class = err.class.as_str(),
        returncode,
        retrying,
        error_excerpt = %excerpt(&err.message, EXCERPT_CHARS),
        stderr_excerpt = stderr.as_deref(),
    );
}
