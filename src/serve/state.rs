//! What every request handler shares: the store, the run worker, the bridge client,
//! the event hub, the scheduler's doorbell and the metrics' counts.

use super::guard::Guard;
use super::hub::EventHub;
use super::metrics::Metrics;
use super::scheduler::Drives;
use crate::client::Client;
use crate::core::config::ServeConfig;
use crate::core::error::Result;
use crate::nas::store::{Store, StoreCalls};
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
    /// (the run worker writes through another one), used on one thread of its own.
    pub store: StoreCalls,
    /// The bridge client the runs use.
    pub client: Arc<Client>,
    /// Run events as they are stored.
    pub hub: EventHub,
    /// Rung when a run is queued: the scheduler looks at the queue at once.
    pub queue_bell: Arc<Notify>,
    /// The runs this server drives, to stop at once when asked.
    pub drives: Drives,
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

    /// Runs `read` on the store's own thread, after the calls made before it: off the
    /// async threads (SQLite may wait for a writer), and on one thread whatever the
    /// load. The connection serves one call at a time anyway; a blocking-pool thread
    /// per waiting call kept ~200 threads alive under load, each with its own
    /// allocator heap (`benches/serve_load.rs`: RSS +360 MB in a minute).
    pub async fn store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.store.run(read).await
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.inner
    }
}
