//! The Python checks: the venv's executable, the embedded interpreter and the packages
//! the service needs.

use super::Check;
use crate::core::config::Config;
use crate::inprocess::interpreter::{self, major_minor};
use pyo3::prelude::*;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long `python -c ...` may take to print its version.
const PYTHON_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The script that prints `major.minor.micro`.
const PRINT_VERSION: &str = "import sys; print('%d.%d.%d' % sys.version_info[:3])";

/// Hint for a missing or unusable Python executable.
const PYTHON_HINT: &str =
    "run make setup (creates .venv), or set python_executable / CEREBROS_PYTHON";

/// Hint for missing required packages.
const PACKAGES_HINT: &str = ".venv/bin/pip install -r requirements.txt";

/// Packages the service needs: (import name, distribution name).
const REQUIRED_PACKAGES: [(&str, &str); 2] = [("numpy", "numpy"), ("sklearn", "scikit-learn")];

/// Packages only one feature needs: missing ones are a warning (runs go on without them).
const OPTIONAL_PACKAGES: [(&str, &str); 2] = [("mlflow", "mlflow"), ("keras", "keras")];

/// How to install an optional package, and what needs it.
fn optional_hint(name: &str) -> &'static str {
    match name {
        "keras" => {
            ".venv/bin/pip install 'cerebros_service[keras]' (trainer = \"keras\" needs it; \
             the numpy trainer does not)"
        }
        _ => ".venv/bin/pip install mlflow (MLflow sync needs it; runs go on without it)",
    }
}

/// `python`: the Python executable exists, runs, and has the embedded interpreter's
/// major.minor version.
pub(super) fn check_python(config: &Config) -> Check {
    let Some(python) = interpreter::find_python(config.python_executable.as_deref()) else {
        let detail = "no Python executable found (no python_executable, no $VIRTUAL_ENV, \
                      no .venv/bin/python in the working directory or above the binary)";
        return Check::fail("python", detail, PYTHON_HINT);
    };
    if !python.exists() {
        return Check::fail(
            "python",
            format!("{} does not exist", python.display()),
            PYTHON_HINT,
        );
    }
    let version = match python_version(&python) {
        Ok(version) => version,
        Err(reason) => return Check::fail("python", reason, PYTHON_HINT),
    };
    let embedded = interpreter::embedded_version();
    if major_minor(&version) == major_minor(&embedded) {
        let detail = format!("{} (Python {version}, as embedded)", python.display());
        Check::ok("python", detail)
    } else {
        Check::fail(
            "python",
            format!(
                "{} is Python {version} but the embedded interpreter is {embedded}",
                python.display()
            ),
            format!(
                "rebuild with PYO3_PYTHON={} or recreate the venv with Python {}",
                python.display(),
                major_minor(&embedded)
            ),
        )
    }
}

/// Runs `python -c PRINT_VERSION` with a deadline and returns what it printed.
fn python_version(python: &Path) -> Result<String, String> {
    let child = Command::new(python)
        .args(["-c", PRINT_VERSION])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", python.display()))?;
    let (status, stdout, stderr) = wait_with_deadline(child, PYTHON_VERSION_TIMEOUT)
        .map_err(|reason| format!("{}: {reason}", python.display()))?;
    let version = stdout.trim().to_owned();
    if status.success() && !version.is_empty() {
        Ok(version)
    } else {
        Err(format!(
            "{} -c ... failed ({status}): {}",
            python.display(),
            stderr.trim()
        ))
    }
}

/// Waits for `child` at most `timeout` (killing it past that) and returns its status,
/// stdout and stderr.
fn wait_with_deadline(
    mut child: Child,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), String> {
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => return Err(format!("cannot wait for it: {err}")),
        }
    };
    Ok((
        status,
        read_all(child.stdout.take()),
        read_all(child.stderr.take()),
    ))
}

/// Everything left in a child's pipe (empty when there is none).
fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_string(&mut text);
    }
    text
}

/// `interpreter`: the embedded interpreter starts and activates the venv.
pub(super) fn check_interpreter(config: &Config) -> Check {
    match interpreter::ensure_started(config.python_executable.as_deref()) {
        Ok(info) => match &info.libpython_warning {
            None => Check::ok("interpreter", interpreter_detail(info)),
            Some(warning) => Check::warn(
                "interpreter",
                format!("{}; {warning}", interpreter_detail(info)),
                interpreter::LIBPYTHON_FIX,
            ),
        },
        Err(err) => Check::fail(
            "interpreter",
            err.message,
            "recreate the venv with the Python this binary was built against (make setup), \
             or set python_executable / CEREBROS_PYTHON",
        ),
    }
}

/// Version, executable, venv and site-packages of the started interpreter.
fn interpreter_detail(info: &interpreter::InterpreterInfo) -> String {
    let venv = info
        .venv
        .as_ref()
        .map_or_else(|| "none".to_owned(), |v| v.display().to_string());
    let site_packages = if info.site_packages.is_empty() {
        "none".to_owned()
    } else {
        info.site_packages.join(", ")
    };
    format!(
        "Python {}, executable {}, venv {venv}, site-packages {site_packages}",
        info.version, info.executable
    )
}

/// `packages`: the required packages are importable in the embedded interpreter
/// (the optional ones only warn). Not checked when the interpreter did not start.
pub(super) fn check_packages(interpreter_started: bool) -> Check {
    if !interpreter_started {
        return Check::fail(
            "packages",
            "not checked: the embedded interpreter did not start",
            "fix the interpreter check first",
        );
    }
    let found = Python::attach(|py| -> PyResult<_> {
        let required = find_packages(py, &REQUIRED_PACKAGES)?;
        let optional = find_packages(py, &OPTIONAL_PACKAGES)?;
        Ok((required, optional))
    });
    match found {
        Ok((required, optional)) => packages_verdict(&required, &optional),
        Err(err) => Check::fail(
            "packages",
            format!("cannot look packages up: {err}"),
            PACKAGES_HINT,
        ),
    }
}

/// A package looked up: its import name and its version, `None` when missing
/// (`Some("")` when importable but without distribution metadata).
type Found = (&'static str, Option<String>);

/// Looks each package up with `importlib.util.find_spec` (without importing it).
fn find_packages(py: Python<'_>, packages: &[(&'static str, &str)]) -> PyResult<Vec<Found>> {
    let util = py.import("importlib.util")?;
    let metadata = py.import("importlib.metadata")?;
    packages
        .iter()
        .map(|&(name, distribution)| {
            if util.call_method1("find_spec", (name,))?.is_none() {
                return Ok((name, None));
            }
            let version = metadata
                .call_method1("version", (distribution,))
                .and_then(|v| v.extract::<String>())
                .unwrap_or_default();
            Ok((name, Some(version)))
        })
        .collect()
}

/// The check's outcome: FAIL when a required package is missing, warn when an
/// optional one is, ok otherwise.
fn packages_verdict(required: &[Found], optional: &[Found]) -> Check {
    let detail = required
        .iter()
        .chain(optional)
        .map(|(name, version)| match version.as_deref() {
            None => format!("{name} missing"),
            Some("") => name.to_string(),
            Some(version) => format!("{name} {version}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let missing = |found: &[Found]| found.iter().any(|(_, v)| v.is_none());
    let hints: Vec<&str> = optional
        .iter()
        .filter(|(_, version)| version.is_none())
        .map(|(name, _)| optional_hint(name))
        .collect();
    if missing(required) {
        Check::fail("packages", detail, PACKAGES_HINT)
    } else if !hints.is_empty() {
        Check::warn("packages", detail, hints.join("; "))
    } else {
        Check::ok("packages", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn missing_required_fails_missing_optional_warns() {
        let numpy = ("numpy", Some("2.0".to_owned()));
        let no_sklearn = ("sklearn", None);
        let no_mlflow = ("mlflow", None);
        let check = packages_verdict(&[numpy.clone(), no_sklearn], &[]);
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.detail, "numpy 2.0, sklearn missing");
        let check = packages_verdict(std::slice::from_ref(&numpy), &[no_mlflow]);
        assert_eq!(check.status, Status::Warn);
        let no_keras = ("keras", None);
        let check = packages_verdict(std::slice::from_ref(&numpy), &[no_keras]);
        assert_eq!(check.status, Status::Warn);
        assert_eq!(check.detail, "numpy 2.0, keras missing");
        assert!(check.hint.unwrap().contains("cerebros_service[keras]"));
        let check = packages_verdict(&[numpy], &[]);
        assert_eq!(check.status, Status::Ok);
    }

    #[test]
    fn a_slow_child_is_killed_at_the_deadline() {
        let child = Command::new("sleep")
            .arg("5")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let err = wait_with_deadline(child, Duration::from_millis(100)).unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
