//! The three threads on a child's pipes: the reader of its replies (which also
//! notices its exit through its pidfd), the forwarder of its stderr to `tracing`, and
//! the writer of what `Worker::send` could not write at once; and the [`Inbox`] of
//! reply bytes the reader shares with a spinning caller.

use super::worker::Worker;
use super::Event;
use crate::process::child;
use crate::process::protocol::{self, READY_ID};
use crossbeam_channel::Sender;
use parking_lot::MutexGuard;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Longest stderr line forwarded to `tracing` as it is (longer ones are cut).
const LOG_LINE_CHARS: usize = 4096;

/// The child's stdout and the reply bytes read from it but not handled yet. Its reader
/// thread reads it when `poll` says there is something to read; the caller of the only
/// request in flight reads it too while it spins for its reply ([`Worker::poll_replies`]),
/// so that the reply needs no wake-up of the reader thread. Whoever holds the lock reads.
pub(super) struct Inbox {
    /// Closed (`None`) by the reader thread when it ends, under the lock.
    stdout: Option<OwnedFd>,
    buf: Vec<u8>,
    pending: Vec<u8>,
    /// How much of `pending` holds no newline.
    scanned: usize,
}

impl Inbox {
    pub(super) fn new(stdout: OwnedFd) -> Inbox {
        Inbox {
            stdout: Some(stdout),
            buf: vec![0u8; 256 * 1024],
            pending: Vec::new(),
            scanned: 0,
        }
    }

    /// Reads what the pipe holds now and handles every complete reply line; true when
    /// stdout has ended (or is closed, or broken).
    pub(super) fn read_available(&mut self, worker: &Worker) -> bool {
        let Some(fd) = self.stdout.as_ref().map(AsRawFd::as_raw_fd) else {
            return true;
        };
        let ended = loop {
            match child::read_some(fd, &mut self.buf) {
                Ok(0) => break true,
                Ok(n) => {
                    self.pending.extend_from_slice(&self.buf[..n]);
                    // A short read took all there was; `poll` reports what comes next.
                    if n < self.buf.len() {
                        break false;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => break err.kind() != io::ErrorKind::WouldBlock,
            }
        };
        dispatch_lines(worker, &mut self.pending, &mut self.scanned);
        ended
    }
}

/// Reads reply lines until the child's stdout ends or the child exits, then reports
/// the death to the supervisor with the requests that were in flight.
pub(super) fn read_replies(worker: Arc<Worker>, pidfd: Option<OwnedFd>, events: Sender<Event>) {
    // Only this thread closes stdout (at its end), so the number stays valid until then.
    let fd = worker.inbox.lock().stdout.as_ref().map(AsRawFd::as_raw_fd);
    let mut ended = fd.is_none();
    while !ended {
        let mut fds = [
            child::poll_entry(fd, libc::POLLIN),
            child::poll_entry(pidfd.as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN),
        ];
        if child::poll(&mut fds, None).is_err() {
            break;
        }
        let exited = fds[1].revents != 0;
        if fds[0].revents != 0 || exited {
            ended = worker.inbox.lock().read_available(&worker);
        }
        ended |= exited;
    }
    worker.inbox.lock().stdout = None;
    worker.alive.store(false, Ordering::Release);
    let orphans = worker.close_pending();
    let _ = events.send(Event::Died {
        worker: worker.clone(),
        orphans,
    });
}

/// Handles every complete line in `pending` and drops it from the buffer.
fn dispatch_lines(worker: &Worker, pending: &mut Vec<u8>, scanned: &mut usize) {
    let mut start = 0;
    while let Some(offset) = pending[*scanned..].iter().position(|b| *b == b'\n') {
        let end = *scanned + offset;
        handle_line(worker, &pending[start..end]);
        start = end + 1;
        *scanned = start;
    }
    pending.drain(..start);
    *scanned = pending.len();
    // Do not keep the memory of one huge reply for the child's whole life.
    if pending.capacity() > 4 << 20 && pending.len() < 64 << 10 {
        pending.shrink_to(64 << 10);
    }
}

fn handle_line(worker: &Worker, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match protocol::decode_reply(line) {
        Ok(protocol::Reply {
            id: Some(READY_ID),
            outcome,
        }) => {
            if outcome.is_err() {
                worker.ready_failed.store(true, Ordering::Release);
            }
            worker.ready.fill(outcome);
        }
        Ok(protocol::Reply {
            id: Some(id),
            outcome,
        }) => {
            if let Some(reply) = worker.take(id) {
                reply.fill(outcome);
            }
        }
        Ok(protocol::Reply { id: None, outcome }) => {
            let why = outcome.err().map(|e| e.message).unwrap_or_default();
            tracing::warn!(
                target: "cerebros.bridge.worker",
                pid = worker.pid,
                "the worker process could not read a request: {why}"
            );
        }
        Err(why) => {
            tracing::error!(
                target: "cerebros.bridge.worker",
                pid = worker.pid,
                "the worker process broke the protocol ({why}); killing it"
            );
            worker.kill();
        }
    }
}

/// Forwards the child's stderr to `tracing`, line by line, and keeps its tail.
pub(super) fn forward_stderr(worker: Arc<Worker>, stderr: OwnedFd) {
    let fd = stderr.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let n = match child::read_some(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &buf[..n];
        worker.stderr_tail.lock().push(data);
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let (text, complete) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = LOG_LINE_CHARS.saturating_sub(line.len());
            cut |= text.len() > room;
            line.extend_from_slice(&text[..text.len().min(room)]);
            if complete {
                log_stderr_line(&worker, &line, cut);
                line.clear();
                cut = false;
            }
        }
    }
    if !line.is_empty() {
        log_stderr_line(&worker, &line, cut);
    }
    *worker.stderr_done.lock() = true;
    worker.stderr_closed.notify_all();
}

fn log_stderr_line(worker: &Worker, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let more = if cut { "…" } else { "" };
    tracing::info!(
        target: "cerebros.bridge.worker",
        pid = worker.pid,
        slot = worker.slot,
        "{text}{more}"
    );
}

/// Writes what `send` could not: waits for bytes in the backlog and for room in the
/// pipe. Ends when stdin is closed or broken.
pub(super) fn write_requests(worker: Arc<Worker>) {
    let mut writer = worker.writer.lock();
    loop {
        let Some(fd) = writer.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        if writer.is_idle() {
            worker.writer_wake.wait(&mut writer);
            continue;
        }
        let offset = writer.offset;
        match child::write_some(fd, &writer.backlog[offset..]) {
            Ok(n) => {
                writer.offset += n;
                if writer.is_idle() {
                    writer.backlog = Vec::new();
                    writer.offset = 0;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                // Wait for room with the lock released; `fd` can only be closed under
                // the lock, and a stale poll just returns early.
                MutexGuard::unlocked(&mut writer, || {
                    let mut fds = [child::poll_entry(Some(fd), libc::POLLOUT)];
                    let _ = child::poll(&mut fds, Some(Duration::from_millis(100)));
                });
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                writer.fd = None;
                writer.backlog = Vec::new();
                writer.offset = 0;
                return;
            }
        }
    }
}
