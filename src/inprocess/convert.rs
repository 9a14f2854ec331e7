//! Crossing the language boundary: payloads go to Python through pythonize; results
//! come back through a strict converter that accepts exactly what JSON can hold, so
//! every mode (in-process dicts, JSON over pipes) accepts and refuses the same results.

use crate::core::error::{BridgeError, ErrorClass, Result};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Largest traceback kept in error details (the tail is kept: it names the failing line).
const TRACEBACK_CHARS: usize = 4096;

/// Converts a payload to a Python dict (via pythonize).
pub fn to_python<'py>(py: Python<'py>, payload: &Value) -> Result<Bound<'py, PyAny>> {
    pythonize::pythonize(py, payload).map_err(|e| {
        BridgeError::new(
            ErrorClass::Contract,
            format!("payload cannot be converted to Python: {e}"),
        )
        .with_source(e.to_string())
    })
}

/// Converts an op's result to JSON. The result must be a dict with string keys whose
/// values are dicts, lists, tuples, strings, ints that fit 64 bits, finite floats,
/// bools or None; anything else is a `parse_error` naming where it was found.
pub fn from_python(result: &Bound<'_, PyAny>) -> Result<Value> {
    if !result.is_instance_of::<PyDict>() {
        return Err(parse_error(format!(
            "the op returned {}, expected a dict",
            type_name(result)
        )));
    }
    convert(result, 0).map_err(|unreadable| {
        let path: String = unreadable.path.iter().rev().map(String::as_str).collect();
        parse_error(format!("result{path} {}", unreadable.problem))
    })
}

/// Results nest at most this deep (as payloads do).
const MAX_RESULT_DEPTH: usize = crate::core::payload::MAX_DEPTH;

/// Why a value could not be converted, and where: path segments such as `["key"]` or
/// `[3]`, innermost first (they are only built on the error path, never per value).
struct Unreadable {
    problem: String,
    path: Vec<String>,
}

impl Unreadable {
    fn new(problem: String) -> Self {
        Unreadable {
            problem,
            path: Vec::new(),
        }
    }

    fn within(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }
}

/// Converts `obj`, found inside `depth` containers (the result itself is at 0). A
/// container is refused when it would be level `MAX_RESULT_DEPTH + 1` (the top dict is
/// level 1), as [`crate::core::payload::value_depth`] counts.
fn convert(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Unreadable> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str().map_err(unreadable)?.to_owned()));
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy().map_err(unreadable)?));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(Unreadable::new("is an int beyond 64 bits".into()));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            Unreadable::new(format!(
                "is {v}: JSON has no NaN or Infinity; return None or a string"
            ))
        });
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        check_depth(depth)?;
        let mut map = Map::new();
        for (key, value) in dict.iter() {
            let key = key.cast::<PyString>().map_err(|_| {
                Unreadable::new(format!(
                    "has a key of type {}: JSON object keys must be str",
                    type_name(&key)
                ))
            })?;
            let key = key.to_str().map_err(unreadable)?;
            let converted =
                convert(&value, depth + 1).map_err(|e| e.within(format!("[{key:?}]")))?;
            map.insert(key.to_owned(), converted);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return convert_items(list.iter(), list.len(), depth);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return convert_items(tuple.iter(), tuple.len(), depth);
    }
    let name = type_name(obj);
    let hint = match name.as_str() {
        "set" | "frozenset" => "; JSON has no sets: return a sorted list",
        "bytes" | "bytearray" => "; decode it or base64-encode it",
        _ => "",
    };
    Err(Unreadable::new(format!(
        "is a {name}, which JSON cannot hold{hint}"
    )))
}

/// Refuses a container found inside `depth` others when it would nest too deep.
fn check_depth(depth: usize) -> Result<(), Unreadable> {
    if depth < MAX_RESULT_DEPTH {
        return Ok(());
    }
    Err(Unreadable::new(format!(
        "nests deeper than {MAX_RESULT_DEPTH} levels"
    )))
}

fn convert_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    depth: usize,
) -> Result<Value, Unreadable> {
    check_depth(depth)?;
    let mut out = Vec::with_capacity(len);
    for (index, item) in items.enumerate() {
        out.push(convert(&item, depth + 1).map_err(|e| e.within(format!("[{index}]")))?);
    }
    Ok(Value::Array(out))
}

fn unreadable(err: PyErr) -> Unreadable {
    Unreadable::new(format!("could not be read: {err}"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

fn parse_error(message: String) -> BridgeError {
    BridgeError::new(ErrorClass::ParseError, message)
}

/// The formatted traceback of `err`, cut to its last 4096 characters.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let lines: Vec<String> = lines.extract()?;
        Ok(lines.concat())
    })()
    .unwrap_or_else(|_| err.to_string());
    tail(&formatted, TRACEBACK_CHARS)
}

fn tail(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_owned();
    }
    let skip = count - max_chars;
    format!("…{}", text.chars().skip(skip).collect::<String>())
}

/// Maps an exception raised by an op to a [`BridgeError`]. An exception that carries an
/// `error_class` attribute naming a bridge class (the service's `OpError`) keeps that
/// class and its own message; an `ImportError` is `dependency` (a package is missing
/// from the venv); anything else is `exception`. Details: type, message, traceback;
/// the exception's text is the error's source.
pub fn exception_error(py: Python<'_>, err: &PyErr) -> BridgeError {
    let value = err.value(py);
    let declared = value
        .getattr("error_class")
        .ok()
        .and_then(|c| c.extract::<String>().ok())
        .and_then(|c| ErrorClass::parse(&c));
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let message = value
        .getattr("message")
        .ok()
        .and_then(|m| m.extract::<String>().ok())
        .unwrap_or_else(|| value.to_string());
    let missing_package = err.is_instance_of::<pyo3::exceptions::PyImportError>(py);
    let (class, text) = match declared {
        Some(class) => (class, message.clone()),
        None if missing_package => (
            ErrorClass::Dependency,
            format!("{type_name}: {message}; install the package into the venv (make setup)"),
        ),
        None => (ErrorClass::Exception, format!("{type_name}: {message}")),
    };
    let mut error = BridgeError::new(class, text)
        .with_detail("type", type_name)
        .with_detail("message", message)
        .with_detail("traceback", format_traceback(py, err))
        .with_source(err.to_string());
    if let Ok(details) = value.getattr("details") {
        if let Ok(Value::Object(extra)) = from_python(&details) {
            for (key, detail) in extra {
                error.details.entry(key).or_insert(detail);
            }
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("abc", 3), "abc");
    }
}
