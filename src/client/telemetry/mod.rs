//! Telemetry (DESIGN §5), mirroring the seed's `[:cerebros, :bridge, :invoke, ...]`:
//! every client call is a `cerebros.bridge.invoke` span (fields `op`, `run_id`,
//! `correlation_id`, `mode`) holding one `start` event per attempt and then a `stop`
//! or `exception` event with `attempt`, `duration_ms`, `returncode` and excerpts of at
//! most [`EXCERPT_CHARS`] characters. Excerpts are only built when a subscriber
//! listens, so disabled telemetry costs nothing on the hot path. When the call ends the
//! span records its last `attempt`, `duration_ms` and, on failure, `error_class`.
//!
//! With the `otel` feature, [`export`] sends these spans to an OpenTelemetry collector
//! and [`traceparent`] gives the W3C trace context a call carries to Python.

#[cfg(feature = "otel")]
pub mod export;

use crate::core::error::BridgeError;
use crate::core::payload::excerpt;
use serde_json::Value;
use std::time::Duration;
use tracing::Level;

pub use crate::core::payload::EXCERPT_CHARS;

/// Target and name of the invoke span and its events.
pub const INVOKE: &str = "cerebros.bridge.invoke";

/// The target of the NAS run worker's `run` and `trial` spans.
pub const NAS_TARGET: &str = "cerebros.nas";

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
        attempt = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        error_class = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records how the call of the current invoke span ended: its last attempt, its total
/// duration and, on failure, the error class (the span's OpenTelemetry status is then
/// `ERROR`).
pub fn finish(attempt: u32, took: Duration, error: Option<&BridgeError>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    // Whole numbers as i64: OpenTelemetry has no unsigned integers.
    span.record("attempt", i64::from(attempt));
    span.record("duration_ms", took.as_secs_f64() * 1e3);
    if let Some(err) = error {
        span.record("error_class", err.class.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// The W3C `traceparent` of `span` when it is exported to OpenTelemetry (feature
/// `otel`, an exporter installed); `None` otherwise, at the cost of one check.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    #[cfg(feature = "otel")]
    {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = std::collections::HashMap::new();
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&context, &mut carrier);
        carrier.remove("traceparent")
    }
    #[cfg(not(feature = "otel"))]
    None
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
            attempt = i64::from(attempt),
            payload_excerpt = %json_excerpt(payload),
            "start"
        );
    }
}

/// An attempt succeeded.
pub fn stop(attempt: u32, took: Duration, result: &Value) {
    if tracing::enabled!(target: INVOKE, Level::DEBUG) {
        tracing::debug!(
            target: INVOKE,
            event = "stop",
            attempt = i64::from(attempt),
            duration_ms = took.as_secs_f64() * 1e3,
            returncode = 0,
            result_excerpt = %json_excerpt(result),
            "stop"
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
        attempt = i64::from(attempt),
        duration_ms = took.as_secs_f64() * 1e3,
        error_class = err.class.as_str(),
        returncode,
        retrying,
        error_excerpt = %excerpt(&err.message, EXCERPT_CHARS),
        stderr_excerpt = stderr.as_deref(),
        "exception"
    );
}
