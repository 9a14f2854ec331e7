//! cerebros-bridge: hosts CPython in-process and drives a Python NAS service.
pub mod cache;
pub mod convert;
pub mod error;
pub mod interpreter;
pub mod payload;
pub mod pool;
pub mod reply;
