//! A real two-node Ray cluster on this machine, shared by the tests of this binary: a head
//! node and a second node, 1 CPU each, bound to 127.0.0.1, started on first use and
//! stopped when the test process exits (also after a failed test).
//!
//! Each node is a `ray start --block` child in its own process group, so stopping it
//! (SIGTERM, then SIGKILL to the group) ends exactly the processes these tests started,
//! never another Ray on the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The cluster, with the folder of the fixture's knobs (`RAY_FIXTURE_DIR`).
pub struct Cluster {
    /// The head node's address (`HOST:PORT`), for `executor.address`.
    pub address: String,
    /// The fixture's knob folder (see `tests/fixtures/ray_fixture.py`).
    pub knobs: PathBuf,
    _scratch: tempfile::TempDir,
}

/// The `ray start --block` children (each the leader of its process group), for the
/// exit hook.
static NODES: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static CLUSTER: OnceLock<Mutex<Cluster>> = OnceLock::new();

/// Ray's token authentication, off for this loopback-only cluster and its clients: with it
/// unset, Ray turns it on whenever `~/.ray/auth_token` exists (a local `ray.init()`
/// writes one), and `ray status` then cannot connect.
pub const AUTH_MODE: &str = "disabled";

/// The shared cluster, locked: the tests use it one at a time (they kill its workers).
/// The knob folder is emptied for each test.
pub fn cluster() -> MutexGuard<'static, Cluster> {
    let cluster = CLUSTER
        .get_or_init(|| Mutex::new(Cluster::start()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for entry in std::fs::read_dir(&cluster.knobs).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    cluster
}

/// The `ray` command of the venv the bridge embeds.
fn ray_command() -> PathBuf {
    let python = super::common::venv_python();
    python.with_file_name("ray")
}

impl Cluster {
    fn start() -> Cluster {
        // SAFETY: registers a plain `extern "C"` function with no arguments.
        unsafe { libc::atexit(stop_nodes) };
        let scratch = tempfile::tempdir().unwrap();
        let knobs = scratch.path().join("knobs");
        std::fs::create_dir(&knobs).unwrap();
        // Ray's socket paths must stay short: a temp dir of its own under /tmp.
        let temp = PathBuf::from(format!("/tmp/cbray-{}", std::process::id()));
        let head_log = scratch.path().join("head.log");
        spawn_node(
            &[
                "--head",
                "--port=0",
                "--include-dashboard=false",
                &format!("--temp-dir={}", temp.display()),
            ],
            &knobs,
            &head_log,
        );
        let address = wait_for_address(&head_log);
        spawn_node(
            &[&format!("--address={address}")],
            &knobs,
            &scratch.path().join("node.log"),
        );
        wait_for_nodes(&address, 2);
        Cluster {
            address,
            knobs,
            _scratch: scratch,
        }
    }

    /// Whether process `pid` runs on the second node: a Ray worker has a process group of
    /// its own, but its parent (the node's raylet) is in the group of the `ray start
    /// --block` that started the node.
    pub fn on_second_node(&self, pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<i32>().ok());
        let node = NODES.lock().unwrap()[1].id() as i32;
        // SAFETY: getpgid only reads the process table.
        parent.is_some_and(|ppid| unsafe { libc::getpgid(ppid) } == node)
    }

    /// The second node leaves the cluster (its `ray start` group is stopped: SIGTERM, then
    /// SIGKILL), then a fresh second node joins, so later tests have two nodes again.
    pub fn replace_second_node(&self) {
        let mut old = NODES.lock().unwrap().remove(1);
        stop_group(&mut old, Instant::now() + Duration::from_secs(10));
        spawn_node(
            &[&format!("--address={}", self.address)],
            &self.knobs,
            &self.knobs.with_file_name("node-again.log"),
        );
        wait_for_nodes(&self.address, 2);
    }

    /// Writes knob `name` of the fixture.
    pub fn knob(&self, name: &str, value: &str) {
        std::fs::write(self.knobs.join(name), value).unwrap();
    }

    /// `(trial_id, pid)` of every trial start so far.
    pub fn started(&self) -> Vec<(String, i32)> {
        let log = std::fs::read_to_string(self.knobs.join("started")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (trial, pid) = line.split_once(' ')?;
                Some((trial.to_owned(), pid.parse().ok()?))
            })
            .collect()
    }
}

fn spawn_node(args: &[&str], knobs: &Path, log: &Path) {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(ray_command())
        .arg("start")
        .args(args)
        .args([
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            "--block",
        ])
        .env("RAY_FIXTURE_DIR", knobs)
        .env("RAY_AUTH_MODE", AUTH_MODE)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    NODES.lock().unwrap().push(child);
}

fn wait_for_address(log: &Path) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("ray start --address='").nth(1) {
            if let Some(address) = rest.split('\'').next() {
                return address.to_owned();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the Ray head did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `ray status` sees `count` nodes.
fn wait_for_nodes(address: &str, count: usize) {
    let start = Instant::now();
    loop {
        let status = Command::new(ray_command())
            .args(["status", &format!("--address={address}")])
            .env("RAY_AUTH_MODE", AUTH_MODE)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&status.stdout);
        let alive = text
            .split("Active:")
            .nth(1)
            .and_then(|s| s.split("Pending:").next())
            .map_or(0, |s| s.matches("node_").count());
        if alive >= count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the cluster has {alive} of {count} nodes:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether process `pid` is gone (or a zombie no one reaped yet).
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Stops the nodes: SIGTERM to each `ray start --block` group (which stops its Ray
/// processes), then SIGKILL to what is left of the groups.
extern "C" fn stop_nodes() {
    let mut nodes = std::mem::take(&mut *NODES.lock().unwrap_or_else(|p| p.into_inner()));
    for node in nodes.iter().rev() {
        // SAFETY: a plain signal send to a process group these tests created.
        unsafe { libc::kill(-(node.id() as i32), libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &mut nodes {
        stop_group(node, deadline);
    }
    let _ = std::fs::remove_dir_all(format!("/tmp/cbray-{}", std::process::id()));
}

/// Waits until `deadline` for the `ray start --block` of `node` to exit (after a SIGTERM to
/// its group, sent here too), then SIGKILLs what is left of its group and reaps it.
fn stop_group(node: &mut Child, deadline: Instant) {
    // SAFETY: plain signal sends to a process group these tests created.
    unsafe { libc::kill(-(node.id() as i32), libc::SIGTERM) };
    while Instant::now() < deadline && matches!(node.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-(node.id() as i32), libc::SIGKILL) };
    let _ = node.wait();
}
