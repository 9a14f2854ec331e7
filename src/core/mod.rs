//! The surfaces every layer shares (DESIGN §3, §6, §9): the configuration, the versioned
//! contracts, the error model, the payload limits, bounded reads of user files, and the
//! [`Invoker`](invoker::Invoker) trait that every execution mode implements. Nothing here
//! knows Python or a mode.

pub mod bounded_read;
pub mod config;
pub mod contracts;
pub mod error;
pub mod invoker;
pub mod payload;
