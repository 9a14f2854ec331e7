//! cerebros-bridge: hosts CPython in-process and drives a Python NAS service.
pub mod bench;
pub mod cache;
pub mod client;
pub mod config;
pub mod contracts;
pub mod convert;
pub mod error;
pub mod interpreter;
pub mod invoker;
pub mod payload;
pub mod pool;
pub mod reply;
pub mod retry;
pub mod spin;
pub mod telemetry;
