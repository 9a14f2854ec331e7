//! One interface over the execution modes (DESIGN §2): the client hands a [`Request`]
//! to an [`Invoker`] and gets the op's result or a [`BridgeError`](crate::core::error::BridgeError) back, whichever
//! mode runs it.

use crate::core::config::Mode;
use crate::core::error::Result;
use serde::Serialize;
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
    /// The W3C `traceparent` of the call's `cerebros.bridge.invoke` span when it is
    /// traced (feature `otel`), so that spans the op starts in Python join the trace;
    /// `None`: not traced.
    pub traceparent: Option<String>,
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

/// A snapshot of the health of the workers behind an [`Invoker`] (the pool's threads,
/// or a process mode's children).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    /// Configured number of workers.
    pub workers: usize,
    /// Workers running and able to take jobs (equals `workers` unless one is starting).
    pub workers_alive: usize,
    /// Workers retired because a cancelled call did not stop within the grace.
    pub workers_retired: u64,
    /// Retired workers whose thread is still stuck in the call that cost them their slot.
    pub workers_stuck: u64,
    /// Workers that died (panicked) and were replaced.
    pub workers_replaced: u64,
    /// Jobs waiting in the queue.
    pub queued: usize,
    /// Jobs taken by the pool.
    pub submitted: u64,
}
