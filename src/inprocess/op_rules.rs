//! What counts as an op (DESIGN §10), for the in-process mode and `validate`.
//!
//! The rules have one implementation, the service's `python/cerebros_service/_dispatch.py`,
//! which the process modes import in their children. The in-process mode runs that very
//! file: its source is compiled into the crate and loaded once per interpreter under the
//! private module name [`PRIVATE_NAME`], so it works for any service module, even where
//! the `cerebros_service` package is not importable.

use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::inprocess::convert;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use serde_json::Value;
use std::ffi::{CStr, CString};

/// The source of the op rules (stdlib-only Python).
const DISPATCH_SOURCE: &str = include_str!("../../python/cerebros_service/_dispatch.py");

/// The name the rules' module is loaded under in the embedded interpreter.
pub const PRIVATE_NAME: &CStr = c"_cerebros_bridge_dispatch";

/// The file name tracebacks through the rules' module show.
const SOURCE_NAME: &CStr = c"cerebros_service/_dispatch.py";

/// The ops a service module exposes, and what is wrong with its `__bridge_ops__`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpListing {
    /// The op names, sorted.
    pub ops: Vec<String>,
    /// One message per problem of the module's `__bridge_ops__` (empty when none).
    pub problems: Vec<String>,
}

/// The rules' module, loaded on first use.
fn rules(py: Python<'_>) -> Result<&Bound<'_, PyModule>> {
    static RULES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = RULES.get_or_try_init(py, || {
        // The source is a compile-time constant without NUL bytes.
        let source = CString::new(DISPATCH_SOURCE).map_err(|err| {
            BridgeError::new(ErrorClass::SystemError, format!("the op rules: {err}"))
                .with_source(err)
        })?;
        PyModule::from_code(py, &source, SOURCE_NAME, PRIVATE_NAME)
            .map(Bound::unbind)
            .map_err(|err| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("cannot load the op rules: {err}"),
                )
                .with_source(err.to_string())
            })
    })?;
    Ok(module.bind(py))
}

/// The op `op` of `module`, or a `contract` error saying why it is not one.
pub fn resolve<'py>(module: &Bound<'py, PyModule>, op: &str) -> Result<Bound<'py, PyAny>> {
    let py = module.py();
    rules(py)?
        .call_method1(pyo3::intern!(py, "resolve_op"), (module, op))
        .map_err(|err| rules_error(py, &err))
}

/// The ops `module` exposes, and the problems of its `__bridge_ops__`.
pub fn list(module: &Bound<'_, PyModule>) -> Result<OpListing> {
    let py = module.py();
    let listing = rules(py)?
        .call_method1(pyo3::intern!(py, "list_ops"), (module,))
        .map_err(|err| rules_error(py, &err))?;
    let field = |name: &str| -> Result<Vec<String>> {
        listing
            .get_item(name)
            .and_then(|items| items.extract())
            .map_err(|err| rules_error(py, &err))
    };
    Ok(OpListing {
        ops: field("ops")?,
        problems: field("problems")?,
    })
}

/// Enters a call's W3C trace context in Python (the rules' `enter_trace`): spans the op
/// starts with `opentelemetry-api` join the host's trace. Returns the token
/// [`leave_trace`] takes; a failure is logged and the op runs untraced.
pub fn enter_trace<'py>(py: Python<'py>, traceparent: &str) -> Option<Bound<'py, PyAny>> {
    let entered = rules(py).and_then(|rules| {
        rules
            .call_method1(pyo3::intern!(py, "enter_trace"), (traceparent,))
            .map_err(|err| rules_error(py, &err))
    });
    match entered {
        Ok(token) if !token.is_none() => Some(token),
        Ok(_) => None,
        Err(err) => {
            tracing::debug!("cannot enter the trace context in Python: {err}");
            None
        }
    }
}

/// Restores the context [`enter_trace`] replaced.
pub fn leave_trace(token: Bound<'_, PyAny>) {
    let py = token.py();
    let left = rules(py).and_then(|rules| {
        rules
            .call_method1(pyo3::intern!(py, "leave_trace"), (token,))
            .map_err(|err| rules_error(py, &err))
    });
    if let Err(err) = left {
        tracing::debug!("cannot leave the trace context in Python: {err}");
    }
}

/// The [`BridgeError`] of an exception raised by the rules: an `OpError` keeps its class,
/// message and details (as the process modes report it); anything else is a bug, kept
/// with its traceback.
fn rules_error(py: Python<'_>, err: &PyErr) -> BridgeError {
    let value = err.value(py);
    let class = value
        .getattr("error_class")
        .and_then(|class| class.extract::<String>())
        .ok()
        .and_then(|class| ErrorClass::parse(&class));
    let message = value
        .getattr("message")
        .and_then(|message| message.extract::<String>());
    let (Some(class), Ok(message)) = (class, message) else {
        return convert::exception_error(py, err);
    };
    let mut error = BridgeError::new(class, message);
    if let Ok(Value::Object(details)) = value
        .getattr("details")
        .map_err(|_| ())
        .and_then(|details| convert::from_python(&details).map_err(|_| ()))
    {
        error.details = details;
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_from(py: Python<'_>, name: &CStr, source: &CStr) -> Py<PyModule> {
        PyModule::from_code(py, source, c"test_module.py", name)
            .unwrap()
            .unbind()
    }

    #[test]
    fn resolves_defined_functions_and_refuses_imported_ones() {
        Python::attach(|py| {
            let module = module_from(
                py,
                c"op_rules_test_service",
                c"from json import dumps\ndef own(p):\n    return p\nX = 3\n",
            );
            let module = module.bind(py);
            assert!(resolve(module, "own").is_ok());
            for op in ["dumps", "X", "missing", "_private", "not an identifier"] {
                let err = resolve(module, op).unwrap_err();
                assert_eq!(err.class, ErrorClass::Contract, "{op}: {err}");
            }
            let err = resolve(module, "dumps").unwrap_err();
            assert!(
                err.message.contains("imported from json"),
                "{}",
                err.message
            );
            assert_eq!(err.details["op"], "dumps");
            let listing = list(module).unwrap();
            assert_eq!(listing.ops, vec!["own".to_owned()]);
            assert!(listing.problems.is_empty());
        });
    }

    #[test]
    fn a_bad_declaration_is_listed_as_a_problem() {
        Python::attach(|py| {
            let module = module_from(
                py,
                c"op_rules_test_declared",
                c"from os import getpid\n__bridge_ops__ = ['getpid', 'gone']\n",
            );
            let module = module.bind(py);
            assert!(resolve(module, "getpid").is_ok());
            let err = resolve(module, "gone").unwrap_err();
            assert_eq!(err.class, ErrorClass::Contract);
            assert!(err.message.contains("__bridge_ops__"), "{}", err.message);
            let listing = list(module).unwrap();
            assert_eq!(listing.ops, vec!["getpid".to_owned()]);
            assert_eq!(listing.problems.len(), 1, "{listing:?}");
        });
    }
}
