//! What the bridge takes from the Python host it is loaded into.
//!
//! Loaded as an extension module, the interpreter is already running and is the host's:
//! [`crate::inprocess::interpreter::ensure_started`] sees that and activates no venv, leaving the
//! host's `sys.path`, prefix and executable alone; it only lowers the switch interval to
//! [`crate::inprocess::interpreter::SWITCH_INTERVAL_S`], so a cancellation reaches a spinning op in
//! about a millisecond (CPython's default is 5 ms).

use pyo3::prelude::*;
use std::path::PathBuf;

/// The host interpreter's `sys.executable`, if it has one: the interpreter the process
/// modes start their children with.
pub fn host_executable(py: Python<'_>) -> Option<PathBuf> {
    let executable: String = py
        .import("sys")
        .and_then(|sys| sys.getattr("executable"))
        .and_then(|exe| exe.extract())
        .ok()?;
    (!executable.is_empty()).then(|| PathBuf::from(executable))
}
