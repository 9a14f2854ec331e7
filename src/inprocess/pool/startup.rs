//! Starting the pool's interpreter and importing its service module within a deadline.
//!
//! A service module's top level is code like any other: it may spin, sleep or wait on
//! something that never comes. The start-up therefore runs on a thread of its own
//! while the caller waits at most `start_timeout`. At the deadline an exception is
//! raised in the import (a spinning top level stops at its next bytecode; a blocking C
//! call, such as a `time.sleep`, only when it returns) and the caller gets a `timeout`
//! error once the import has stopped, or the cancel grace has passed. A start-up
//! thread still stuck then is abandoned: it never keeps the process alive, and nothing
//! waits for it. The bridge never finalizes the interpreter.

use super::worker::BridgeCallTimeout;
use super::PoolOptions;
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::inprocess::interpreter;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Starts the interpreter (once per process) and imports `options.module`, waiting at
/// most `options.start_timeout`.
pub(super) fn import_module(options: &PoolOptions) -> Result<Py<PyModule>> {
    let importing = Arc::new(Importing::default());
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let thread_options = options.clone();
    let thread_importing = importing.clone();
    std::thread::Builder::new()
        .name("cerebros-start".into())
        .spawn(move || {
            super::priority::lower_current_thread(thread_options.nice);
            let started = interpreter::ensure_started(thread_options.python_executable.as_deref());
            let outcome = match started {
                Ok(_) => Python::attach(|py| thread_importing.run(py, &thread_options)),
                Err(err) => Err(err),
            };
            if let Err(late) = sender.send(outcome) {
                report_late(&thread_options, late.into_inner());
            }
        })
        .map_err(|err| {
            BridgeError::new(
                ErrorClass::SystemError,
                format!("cannot start the start-up thread: {err}"),
            )
            .with_source(err)
        })?;
    match receiver.recv_timeout(options.start_timeout) {
        Ok(outcome) => outcome,
        Err(_) => {
            importing.interrupt();
            // A spinning top level stops at once: let it end before answering, so that
            // no thread of ours still runs Python when a host interpreter exits.
            if let Ok(late) = receiver.recv_timeout(options.cancel_grace) {
                report_late(options, late);
            }
            let ms = options.start_timeout.as_millis() as u64;
            Err(BridgeError::new(
                ErrorClass::Timeout,
                format!(
                    "the service module `{}` did not finish importing within {ms} ms \
                     (invoke.start_timeout_ms)",
                    options.module
                ),
            )
            .with_detail("module", options.module.clone())
            .with_detail("start_timeout_ms", ms))
        }
    }
}

/// The start-up thread while it imports: its Python thread id, 0 outside the import.
/// Written only while that thread holds the GIL, so a thread holding the GIL reads a
/// value that cannot change under it.
#[derive(Default)]
struct Importing {
    ident: AtomicU64,
}

impl Importing {
    /// Imports the module (on the start-up thread, attached).
    fn run(&self, py: Python<'_>, options: &PoolOptions) -> Result<Py<PyModule>> {
        // SAFETY: plain FFI query of the current thread's id.
        let ident = unsafe { pyo3::ffi::PyThread_get_thread_ident() } as u64;
        self.ident.store(ident, Ordering::Release);
        let outcome = interpreter::import_service(py, &options.repo_path, &options.module);
        self.ident.store(0, Ordering::Release);
        // An interrupt raised as the import returned must not fire later in this thread.
        // SAFETY: attached; a NULL exception clears this thread's pending one.
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident as _, std::ptr::null_mut()) };
        outcome
    }

    /// Raises [`BridgeCallTimeout`] in the import if it still runs. The raise needs the
    /// GIL, which the import may hold for as long as it likes: a thread of its own waits
    /// for it, so the caller never does.
    fn interrupt(self: &Arc<Self>) {
        let importing = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cerebros-start-cancel".into())
            .spawn(move || {
                Python::attach(|py| {
                    let ident = importing.ident.load(Ordering::Acquire);
                    if ident != 0 {
                        let exc = py.get_type::<BridgeCallTimeout>();
                        // SAFETY: attached; `ident` is the start-up thread, inside the
                        // import (it clears `ident` before leaving it, holding the GIL).
                        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident as _, exc.as_ptr()) };
                    }
                });
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot interrupt the service module's import: {err}");
        }
    }
}

/// Logs how a start-up that outlived its deadline ended (its caller has gone).
fn report_late(options: &PoolOptions, outcome: Result<Py<PyModule>>) {
    match outcome {
        Ok(module) => {
            tracing::warn!(
                module = %options.module,
                "the service module finished importing after invoke.start_timeout_ms"
            );
            Python::attach(|_| drop(module));
        }
        Err(err) => tracing::debug!(
            module = %options.module,
            "the service module's import ended after invoke.start_timeout_ms: {}",
            err.message
        ),
    }
}
