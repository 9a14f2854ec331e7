//! Store calls for async code, on a thread of their own.
//!
//! A write may wait up to the store's busy timeout (10 s) for another process's
//! writer, and SQLite waits by sleeping in the calling thread. [`StoreCalls`] runs
//! each call on one dedicated thread, in the order the calls were made (as they ran
//! before, one after the other), so that no async runtime thread ever sleeps there.

use super::Store;
use crate::core::error::{BridgeError, ErrorClass, Result};
use parking_lot::Mutex;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

type Call = Box<dyn FnOnce(&Store) + Send>;

/// Runs calls on a store from async code (see the module doc). Clones share one
/// thread, started by the first call; it ends when the last clone is dropped.
#[derive(Clone)]
pub struct StoreCalls {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    calls: Mutex<Option<Sender<Call>>>,
}

impl StoreCalls {
    /// Calls on `store` (no thread is started until the first call).
    pub fn new(store: Arc<Store>) -> StoreCalls {
        StoreCalls {
            inner: Arc::new(Inner {
                store,
                calls: Mutex::new(None),
            }),
        }
    }

    /// Runs `call` on the store thread, after the calls made before it, and returns
    /// its result. A caller that stops waiting (its task was dropped) does not undo a
    /// call that was queued already: it still runs, in its turn.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move |store: &Store| {
            let _ = reply.send(call(store));
        });
        self.sender()?.send(call).map_err(|_| stopped())?;
        result.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The store thread's inbox, starting the thread on first use.
    fn sender(&self) -> Result<Sender<Call>> {
        let mut calls = self.inner.calls.lock();
        if let Some(sender) = calls.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, inbox) = mpsc::channel::<Call>();
        let store = self.inner.store.clone();
        std::thread::Builder::new()
            .name("cerebros-store".into())
            .spawn(move || {
                for call in inbox {
                    // A panicking call loses its own reply only.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| call(&store)));
                }
            })
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("cannot start the store thread: {err}"),
                )
            })?;
        *calls = Some(sender.clone());
        Ok(sender)
    }
}

fn stopped() -> BridgeError {
    BridgeError::new(
        ErrorClass::SystemError,
        "store: the call did not finish (it panicked on the store thread)",
    )
}
