//! `cerebros-bridge serve` (DESIGN §11): the service front door. One process hosts the
//! bridge, drives the queued runs and answers HTTP: a REST API over the store, run
//! events as Server-Sent Events, a live run page and Prometheus metrics.
//!
//! * `api`: the routes and their JSON documents; `page`: the embedded live page;
//! * `guard`: the token and the cross-site checks; `listen`: the accept loop;
//! * `scheduler`: the durable run queue's driver; `hub`: stored events to streams;
//! * `metrics`: the Prometheus metrics of `GET /metrics`; `state`: what handlers share.
//!
//! Nothing a client sends reaches Python except a run spec that passed
//! [`RunSpec::from_client`](crate::nas::spec::RunSpec::from_client); no route runs an
//! op by name.

pub mod api;
mod guard;
mod hub;
mod listen;
pub mod metrics;
mod page;
mod scheduler;
mod state;

use crate::client::Client;
use crate::core::config::{store_path, Config};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::artifacts;
use crate::nas::executor::ExecutorSettings;
use crate::nas::run::RunWorker;
use crate::nas::store::{Store, StoreCalls};
use crate::nas::sync;
use guard::Guard;
use hub::EventHub;
use scheduler::{Drives, Scheduler};
use state::{AppState, Shared};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A server bound to its address, ready to run.
pub struct Server {
    listener: std::net::TcpListener,
    config: Config,
}

impl Server {
    /// Binds `serve.listen`. Refuses a non-loopback address without `serve.token`
    /// (`config`), and an address it cannot bind (`config`, naming it).
    pub fn bind(config: &Config) -> Result<Server> {
        config.validate()?;
        let addr: SocketAddr = config.serve.listen.parse().map_err(|_| {
            BridgeError::new(
                ErrorClass::Config,
                format!("serve.listen = {:?} is not an address", config.serve.listen),
            )
            .with_detail("key", "serve.listen")
        })?;
        if !addr.ip().is_loopback() && config.serve.token.is_none() {
            return Err(BridgeError::new(
                ErrorClass::Config,
                format!(
                    "serve.listen = {addr} is reachable from other machines: set serve.token \
                     (or CEREBROS_SERVE_TOKEN) so that only holders of the token can use the API, \
                     or listen on 127.0.0.1"
                ),
            )
            .with_detail("key", "serve.token"));
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|err| {
            BridgeError::new(
                ErrorClass::Config,
                format!("serve.listen = {addr}: cannot listen there: {err}"),
            )
            .with_detail("key", "serve.listen")
            .with_source(err)
        })?;
        listener.set_nonblocking(true).map_err(system_error)?;
        Ok(Server {
            listener,
            config: config.clone(),
        })
    }

    /// The address bound (with the port chosen when `serve.listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(system_error)
    }

    /// Starts the bridge, the scheduler and the event hub, calls `ready` with the address
    /// once requests will be answered (a bridge that cannot start is an error before
    /// that), then answers them until `shutdown` resolves. Runs being driven then stop
    /// where they are; they read as `interrupted` and the next server resumes them
    /// (`serve.auto_resume`).
    pub async fn run(
        self,
        ready: impl FnOnce(SocketAddr),
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let config = self.config;
        let store_file = store_path(&config.store.url)?;
        let run_store = Arc::new(Store::open(&store_file)?);
        let store = Arc::new(Store::open(&store_file)?);
        // Before the client starts: only calls made after it are counted.
        let metrics = metrics::Metrics::install()?;
        // Training yields to answering HTTP (`serve.worker_nice`).
        let mut start_config = config.clone();
        start_config.invoke.worker_nice = config.invoke.worker_nice.max(config.serve.worker_nice);
        let client = tokio::task::spawn_blocking(move || Client::start(&start_config))
            .await
            .map_err(system_error)??;
        let client = Arc::new(client);
        let mut worker = RunWorker::new(
            client.clone(),
            run_store,
            artifacts::artifact_dir(&store_file),
        )
        .with_executor(ExecutorSettings::from_config(&config));
        if sync::enabled(&config) {
            worker = worker.with_mlflow(sync::SyncSettings::from_config(&config, &store_file));
        }
        let reader = store.clone();
        let last_event = tokio::task::spawn_blocking(move || reader.last_event_id())
            .await
            .map_err(system_error)??;
        // The hub reads on a connection of its own: an event goes out without waiting
        // for an API read in progress.
        let hub_store = Arc::new(Store::open(&store_file)?);
        let hub = EventHub::spawn(hub_store, last_event, worker.subscribe());
        let bell = Arc::new(Notify::new());
        let drives = Drives::default();
        let mut scheduler = Scheduler::new(
            worker,
            store.clone(),
            bell.clone(),
            config.serve.max_concurrent_runs,
            drives.clone(),
        );
        if config.serve.auto_resume {
            scheduler = scheduler.resume_interrupted()?;
        }
        let scheduler = tokio::spawn(scheduler.run());
        let addr = self.listener.local_addr().map_err(system_error)?;
        let data_root = std::env::current_dir().map_err(system_error)?;
        let state = AppState::new(Shared {
            serve: config.serve.clone(),
            store: StoreCalls::new(store),
            client: client.clone(),
            hub,
            queue_bell: bell,
            drives,
            data_root,
            guard: Guard {
                token: config.serve.token.clone(),
                loopback: addr.ip().is_loopback(),
            },
            sse_clients: Arc::new(AtomicUsize::new(0)),
            metrics,
        });
        let listener = tokio::net::TcpListener::from_std(self.listener).map_err(system_error)?;
        let header_timeout = Duration::from_millis(config.serve.header_timeout_ms);
        ready(addr);
        listen::serve(listener, api::router(state), header_timeout, shutdown).await;
        scheduler.abort();
        let _ = scheduler.await;
        let executor = ExecutorSettings::from_config(&config);
        if executor.is_ray() {
            executor.disconnect(&client).await;
        }
        client.shutdown(Duration::from_millis(500));
        Ok(())
    }
}

fn system_error(err: impl std::fmt::Display) -> BridgeError {
    BridgeError::new(ErrorClass::SystemError, format!("serve: {err}"))
}
