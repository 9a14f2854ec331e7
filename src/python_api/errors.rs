//! The Python exceptions (DESIGN §9): `BridgeError` and one subclass per error class.
//!
//! | class | exception |
//! |---|---|
//! | `dependency` | `DependencyError` |
//! | `config` | `ConfigError` |
//! | `contract` | `ContractError` |
//! | `timeout` | `CallTimeoutError` (not the builtin `TimeoutError`) |
//! | `exception` | `OpExceptionError` |
//! | `subprocess_exit` | `SubprocessExitError` |
//! | `parse_error` | `ParseError` |
//! | `system_error` | `BridgeSystemError` (not the builtin `SystemError`) |
//! | `overloaded` | `OverloadedError` |
//! | `cancelled` | `CallCancelledError` (not `asyncio.CancelledError`) |
//!
//! Every raised instance carries `error_class` (the snake_case class name), `message`,
//! `details` (a dict: `type`/`traceback` for `exception`, `timeout_ms` for `timeout`, …),
//! `op` and `run_id` (`None` where unknown) and `attempt` (1-based; 0 when no attempt
//! was made). `str(err)` reads `"<class>: <message> (op <op>, attempt <n>)"`.

use crate::core::error::{BridgeError as CoreError, ErrorClass};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use serde_json::{Map, Value};

pyo3::create_exception!(
    cerebros_service._bridge,
    BridgeError,
    PyException,
    "Base of every error the bridge raises. Attributes: error_class, message, details, op, attempt, run_id."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    DependencyError,
    BridgeError,
    "dependency: the bridge is disabled, or the service module or a package it needs is missing."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    ConfigError,
    BridgeError,
    "config: an invalid configuration file, value or argument (details: key, source)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    ContractError,
    BridgeError,
    "contract: invalid input (a payload JSON cannot hold, an invalid contract, an unknown or private op, an oversized payload)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    CallTimeoutError,
    BridgeError,
    "timeout: the call did not finish before its deadline (details: timeout_ms)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    OpExceptionError,
    BridgeError,
    "exception: the Python op raised (details: type, message, traceback)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    SubprocessExitError,
    BridgeError,
    "subprocess_exit: the worker process running the call exited or was killed (details: returncode, stderr_excerpt)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    ParseError,
    BridgeError,
    "parse_error: the op's result could not be read (not a dict, or holding what JSON cannot)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    BridgeSystemError,
    BridgeError,
    "system_error: the bridge itself failed (a worker died, an OS call failed)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    OverloadedError,
    BridgeError,
    "overloaded: the request queue is full (invoke.queue_capacity)."
);
pyo3::create_exception!(
    cerebros_service._bridge,
    CallCancelledError,
    BridgeError,
    "cancelled: the call was cancelled by shutdown, or the bridge is closed."
);

/// The exception type raised for `class`.
pub fn exception_type(py: Python<'_>, class: ErrorClass) -> Bound<'_, PyType> {
    match class {
        ErrorClass::Dependency => py.get_type::<DependencyError>(),
        ErrorClass::Config => py.get_type::<ConfigError>(),
        ErrorClass::Contract => py.get_type::<ContractError>(),
        ErrorClass::Timeout => py.get_type::<CallTimeoutError>(),
        ErrorClass::Exception => py.get_type::<OpExceptionError>(),
        ErrorClass::SubprocessExit => py.get_type::<SubprocessExitError>(),
        ErrorClass::ParseError => py.get_type::<ParseError>(),
        ErrorClass::SystemError => py.get_type::<BridgeSystemError>(),
        ErrorClass::Overloaded => py.get_type::<OverloadedError>(),
        ErrorClass::Cancelled => py.get_type::<CallCancelledError>(),
    }
}

/// The Python exception for a bridge error: an instance of the class's subclass with
/// the error's attributes set.
pub fn to_py_err(py: Python<'_>, err: &CoreError) -> PyErr {
    build(py, err).unwrap_or_else(|failure| failure)
}

fn build(py: Python<'_>, err: &CoreError) -> PyResult<PyErr> {
    let exc = exception_type(py, err.class).call1((err.to_string(),))?;
    exc.setattr("error_class", err.class.as_str())?;
    exc.setattr("message", &err.message)?;
    exc.setattr("op", err.op.as_deref())?;
    exc.setattr("attempt", err.attempt)?;
    exc.setattr("run_id", err.run_id.as_deref())?;
    exc.setattr("details", pythonize::pythonize(py, &err.details)?)?;
    Ok(PyErr::from_value(exc))
}

/// Adds the exceptions and `ERROR_CLASSES` (class name → exception type) to the module,
/// with class-level defaults for the attributes every raised instance sets.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<BridgeError>();
    base.setattr("error_class", "")?;
    base.setattr("message", "")?;
    base.setattr("details", PyDict::new(py))?;
    base.setattr("op", py.None())?;
    base.setattr("attempt", 0)?;
    base.setattr("run_id", py.None())?;
    m.add("BridgeError", &base)?;
    let classes = PyDict::new(py);
    for class in ErrorClass::ALL {
        let ty = exception_type(py, class);
        ty.setattr("error_class", class.as_str())?;
        m.add(ty.name()?, &ty)?;
        classes.set_item(class.as_str(), &ty)?;
    }
    m.add("ERROR_CLASSES", classes)?;
    Ok(())
}

/// Raises the exception of `error_class` with `message` and `details` exactly as a
/// failed call would: for tests of the exception mapping and for Python code that wants
/// to report a bridge-style error. An unknown class name is a `ValueError`.
#[pyfunction]
#[pyo3(name = "_raise_bridge_error", signature = (error_class, message, details=None, op=None, attempt=0, run_id=None))]
pub fn raise_bridge_error(
    py: Python<'_>,
    error_class: &str,
    message: &str,
    details: Option<&Bound<'_, PyAny>>,
    op: Option<String>,
    attempt: u32,
    run_id: Option<String>,
) -> PyResult<()> {
    let class = ErrorClass::parse(error_class).ok_or_else(|| {
        let known: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        PyValueError::new_err(format!(
            "unknown error class {error_class:?}: expected one of {}",
            known.join(", ")
        ))
    })?;
    let details = match details {
        Some(details) => {
            match super::payload::from_python(details, "details").map_err(|e| to_py_err(py, &e))? {
                Value::Object(map) => map,
                _ => return Err(PyValueError::new_err("details must be a dict")),
            }
        }
        None => Map::new(),
    };
    let mut err = CoreError::new(class, message)
        .with_attempt(attempt)
        .with_run_id(run_id);
    err.op = op;
    err.details = details;
    Err(to_py_err(py, &err))
}
