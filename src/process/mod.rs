//! The process modes (DESIGN §2): the service runs in separate Python processes, so a
//! crash, a segfault or C code holding the GIL costs a process, never the host.
//!
//! * [`SubprocessInvoker`] (`subprocess` mode): one `python … --bridge-op OP` process
//!   per call, the payload on stdin, the result on stdout (the seed's design).
//! * [`WorkerProcessInvoker`] (`worker_process` mode): a pool of long-lived
//!   `python -m cerebros_service --serve-stdio` children speaking newline-delimited JSON
//!   ([`protocol`]).
//!
//! Both start every child in its own process group and, at a call's deadline, kill the
//! whole group (`SIGKILL`) and reap the child, so neither the child nor processes it
//! started outlive the call. Children also get `SIGKILL` when the thread that started
//! them ends (`PR_SET_PDEATHSIG`), so a host that dies leaves no busy Python behind.
//!
//! The interpreter is an absolute path resolved once at start-up ([`resolve_python`]);
//! the service package's folder and `repo_path` go first on the children's `PYTHONPATH`.

mod child;
pub mod protocol;
mod subprocess;
mod worker_process;

pub use subprocess::SubprocessInvoker;
pub use worker_process::WorkerProcessInvoker;

use crate::core::config::{Config, Mode};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::payload::{excerpt, EXCERPT_CHARS};
use crate::inprocess::interpreter;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The package whose `__main__` serves the process modes.
pub const SERVICE_PACKAGE: &str = "cerebros_service";

/// How long a probe of the interpreter (`sys.executable`, `--help`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the process modes need to start their children.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The configured interpreter (`None`: [`interpreter::find_python`], else `python3`).
    pub python_executable: Option<PathBuf>,
    /// The service module whose functions are the ops.
    pub module: String,
    /// Put first on the children's `PYTHONPATH`.
    pub repo_path: PathBuf,
    /// `subprocess` mode: the script run per call instead of `-m cerebros_service`.
    pub script_path: Option<PathBuf>,
    /// `worker_process` mode: the number of children.
    pub pool_size: usize,
    /// How long [`Drop`] waits for children to exit before killing them.
    pub grace: Duration,
    /// Requests that may wait behind running ones (`worker_process`), or processes that
    /// may run at once (`subprocess`), before calls fail as `overloaded`.
    pub queue_capacity: usize,
    /// `worker_process` mode: how long the children may take to be ready
    /// (`invoke.start_timeout_ms`).
    pub start_timeout: Duration,
}

impl ProcessOptions {
    /// The process settings of a configuration.
    pub fn from_config(config: &Config) -> ProcessOptions {
        ProcessOptions {
            python_executable: config.python_executable.clone(),
            module: config.module.clone(),
            repo_path: config.repo_path.clone(),
            script_path: config.script_path.clone(),
            pool_size: config.invoke.pool_size,
            grace: Duration::from_millis(config.invoke.cancel_grace_ms),
            queue_capacity: config.invoke.queue_capacity,
            start_timeout: Duration::from_millis(config.invoke.start_timeout_ms),
        }
    }
}

/// The resolved interpreter and environment children start with.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// Absolute path of the interpreter.
    pub(crate) python: PathBuf,
    /// The children's `PYTHONPATH`.
    pub(crate) python_path: OsString,
}

impl Launch {
    /// Resolves the interpreter and the `PYTHONPATH` of `options`.
    pub(crate) fn resolve(options: &ProcessOptions) -> Result<Launch> {
        let python = resolve_python(options.python_executable.as_deref())?;
        let python_path = python_path(&options.repo_path, &python);
        Ok(Launch {
            python,
            python_path,
        })
    }

    /// A command for the interpreter, in its own process group, with `PYTHONPATH`,
    /// `faulthandler` on (a segfault leaves a traceback on stderr) and all three
    /// standard streams piped.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg("-X")
            .arg("faulthandler")
            .env("PYTHONPATH", &self.python_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        child::isolate(&mut command);
        command
    }

    /// The error of a child that could not `verb` (`run`, `start`): `dependency` when
    /// the interpreter is missing, `system_error` for any other failure.
    pub(crate) fn spawn_error(&self, verb: &str, err: std::io::Error) -> BridgeError {
        let class = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorClass::Dependency
        } else {
            ErrorClass::SystemError
        };
        BridgeError::new(
            class,
            format!("cannot {verb} {}: {err}", self.python.display()),
        )
        .with_source(err)
    }
}

/// The absolute path of the interpreter the process modes run.
///
/// The configured `python_executable`, else [`interpreter::find_python`] (the venv's
/// python), else `python3`. A bare name is looked up on `PATH` once, and the
/// interpreter is then asked for its own `sys.executable`, so that a wrapper such as a
/// pyenv shim (60+ ms per start) is not run per call. A relative path is taken from the
/// working directory. A venv's `bin/python` symlink is kept as it is: resolving it would
/// lose the venv.
pub fn resolve_python(configured: Option<&Path>) -> Result<PathBuf> {
    let candidate =
        interpreter::find_python(configured).unwrap_or_else(|| PathBuf::from("python3"));
    let bare = !candidate.is_absolute() && candidate.components().count() == 1;
    if bare {
        let found = search_path(&candidate).ok_or_else(|| {
            BridgeError::new(
                ErrorClass::Dependency,
                format!(
                    "python_executable {:?} is not on PATH; set python_executable (or CEREBROS_PYTHON) to an interpreter's path",
                    candidate.display().to_string()
                ),
            )
        })?;
        return Ok(own_executable(&found).unwrap_or(found));
    }
    let path = if candidate.is_absolute() {
        candidate
    } else {
        std::env::current_dir()
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("cannot determine the working directory: {err}"),
                )
                .with_source(err)
            })?
            .join(candidate)
    };
    if !is_executable(&path) {
        return Err(BridgeError::new(
            ErrorClass::Dependency,
            format!(
                "python_executable {} does not exist or is not executable",
                path.display()
            ),
        )
        .with_detail("python_executable", path.display().to_string()));
    }
    Ok(path)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `name` in a folder of `PATH`.
fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// `sys.executable` as `python` reports it, when that is an executable file.
fn own_executable(python: &Path) -> Option<PathBuf> {
    let mut command = Command::new(python);
    command
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    child::isolate(&mut command);
    let run = child::run(command, b"", Instant::now() + PROBE_TIMEOUT).ok()?;
    if run.timed_out || run.returncode != 0 {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(run.stdout).ok()?.trim());
    (path.is_absolute() && is_executable(&path)).then_some(path)
}

/// The children's `PYTHONPATH`: `repo_path`, then the folder holding the service package
/// (when it is not installed in the interpreter's site-packages), then the host's own
/// `PYTHONPATH`.
fn python_path(repo_path: &Path, python: &Path) -> OsString {
    let mut entries = vec![repo_path.to_path_buf()];
    if let Some(root) = service_package_root(repo_path, python) {
        if root != repo_path {
            entries.push(root);
        }
    }
    if let Some(inherited) = std::env::var_os("PYTHONPATH") {
        entries.extend(std::env::split_paths(&inherited));
    }
    std::env::join_paths(entries).unwrap_or_else(|_| repo_path.as_os_str().to_owned())
}

/// The folder that holds the `cerebros_service` package: `repo_path` itself, the
/// `python/` folder of the project whose venv `python` belongs to, of the working
/// directory, of a folder above the running binary, or of the source tree this crate
/// was built from. `None` when none has it (it must then be installed).
fn service_package_root(repo_path: &Path, python: &Path) -> Option<PathBuf> {
    let holds_package = |dir: &Path| dir.join(SERVICE_PACKAGE).join("__main__.py").is_file();
    let mut candidates = vec![repo_path.to_path_buf()];
    // <project>/.venv/bin/python -> <project>/python
    if let Some(project) = python
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(project.join("python"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("python"));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|dir| dir.join("python")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"));
    candidates.into_iter().find(|dir| holds_package(dir))
}

/// Checks what a process mode needs, for `cerebros-bridge validate`: the interpreter
/// resolves and runs, and `python -m cerebros_service --help` works with the children's
/// `PYTHONPATH` (or, in `subprocess` mode with a `script_path`, that the script exists).
/// Returns a one-line description of what was found.
pub fn probe(config: &Config) -> Result<String> {
    let options = ProcessOptions::from_config(config);
    let launch = Launch::resolve(&options)?;
    let python = launch.python.display().to_string();
    let script = match (config.mode, &config.script_path) {
        (Mode::Subprocess, Some(script)) => Some(script),
        _ => None,
    };
    if let Some(script) = script {
        if !script.is_file() {
            return Err(BridgeError::new(
                ErrorClass::Config,
                format!("script_path {} does not exist", script.display()),
            )
            .with_detail("key", "script_path"));
        }
    }
    let mut command = launch.command();
    match script {
        Some(_) => command.args(["-c", "pass"]),
        None => command.args(["-m", SERVICE_PACKAGE, "--help"]),
    };
    let run = child::run(command, b"", Instant::now() + PROBE_TIMEOUT).map_err(|err| {
        BridgeError::new(
            ErrorClass::Dependency,
            format!("cannot run {python}: {err}"),
        )
        .with_source(err)
    })?;
    if run.timed_out || run.returncode != 0 {
        let what = match script {
            Some(_) => format!("{python} -c pass"),
            None => format!("{python} -m {SERVICE_PACKAGE} --help"),
        };
        let outcome = if run.timed_out {
            format!("did not finish within {} s", PROBE_TIMEOUT.as_secs())
        } else {
            child::describe_returncode(run.returncode)
        };
        let stderr = run.stderr.text();
        return Err(BridgeError::new(
            ErrorClass::Dependency,
            format!(
                "{what} {outcome}: {}",
                excerpt(stderr.trim(), EXCERPT_CHARS)
            ),
        ));
    }
    Ok(match script {
        Some(script) => format!("{python} runs {}", script.display()),
        None => format!("{python} -m {SERVICE_PACKAGE} works"),
    })
}
