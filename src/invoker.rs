//! One interface over the execution modes (DESIGN §2): the client hands a [`Request`]
//! to an [`Invoker`] and gets the op's result or a [`BridgeError`](crate::error::BridgeError) back, whichever
//! mode runs it.

use crate::config::Mode;
use crate::error::Result;
use crate::pool::{Pool, PoolOptions, PoolStats};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future, as returned by [`Invoker::invoke`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt at one call.
#[derive(Debug, Clone)]
pub struct Request {
    /// The op (a function of the service module).
    pub op: String,
    /// The payload (a JSON object, already checked by the client), shared so that
    /// retries and the worker need no copy.
    pub payload: Arc<Value>,
    /// The attempt's deadline, from now.
    pub timeout: Duration,
}

/// Runs requests in one execution mode.
pub trait Invoker: Send + Sync {
    /// The mode this invoker implements.
    fn mode(&self) -> Mode;
    /// Runs one request from an async task.
    fn invoke(&self, request: Request) -> BoxFuture<'_, Result<Value>>;
    /// Runs one request, blocking the current thread.
    fn invoke_blocking(&self, request: Request) -> Result<Value>;
    /// The state of the workers behind this invoker.
    fn stats(&self) -> PoolStats;
    /// Stops taking requests; waits at most `grace` for running ones.
    fn shutdown(&self, grace: Duration) -> usize;
}

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
        let pending = self
            .pool
            .submit(&request.op, request.payload, request.timeout);
        Box::pin(async move { pending?.wait().await })
    }

    fn invoke_blocking(&self, request: Request) -> Result<Value> {
        self.pool
            .submit(&request.op, request.payload, request.timeout)?
            .wait_blocking()
    }

    fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    fn shutdown(&self, grace: Duration) -> usize {
        self.pool.shutdown(grace)
    }
}
