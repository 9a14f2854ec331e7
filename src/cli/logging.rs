//! Log and trace set-up: `tracing` events go to the CLI's stderr as text or JSON lines,
//! filtered by `-v` or `RUST_LOG`, and, when `[telemetry]` names a collector, the
//! bridge's spans go to it over OTLP (DESIGN §14). [`finish`] flushes them on the way
//! out, within `telemetry.flush_timeout_ms`.

use super::{output, stdio};
use cerebros_bridge::client::telemetry::export::Telemetry;
use cerebros_bridge::client::telemetry::{INVOKE, NAS_TARGET};
use cerebros_bridge::core::config::TelemetryConfig;
use cerebros_bridge::core::error::Result;
use clap::ValueEnum;
use parking_lot::Mutex;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the OpenTelemetry `traceId` and `spanId` of the
    /// span it was logged in, for log shippers.
    Json,
}

/// The span pipeline, kept until [`finish`] flushes it.
static TELEMETRY: Mutex<Option<Telemetry>> = Mutex::new(None);

/// The default log level for a `-v` count: 0 warn, 1 info, 2 debug, 3+ trace.
pub fn level_for(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// The filter to log with: `RUST_LOG` when set and non-empty, else the `-v` level.
fn filter(verbosity: u8) -> EnvFilter {
    let level = level_for(verbosity);
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
            output::stderr_line(&format!(
                "warning: ignoring RUST_LOG={spec:?} ({err}); logging at {level}"
            ));
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    }
}

/// Installs the global subscriber: log lines on the CLI's real stderr, so stdout holds
/// only command output and the log never goes through the pipe that [`stdio`] reads
/// into it; plus the OpenTelemetry layer when `telemetry` names a collector (or, for
/// JSON lines, a local one that only gives spans their ids). An exporter that cannot
/// be built is a `config` error.
pub fn init(verbosity: u8, format: LogFormat, telemetry: &TelemetryConfig) -> Result<()> {
    let pipeline = match (Telemetry::start(telemetry)?, format) {
        (Some(exporting), _) => Some(exporting),
        (None, LogFormat::Json) => Some(Telemetry::local(telemetry)),
        (None, LogFormat::Text) => None,
    };
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(stdio::stderr)
            .with_ansi(stdio::stderr_is_terminal())
            .with_filter(filter(verbosity))
            .boxed(),
        // The bridge's spans are enabled for the JSON lines too, whatever the level:
        // a line takes its trace and span ids from the span it was logged in.
        LogFormat::Json => json_subscriber::layer()
            .with_writer(stdio::stderr)
            .with_opentelemetry_ids(true)
            .with_filter(filter(verbosity).or(filter_fn(is_bridge_span)))
            .boxed(),
    };
    let spans = pipeline.as_ref().map(Telemetry::layer);
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .try_init();
    *TELEMETRY.lock() = pipeline;
    Ok(())
}

/// The `run`, `trial` and `cerebros.bridge.invoke` spans.
fn is_bridge_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && [INVOKE, NAS_TARGET].contains(&meta.target())
}

/// Sends the spans still buffered, waiting at most `telemetry.flush_timeout_ms`
/// (nothing to do without an exporter). Safe to call more than once.
pub fn finish() {
    let pipeline = TELEMETRY.lock().take();
    if let Some(pipeline) = pipeline {
        pipeline.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::level_for;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), "warn");
        assert_eq!(level_for(1), "info");
        assert_eq!(level_for(2), "debug");
        assert_eq!(level_for(3), "trace");
        assert_eq!(level_for(9), "trace");
    }
}
