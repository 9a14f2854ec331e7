//! Process plumbing shared by the process modes: starting a child in its own process
//! group, killing the group, noticing an exit without reaping, non-blocking pipes,
//! bounded output buffers, and running a child to its end, its deadline or its
//! cancellation.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The most bytes of a child's stderr kept (its tail).
pub(crate) const STDERR_LIMIT: usize = 4 * 1024 * 1024;

/// The most bytes of a one-shot child's stdout read (a result larger than this is a
/// `parse_error`).
pub(crate) const STDOUT_LIMIT: usize = 512 * 1024 * 1024;

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 256 * 1024;

/// When exit cannot be watched through a pidfd, how often it is checked.
const EXIT_TICK: Duration = Duration::from_millis(5);

/// Puts the child in its own process group (so the whole group can be killed at once,
/// and a terminal's Ctrl-C does not reach it) and has the kernel `SIGKILL` it if the
/// thread that started it ends (`PR_SET_PDEATHSIG`).
pub(crate) fn isolate(command: &mut Command) {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // The parent died between fork and prctl: nobody will ever read us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `SIGKILL` to every process of the group `pgid`. The caller must know that the
/// group leader `pgid` has not been reaped yet (a zombie keeps its pid from reuse).
pub(crate) fn kill_group(pgid: u32) {
    // SAFETY: plain syscall; a negative pid names the process group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Whether child `pid` has ended, without reaping it.
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: zeroed siginfo_t is a valid value; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: plain syscall on a valid out-pointer.
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    if rc != 0 {
        // ECHILD: not our child any more (already reaped).
        return io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
    }
    // SAFETY: waitid succeeded, so the siginfo is initialised.
    unsafe { info.si_pid() != 0 }
}

/// Blocks until child `pid` has ended, without reaping it.
pub(crate) fn wait_exit(pid: u32) {
    loop {
        // SAFETY: as in `has_exited`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT;
        // SAFETY: plain syscall on a valid out-pointer.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// A file descriptor that becomes readable when process `pid` ends (Linux 5.3+).
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: the kernel just handed us this descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes reads and writes on `fd` return `WouldBlock` instead of blocking.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `read(2)` into `buf`.
pub(crate) fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `write(2)` of `data`.
pub(crate) fn write_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A `pollfd` for `fd` (`None`: an entry poll ignores).
pub(crate) fn poll_entry(fd: Option<RawFd>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events,
        revents: 0,
    }
}

/// `poll(2)` for at most `timeout` (`None`: no limit), rounded up to a millisecond. An
/// interrupted poll returns normally with no events.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: the slice is a valid array of pollfd.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        for fd in fds.iter_mut() {
            fd.revents = 0;
        }
    }
    Ok(())
}

/// Reads from non-blocking `fd` until it would block, handing each chunk to `sink`,
/// for at most `deadline`. Returns whether the end of the stream (or an error) was
/// reached.
pub(crate) fn drain(
    fd: RawFd,
    buf: &mut [u8],
    deadline: Instant,
    mut sink: impl FnMut(&[u8]),
) -> bool {
    loop {
        match read_some(fd, buf) {
            Ok(0) => return true,
            Ok(n) => sink(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// The last bytes of a stream, at most a limit of them.
#[derive(Debug, Clone)]
pub(crate) struct TailBuffer {
    data: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl TailBuffer {
    /// An empty buffer keeping the last `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        TailBuffer {
            data: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    /// Appends `bytes`, forgetting the oldest beyond the limit.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        // Trim in batches so that appending stays amortised O(1) per byte.
        if self.data.len() > self.limit.saturating_mul(2).max(4096) {
            let cut = self.data.len() - self.limit;
            self.data.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The kept bytes as text (lossy UTF-8), starting with `…` when some were dropped.
    pub(crate) fn text(&self) -> String {
        let start = self.data.len().saturating_sub(self.limit);
        let text = String::from_utf8_lossy(&self.data[start..]);
        if start > 0 || self.dropped > 0 {
            format!("…{text}")
        } else {
            text.into_owned()
        }
    }

    /// Whether nothing was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty() && self.dropped == 0
    }
}

/// The last `max_chars` characters of `text` (trailing whitespace trimmed), with `…`
/// in front when it was cut: the end of a stderr is where the error is.
pub(crate) fn tail_excerpt(text: &str, max_chars: usize) -> String {
    let text = text.trim_end();
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_owned();
    }
    let skip = count - max_chars.saturating_sub(1);
    let kept: String = text.chars().skip(skip).collect();
    format!("…{kept}")
}

/// The Python-style return code of an exit status: the exit code, or minus the
/// signal that killed the process.
pub(crate) fn returncode(status: ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as i64,
        (None, Some(signal)) => -(signal as i64),
        (None, None) => -1,
    }
}

/// "exited with status 3" / "was killed by signal 11 (SIGSEGV)".
pub(crate) fn describe_returncode(code: i64) -> String {
    if code >= 0 {
        return format!("exited with status {code}");
    }
    let signal = -code;
    let name = match signal as libc::c_int {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "",
    };
    if name.is_empty() {
        format!("was killed by signal {signal}")
    } else {
        format!("was killed by signal {signal} ({name})")
    }
}

/// A one-shot cancellation that a thread blocked in [`poll`] can wait on (an eventfd):
/// the caller of a call run on another thread raises it when it stops waiting.
pub(crate) struct Cancel {
    fd: OwnedFd,
}

impl Cancel {
    /// A cancellation not raised yet.
    pub(crate) fn new() -> io::Result<Cancel> {
        // SAFETY: plain syscall; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just handed us this descriptor.
        Ok(Cancel {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Raises the cancellation (wakes a [`poll`] on it); raising it again is harmless.
    pub(crate) fn cancel(&self) {
        let one = 1u64.to_ne_bytes();
        let _ = write_some(self.fd.as_raw_fd(), &one);
    }

    /// Whether it was raised.
    pub(crate) fn is_cancelled(&self) -> bool {
        let mut fds = [poll_entry(Some(self.fd.as_raw_fd()), libc::POLLIN)];
        poll(&mut fds, Some(Duration::ZERO)).is_ok() && fds[0].revents != 0
    }
}

/// The pids of children running now, so that shutdown can kill them. A pid is taken
/// out (under the lock) before its child is reaped, so a kill never reaches a reused
/// pid.
#[derive(Default)]
pub(crate) struct Running {
    pids: Mutex<HashSet<u32>>,
}

impl Running {
    fn insert(&self, pid: u32) {
        self.pids.lock().insert(pid);
    }

    /// Takes `pid` out and kills what is left of its group.
    fn finish(&self, pid: u32) {
        let mut pids = self.pids.lock();
        pids.remove(&pid);
        kill_group(pid);
    }

    /// How many children run now.
    pub(crate) fn len(&self) -> usize {
        self.pids.lock().len()
    }

    /// Kills every running child's group; returns how many there were.
    pub(crate) fn kill_all(&self) -> usize {
        let pids = self.pids.lock();
        for pid in pids.iter() {
            kill_group(*pid);
        }
        pids.len()
    }
}

/// What a child run to its end (or its deadline) left.
pub(crate) struct Run {
    /// The child's pid.
    pub(crate) pid: u32,
    /// Whether the deadline passed first (the group was then killed).
    pub(crate) timed_out: bool,
    /// Whether the call was cancelled first (the group was then killed).
    pub(crate) cancelled: bool,
    /// The Python-style return code (see [`returncode`]).
    pub(crate) returncode: i64,
    /// Everything the child wrote to stdout, up to [`STDOUT_LIMIT`].
    pub(crate) stdout: Vec<u8>,
    /// Whether stdout went over [`STDOUT_LIMIT`] (the rest was read and dropped).
    pub(crate) stdout_overflow: bool,
    /// The tail of stderr.
    pub(crate) stderr: TailBuffer,
}

/// Spawns `command` (stdin, stdout and stderr piped, see [`isolate`]), writes `input`
/// to its stdin and closes it, reads stdout and stderr concurrently, and waits for the
/// child to exit or `deadline` to pass. Then it kills what is left of the child's
/// process group (the child itself after a timeout; processes it left behind after
/// an exit) and reaps the child.
pub(crate) fn run(command: Command, input: &[u8], deadline: Instant) -> io::Result<Run> {
    run_tracked(command, input, deadline, None, None)
}

/// [`run`], with the child's pid in `running` while it runs, and ending early (the
/// group killed) as soon as `cancel` is raised.
pub(crate) fn run_tracked(
    mut command: Command,
    input: &[u8],
    deadline: Instant,
    running: Option<&Running>,
    cancel: Option<&Cancel>,
) -> io::Result<Run> {
    let mut child = command.spawn()?;
    let pid = child.id();
    if let Some(running) = running {
        running.insert(pid);
    }
    let pumped = pump(&mut child, input, deadline, cancel);
    match running {
        Some(running) => running.finish(pid),
        None => kill_group(pid),
    }
    let status = child.wait();
    let pumped = pumped?;
    Ok(Run {
        pid,
        timed_out: pumped.timed_out,
        cancelled: pumped.cancelled,
        returncode: returncode(status?),
        stdout: pumped.stdout,
        stdout_overflow: pumped.stdout_overflow,
        stderr: pumped.stderr,
    })
}

struct Pumped {
    timed_out: bool,
    cancelled: bool,
    stdout: Vec<u8>,
    stdout_overflow: bool,
    stderr: TailBuffer,
}

/// Feeds stdin and collects stdout and stderr until the child exits, the deadline
/// passes or `cancel` is raised.
fn pump(
    child: &mut Child,
    input: &[u8],
    deadline: Instant,
    cancel: Option<&Cancel>,
) -> io::Result<Pumped> {
    let pid = child.id();
    let mut stdin: Option<OwnedFd> = child.stdin.take().map(OwnedFd::from);
    let mut stdout: Option<OwnedFd> = child.stdout.take().map(OwnedFd::from);
    let mut stderr: Option<OwnedFd> = child.stderr.take().map(OwnedFd::from);
    for fd in [&stdin, &stdout, &stderr].into_iter().flatten() {
        set_nonblocking(fd.as_raw_fd())?;
    }
    if input.is_empty() {
        stdin = None;
    }
    let pidfd = pidfd_open(pid);
    let mut pumped = Pumped {
        timed_out: false,
        cancelled: false,
        stdout: Vec::new(),
        stdout_overflow: false,
        stderr: TailBuffer::new(STDERR_LIMIT),
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut written = 0;
    let mut exited = false;
    loop {
        if pidfd.is_none() && !exited {
            exited = has_exited(pid);
        }
        if exited {
            // Whatever the child wrote is in the pipes now; processes it left behind
            // may still hold them open, so read what is there and stop.
            if let Some(fd) = &stdout {
                drain(fd.as_raw_fd(), &mut buf, deadline, |d| {
                    collect_stdout(&mut pumped, d)
                });
            }
            if let Some(fd) = &stderr {
                drain(fd.as_raw_fd(), &mut buf, deadline, |d| {
                    pumped.stderr.push(d)
                });
            }
            return Ok(pumped);
        }
        let now = Instant::now();
        if now >= deadline {
            pumped.timed_out = true;
            return Ok(pumped);
        }
        let wait = match &pidfd {
            Some(_) => deadline - now,
            None => (deadline - now).min(EXIT_TICK),
        };
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| f.as_raw_fd());
        let mut fds = [
            poll_entry(raw(&stdin), libc::POLLOUT),
            poll_entry(raw(&stdout), libc::POLLIN),
            poll_entry(raw(&stderr), libc::POLLIN),
            poll_entry(raw(&pidfd), libc::POLLIN),
            poll_entry(cancel.map(|c| c.fd.as_raw_fd()), libc::POLLIN),
        ];
        poll(&mut fds, Some(wait))?;
        if fds[4].revents != 0 {
            pumped.cancelled = true;
            return Ok(pumped);
        }
        if fds[0].revents != 0 {
            if let Some(fd) = &stdin {
                if feed(fd.as_raw_fd(), input, &mut written) {
                    stdin = None;
                }
            }
        }
        if fds[1].revents != 0 {
            if let Some(fd) = &stdout {
                if drain(fd.as_raw_fd(), &mut buf, deadline, |d| {
                    collect_stdout(&mut pumped, d)
                }) {
                    stdout = None;
                }
            }
        }
        if fds[2].revents != 0 {
            if let Some(fd) = &stderr {
                if drain(fd.as_raw_fd(), &mut buf, deadline, |d| {
                    pumped.stderr.push(d)
                }) {
                    stderr = None;
                }
            }
        }
        if fds[3].revents != 0 {
            exited = true;
        }
    }
}

fn collect_stdout(pumped: &mut Pumped, data: &[u8]) {
    if pumped.stdout.len() + data.len() <= STDOUT_LIMIT {
        pumped.stdout.extend_from_slice(data);
    } else {
        pumped.stdout_overflow = true;
    }
}

/// Writes as much of `input[*written..]` as the pipe takes. Returns whether stdin is
/// done with (all written, or the child closed it).
fn feed(fd: RawFd, input: &[u8], written: &mut usize) -> bool {
    while *written < input.len() {
        match write_some(fd, &input[*written..]) {
            Ok(n) => *written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        isolate(&mut command);
        command
    }

    #[test]
    fn tail_buffer_keeps_the_end() {
        let mut tail = TailBuffer::new(4);
        assert!(tail.is_empty());
        tail.push(b"ab");
        assert_eq!(tail.text(), "ab");
        for _ in 0..5000 {
            tail.push(b"xyz");
        }
        tail.push(b"1234");
        assert_eq!(tail.text(), "…1234");
    }

    #[test]
    fn tail_excerpt_cuts_the_front() {
        assert_eq!(tail_excerpt("hello\n", 10), "hello");
        assert_eq!(tail_excerpt("abcdef", 4), "…def");
    }

    #[test]
    fn return_codes_describe_signals() {
        assert_eq!(describe_returncode(3), "exited with status 3");
        assert_eq!(
            describe_returncode(-11),
            "was killed by signal 11 (SIGSEGV)"
        );
        assert_eq!(describe_returncode(-64), "was killed by signal 64");
    }

    #[test]
    fn run_feeds_stdin_and_reads_both_streams_without_deadlock() {
        // 2 MB through stdin and back out on stdout, 3 MB on stderr: far over the
        // pipe buffers, so all three must move at once.
        let input = vec![b'a'; 2_000_000];
        let script = "head -c 3000000 /dev/zero >&2; cat";
        let run = run(sh(script), &input, Instant::now() + Duration::from_secs(20)).unwrap();
        assert!(!run.timed_out);
        assert_eq!(run.returncode, 0);
        assert_eq!(run.stdout.len(), input.len());
        assert!(run.stderr.text().len() >= 3_000_000);
    }

    #[test]
    fn run_kills_at_the_deadline_and_reports_signals() {
        let start = Instant::now();
        let run = run(sh("sleep 30"), b"", start + Duration::from_millis(200)).unwrap();
        assert!(run.timed_out);
        assert_eq!(run.returncode, -9);
        assert!(start.elapsed() < Duration::from_secs(2));
        let run = run_tracked(
            sh("echo out; echo err >&2; exit 4"),
            b"",
            Instant::now() + Duration::from_secs(10),
            Some(&Running::default()),
            None,
        )
        .unwrap();
        assert_eq!(run.returncode, 4);
        assert_eq!(run.stdout, b"out\n");
        assert_eq!(run.stderr.text(), "err\n");
    }

    #[test]
    fn run_stops_when_cancelled() {
        let cancel = std::sync::Arc::new(Cancel::new().unwrap());
        assert!(!cancel.is_cancelled());
        let raise = cancel.clone();
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            raise.cancel();
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(30);
        let run = run_tracked(sh("sleep 30"), b"", far, None, Some(&cancel)).unwrap();
        raiser.join().unwrap();
        assert!(run.cancelled && !run.timed_out);
        assert_eq!(run.returncode, -9);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(cancel.is_cancelled());
    }

    #[test]
    fn run_returns_when_the_child_exits_though_a_grandchild_holds_the_pipes() {
        let start = Instant::now();
        let run = run(
            sh("sleep 30 & echo done"),
            b"",
            start + Duration::from_secs(20),
        )
        .unwrap();
        assert!(!run.timed_out);
        assert_eq!(run.stdout, b"done\n");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
