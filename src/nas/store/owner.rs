//! Who owns a running run, and whether that owner is still alive.
//!
//! A run's owner is recorded as (host, pid, process start time) plus a heartbeat. On the
//! same host an owner is dead when its pid is gone or now belongs to a process started
//! at another time (pid reuse); a live pid whose heartbeat is older than
//! [`HUNG_AFTER`] is taken as hung. On another host only the heartbeat can tell, and
//! the owner is dead after [`LEASE`] without one. Age alone never decides on this host.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a run worker renews its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A remote owner without a heartbeat for this long is dead.
pub const LEASE: Duration = Duration::from_secs(15);
/// A local owner whose pid lives but who has not beaten for this long is hung.
pub const HUNG_AFTER: Duration = Duration::from_secs(120);

/// The process that drives a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time (from `/proc/PID/stat`), against pid reuse.
    pub start: String,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: host_name(),
            pid,
            start: process_start(pid).unwrap_or_default(),
        }
    }

    /// Whether this owner still drives its run, given its last heartbeat.
    pub fn is_alive(&self, heartbeat_ms: Option<i64>) -> bool {
        let since_beat =
            heartbeat_ms.map(|ms| Duration::from_millis((now_ms() - ms).max(0) as u64));
        if self.host == host_name() {
            self.runs_here() && since_beat.is_none_or(|d| d < HUNG_AFTER)
        } else {
            since_beat.is_some_and(|d| d < LEASE)
        }
    }

    /// Whether this owner's process is known to be gone: it ran on this host, and its
    /// pid is gone or now belongs to a process started at another time. An owner on
    /// another host, or whose start time was never known, is never known to be gone
    /// (only a lease or a heartbeat can tell).
    pub fn is_gone(&self) -> bool {
        self.host == host_name() && !self.start.is_empty() && !self.runs_here()
    }

    /// Whether this owner's pid runs the process that started at its start time.
    fn runs_here(&self) -> bool {
        process_start(self.pid).is_some_and(|start| start == self.start)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot); `None` when the
/// process does not exist.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow ") ".
    let after_name = stat.rsplit_once(") ")?.1;
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = Owner::current();
        assert!(me.is_alive(Some(now_ms())));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner {
            pid,
            ..Owner::current()
        };
        assert!(!gone.is_alive(Some(now_ms())));
        let reused = Owner {
            start: "0".into(),
            ..Owner::current()
        };
        assert!(!reused.is_alive(Some(now_ms())), "pid reuse is detected");
        assert!(!me.is_gone());
        assert!(gone.is_gone() && reused.is_gone());
    }

    #[test]
    fn remote_owners_live_by_heartbeat() {
        let remote = Owner {
            host: "elsewhere".into(),
            pid: 1,
            start: "1".into(),
        };
        assert!(remote.is_alive(Some(now_ms())));
        assert!(!remote.is_alive(Some(now_ms() - 60_000)));
        assert!(!remote.is_alive(None));
        assert!(
            !remote.is_gone(),
            "only a heartbeat tells of a remote owner"
        );
    }
}
