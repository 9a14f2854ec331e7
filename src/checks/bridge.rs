//! The checks in the order they run and print: the config, then the Python ones
//! ([`super::python`]), then the service module, its ops, the store, the mode, MLflow,
//! telemetry and the executor.

use super::python;
use super::{Check, Status};
use crate::client::{CallOptions, Client};
use crate::core::config::{check_store_path, store_path};
use crate::core::config::{Config, Mode};
use crate::core::error::{BridgeError, ErrorClass};
use crate::nas::sync::SyncSettings;
use crate::{inprocess::interpreter, inprocess::op_rules};
use pyo3::prelude::*;
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The deadline of the `health` call of the `module` check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the `module` check's pool may take to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Runs every check in order.
pub(super) fn run_all(config_path: Option<&Path>) -> Vec<Check> {
    let (config_check, config) = check_config(config_path);
    let mut checks = vec![config_check, check_enabled(&config)];
    checks.push(python::check_python(&config));
    let interpreter = python::check_interpreter(&config);
    let started = interpreter.status != Status::Fail;
    checks.push(interpreter);
    checks.push(python::check_packages(started));
    checks.push(check_repo_path(&config.repo_path));
    let module = check_module(&config);
    let module_loaded = module.status == Status::Ok;
    checks.push(module);
    checks.push(check_ops(&config, module_loaded));
    checks.push(check_store(&config.store.url));
    checks.push(check_mode(&config));
    checks.push(check_mlflow(&config));
    checks.push(super::telemetry::check_telemetry(&config));
    checks.push(super::executor::check_executor(&config));
    checks
}

/// `config`: the configuration loads and validates. An environment variable set to a bad
/// value is reported and left out, and the configuration is loaded again without it, so
/// one mistake shows every other bad variable and the later checks still see the file and
/// the variables that are right; any other failure (the file) leaves the later checks the
/// built-in defaults.
fn check_config(path: Option<&Path>) -> (Check, Config) {
    let mut left_out: Vec<String> = Vec::new();
    let mut errors: Vec<BridgeError> = Vec::new();
    loop {
        let env = |name: &str| {
            (!left_out.iter().any(|v| v == name))
                .then(|| std::env::var(name).ok())
                .flatten()
        };
        let loaded = std::env::current_dir()
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::Config,
                    format!("cannot determine the working directory: {err}"),
                )
            })
            .and_then(|cwd| Config::load_with(path, &env, &cwd));
        match loaded {
            Ok(config) if errors.is_empty() => {
                let detail = format!("source {}, mode {}", config.source, config.mode);
                return (Check::ok("config", detail), config);
            }
            Ok(config) => return (config_failure(&errors, true), config),
            Err(err) => {
                let variable = bad_variable(&err).filter(|v| !left_out.contains(v));
                errors.push(err);
                match variable {
                    Some(variable) if left_out.len() < MAX_LEFT_OUT => left_out.push(variable),
                    _ => return (config_failure(&errors, false), Config::default()),
                }
            }
        }
    }
}

/// Bad environment variables `validate` leaves out, one after the other, at most.
const MAX_LEFT_OUT: usize = 32;

/// The environment variable `err` blames, when it names one that is set.
fn bad_variable(err: &BridgeError) -> Option<String> {
    let source = err.details.get("source").and_then(Value::as_str)?;
    let is_name = source
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (is_name && std::env::var_os(source).is_some()).then(|| source.to_owned())
}

/// The failed `config` check of `errors` (in the order found); `went_on`: the later checks
/// use the configuration without the bad variables, else the built-in defaults.
fn config_failure(errors: &[BridgeError], went_on: bool) -> Check {
    let detail: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    let fixes: Vec<String> = errors.iter().map(config_fix).collect();
    let later = if went_on {
        "later checks use the configuration without the variables above"
    } else {
        "later checks use the defaults"
    };
    Check::fail(
        "config",
        detail.join("; "),
        format!("{}; {later}", fixes.join("; ")),
    )
}

/// How to fix one config error: the key and where it was set, when the error says so.
fn config_fix(err: &BridgeError) -> String {
    let detail = |name: &str| err.details.get(name).and_then(Value::as_str);
    match (detail("key"), detail("source")) {
        (Some(key), Some(source)) => format!("fix `{key}` (set in {source})"),
        (Some(key), None) => format!("fix `{key}`"),
        _ => "check the file named by --config, CEREBROS_CONFIG or ./cerebros.toml".to_owned(),
    }
}

/// `enabled`: the bridge is switched on.
fn check_enabled(config: &Config) -> Check {
    if config.enabled {
        Check::ok("enabled", "the bridge is enabled")
    } else {
        Check::fail(
            "enabled",
            format!(
                "the bridge is disabled (enabled = false, from {})",
                config.origin("enabled")
            ),
            "set enabled = true in the config file, or CEREBROS_ENABLED=true",
        )
    }
}

/// `repo_path`: the folder put on `sys.path` exists.
fn check_repo_path(repo_path: &Path) -> Check {
    let hint = "set repo_path in the config file, or CEREBROS_REPO, to the folder that holds the service module";
    match std::fs::metadata(repo_path) {
        Ok(meta) if meta.is_dir() => Check::ok("repo_path", repo_path.display().to_string()),
        Ok(_) => Check::fail(
            "repo_path",
            format!("{} is not a directory", repo_path.display()),
            hint,
        ),
        Err(err) => Check::fail("repo_path", format!("{}: {err}", repo_path.display()), hint),
    }
}

/// `module`: the service module imports and answers `health`, on a one-worker pool
/// of the in-process mode (whatever `enabled` and `mode` say, which their own checks
/// report).
fn check_module(config: &Config) -> Check {
    let mut probe = config.clone();
    probe.invoke.pool_size = 1;
    probe.enabled = true;
    probe.mode = Mode::InProcess;
    let hint = "check module / repo_path (CEREBROS_MODULE / CEREBROS_REPO)";
    let client = match Client::start(&probe) {
        Ok(client) => client,
        Err(err) if err.class == ErrorClass::Timeout => {
            let hint = "the module's top level does not return: fix it, or raise \
                        invoke.start_timeout_ms if its import is only slow";
            return Check::fail("module", err.message, hint);
        }
        Err(err) => return Check::fail("module", err.message, hint),
    };
    let options = CallOptions {
        timeout: Some(HEALTH_TIMEOUT),
        max_retries: Some(0),
        ..CallOptions::default()
    };
    let outcome = client.call_blocking_with("health", json!({}), options);
    client.shutdown(SHUTDOWN_GRACE);
    match outcome {
        Ok(reply) => Check::ok("module", health_detail(&config.module, &reply)),
        Err(err) => Check::fail("module", err.message, hint),
    }
}

/// `ops`: the ops the service module exposes, by the op rules every mode applies
/// ([`op_rules`]); a `__bridge_ops__` naming something missing or not callable fails.
/// Run only once the `module` check passed (so the module imported, in bounded time).
fn check_ops(config: &Config, module_loaded: bool) -> Check {
    if !module_loaded {
        return Check::warn(
            "ops",
            "not listed: the module check failed",
            "fix the module check first",
        );
    }
    let listing = Python::attach(|py| {
        let module = interpreter::import_service(py, &config.repo_path, &config.module)?;
        op_rules::list(module.bind(py))
    });
    match listing {
        Ok(listing) => ops_check(&config.module, &listing),
        Err(err) => Check::fail("ops", err.message, "check module / repo_path"),
    }
}

/// The `ops` line for a listing: the ops, sorted; FAIL when `__bridge_ops__` has problems,
/// warn when there is no op at all.
fn ops_check(module: &str, listing: &op_rules::OpListing) -> Check {
    let ops = format!(
        "{module}: {} ops: {}",
        listing.ops.len(),
        listing.ops.join(", ")
    );
    if !listing.problems.is_empty() {
        return Check::fail(
            "ops",
            format!("{ops}; {}", listing.problems.join("; ")),
            format!(
                "list in {module}.__bridge_ops__ only names of callables the module holds, \
                 or remove the list"
            ),
        );
    }
    if listing.ops.is_empty() {
        return Check::warn(
            "ops",
            format!("{module} exposes no ops"),
            format!(
                "define the ops as functions in {module}, or list the callables to expose in \
                 its __bridge_ops__"
            ),
        );
    }
    Check::ok("ops", ops)
}

/// `MODULE: service_version V, python_version P` from a `health` reply.
fn health_detail(module: &str, reply: &Value) -> String {
    let field = |name: &str| match reply.get(name) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "unknown".to_owned(),
    };
    format!(
        "{module}: service_version {}, python_version {}",
        field("service_version"),
        field("python_version")
    )
}

/// `store`: the folder of the SQLite file exists and a file can be created there.
fn check_store(url: &str) -> Check {
    let hint = "set store.url (or CEREBROS_STORE_URL) to sqlite://PATH in a writable folder";
    let Ok(path) = store_path(url) else {
        return Check::fail("store", format!("{url:?} is not a sqlite:// URL"), hint);
    };
    if let Err(reason) = check_store_path(&path) {
        return Check::fail("store", format!("{url}: {reason}"), hint);
    }
    let folder = parent_folder(&path);
    match probe_writable(&folder) {
        Ok(()) => Check::ok(
            "store",
            format!("{url}: folder {} is writable", folder.display()),
        ),
        Err(reason) => Check::fail("store", format!("{url}: {reason}"), hint),
    }
}

/// The folder holding `path` (`.` for a bare file name).
fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates and removes a scratch file in `folder`.
fn probe_writable(folder: &Path) -> Result<(), String> {
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", folder.display())),
        Err(err) => return Err(format!("folder {}: {err}", folder.display())),
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let probe = folder.join(format!(
        ".cerebros-validate-{}-{nanos}.tmp",
        std::process::id()
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|err| format!("cannot create a file in {}: {err}", folder.display()))?;
    std::fs::remove_file(&probe).map_err(|err| format!("cannot remove {}: {err}", probe.display()))
}

/// `mode`: what the configured mode needs. `in_process` needs the embedded interpreter
/// (the checks above); the process modes need an interpreter that runs and, unless
/// `subprocess` mode runs a `script_path` (which must exist), a working
/// `python -m cerebros_service --help` with the children's `PYTHONPATH`.
fn check_mode(config: &Config) -> Check {
    let mode = config.mode;
    if mode == Mode::InProcess {
        return Check::ok("mode", mode.as_str());
    }
    match crate::process::probe(config) {
        Ok(detail) => Check::ok("mode", format!("{mode}: {detail}")),
        Err(err) => Check::fail(
            "mode",
            format!("{mode}: {}", err.message),
            "set python_executable (CEREBROS_PYTHON) to a Python with the service's packages, \
             check script_path (CEREBROS_SCRIPT) and repo_path, or use mode = \"in_process\"",
        ),
    }
}

/// The deadline of the `mlflow` probe (the first import of MLflow takes seconds).
const MLFLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// `mlflow`: MLflow imports and `mlflow.tracking_uri` answers (a sqlite database that
/// does not exist yet only needs its folder). A warning, never a failure: runs go on
/// without MLflow and their items are synced later.
fn check_mlflow(config: &Config) -> Check {
    let hint = "install mlflow into the venv (pip install mlflow) and point mlflow.tracking_uri \
                (MLFLOW_TRACKING_URI) at a sqlite:/// file or a server that answers; runs go on \
                meanwhile and `cerebros-bridge mlflow sync` flushes them later";
    if !crate::nas::sync::enabled(config) {
        return Check::ok(
            "mlflow",
            "MLflow sync is off (mlflow.tracking_uri = \"off\")",
        );
    }
    let store_file = store_path(&config.store.url).unwrap_or_else(|_| PathBuf::from("cerebros.db"));
    let settings = SyncSettings::from_config(config, &store_file);
    let uri = settings.tracking_uri().to_owned();
    let outcome = settings.probe(MLFLOW_TIMEOUT);
    match outcome {
        Ok(reply) => {
            let field = |name: &str| reply.get(name).and_then(Value::as_str).unwrap_or("?");
            Check::ok(
                "mlflow",
                format!(
                    "mlflow {}, {uri}: {}",
                    field("mlflow_version"),
                    field("detail")
                ),
            )
        }
        Err(err) => {
            let message: String = err.message.chars().take(300).collect();
            Check::warn("mlflow", format!("{uri}: {message}"), hint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_files_have_a_parent_folder() {
        assert_eq!(parent_folder(Path::new("cerebros.db")), PathBuf::from("."));
        assert_eq!(parent_folder(Path::new("/var/x.db")), PathBuf::from("/var"));
    }

    #[test]
    fn store_in_a_missing_folder_fails_with_a_hint() {
        let check = check_store("sqlite:///nonexistent/cerebros-validate/x.db");
        assert_eq!(check.status, Status::Fail);
        assert!(check.hint.unwrap().contains("CEREBROS_STORE_URL"));
        let tmp = std::env::temp_dir().join("cerebros.db");
        let check = check_store(&format!("sqlite://{}", tmp.display()));
        assert_eq!(check.status, Status::Ok, "{}", check.detail);
    }

    #[test]
    fn mode_check_probes_what_the_mode_needs() {
        let with = |mode: Mode, script: Option<&str>| Config {
            mode,
            repo_path: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python"),
            script_path: script.map(PathBuf::from),
            ..Config::default()
        };
        assert_eq!(check_mode(&with(Mode::InProcess, None)).status, Status::Ok);
        let check = check_mode(&with(Mode::WorkerProcess, None));
        assert_eq!(check.status, Status::Ok, "{}", check.detail);
        let check = check_mode(&with(Mode::Subprocess, Some("/nonexistent/run.py")));
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("script_path"), "{}", check.detail);
    }

    #[test]
    fn ops_check_lists_the_ops_and_fails_on_a_bad_declaration() {
        let listing = |ops: &[&str], problems: &[&str]| op_rules::OpListing {
            ops: ops.iter().map(|s| s.to_string()).collect(),
            problems: problems.iter().map(|s| s.to_string()).collect(),
        };
        let check = ops_check("svc", &listing(&["echo", "health"], &[]));
        assert_eq!(check.status, Status::Ok);
        assert_eq!(check.detail, "svc: 2 ops: echo, health");
        let check = ops_check(
            "svc",
            &listing(&["echo"], &["svc.__bridge_ops__ lists \"x\""]),
        );
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.detail.ends_with("; svc.__bridge_ops__ lists \"x\""),
            "{}",
            check.detail
        );
        assert_eq!(ops_check("svc", &listing(&[], &[])).status, Status::Warn);
    }

    #[test]
    fn health_detail_reads_versions() {
        let reply = json!({"service_version": "0.1.0", "python_version": "3.11.7"});
        assert_eq!(
            health_detail("svc", &reply),
            "svc: service_version 0.1.0, python_version 3.11.7"
        );
        assert_eq!(
            health_detail("svc", &json!({})),
            "svc: service_version unknown, python_version unknown"
        );
    }
}
