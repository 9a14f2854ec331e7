//! Where trials run (DESIGN §12): the `[executor]` settings a run worker drives with.
//!
//! `local` (the default) sends each trial through the bridge's own mode. `ray` makes the
//! embedded interpreter a Ray driver (`ray.init` once per process, the `ray_connect` op)
//! and each trial a Ray task (see `nas::run::ray`); the run worker, the store, events and
//! the MLflow outbox stay on the host either way.

use crate::client::{CallOptions, Client};
use crate::core::config::{Config, ExecutorKind};
use crate::core::error::{BridgeError, ErrorClass, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The longest `ray_connect` may take when it starts a local Ray (address unset): that takes
/// seconds on a busy host.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `ray_connect` may take to join the cluster at `executor.address`: a cluster
/// answers within seconds, so past this nothing there speaks Ray (the port may be another
/// service's, which accepts the connection and never answers as Ray does).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The executor a run worker drives trials with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutorSettings {
    /// `local` or `ray`.
    pub kind: ExecutorKind,
    /// The Ray cluster (`executor.address`); `None`: a local Ray started by the run.
    pub address: Option<String>,
    /// The Ray namespace (`executor.namespace`).
    pub namespace: Option<String>,
    /// The service module a Ray task imports on its node to run `run_trial`.
    pub module: String,
    /// Folders put on the Ray workers' `PYTHONPATH` (the config's `repo_path`).
    pub python_paths: Vec<PathBuf>,
}

impl ExecutorSettings {
    /// The settings of `config`: its `[executor]` table, module and `repo_path`.
    pub fn from_config(config: &Config) -> ExecutorSettings {
        ExecutorSettings {
            kind: config.executor.kind,
            address: config.executor.address.clone(),
            namespace: config.executor.namespace.clone(),
            module: config.module.clone(),
            python_paths: vec![config.repo_path.clone()],
        }
    }

    /// Whether trials run on Ray.
    pub fn is_ray(&self) -> bool {
        self.kind == ExecutorKind::Ray
    }

    /// The `ray_connect` payload.
    pub fn connection(&self) -> Value {
        json!({
            "address": self.address,
            "namespace": self.namespace,
            "python_paths": self.python_paths,
        })
    }

    /// Connects the client's interpreter to the Ray cluster (a no-op once connected) and
    /// returns the Ray version and the cluster's live nodes and resources. An unreachable
    /// cluster is a `config` error naming `executor.address`, with a hint.
    pub async fn connect(&self, client: &Client) -> Result<Value> {
        client
            .call_with("ray_connect", self.connection(), self.connect_options())
            .await
            .map_err(|err| self.connect_failure(err))
    }

    /// [`ExecutorSettings::connect`] from a thread without an async runtime (`validate`).
    pub fn connect_blocking(&self, client: &Client) -> Result<Value> {
        client
            .call_blocking_with("ray_connect", self.connection(), self.connect_options())
            .map_err(|err| self.connect_failure(err))
    }

    fn connect_options(&self) -> CallOptions {
        let timeout = match self.address {
            Some(_) => JOIN_TIMEOUT,
            None => START_TIMEOUT,
        };
        CallOptions {
            timeout: Some(timeout),
            max_retries: Some(0),
            ..CallOptions::default()
        }
    }

    /// A `ray_connect` that ran out of time at a given address is that address's `config`
    /// error, as an unreachable one is; other failures are the service's own.
    fn connect_failure(&self, err: BridgeError) -> BridgeError {
        match &self.address {
            Some(address) if err.class == ErrorClass::Timeout => BridgeError::new(
                ErrorClass::Config,
                format!(
                    "executor.address = {address}: no Ray cluster answered there within {} s \
                     (something else may listen on that port); hint: use the address \
                     `ray start --head` printed (or `auto` on a cluster node), or leave \
                     executor.address unset for a local Ray",
                    JOIN_TIMEOUT.as_secs()
                ),
            )
            .with_detail("key", "executor.address")
            .with_detail("address", address.as_str())
            .with_source(err),
            _ => err,
        }
    }

    /// `ray.shutdown()` of the client's interpreter, before the host exits (a no-op when
    /// it never connected): Ray's threads must not be torn down by the exit itself.
    pub async fn disconnect(&self, client: &Client) {
        let options = CallOptions {
            timeout: Some(Duration::from_secs(30)),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        if let Err(err) = client.call_with("ray_disconnect", json!({}), options).await {
            tracing::warn!("cannot disconnect from Ray: {err}");
        }
    }
}
