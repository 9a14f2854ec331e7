//! A test OTLP collector on a loopback port, over HTTP/protobuf (`POST /v1/traces`) or
//! gRPC (tonic, the `TraceService` of `opentelemetry-proto`): decodes each export into
//! [`Received`] spans. And a black hole: a port that accepts connections and never
//! answers.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{json, Map, Value};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    /// Hex ids; `parent` is empty for a root span.
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub attributes: Map<String, Value>,
    /// (name, attributes) of each event.
    pub events: Vec<(String, Map<String, Value>)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl Received {
    /// Attribute `key` (`null` when absent).
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

/// The collector; it stops with the test process.
pub struct Receiver {
    /// Its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

type Spans = Arc<Mutex<Vec<Received>>>;

impl Receiver {
    /// Starts an OTLP/HTTP collector on an ephemeral loopback port.
    pub fn start() -> Receiver {
        Receiver::serve(|listener, spans| async move {
            let app = axum::Router::new()
                .route("/v1/traces", post(export))
                .with_state(spans);
            axum::serve(listener, app).await.unwrap();
        })
    }

    /// Starts an OTLP/gRPC collector on an ephemeral loopback port.
    pub fn start_grpc() -> Receiver {
        Receiver::serve(|listener, spans| async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(GrpcCollector(spans)))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        })
    }

    fn serve<F, Fut>(server: F) -> Receiver
    where
        F: FnOnce(tokio::net::TcpListener, Spans) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans = Spans::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = {
            let _entered = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server(listener, spans.clone())
        };
        runtime.spawn(served);
        Receiver {
            url,
            spans,
            _runtime: runtime,
        }
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().clone()
    }

    /// The spans once at least `count` arrived (they are exported as the CLI exits),
    /// or those there are after 10 s.
    pub fn wait_for(&self, count: usize) -> Vec<Received> {
        let started = Instant::now();
        while self.spans.lock().len() < count && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spans()
    }
}

async fn export(State(spans): State<Spans>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    spans.lock().extend(decode(request));
    StatusCode::OK
}

struct GrpcCollector(Spans);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().extend(decode(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            received.push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
                events: span
                    .events
                    .iter()
                    .map(|e| (e.name.clone(), attributes(&e.attributes)))
                    .collect(),
                status: span.status.map_or(0, |s| s.code),
            });
        }
    }
    received
}

fn attributes(pairs: &[KeyValue]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => json!(s),
                Some(any_value::Value::BoolValue(b)) => json!(b),
                Some(any_value::Value::IntValue(i)) => json!(i),
                Some(any_value::Value::DoubleValue(d)) => json!(d),
                other => json!(format!("{other:?}")),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port that accepts connections and never answers; held open until the
/// test process ends.
pub fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}
