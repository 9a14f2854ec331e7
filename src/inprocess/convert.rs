//! Crossing the language boundary: payloads go to Python as `json.loads` would build them
//! (with the object keys a thread has seen before reused); results come back through a
//! strict converter that accepts exactly what JSON can hold, so every mode (in-process
//! dicts, JSON over pipes) accepts and refuses the same results.

use crate::core::error::{BridgeError, ErrorClass, Result};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Largest traceback kept in error details (the tail is kept: it names the failing line).
const TRACEBACK_CHARS: usize = 4096;

/// Converts a payload to Python: objects become dicts, arrays lists, numbers ints or
/// floats, as `json.loads` would build them. Object keys come from the calling thread's
/// [`KeyCache`], so the field names every contract repeats are made once per thread.
pub fn to_python<'py>(py: Python<'py>, payload: &Value) -> Result<Bound<'py, PyAny>> {
    KEYS.with(|keys| value_to_python(py, payload, &mut keys.borrow_mut()))
        .map_err(|e| {
            BridgeError::new(
                ErrorClass::Contract,
                format!("payload cannot be converted to Python: {e}"),
            )
            .with_source(e.to_string())
        })
}

/// Whether a payload goes to its worker as JSON text rather than as the tree: objects
/// with nested containers or more than [`TEXT_MIN_KEYS`] keys (a contract's report, not
/// `{"run_id": ...}`). Such a tree is some thirty allocations that the caller's thread just
/// wrote; a worker on another core that walks it pays for every cache line it pulls over,
/// and the caller then reuses memory the worker touched. Serialized on the caller's thread
/// it is a few contiguous lines, which the worker's `orjson.loads` turns into the same
/// dict (BENCHMARKS.md, "Issue #13 re-measured").
pub fn sent_as_text(payload: &Value) -> bool {
    match payload {
        Value::Object(map) => {
            map.len() > TEXT_MIN_KEYS
                || map
                    .values()
                    .any(|v| matches!(v, Value::Object(_) | Value::Array(_)))
        }
        _ => false,
    }
}

/// Objects with more keys than this go as text even when flat (see [`sent_as_text`]).
const TEXT_MIN_KEYS: usize = 8;

/// The payload `text` (its JSON, from `serde_json`) as Python, through the worker's
/// `orjson.loads`: the dict [`to_python`] would build from the same payload (numbers keep
/// their kind, since `serde_json` writes every float with a `.` or an exponent; keys keep
/// their order). `None` when `loads` refuses it (nesting beyond orjson's limit): the
/// caller then converts the tree.
pub fn text_to_python<'py>(loads: &Bound<'py, PyAny>, text: &[u8]) -> Option<Bound<'py, PyAny>> {
    let bytes = pyo3::types::PyBytes::new(loads.py(), text);
    loads.call1((bytes,)).ok()
}

fn value_to_python<'py>(
    py: Python<'py>,
    value: &Value,
    keys: &mut KeyCache,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_python(py, item, keys)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(keys.get(py, key), value_to_python(py, item, keys)?)?;
            }
            dict.into_any()
        }
    })
}

thread_local! {
    static KEYS: std::cell::RefCell<KeyCache> = std::cell::RefCell::new(KeyCache::default());
}

/// The Python strings of the object keys a thread has converted: short keys, up to
/// [`KeyCache::CAPACITY`] of them (a payload of ever-new keys only fills it, then its
/// keys are made as any other string). A cached string also carries its hash, which
/// the dict it goes into needs. Hashed with foldhash (randomly seeded per process): a
/// lookup per key per call, where SipHash cost ~8 % of a contract echo.
#[derive(Default)]
struct KeyCache {
    strings: std::collections::HashMap<String, Py<PyString>, foldhash::fast::RandomState>,
}

impl KeyCache {
    /// Keys kept at most.
    const CAPACITY: usize = 1024;
    /// Longest key kept, in bytes.
    const MAX_KEY_BYTES: usize = 64;

    fn get<'py>(&mut self, py: Python<'py>, key: &str) -> Bound<'py, PyString> {
        if let Some(cached) = self.strings.get(key) {
            return cached.bind(py).clone();
        }
        let string = PyString::new(py, key);
        if key.len() <= Self::MAX_KEY_BYTES && self.strings.len() < Self::CAPACITY {
            self.strings.insert(key.to_owned(), string.clone().unbind());
        }
        string
    }
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
        // Collected, then built in one go: `Map::from_iter` sorts once and fills its
        // nodes in order, where key-by-key inserts search and split them.
        let mut entries = Vec::with_capacity(dict.len());
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
            entries.push((key.to_owned(), converted));
        }
        return Ok(Value::Object(entries.into_iter().collect::<Map<_, _>>()));
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
    fn contracts_go_as_text_and_small_flat_payloads_as_trees() {
        assert!(sent_as_text(&serde_json::json!({
            "contract": "trial_reported", "run_id": "r", "metrics": {"val_accuracy": 0.9}
        })));
        assert!(sent_as_text(&serde_json::json!({"a": [1]})));
        assert!(sent_as_text(&serde_json::json!({
            "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9
        })));
        assert!(!sent_as_text(&serde_json::json!({"run_id": "r"})));
        assert!(!sent_as_text(&serde_json::json!([1, 2])));
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("abc", 3), "abc");
    }
}
