//! Crossing the language boundary: payloads go to Python through pythonize; results
//! come back through a strict converter that accepts exactly what JSON can hold, so
//! every mode (in-process dicts, JSON over pipes) accepts and refuses the same results.

use crate::error::{BridgeError, ErrorClass, Result};
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
    let mut path = String::from("result");
    convert(result, &mut path, 0)
}

/// Results nest at most this deep (as payloads do).
const MAX_RESULT_DEPTH: usize = crate::payload::MAX_DEPTH;

fn convert(obj: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value> {
    if depth > MAX_RESULT_DEPTH {
        return Err(parse_error(format!(
            "{path} nests deeper than {MAX_RESULT_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(
            s.to_str().map_err(|e| at(path, e))?.to_owned(),
        ));
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy().map_err(|e| at(path, e))?));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(parse_error(format!("{path} is an int beyond 64 bits")));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            parse_error(format!(
                "{path} is {v}: JSON has no NaN or Infinity; return None or a string"
            ))
        });
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (key, value) in dict.iter() {
            let key = key.cast::<PyString>().map_err(|_| {
                parse_error(format!(
                    "{path} has a key of type {}: JSON object keys must be str",
                    type_name(&key)
                ))
            })?;
            let key = key.to_str().map_err(|e| at(path, e))?.to_owned();
            let len = path.len();
            path.push_str(&format!("[{key:?}]"));
            let converted = convert(&value, path, depth + 1)?;
            path.truncate(len);
            map.insert(key, converted);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return convert_items(list.iter(), list.len(), path, depth);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return convert_items(tuple.iter(), tuple.len(), path, depth);
    }
    let hint = match type_name(obj).as_str() {
        "set" | "frozenset" => "; JSON has no sets: return a sorted list",
        "bytes" | "bytearray" => "; decode it or base64-encode it",
        _ => "",
    };
    Err(parse_error(format!(
        "{path} is a {}, which JSON cannot hold{hint}",
        type_name(obj)
    )))
}

fn convert_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    path: &mut String,
    depth: usize,
) -> Result<Value> {
    let mut out = Vec::with_capacity(len);
    for (index, item) in items.enumerate() {
        let before = path.len();
        path.push_str(&format!("[{index}]"));
        out.push(convert(&item, path, depth + 1)?);
        path.truncate(before);
    }
    Ok(Value::Array(out))
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

fn at(path: &str, err: PyErr) -> BridgeError {
    parse_error(format!("{path} could not be read: {err}"))
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
/// class; anything else is `exception`, with its type, message and traceback.
pub fn exception_error(py: Python<'_>, err: &PyErr) -> BridgeError {
    let value = err.value(py);
    let class = value
        .getattr("error_class")
        .ok()
        .and_then(|c| c.extract::<String>().ok())
        .and_then(|c| ErrorClass::parse(&c))
        .unwrap_or(ErrorClass::Exception);
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
    BridgeError::new(class, format!("{type_name}: {message}"))
        .with_detail("type", type_name)
        .with_detail("message", message)
        .with_detail("traceback", format_traceback(py, err))
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
