//! What every request handler shares: the store, the run worker, the bridge client,
//! the event hub, the scheduler's doorbell and the metrics' counts.

use super::guard::Guard;
use super::hub::EventHub;
use super::metrics::Metrics;
use crate::client::Client;
use crate::core::config::ServeConfig;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::store::Store;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::sync::Notify;

/// The server's shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// The parts of [`AppState`].
pub struct Shared {
    /// `[serve]` as configured.
    pub serve: ServeConfig,
    /// A connection of the server's own for the API's reads and the queue's writes
    /// (the run worker writes through another one).
    pub store: Arc<Store>,
    /// The bridge client the runs use.
    pub client: Arc<Client>,
    /// Run events as they are stored.
    pub hub: EventHub,
    /// Rung when a run is queued: the scheduler looks at the queue at once.
    pub queue_bell: Arc<Notify>,
    /// Where relative dataset paths of submitted specs resolve, and the only folder
    /// such files may be in (the server's working directory).
    pub data_root: PathBuf,
    /// Who may call the API.
    pub guard: Guard,
    /// Connected event-stream clients.
    pub sse_clients: Arc<AtomicUsize>,
    /// The Prometheus metrics.
    pub metrics: Metrics,
}

impl AppState {
    /// State over `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState {
            inner: Arc::new(shared),
        }
    }

    /// Runs `read` on the store off the async threads (SQLite may wait for a writer).
    pub async fn store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("store: the call did not finish: {err}"),
                )
            })?
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.inner
    }
}
