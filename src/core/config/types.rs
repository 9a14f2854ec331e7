//! The configuration's types, one per table of `cerebros.toml`, and their defaults.

use super::Mode;
use crate::core::error::ErrorClass;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The default for `invoke.max_payload_bytes`: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Where a [`Config`] was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// No file: built-in defaults (plus environment overrides).
    #[default]
    Defaults,
    /// The config file at this path (plus environment overrides).
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Defaults => f.write_str("defaults"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How calls are run: deadlines, retries, pool and queue sizes (`[invoke]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvokeConfig {
    /// Deadline of a call without its own timeout, in milliseconds (1 to 86 400 000).
    pub default_timeout_ms: u64,
    /// Extra attempts after a retryable failure (0 to 100).
    pub max_retries: u32,
    /// Base of the exponential backoff between attempts, in milliseconds (0 to 600 000).
    pub retry_backoff_ms: u64,
    /// Number of worker threads or processes (1 to 64).
    pub pool_size: usize,
    /// How long a timed-out call may take to stop before its worker is retired, in
    /// milliseconds (1 to 60 000).
    pub cancel_grace_ms: u64,
    /// Largest accepted payload, in bytes of JSON (1 to 1 GiB).
    pub max_payload_bytes: usize,
    /// Most requests waiting for a worker before calls fail as `overloaded` (1 to
    /// 1 000 000).
    pub queue_capacity: usize,
    /// The error classes that are retried.
    pub retry_on: Vec<ErrorClass>,
    /// How long starting the bridge may take (the interpreter, the service module's
    /// import, the worker processes being ready), in milliseconds (1 to 86 400 000).
    pub start_timeout_ms: u64,
    /// The nice value of the in-process worker threads (0 to 19; 0: the host's own
    /// priority): higher lets the host's other threads go first while Python trains.
    pub worker_nice: u32,
}

impl Default for InvokeConfig {
    fn default() -> Self {
        InvokeConfig {
            default_timeout_ms: 15_000,
            max_retries: 2,
            retry_backoff_ms: 750,
            pool_size: 2,
            cancel_grace_ms: 250,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            queue_capacity: 1024,
            retry_on: ErrorClass::ALL
                .into_iter()
                .filter(|class| class.retryable_by_default())
                .collect(),
            start_timeout_ms: 30_000,
            worker_nice: 0,
        }
    }
}

/// The result cache (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether successful results are cached.
    pub enabled: bool,
    /// How long an entry lives, in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// Most entries kept (1 to 1 000 000 while enabled).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_ms: 30_000,
            max_entries: 512,
        }
    }
}

/// The run store (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Database URL; must start with `sqlite://`.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://cerebros.db".to_owned(),
        }
    }
}

/// MLflow sync (`[mlflow]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlflowConfig {
    /// The MLflow tracking URI.
    pub tracking_uri: String,
    /// The longest a run's end waits for the outbox to sync (a sync call already in
    /// flight included); what is left stays pending. `0`: no wait.
    pub flush_timeout_ms: u64,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            tracking_uri: "sqlite:///mlflow.db".to_owned(),
            flush_timeout_ms: 30_000,
        }
    }
}

/// The default for `serve.listen`: loopback only.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8765";

/// `cerebros-bridge serve`, the HTTP front door (`[serve]`, DESIGN §11).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The address the server listens on (`HOST:PORT`; port 0 picks a free one).
    pub listen: String,
    /// The bearer token every `/api` route needs; `None`: no token (loopback only).
    /// Never serialized.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// Runs driven at once; the others wait in the queue, FIFO (1 to 64).
    pub max_concurrent_runs: u32,
    /// Whether a restarted server resumes the runs it was driving when it stopped.
    pub auto_resume: bool,
    /// Largest accepted request body, in bytes (1 to 64 MiB).
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, in milliseconds
    /// (1 to 600 000); a slower one is disconnected.
    pub header_timeout_ms: u64,
    /// The least nice value of the bridge's in-process workers under `serve` (0 to 19;
    /// `invoke.worker_nice` if higher): training yields to answering HTTP.
    pub worker_nice: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_SERVE_LISTEN.to_owned(),
            token: None,
            max_concurrent_runs: 1,
            auto_resume: true,
            max_body_bytes: 1024 * 1024,
            header_timeout_ms: 10_000,
            worker_nice: 10,
        }
    }
}

/// Never prints the token.
impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_concurrent_runs", &self.max_concurrent_runs)
            .field("auto_resume", &self.auto_resume)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("worker_nice", &self.worker_nice)
            .finish()
    }
}

/// The default for `telemetry.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "cerebros-bridge";

/// The OTLP transport of the span exporter (`telemetry.otlp_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`POST {endpoint}/v1/traces`; collectors listen on port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (collectors listen on port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    /// The name used in the config and in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }

    /// The protocol named `name`, as written in the config.
    pub fn from_name(name: &str) -> Option<OtlpProtocol> {
        [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// OpenTelemetry export of the bridge's spans (`[telemetry]`, DESIGN §14). Off while
/// `otlp_endpoint` is unset: no exporter, no cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's base URL (`http://HOST:PORT`); `None`: no export. HTTP/protobuf
    /// posts to `{endpoint}/v1/traces` unless the URL already names that path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The transport: `http/protobuf` or `grpc`.
    pub otlp_protocol: OtlpProtocol,
    /// The `service.name` resource of every span.
    pub service_name: String,
    /// The share of traces kept, from 0 to 1 (a trace is kept or dropped whole: a
    /// child follows its parent).
    pub sample_ratio: f64,
    /// The longest the process waits on exit for the remaining spans to be sent, in
    /// milliseconds (0 to 60 000); an export still in flight then is dropped.
    pub flush_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: 1.0,
            flush_timeout_ms: 2_000,
        }
    }
}

/// Where the trials of a NAS run execute (`executor.kind`, DESIGN §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Through this bridge's own mode (in-process pool or child processes).
    #[default]
    Local,
    /// As Ray tasks, anywhere in a Ray cluster.
    Ray,
}

impl ExecutorKind {
    /// The name used in the config and in `CEREBROS_EXECUTOR`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Ray => "ray",
        }
    }

    /// The kind named `name`, as written in the config.
    pub fn from_name(name: &str) -> Option<ExecutorKind> {
        [ExecutorKind::Local, ExecutorKind::Ray]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// Where trials run (`[executor]`, DESIGN §12). `local`, the default, is the bridge's
/// own mode; `ray` sends each trial to a Ray cluster as a task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// `local` or `ray`.
    pub kind: ExecutorKind,
    /// The Ray cluster: `auto`, `ray://HOST:PORT` (Ray Client) or `HOST:PORT` (the head's
    /// GCS address); `None`: a local Ray started by the run and ended with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The Ray namespace of the run's jobs; `None`: Ray's anonymous namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The bridge's configuration (DESIGN §6).
///
/// ```
/// use cerebros_bridge::core::config::{Config, Mode};
/// let config = Config::default();
/// assert!(config.enabled);
/// assert_eq!(config.mode, Mode::InProcess);
/// assert_eq!(config.invoke.pool_size, 2);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Whether the bridge may call Python at all.
    pub enabled: bool,
    /// How calls are executed.
    pub mode: Mode,
    /// Directory put on `sys.path`.
    pub repo_path: PathBuf,
    /// The Python service module to load (a dotted module path).
    pub module: String,
    /// The script run per call in subprocess mode; `None`: the module's `__main__`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_path: Option<PathBuf>,
    /// The Python interpreter (the venv of the embedded interpreter, and the program of
    /// the process modes); `None`: chosen by the host. A bare name such as `python3` is
    /// kept as written here; the process modes look it up on `PATH` once at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_executable: Option<PathBuf>,
    /// Deadlines, retries, pool and queue.
    pub invoke: InvokeConfig,
    /// The result cache.
    pub cache: CacheConfig,
    /// The run store.
    pub store: StoreConfig,
    /// MLflow sync.
    pub mlflow: MlflowConfig,
    /// The HTTP front door.
    pub serve: ServeConfig,
    /// OpenTelemetry export.
    pub telemetry: TelemetryConfig,
    /// Where trials run.
    pub executor: ExecutorConfig,
    /// Where the config was read from.
    #[serde(skip)]
    pub source: ConfigSource,
    /// Keys set from the environment: config key (e.g. `invoke.pool_size`) to the
    /// name of the variable that set it.
    #[serde(skip)]
    pub env_overrides: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            mode: Mode::InProcess,
            repo_path: PathBuf::from("python"),
            module: "cerebros_service".to_owned(),
            script_path: None,
            python_executable: None,
            invoke: InvokeConfig::default(),
            cache: CacheConfig::default(),
            store: StoreConfig::default(),
            mlflow: MlflowConfig::default(),
            serve: ServeConfig::default(),
            telemetry: TelemetryConfig::default(),
            executor: ExecutorConfig::default(),
            source: ConfigSource::Defaults,
            env_overrides: BTreeMap::new(),
        }
    }
}
