//! OpenTelemetry export of the bridge's spans (DESIGN §14, feature `otel`).
//!
//! [`Telemetry::start`] builds, from `[telemetry]`, an OTLP span exporter (HTTP/protobuf
//! or gRPC) behind a batch processor, and [`Telemetry::layer`] the `tracing` layer that
//! turns the bridge's spans into OpenTelemetry spans: `run` and `trial` (target
//! [`NAS_TARGET`]) and `cerebros.bridge.invoke` with its `start`, `stop` and `exception`
//! events; warnings and errors logged inside them become span events too. Exporting
//! happens on the batch processor's own thread: a slow or unreachable collector never
//! blocks a call, and spans that do not fit its queue are dropped.
//!
//! [`Telemetry::shutdown`] sends what is left, waiting at most
//! `telemetry.flush_timeout_ms`.
//!
//! ```
//! use cerebros_bridge::client::telemetry::export::Telemetry;
//! use cerebros_bridge::core::config::TelemetryConfig;
//! // No endpoint, no exporter.
//! assert!(Telemetry::start(&TelemetryConfig::default()).unwrap().is_none());
//! ```

use super::INVOKE;
pub use super::NAS_TARGET;
use crate::core::config::{OtlpProtocol, TelemetryConfig};
use crate::core::error::{BridgeError, ErrorClass, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The instrumentation scope the spans are reported under.
const SCOPE: &str = "cerebros-bridge";

/// The path OTLP/HTTP collectors take spans on.
const TRACES_PATH: &str = "/v1/traces";

/// The longest one batch export may take (in the background: it never blocks a call).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An installed span pipeline: the tracer provider, and the runtime the gRPC channel
/// lives on. Keep it for the life of the process and call [`Telemetry::shutdown`] last.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// gRPC only: tonic's channel needs a tokio runtime that keeps running.
    runtime: Option<tokio::runtime::Runtime>,
    flush_timeout: Duration,
}

impl Telemetry {
    /// The exporter `config` asks for, or `None` when `otlp_endpoint` is unset (no
    /// exporter, nothing sent). A bad endpoint is a `config` error naming the key.
    pub fn start(config: &TelemetryConfig) -> Result<Option<Telemetry>> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let (exporter, runtime) = match config.otlp_protocol {
            OtlpProtocol::HttpProtobuf => (http_exporter(endpoint)?, None),
            OtlpProtocol::Grpc => {
                let runtime = grpc_runtime()?;
                let exporter = {
                    let _entered = runtime.enter();
                    grpc_exporter(endpoint)?
                };
                (exporter, Some(runtime))
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource(config))
            .build();
        Ok(Some(Telemetry::with_provider(provider, runtime, config)))
    }

    /// Spans with trace and span ids but no exporter: what `--log-format json` needs
    /// to print the ids when nothing is exported.
    pub fn local(config: &TelemetryConfig) -> Telemetry {
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(config))
            .build();
        Telemetry::with_provider(provider, None, config)
    }

    fn with_provider(
        provider: SdkTracerProvider,
        runtime: Option<tokio::runtime::Runtime>,
        config: &TelemetryConfig,
    ) -> Telemetry {
        Telemetry {
            tracer: provider.tracer(SCOPE),
            provider,
            runtime,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
        }
    }

    /// The `tracing` layer that records the bridge's spans into this pipeline; add it
    /// to the subscriber (`tracing_subscriber::registry().with(telemetry.layer())`).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let spans = Targets::new()
            .with_target(NAS_TARGET, Level::INFO)
            .with_target(INVOKE, Level::DEBUG)
            .with_default(Level::WARN);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_location(false)
            .with_threads(false)
            .with_filter(spans)
    }

    /// Sends the spans still buffered and stops the exporter, waiting at most
    /// `telemetry.flush_timeout_ms`; an export still in flight then is abandoned. Never
    /// fails: a collector that cannot be reached is logged at debug level.
    pub fn shutdown(self) {
        let timeout = self.flush_timeout.max(Duration::from_millis(1));
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::debug!("telemetry: spans not flushed: {err}");
        }
        if let Some(runtime) = self.runtime {
            runtime.shutdown_background();
        }
    }
}

/// `service.name` and the resource attributes of `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .build()
}

/// The OTLP/HTTP URL of `endpoint`: the collector's base URL plus `/v1/traces`, unless
/// it already ends with that path.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

fn http_exporter(endpoint: &str) -> Result<SpanExporter> {
    SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| endpoint_error(endpoint, err))
}

fn grpc_exporter(endpoint: &str) -> Result<SpanExporter> {
    SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.trim_end_matches('/'))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| endpoint_error(endpoint, err))
}

/// One worker thread, for tonic's channel only.
fn grpc_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-grpc")
        .enable_all()
        .build()
        .map_err(|err| {
            BridgeError::new(
                ErrorClass::SystemError,
                format!("telemetry: cannot start the gRPC exporter's runtime: {err}"),
            )
            .with_source(err)
        })
}

fn endpoint_error(endpoint: &str, err: impl std::fmt::Display) -> BridgeError {
    BridgeError::new(
        ErrorClass::Config,
        format!("telemetry.otlp_endpoint = {endpoint:?}: cannot export spans there: {err}"),
    )
    .with_detail("key", "telemetry.otlp_endpoint")
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c/v1/traces"), "http://c/v1/traces");
        assert_eq!(traces_url("http://c/prefix"), "http://c/prefix/v1/traces");
    }
}
