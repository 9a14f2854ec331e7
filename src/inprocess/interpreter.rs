//! Starting the embedded CPython interpreter and pointing it at the project's venv.
//!
//! The interpreter is process-wide: the first pool to start it decides which venv's
//! packages it sees. When the bridge is loaded into a running Python (the extension
//! module), the interpreter belongs to that host and no venv is activated. Embedding does not read `pyvenv.cfg` (the host binary is not a
//! venv's `python`), so [`ensure_started`] does what a venv's `python` would do at
//! start-up: it swaps the base installation's `site-packages` for the venv's and sets
//! `sys.executable` to the venv's interpreter (so child processes use it too).

use crate::core::error::{BridgeError, ErrorClass, Result};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::Serialize;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The CPython switch interval the bridge sets (seconds). CPython's default is 5 ms;
/// 1 ms lets a cancellation reach a spinning thread in about a millisecond.
pub const SWITCH_INTERVAL_S: f64 = 0.001;

/// What the embedded interpreter is and which venv it uses.
#[derive(Debug, Clone, Serialize)]
pub struct InterpreterInfo {
    /// `platform.python_version()` of the embedded interpreter.
    pub version: String,
    /// `sys.executable` after start-up (the venv's python when one was found).
    pub executable: String,
    /// The venv whose packages are importable, if one was found.
    pub venv: Option<PathBuf>,
    /// The `site-packages` folders put on `sys.path`.
    pub site_packages: Vec<String>,
    /// Set when the process loaded another libpython than the one it was built against
    /// (a host binary without an rpath to it): which one, and which folder was expected.
    /// [`LIBPYTHON_FIX`] says how to fix it.
    pub libpython_warning: Option<String>,
}

static STARTED: OnceLock<Result<InterpreterInfo>> = OnceLock::new();

/// The interpreter this build embeds, as the build script found it (`PYO3_PYTHON`, else
/// pyo3's own search): named in the errors that ask to rebuild. `None` in the extension
/// module, whose interpreter is its host's.
pub const EMBEDDED_PYTHON: Option<&str> = option_env!("CEREBROS_EMBEDDED_PYTHON");

/// The folder of the libpython this build linked (`None` in the extension module).
const EMBEDDED_LIBDIR: Option<&str> = option_env!("CEREBROS_EMBEDDED_LIBDIR");

/// Starts the interpreter once per process (signal handling off), sets the switch
/// interval and activates the venv of `python_executable` (see [`find_python`]).
/// Later calls return the first call's outcome.
pub fn ensure_started(python_executable: Option<&Path>) -> Result<&'static InterpreterInfo> {
    STARTED
        .get_or_init(|| start(python_executable))
        .as_ref()
        .map_err(Clone::clone)
}

fn start(python_executable: Option<&Path>) -> Result<InterpreterInfo> {
    // Inside a Python host (the extension module, built without `embed`) the interpreter
    // and its import state are the host's: only the switch interval is set, no venv is
    // activated. An embedding build owns its interpreter, even when something attached
    // (and so auto-initialised it) before this point.
    // SAFETY: a plain query, valid before and after initialisation.
    let hosted = !cfg!(feature = "embed") && unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
    let python = if hosted {
        None
    } else {
        Python::initialize();
        find_python(python_executable)
    };
    let venv = python.as_deref().and_then(venv_root);
    if let (Some(python), Some(venv)) = (python.as_deref(), venv.as_deref()) {
        check_venv_version(python, venv, &embedded_version())?;
    }
    let activated = Python::attach(|py| {
        if !hosted {
            line_buffer_output(py)?;
        }
        activate(py, python.as_deref(), venv.as_deref())
    });
    let mut info = activated.map_err(|e| {
        BridgeError::new(
            ErrorClass::Dependency,
            format!("could not set up the embedded interpreter: {e}"),
        )
        .with_source(e.to_string())
    })?;
    if !hosted {
        info.libpython_warning = check_libpython(loaded_libpython().as_deref(), EMBEDDED_LIBDIR);
        if let Some(warning) = &info.libpython_warning {
            tracing::warn!("{warning}: {LIBPYTHON_FIX}");
        }
    }
    Ok(info)
}

/// The file of the libpython this process loaded, when it is a shared library.
fn loaded_libpython() -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables; `info` is plain data it fills.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let symbol = pyo3::ffi::Py_IsInitialized as *const libc::c_void;
    if unsafe { libc::dladdr(symbol, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gave a NUL-terminated name that lives as long as the library.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(name.to_str().ok()?);
    let file_name = path.file_name()?.to_str()?;
    file_name.starts_with("libpython").then_some(path)
}

/// A warning when the libpython the process `loaded` is not in the folder the build
/// linked (`built`): a host binary without an rpath to it gets the first libpython of the
/// same name the loader finds, such as the system's, with that one's micro version and
/// standard library.
fn check_libpython(loaded: Option<&Path>, built: Option<&str>) -> Option<String> {
    let (loaded, built) = (loaded?, built?);
    let folder = loaded.parent()?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(folder, Path::new(built)) {
        return None;
    }
    Some(format!(
        "this program loaded {} but was built against the libpython in {built}",
        loaded.display()
    ))
}

/// How to make a host load the libpython it was built against.
pub const LIBPYTHON_FIX: &str = "give the host binary an rpath to the libpython it was built \
    against (a build.rs calling pyo3_build_config::add_libpython_rpath_link_args(), see the \
    README), or run it with LD_LIBRARY_PATH set to that folder";

/// Makes the embedded interpreter's `sys.stdout` and `sys.stderr` line-buffered: the
/// interpreter is never finalized, so block-buffered output would never reach fd 1 or
/// fd 2 (which a host such as the CLI may send to its log).
fn line_buffer_output(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    for name in ["stdout", "stderr"] {
        let stream = sys.getattr(name)?;
        if stream.hasattr("reconfigure")? {
            let options = PyDict::new(py);
            options.set_item("line_buffering", true)?;
            stream.call_method("reconfigure", (), Some(&options))?;
        }
    }
    Ok(())
}

/// The Python executable whose venv the bridge should use: the configured one, else
/// `$VIRTUAL_ENV/bin/python`, else a `.venv/bin/python` in the current directory or
/// above the running binary (so `target/release/cerebros-bridge` finds the project's
/// venv from anywhere). `None` when none exists.
pub fn find_python(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return Some(path.to_path_buf());
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let candidate = PathBuf::from(venv).join("bin/python");
        if candidate.exists() {
            return Some(candidate);
        }
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots
        .into_iter()
        .map(|root| root.join(".venv/bin/python"))
        .find(|candidate| candidate.exists())
}

/// The version the embedded interpreter reports (`major.minor.micro`), starting it if
/// needed.
pub fn embedded_version() -> String {
    Python::initialize();
    Python::attach(|py| {
        let info = py.version_info();
        format!("{}.{}.{}", info.major, info.minor, info.patch)
    })
}

/// `major.minor` of a `major.minor.micro` version.
pub fn major_minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((cut, _)) => &version[..cut],
        None => version,
    }
}

/// Refuses a venv made with another Python (major.minor) than the embedded `embedded`:
/// its packages (numpy's compiled modules) would not load. The error names both fixes.
fn check_venv_version(python: &Path, venv: &Path, embedded: &str) -> Result<()> {
    let wanted = major_minor(embedded);
    let found = venv_versions(venv);
    if found.iter().any(|version| version == wanted) {
        return Ok(());
    }
    let found = if found.is_empty() {
        "of no Python version (no lib/python3.*/site-packages)".to_owned()
    } else {
        format!("Python {}", found.join(", "))
    };
    let built_with = EMBEDDED_PYTHON.map_or_else(String::new, |p| format!(" (built against {p})"));
    Err(BridgeError::new(
        ErrorClass::Dependency,
        format!(
            "the venv {} is {found}, but this program embeds Python {embedded}{built_with}: \
             use a Python {wanted} venv (set VIRTUAL_ENV, python_executable or CEREBROS_PYTHON), \
             or rebuild this program with PYO3_PYTHON={}",
            venv.display(),
            python.display()
        ),
    )
    .with_detail("venv", venv.display().to_string())
    .with_detail("embedded_python", embedded))
}

/// The `X.Y` of each `lib/pythonX.Y/site-packages` of a venv (one, in a sound venv).
fn venv_versions(venv: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    let mut versions: Vec<String> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix("python")?;
            entry
                .path()
                .join("site-packages")
                .is_dir()
                .then(|| version.to_owned())
        })
        .collect();
    versions.sort();
    versions
}

/// The venv folder of a venv interpreter (`<venv>/bin/python` with `<venv>/pyvenv.cfg`).
fn venv_root(python: &Path) -> Option<PathBuf> {
    let root = python.parent()?.parent()?;
    root.join("pyvenv.cfg").exists().then(|| root.to_path_buf())
}

const ACTIVATE_VENV: &str = r#"
import os, site, sys
sys.setswitchinterval(switch_interval)
if python:
    sys.executable = python
added = []
if venv:
    # The venv's version was checked: it has this site-packages.
    wanted = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    base = set(site.getsitepackages()) | {site.getusersitepackages()}
    before = [p for p in sys.path if p not in base]
    sys.path[:] = before
    site.addsitedir(wanted)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    sys.prefix = sys.exec_prefix = venv
"#;

fn activate(
    py: Python<'_>,
    python: Option<&Path>,
    venv: Option<&Path>,
) -> PyResult<InterpreterInfo> {
    let globals = PyDict::new(py);
    globals.set_item("switch_interval", SWITCH_INTERVAL_S)?;
    globals.set_item("python", python.map(|p| p.display().to_string()))?;
    globals.set_item("venv", venv.map(|p| p.display().to_string()))?;
    let code = CString::new(ACTIVATE_VENV).expect("no NUL in the activation script");
    py.run(&code, Some(&globals), None)?;
    let added = globals.get_item("added")?;
    let site_packages = match added {
        Some(list) => list.cast::<PyList>()?.extract()?,
        None => Vec::new(),
    };
    let sys = py.import("sys")?;
    Ok(InterpreterInfo {
        version: py
            .import("platform")?
            .call_method0("python_version")?
            .extract()?,
        executable: sys.getattr("executable")?.extract()?,
        venv: venv.map(Path::to_path_buf),
        site_packages,
        libpython_warning: None,
    })
}

/// Puts `repo_path` first on `sys.path` (once) and imports `module`, turning a failed
/// import into a `dependency` error that says where Python looked.
pub fn import_service(py: Python<'_>, repo_path: &Path, module: &str) -> Result<Py<PyModule>> {
    let path_entry = repo_path.display().to_string();
    let import = || -> PyResult<Bound<'_, PyModule>> {
        let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
        if !sys_path.contains(&path_entry)? {
            sys_path.insert(0, &path_entry)?;
        }
        py.import(module)
    };
    import().map(Bound::unbind).map_err(|err| {
        let hint = if err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py) {
            let missing = err
                .value(py)
                .getattr("name")
                .and_then(|n| n.extract::<String>());
            missing_module_hint(missing.ok().as_deref(), repo_path, module)
        } else {
            String::new()
        };
        BridgeError::new(
            ErrorClass::Dependency,
            format!("cannot import service module `{module}`: {err}{hint}"),
        )
        .with_detail("module", module)
        .with_detail("repo_path", path_entry.clone())
        .with_detail(
            "traceback",
            crate::inprocess::convert::format_traceback(py, &err),
        )
        .with_source(err.to_string())
    })
}

/// How to fix a service import that found no module named `missing`: the service module
/// itself (its name or where it lives), or a package it needs (into which environment).
fn missing_module_hint(missing: Option<&str>, repo_path: &Path, module: &str) -> String {
    let environment = match STARTED.get() {
        Some(Ok(InterpreterInfo {
            venv: Some(venv), ..
        })) => format!("the venv {}", venv.display()),
        _ => "the interpreter's environment (no venv is active: set VIRTUAL_ENV, \
              python_executable or CEREBROS_PYTHON to use one)"
            .to_owned(),
    };
    match missing {
        Some(name) if module != name && !module.starts_with(&format!("{name}.")) => {
            format!("; the service module needs `{name}`: install it into {environment}")
        }
        _ => format!(
            "; check `module` and `repo_path` ({}), or install the service's package into \
             {environment}",
            repo_path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_cuts_the_micro_version() {
        assert_eq!(major_minor("3.11.7"), "3.11");
        assert_eq!(major_minor("3.11"), "3.11");
        assert_eq!(major_minor("3"), "3");
    }

    #[test]
    fn a_venv_of_another_python_is_refused_with_both_fixes() {
        let venv = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(venv.path().join("lib/python3.12/site-packages")).unwrap();
        let python = venv.path().join("bin/python");
        assert!(check_venv_version(&python, venv.path(), "3.12.1").is_ok());
        let err = check_venv_version(&python, venv.path(), "3.11.7").unwrap_err();
        assert_eq!(err.class, ErrorClass::Dependency);
        assert!(
            err.message
                .contains("is Python 3.12, but this program embeds Python 3.11.7"),
            "{err}"
        );
        assert!(err.message.contains("use a Python 3.11 venv"), "{err}");
        assert!(
            err.message
                .contains(&format!("PYO3_PYTHON={}", python.display())),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = check_venv_version(&python, empty.path(), "3.11.7").unwrap_err();
        assert!(err.message.contains("of no Python version"), "{err}");
    }

    #[test]
    fn a_libpython_from_another_folder_is_named_with_the_fix() {
        let built = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let built_dir = built.path().to_str().unwrap();
        let lib = |dir: &Path| dir.join("libpython3.11.so.1.0");
        assert_eq!(
            check_libpython(Some(&lib(built.path())), Some(built_dir)),
            None
        );
        let warning = check_libpython(Some(&lib(other.path())), Some(built_dir)).unwrap();
        assert!(
            warning.contains(&format!("loaded {}", lib(other.path()).display())),
            "{warning}"
        );
        assert!(
            warning.ends_with(&format!("built against the libpython in {built_dir}")),
            "{warning}"
        );
        assert_eq!(check_libpython(None, Some(built_dir)), None);
        assert_eq!(check_libpython(Some(&lib(other.path())), None), None);
    }

    #[test]
    fn this_test_binary_loads_the_libpython_it_was_built_against() {
        ensure_started(None).unwrap();
        let loaded = loaded_libpython().expect("a shared libpython");
        assert_eq!(
            check_libpython(Some(&loaded), EMBEDDED_LIBDIR),
            None,
            "{}",
            loaded.display()
        );
    }

    #[test]
    fn a_missing_module_hint_tells_the_service_from_its_packages() {
        let repo = Path::new("python");
        let hint = missing_module_hint(Some("svc"), repo, "svc.ops");
        assert!(
            hint.contains("check `module` and `repo_path` (python)"),
            "{hint}"
        );
        let hint = missing_module_hint(Some("numpy"), repo, "svc");
        assert!(
            hint.contains("the service module needs `numpy`: install it into"),
            "{hint}"
        );
        let hint = missing_module_hint(None, repo, "svc");
        assert!(hint.contains("check `module`"), "{hint}");
    }
}
