//! The CLI's own stdout and stderr, kept apart from what the embedded interpreter writes.
//!
//! In `in_process` mode ops run in this process: a `print`, an `os.write(1, …)` or an
//! `os.close(1)` would otherwise land in (or end) the CLI's output, and a forged JSON
//! line could come before the `--json` document. [`capture`] keeps the real stdout and
//! stderr on private descriptors, which only the CLI's output and its log write to, and
//! points fd 1 and fd 2 at pipes whose lines go to the log instead (target
//! `cerebros.bridge.python`, level info, field `stream`). The log itself writes to the
//! real stderr, so it never reads its own lines back.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The log target of what the interpreter writes to fd 1 and fd 2.
pub const TARGET: &str = "cerebros.bridge.python";

/// Longest piece of a line logged as one event (longer lines are split).
const LOG_LINE_BYTES: u64 = 4096;

/// How long [`finish`] waits for the last lines to reach the log.
const DRAIN: Duration = Duration::from_millis(200);

/// The real stdout and stderr, once captured.
struct Real {
    out: File,
    err: File,
}

static REAL: OnceLock<Real> = OnceLock::new();

/// The threads that forward fd 1 and fd 2 to the log.
static FORWARDERS: OnceLock<Vec<JoinHandle<()>>> = OnceLock::new();

/// Keeps the real stdout and stderr for the CLI and sends whatever else writes to fd 1
/// or fd 2 (the interpreter, ops, libraries) to the log. Call once, before anything
/// else runs; on failure nothing is redirected.
pub fn capture() -> io::Result<()> {
    let real = Real {
        out: File::from(dup_above_stdio(libc::STDOUT_FILENO)?),
        err: File::from(dup_above_stdio(libc::STDERR_FILENO)?),
    };
    if REAL.set(real).is_err() {
        return Ok(());
    }
    let forwarders = vec![
        redirect(libc::STDOUT_FILENO, "stdout")?,
        redirect(libc::STDERR_FILENO, "stderr")?,
    ];
    let _ = FORWARDERS.set(forwarders);
    std::panic::set_hook(Box::new(report_panic));
    Ok(())
}

/// The panic report, on the real stderr (the default hook writes to fd 2, which now
/// goes to the log).
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let backtrace = std::backtrace::Backtrace::capture();
    let mut text = format!("thread '{name}' {info}\n");
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        text.push_str(&format!("{backtrace}\n"));
    }
    let _ = stderr().write_all(text.as_bytes());
}

/// One of the CLI's own streams.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The real stdout: command output only.
    Out,
    /// The real stderr: errors, progress and the log.
    Err,
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match (REAL.get(), self) {
            (Some(real), Stream::Out) => (&real.out).write(buf),
            (Some(real), Stream::Err) => (&real.err).write(buf),
            (None, Stream::Out) => io::stdout().write(buf),
            (None, Stream::Err) => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match (REAL.get(), self) {
            (Some(_), _) => Ok(()),
            (None, Stream::Out) => io::stdout().flush(),
            (None, Stream::Err) => io::stderr().flush(),
        }
    }
}

/// The CLI's stdout.
pub fn stdout() -> Stream {
    Stream::Out
}

/// The CLI's stderr.
pub fn stderr() -> Stream {
    Stream::Err
}

/// Whether the CLI's stderr is a terminal.
pub fn stderr_is_terminal() -> bool {
    match REAL.get() {
        Some(real) => real.err.is_terminal(),
        None => io::stderr().is_terminal(),
    }
}

/// A descriptor of its own on the CLI's stderr (for a progress bar's terminal).
pub fn stderr_file() -> io::Result<File> {
    match REAL.get() {
        Some(real) => real.err.try_clone(),
        None => Ok(File::from(dup_above_stdio(libc::STDERR_FILENO)?)),
    }
}

/// Before the process exits: points fd 1 and fd 2 at `/dev/null` and gives the
/// forwarders a moment to log what is left in their pipes (a process an op started
/// may still hold a pipe: nothing waits for it).
pub fn finish() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let Some(forwarders) = FORWARDERS.get() else {
        return;
    };
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: dup2 onto a standard descriptor; `null` stays open meanwhile.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
        }
    }
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !forwarders.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A close-on-exec duplicate of `fd` numbered 3 or above (so it never takes the
/// place of a standard descriptor).
fn dup_above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own, or -1.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Points `fd` at a new pipe and starts the thread that logs what comes out of it.
fn redirect(fd: RawFd, stream: &'static str) -> io::Result<JoinHandle<()>> {
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2, owned here.
    let (read, write) = unsafe { (File::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: dup2 onto a standard descriptor (children inherit it: what a process an
    // op starts writes is logged too); `write` is closed when dropped below.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&write), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(write);
    std::thread::Builder::new()
        .name(format!("cerebros-{stream}"))
        .spawn(move || forward(read, stream))
}

/// Logs each line read from `pipe` until it ends (lines longer than
/// [`LOG_LINE_BYTES`] in pieces, so a line without end never grows memory).
fn forward(pipe: File, stream: &'static str) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(LOG_LINE_BYTES)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(target: TARGET, stream, "{text}");
            }
        }
    }
}
