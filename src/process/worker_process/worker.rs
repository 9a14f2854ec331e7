//! One child process: the requests in flight on it, its stdin with the bytes waiting
//! to go in, its state as the threads and the supervisor see it; and starting it with
//! its three threads ([`spawn`]).

use super::pipes::{self, Inbox};
use super::{shut_down_error, system_error, Reply, Shared};
use crate::core::error::Result;
use crate::core::payload::EXCERPT_CHARS;
use crate::inprocess::reply::ReplySlot;
use crate::process::child::{self, TailBuffer};
use crate::process::SERVICE_PACKAGE;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// How much of a child's stderr is kept for error excerpts.
const STDERR_TAIL: usize = 64 * 1024;

/// One child process and the requests in flight on it.
pub(super) struct Worker {
    /// Its place in the pool.
    pub(super) slot: usize,
    /// How many children the slot had before this one.
    pub(super) generation: u64,
    /// Also the id of its process group.
    pub(super) pid: u32,
    /// Its stdin and the bytes waiting to go in.
    pub(super) writer: Mutex<Writer>,
    /// Wakes the writer thread when bytes are queued or stdin is closed.
    pub(super) writer_wake: Condvar,
    /// Its stdout and the reply bytes not handled yet.
    pub(super) inbox: Mutex<Inbox>,
    pending: Mutex<Pending>,
    /// The number of requests in `pending` (read without the lock to pick a child).
    pub(super) in_flight: AtomicUsize,
    /// Cleared as soon as the child is known to be dying (or was killed).
    pub(super) alive: AtomicBool,
    /// The child's start-up report.
    pub(super) ready: Reply,
    /// The start-up report was an error.
    pub(super) ready_failed: AtomicBool,
    /// The process, until it is reaped (kills are sent only while it is here).
    pub(super) process: Mutex<Option<Child>>,
    /// Set once the supervisor has reaped the child.
    pub(super) reaped: AtomicBool,
    /// Killed by the bridge because a request on it timed out.
    pub(super) killed_at_deadline: AtomicBool,
    /// Killed by the bridge because the caller of a request on it went away.
    pub(super) killed_on_cancel: AtomicBool,
    /// The last bytes of its stderr, for error excerpts.
    pub(super) stderr_tail: Mutex<TailBuffer>,
    /// Set, and `stderr_closed` notified, when its stderr has ended.
    pub(super) stderr_done: Mutex<bool>,
    pub(super) stderr_closed: Condvar,
}

/// The requests in flight on a child, by id.
struct Pending {
    /// No more requests are taken (the child is dying).
    closed: bool,
    replies: HashMap<u64, Reply>,
}

/// The child's stdin and the bytes waiting to go into it.
pub(super) struct Writer {
    pub(super) fd: Option<OwnedFd>,
    pub(super) backlog: Vec<u8>,
    /// How much of `backlog` has been written.
    pub(super) offset: usize,
}

impl Writer {
    pub(super) fn is_idle(&self) -> bool {
        self.offset == self.backlog.len()
    }
}

impl Worker {
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Registers a reply slot for request `id`; false when the child takes no more.
    pub(super) fn register(&self, id: u64, reply: Reply) -> bool {
        let mut pending = self.pending.lock();
        if pending.closed {
            return false;
        }
        pending.replies.insert(id, reply);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Takes request `id` out of the in-flight set.
    pub(super) fn take(&self, id: u64) -> Option<Reply> {
        let reply = self.pending.lock().replies.remove(&id);
        if reply.is_some() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        reply
    }

    /// Closes the in-flight set and returns what was in it.
    pub(super) fn close_pending(&self) -> Vec<Reply> {
        let mut pending = self.pending.lock();
        pending.closed = true;
        let orphans: Vec<Reply> = pending.replies.drain().map(|(_, r)| r).collect();
        self.in_flight.fetch_sub(orphans.len(), Ordering::AcqRel);
        orphans
    }

    /// Reads and handles the replies the child has written so far, unless the reader
    /// thread is doing so: lets the caller spinning for a reply take it without waiting
    /// for the reader thread to wake up.
    pub(super) fn poll_replies(&self) {
        if let Some(mut inbox) = self.inbox.try_lock() {
            inbox.read_available(self);
        }
    }

    /// Writes `line` without blocking: what the pipe does not take now is queued for
    /// the writer thread, behind anything queued before it.
    pub(super) fn send(&self, line: &[u8]) -> io::Result<()> {
        let mut writer = self.writer.lock();
        let Some(fd) = writer.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if writer.is_idle() {
            let mut written = 0;
            while written < line.len() {
                match child::write_some(fd, &line[written..]) {
                    Ok(n) => written += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
            if written == line.len() {
                return Ok(());
            }
            writer.backlog.clear();
            writer.offset = 0;
            writer.backlog.extend_from_slice(&line[written..]);
        } else {
            writer.backlog.extend_from_slice(line);
        }
        drop(writer);
        self.writer_wake.notify_one();
        Ok(())
    }

    /// Closes the child's stdin (it exits when it has answered what it read).
    pub(super) fn close_stdin(&self) {
        let mut writer = self.writer.lock();
        writer.fd = None;
        writer.backlog = Vec::new();
        writer.offset = 0;
        drop(writer);
        self.writer_wake.notify_all();
    }

    /// Kills the child's process group, unless the child has been reaped already.
    pub(super) fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        let process = self.process.lock();
        if process.is_some() {
            child::kill_group(self.pid);
        }
    }

    /// Why the bridge killed the child, if it did: "timed out" or "was cancelled" (of
    /// the request that cost it).
    pub(super) fn killed_because(&self) -> Option<&'static str> {
        if self.killed_at_deadline.load(Ordering::Acquire) {
            Some("timed out")
        } else if self.killed_on_cancel.load(Ordering::Acquire) {
            Some("was cancelled")
        } else {
            None
        }
    }

    /// The end of its stderr, cut for an error's details.
    pub(super) fn stderr_excerpt(&self) -> String {
        child::tail_excerpt(&self.stderr_tail.lock().text(), EXCERPT_CHARS)
    }
}

/// Starts the child of `slot` with its three threads and makes it the slot's child.
pub(super) fn spawn(shared: &Arc<Shared>, slot: usize, generation: u64) -> Result<Arc<Worker>> {
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(shut_down_error());
    }
    let mut command = shared.launch.command();
    command.args(["-m", SERVICE_PACKAGE, "--serve-stdio", "--module"]);
    command.arg(&shared.options.module);
    let mut process = command
        .spawn()
        .map_err(|err| shared.launch.spawn_error("start", err))?;
    let pid = process.id();
    let stdio = (
        process.stdin.take().map(OwnedFd::from),
        process.stdout.take().map(OwnedFd::from),
        process.stderr.take().map(OwnedFd::from),
    );
    let (Some(stdin), Some(stdout), Some(stderr)) = stdio else {
        child::kill_group(pid);
        let _ = process.wait();
        return Err(system_error("the worker process has no pipes"));
    };
    let setup = child::set_nonblocking(stdin.as_raw_fd())
        .and_then(|()| child::set_nonblocking(stdout.as_raw_fd()));
    if let Err(err) = setup {
        child::kill_group(pid);
        let _ = process.wait();
        return Err(
            system_error(format!("cannot set up the worker's pipes: {err}")).with_source(err),
        );
    }
    let worker = Arc::new(Worker {
        slot,
        generation,
        pid,
        writer: Mutex::new(Writer {
            fd: Some(stdin),
            backlog: Vec::new(),
            offset: 0,
        }),
        writer_wake: Condvar::new(),
        inbox: Mutex::new(Inbox::new(stdout)),
        pending: Mutex::new(Pending {
            closed: false,
            replies: HashMap::new(),
        }),
        in_flight: AtomicUsize::new(0),
        alive: AtomicBool::new(true),
        ready: ReplySlot::new(),
        ready_failed: AtomicBool::new(false),
        process: Mutex::new(Some(process)),
        reaped: AtomicBool::new(false),
        killed_at_deadline: AtomicBool::new(false),
        killed_on_cancel: AtomicBool::new(false),
        stderr_tail: Mutex::new(TailBuffer::new(STDERR_TAIL)),
        stderr_done: Mutex::new(false),
        stderr_closed: Condvar::new(),
    });
    let name = |what: &str| format!("cerebros-wp-{slot}.{generation}-{what}");
    let pidfd = child::pidfd_open(pid);
    let threads = [
        spawn_thread(name("out"), 8 << 20, {
            let (worker, events) = (worker.clone(), shared.events.clone());
            move || pipes::read_replies(worker, pidfd, events)
        }),
        spawn_thread(name("err"), 256 << 10, {
            let worker = worker.clone();
            move || pipes::forward_stderr(worker, stderr)
        }),
        spawn_thread(name("in"), 256 << 10, {
            let worker = worker.clone();
            move || pipes::write_requests(worker)
        }),
    ];
    if let Some(Err(err)) = threads.into_iter().find(io::Result::is_err) {
        worker.close_stdin();
        worker.kill();
        return Err(
            system_error(format!("cannot start a worker process thread: {err}")).with_source(err),
        );
    }
    shared.slots.lock()[slot] = Some(worker.clone());
    Ok(worker)
}

fn spawn_thread(
    name: String,
    stack: usize,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(stack)
        .spawn(body)
        .map(drop)
}
