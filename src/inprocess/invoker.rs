//! The `in_process` mode behind the [`Invoker`] interface: the embedded interpreter's
//! worker [`Pool`].

use crate::core::config::Mode;
use crate::core::error::Result;
use crate::core::invoker::{BoxFuture, Invoker, PoolStats, Request};
use crate::inprocess::pool::{Pool, PoolOptions};
use serde_json::Value;
use std::time::Duration;

/// The `in_process` mode: the embedded interpreter's worker [`Pool`].
pub struct InProcessInvoker {
    pool: Pool,
}

impl InProcessInvoker {
    /// Starts the pool.
    pub fn start(options: PoolOptions) -> Result<Self> {
        Ok(InProcessInvoker {
            pool: Pool::start(options)?,
        })
    }

    /// The pool, for callers that want to bypass the client.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Invoker for InProcessInvoker {
    fn mode(&self) -> Mode {
        Mode::InProcess
    }

    fn invoke(&self, request: Request) -> BoxFuture<'_, Result<Value>> {
        let pending = self.pool.submit_traced(
            &request.op,
            request.payload,
            request.timeout,
            request.traceparent,
        );
        Box::pin(async move { pending?.wait().await })
    }

    fn invoke_blocking(&self, request: Request) -> Result<Value> {
        self.pool
            .submit_traced(
                &request.op,
                request.payload,
                request.timeout,
                request.traceparent,
            )?
            .wait_blocking()
    }

    fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    fn shutdown(&self, grace: Duration) -> usize {
        self.pool.shutdown(grace)
    }
}
