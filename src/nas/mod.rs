//! The NAS layer on top of the bridge (DESIGN §4, §5, §10): run specs checked against one
//! table of rules ([`spec`]), the run worker that drives `start_run` → `run_trial` × N →
//! `finalize_run` through a [`Client`](crate::client::Client) and checks every reply
//! ([`run`]), the SQLite store ([`store`]), the artifacts folder of each run
//! ([`artifacts`]) and the MLflow outbox sync ([`sync`]).

pub mod artifacts;
pub mod run;
pub mod spec;
pub mod store;
pub mod sync;
