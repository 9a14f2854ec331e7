//! Ctrl-C (SIGINT) for `call`: the call is cancelled and the CLI exits 130, whatever the
//! service module did to the signal.
//!
//! Why the CLI needs its own handler: importing `signal` into the embedded interpreter
//! (`subprocess` and many other modules import it) installs CPython's SIGINT handler
//! whenever SIGINT is at its default action, even in an interpreter started without
//! signal handling. That handler only sets a flag for the interpreter's main thread,
//! which is the CLI's main thread, and it runs no Python while it waits for the call:
//! Ctrl-C was lost until the call ended. A module may also install a handler of its
//! own at import (which runs on the main thread in `in_process` mode).
//!
//! So [`Interrupts::install`] puts a plain handler in place before the service module
//! is imported (CPython leaves a handler it did not install alone). The handler only
//! writes a byte to a pipe; a watcher thread reads it, wakes [`Interrupts::wait`], and,
//! should the CLI still be running [`FORCE_EXIT_AFTER`] later (stuck in a slow import,
//! say), ends the process itself with status 130.
//!
//! A handler a module installs at import (`in_process`) is dealt with three ways:
//! [`Interrupts::watch_python`] makes CPython write to the same pipe whenever a
//! handler set from Python receives the signal (`signal.set_wakeup_fd`), so such a
//! handler cannot swallow Ctrl-C (CPython writes the number of any signal with a
//! Python handler, so the watcher only counts SIGINT's); until [`Interrupts::settle`] the watcher puts the
//! CLI's handler back every [`GUARD_TICK`] (against `SIG_IGN`); and `settle`, once the
//! module is imported, puts it back a last time.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Exit status of a command ended by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// How long after Ctrl-C the watcher ends the process itself if the command has not.
pub const FORCE_EXIT_AFTER: Duration = Duration::from_millis(750);

/// How often the handler is put back until [`Interrupts::settle`].
const GUARD_TICK: Duration = Duration::from_millis(10);

/// The pipe's write end, for the signal handler (-1 until installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigint(_signal: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = libc::SIGINT as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a flood
        // of signals never blocks the handler.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Ctrl-C, as seen by one CLI command. Install it once, first thing.
pub struct Interrupts {
    state: Arc<State>,
}

struct State {
    notify: Notify,
    /// Until [`Interrupts::settle`]: the watcher keeps putting the handler back.
    guarding: AtomicBool,
    /// Set by whoever reports the command's outcome first (the command or the watcher).
    reported: AtomicBool,
}

impl Interrupts {
    /// Installs the SIGINT handler and starts the watcher thread. `report` reports the
    /// interruption if the watcher has to end the process itself.
    pub fn install(report: impl FnOnce() + Send + 'static) -> io::Result<Interrupts> {
        let (read, write) = pipe()?;
        WAKE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        // The handler writes to this fd for the rest of the process's life.
        std::mem::forget(write);
        set_handler()?;
        let state = Arc::new(State {
            notify: Notify::new(),
            guarding: AtomicBool::new(true),
            reported: AtomicBool::new(false),
        });
        let watched = state.clone();
        std::thread::Builder::new()
            .name("cerebros-sigint".into())
            .stack_size(64 << 10)
            .spawn(move || watch(read, watched, report))?;
        Ok(Interrupts { state })
    }

    /// Has CPython write to the watcher's pipe whenever a SIGINT reaches a handler set
    /// from Python. Call it on the interpreter's main thread, before the service module
    /// is imported (`in_process` mode).
    pub fn watch_python(&self, py: Python<'_>) -> PyResult<()> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("warn_on_full_buffer", false)?;
        py.import("signal")?.call_method(
            "set_wakeup_fd",
            (WAKE_FD.load(Ordering::Relaxed),),
            Some(&kwargs),
        )?;
        Ok(())
    }

    /// Ends the start-up guard and puts the handler back a last time, in case code run
    /// since (a service module imported in process) replaced it. Call it once the
    /// service module is imported.
    pub fn settle(&self) {
        self.state.guarding.store(false, Ordering::Release);
        if let Err(err) = set_handler() {
            tracing::warn!("cannot reinstall the Ctrl-C handler: {err}");
        }
    }

    /// Resolves at the first Ctrl-C since [`Interrupts::install`].
    pub async fn wait(&self) {
        self.state.notify.notified().await;
    }

    /// Whether this caller is the first to report the command's outcome; false when the
    /// watcher has reported the interruption already, on its way to ending the process.
    pub fn claim_report(&self) -> bool {
        !self.state.reported.swap(true, Ordering::AcqRel)
    }
}

/// Waits for the handler's byte (putting the handler back meanwhile while guarding),
/// wakes the command, then gives it [`FORCE_EXIT_AFTER`] to finish before ending the
/// process.
fn watch(read: OwnedFd, state: Arc<State>, report: impl FnOnce()) {
    let mut byte = [0u8; 1];
    loop {
        let guarding = state.guarding.load(Ordering::Acquire);
        let mut fds = [libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let timeout = if guarding {
            GUARD_TICK.as_millis() as libc::c_int
        } else {
            -1
        };
        // SAFETY: poll on a one-element array of valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout) };
        if fds[0].revents == 0 {
            if guarding {
                let _ = set_handler();
            }
            continue;
        }
        // SAFETY: reading one byte into a valid buffer from an fd we own.
        let n = unsafe { libc::read(read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        if n > 0 {
            if byte[0] == libc::SIGINT as u8 {
                break;
            }
            continue; // another signal that reached a Python handler
        }
        if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
    state.notify.notify_one();
    std::thread::sleep(FORCE_EXIT_AFTER);
    if !state.reported.swap(true, Ordering::AcqRel) {
        report();
    }
    // Waits for a report the command is writing, if it claimed it first.
    super::output::flush();
    super::logging::finish();
    // SAFETY: ends the process at once, as a signal would; no destructor, atexit
    // hook or stuck thread can delay it.
    unsafe { libc::_exit(EXIT_INTERRUPTED) }
}

/// A pipe whose write end does not block: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us these descriptors.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// Makes [`on_sigint`] the process's SIGINT handler.
fn set_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the fields set below make it ours, and the
    // handler only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
