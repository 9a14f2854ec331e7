//! # cerebros-bridge
//!
//! Hosts CPython **in-process** and drives a Python neural-architecture-search (NAS)
//! service through it: microsecond calls through a pool of GIL worker threads, hard
//! per-call timeouts that really stop Python, retries, a single-flight result cache,
//! `tracing` telemetry, and a durable record of every NAS run and trial. The same calls
//! run in two process modes too (`worker_process`, `subprocess`), with the same results
//! and the same error classes. The host trusts the service's code to run, never its
//! words about identity, files or ops (DESIGN §10).
//!
//! ## The layers
//!
//! | folder | what it holds |
//! |---|---|
//! | [`core`] | configuration, the versioned contracts, the error model, payload limits, the [`Invoker`](core::invoker::Invoker) trait |
//! | [`inprocess`] | the embedded interpreter, the op rule, the worker pool, conversions |
//! | [`process`] | the `worker_process` and `subprocess` modes (children, NDJSON protocol) |
//! | [`client`] | the [`Client`] hosts call: payload checks, cache, retries, telemetry over any mode |
//! | [`nas`] | run specs, the run worker, the SQLite store, artifacts, MLflow sync |
//! | `checks` | the environment checks of `cerebros-bridge validate`, for any host (feature `embed`) |
//!
//! The CLI (`src/cli/`) and the Python extension (`src/python_api/`, built by maturin)
//! are the front doors; no layer imports one above it.
//!
//! ## One call
//!
//! [`Client::call`] checks the payload ([`core::payload`]), serves a cached result or
//! hands a [`Request`](core::invoker::Request) to the configured mode's invoker:
//!
//! * `in_process`: the [`Pool`](inprocess::pool::Pool) queues the job; a worker thread
//!   holding the GIL resolves the op ([`inprocess::op_rules`]), converts the payload to a
//!   Python dict ([`inprocess::convert`]), calls the op and fills the caller's
//!   [`ReplySlot`](inprocess::reply::ReplySlot); a late call is cancelled in Python.
//! * `worker_process`: one NDJSON line to a long-lived child
//!   ([`WorkerProcessInvoker`](process::WorkerProcessInvoker)), whose reply line the host checks
//!   ([`process::protocol`]); a late or cancelled call's child is killed and replaced.
//! * `subprocess`: one `python -m cerebros_service --bridge-op OP` process per call
//!   ([`SubprocessInvoker`](process::SubprocessInvoker)).
//!
//! ## One NAS trial
//!
//! [`RunWorker::drive`](nas::run::RunWorker::drive) sends a
//! [`TrialRequestedV1`] through the client (`run_trial`), checks the reply into typed
//! values under the ids it asked for (`nas::run`), records it in the
//! [`Store`](nas::store::Store) in one transaction with its artifact and an MLflow outbox
//! item, and wakes the [`sync`](nas::sync) worker.
//!
//! ## Example
//!
//! ```
//! use cerebros_bridge::{Client, Config};
//! use serde_json::json;
//!
//! # fn main() -> cerebros_bridge::Result<()> {
//! // cerebros.toml (or CEREBROS_CONFIG), the environment, else the defaults.
//! let client = Client::start(&Config::load(None)?)?;
//! let reply = client.call_blocking("echo", json!({"run_id": "r1", "x": [1, 2]}))?;
//! assert_eq!(reply["x"], json!([1, 2]));
//! client.shutdown(std::time::Duration::from_millis(200));
//! # Ok(())
//! # }
//! ```
//!
//! `examples/host.rs` in the repository is a complete async host (`cargo run --example host`).
#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "embed")]
pub mod checks;
pub mod client;
pub mod core;
pub mod inprocess;
pub mod nas;
pub mod process;
#[cfg(feature = "extension-module")]
pub mod python_api;
#[cfg(feature = "serve")]
pub mod serve;

pub use crate::client::{CallOptions, Client};
pub use crate::core::config::{Config, Mode};
pub use crate::core::contracts::{RunFinalizedV1, RunStartedV1, TrialReportedV1, TrialRequestedV1};
pub use crate::core::error::{BridgeError, ErrorClass, Result};
pub use crate::nas::spec::RunSpec;
