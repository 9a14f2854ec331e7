//! The NAS layer on top of the bridge (DESIGN §4, §5, §10): run specs checked against one
//! table of rules ([`spec`]), the run worker that drives `start_run` → `run_trial` × N →
//! `finalize_run` through a [`Client`](crate::client::Client) and checks every reply
//! ([`run`]), the SQLite store ([`store`]), the artifacts folder of each run
//! ([`artifacts`]), the MLflow outbox sync ([`sync`]) and where trials run ([`executor`]).

pub mod artifacts;
pub mod executor;
pub mod run;
pub mod spec;
pub mod store;
pub mod sync;
