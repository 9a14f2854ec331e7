//! The `worker_process` mode: a pool of long-lived
//! `python -m cerebros_service --serve-stdio --module M` children, each speaking
//! newline-delimited JSON ([`super::protocol`]) over its stdin and stdout.
//!
//! * **Requests.** A call goes to the live child with the fewest requests in flight.
//!   Its line is written under a short lock, without blocking: what the pipe does not
//!   take at once is queued for the child's writer thread. Several requests may be in
//!   flight per child; the child answers them in order.
//! * **Replies.** One reader thread per child reads reply lines and fills the
//!   [`ReplySlot`] registered under the reply's id. It watches the child's pidfd too, so
//!   an exit is noticed even when a process the child started still holds the pipe. The
//!   caller of the only request in flight spins briefly for its reply and reads the
//!   child's stdout itself meanwhile (whoever holds the pipe's lock reads), so a quick
//!   reply costs no wake-up of the reader thread nor of the caller.
//! * **Stderr.** One thread per child forwards its stderr, line by line, to `tracing`
//!   (target `cerebros.bridge.worker`, with the child's pid), keeping the last 64 KiB
//!   for error reports. The child points fd 1 and `sys.stdout` at stderr, so what ops
//!   print never reaches the protocol stream.
//! * **Timeouts.** At a request's deadline its caller gets `timeout` and the child's
//!   process group is killed; the child is reaped and replaced.
//! * **Cancellation.** A caller that stops waiting (its future is dropped: a cancelled
//!   run, Ctrl-C) while its request is still in flight has the child's process group
//!   killed at once, since a child cannot be told to stop one op; it is replaced. Other
//!   requests in flight on it fail with `subprocess_exit`, as after a crash.
//! * **Crashes.** A child that exits, segfaults or is killed is reaped and replaced;
//!   requests in flight on it fail with `subprocess_exit` (returncode, stderr excerpt).
//!   Its three threads end and its pipes are closed once it is reaped.
//!   A child that dies before it is ready is replaced after a growing delay.
//! * **Children are started** by one supervisor thread, which lives as long as the pool,
//!   so `PR_SET_PDEATHSIG` only fires when the host goes.
//!
//! The parts, one module each:
//!
//! * `invoker`: [`WorkerProcessInvoker`], the pool hosts hold: start-up, picking a
//!   child, sending a request, waiting for its reply or its deadline;
//! * `worker`: one child and the requests in flight on it, and starting it with its
//!   threads;
//! * `pipes`: the three threads on a child's pipes (replies, stderr, the request
//!   backlog);
//! * `supervisor`: the thread that starts, reaps and replaces children.

mod invoker;
mod pipes;
mod supervisor;
mod worker;

pub use invoker::WorkerProcessInvoker;

use super::{Launch, ProcessOptions};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::inprocess::reply::ReplySlot;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use worker::Worker;

/// Where the reply to one request goes.
type Reply = Arc<ReplySlot<Result<Value>>>;

/// What the invoker, the supervisor and the children's threads share.
struct Shared {
    options: ProcessOptions,
    launch: Launch,
    /// The current child of each slot (`None` until the first one is started).
    slots: Mutex<Vec<Option<Arc<Worker>>>>,
    events: Sender<Event>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    submitted: AtomicU64,
    replaced: AtomicU64,
    killed_at_deadline: AtomicU64,
}

/// What the supervisor is told.
enum Event {
    /// Start the child of `slot` and hand it over.
    Spawn {
        slot: usize,
        reply: Arc<ReplySlot<Result<Arc<Worker>>>>,
    },
    /// A child's reader saw it end; these requests were in flight on it.
    Died {
        worker: Arc<Worker>,
        orphans: Vec<Reply>,
    },
    /// Shutdown: kill what is left, reap, and stop.
    Stop,
}

fn system_error(message: impl Into<String>) -> BridgeError {
    BridgeError::new(ErrorClass::SystemError, message)
}

/// The error of a request or a start made after shutdown.
fn shut_down_error() -> BridgeError {
    BridgeError::new(
        ErrorClass::Cancelled,
        "the worker process pool is shut down",
    )
}
