//! The tokio runtime a command drives its async work on.

use cerebros_bridge::core::error::{BridgeError, ErrorClass, Result};
use tokio::runtime::{Builder, Runtime};

/// Where a command's async work runs.
#[derive(Debug, Clone, Copy)]
pub enum Threads {
    /// On the thread that calls `block_on` (one call, one flush).
    Caller,
    /// On this many worker threads (a run's trials and its sync worker; bench callers).
    Workers(usize),
}

/// A runtime with timers and I/O enabled; a failure to start one is a `system_error`.
pub fn runtime(threads: Threads) -> Result<Runtime> {
    let mut builder = match threads {
        Threads::Caller => Builder::new_current_thread(),
        Threads::Workers(count) => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(count);
            builder
        }
    };
    builder.enable_all().build().map_err(|err| {
        BridgeError::new(
            ErrorClass::SystemError,
            format!("cannot start a runtime: {err}"),
        )
        .with_source(err)
    })
}
