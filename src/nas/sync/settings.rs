//! Where and how MLflow sync runs: on or off, the tracking URI (a relative sqlite path
//! follows the store), and the configuration of the sync client (one worker process
//! running the bridge's own service).

use super::{CALL_TIMEOUT, HTTP_TIMEOUT_S, SHUTDOWN_GRACE, SYNC_MODULE, SYNC_OP};
use crate::client::{CallOptions, Client};
use crate::core::config::{Config, Mode};
use crate::core::error::Result;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether MLflow sync is on: `mlflow.tracking_uri = ""` or `"off"` turns it off (items
/// still queue in the outbox, so turning it on later syncs them).
pub fn enabled(config: &Config) -> bool {
    let uri = config.mlflow.tracking_uri.trim();
    !(uri.is_empty() || uri.eq_ignore_ascii_case("off"))
}

/// Where and how to sync, from a configuration and the store's file.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub(super) tracking_uri: String,
    pub(super) client_config: Config,
    pub(super) flush_timeout: Duration,
}

impl SyncSettings {
    /// `mlflow.tracking_uri` (a relative sqlite path resolved against the folder of
    /// `store_file`), and a one-worker client configuration for [`SYNC_MODULE`].
    pub fn from_config(config: &Config, store_file: &Path) -> SyncSettings {
        let mut client_config = config.clone();
        if client_config.module != SYNC_MODULE {
            client_config.module = SYNC_MODULE.to_owned();
            client_config.repo_path = service_root(config);
            client_config.script_path = None;
        }
        // MLflow runs in a child process of its own: importing it and creating its
        // database take seconds of GIL time that would otherwise slow in-process trials.
        client_config.mode = Mode::WorkerProcess;
        client_config.invoke.pool_size = 1;
        client_config.invoke.max_retries = 0;
        client_config.invoke.default_timeout_ms = CALL_TIMEOUT.as_millis() as u64;
        client_config.cache.enabled = false;
        SyncSettings {
            tracking_uri: resolve_tracking_uri(&config.mlflow.tracking_uri, store_file),
            client_config,
            flush_timeout: Duration::from_millis(config.mlflow.flush_timeout_ms),
        }
    }

    /// The tracking URI items are synced to.
    pub fn tracking_uri(&self) -> &str {
        &self.tracking_uri
    }

    /// The configuration of the sync client.
    pub fn client_config(&self) -> &Config {
        &self.client_config
    }

    /// Asks `sync_mlflow` whether MLflow imports and the tracking URI answers, writing
    /// nothing (`validate`); returns its reply (`mlflow_version`, `detail`). Blocks: call
    /// it outside an async runtime.
    pub fn probe(&self, timeout: Duration) -> Result<Value> {
        let client = Client::start(&self.client_config)?;
        let options = CallOptions {
            timeout: Some(timeout),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        let payload =
            json!({"tracking_uri": self.tracking_uri, "probe": true, "http": http_settings()});
        let reply = client.call_blocking_with(SYNC_OP, payload, options);
        client.shutdown(SHUTDOWN_GRACE);
        reply
    }
}

/// Resolves a relative `sqlite:///PATH` against the folder of `store_file` (made
/// absolute); every other URI (absolute sqlite paths, `http(s)://`, `databricks`, …) is
/// returned as it is.
///
/// ```
/// use cerebros_bridge::nas::sync::resolve_tracking_uri;
/// use std::path::Path;
/// let store = Path::new("/data/runs/cerebros.db");
/// assert_eq!(resolve_tracking_uri("sqlite:///mlflow.db", store), "sqlite:////data/runs/mlflow.db");
/// assert_eq!(resolve_tracking_uri("sqlite:////x/m.db", store), "sqlite:////x/m.db");
/// assert_eq!(resolve_tracking_uri("http://127.0.0.1:5000", store), "http://127.0.0.1:5000");
/// ```
pub fn resolve_tracking_uri(uri: &str, store_file: &Path) -> String {
    let Some(rest) = uri.strip_prefix("sqlite:///") else {
        return uri.to_owned();
    };
    let (path, query) = match rest.find('?') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if path.is_empty() || path.starts_with('/') || path == ":memory:" {
        return uri.to_owned();
    }
    let folder = store_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    format!("sqlite:///{}{query}", folder.join(path).display())
}

/// The folder that holds the `cerebros_service` package for the sync client: the
/// configured `repo_path` when it does, else `python/` of the interpreter's project, of
/// the working directory or of this crate's sources; else `repo_path` (the package must
/// then be installed in the venv).
fn service_root(config: &Config) -> PathBuf {
    let holds = |dir: &Path| dir.join(SYNC_MODULE).join("__init__.py").is_file();
    let mut candidates = vec![config.repo_path.clone()];
    if let Some(project) = config
        .python_executable
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(project.join("python"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"));
    candidates
        .into_iter()
        .find(|dir| holds(dir))
        .unwrap_or_else(|| config.repo_path.clone())
}

/// MLflow HTTP client settings sent with every call (see the Python side).
pub(super) fn http_settings() -> Value {
    json!({"timeout_s": HTTP_TIMEOUT_S, "max_retries": 0, "backoff_factor": 0, "backoff_jitter": 0})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sqlite_paths_follow_the_store() {
        let store = Path::new("/srv/x/cerebros.db");
        assert_eq!(
            resolve_tracking_uri("sqlite:///sub/m.db?mode=rwc", store),
            "sqlite:////srv/x/sub/m.db?mode=rwc"
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_tracking_uri("sqlite:///mlflow.db", Path::new("cerebros.db")),
            format!("sqlite:///{}", cwd.join("mlflow.db").display())
        );
        assert_eq!(resolve_tracking_uri("https://m:1", store), "https://m:1");
        assert_eq!(resolve_tracking_uri("databricks", store), "databricks");
    }

    #[test]
    fn the_sync_client_runs_the_service_module_on_one_worker() {
        let config = Config {
            module: "nas_fixture".into(),
            repo_path: PathBuf::from("/nonexistent"),
            ..Config::default()
        };
        let settings = SyncSettings::from_config(&config, Path::new("/tmp/c.db"));
        let client = settings.client_config();
        assert_eq!(client.module, SYNC_MODULE);
        assert!(client
            .repo_path
            .join("cerebros_service/__init__.py")
            .is_file());
        assert_eq!(client.invoke.pool_size, 1);
        assert_eq!(client.invoke.max_retries, 0);
        assert_eq!(settings.tracking_uri(), "sqlite:////tmp/mlflow.db");
    }
}
