//! Guarding raw input (DESIGN §9, `contract` errors): size and nesting limits, JSON
//! parsing with clear messages, and excerpts for logs and errors.
//!
//! The nesting depth of text is measured by a linear scan *before* parsing, so a
//! pathological input (a million `[`) is refused without touching the stack.

use crate::core::bounded_read::{self, ReadError};
use crate::core::error::{BridgeError, ErrorClass, Result};
use serde::Deserialize;
use serde_json::Value;
use std::io;
use std::path::Path;

/// The deepest nesting of arrays and objects a payload may have.
pub const MAX_DEPTH: usize = 256;

/// The most characters of output or input quoted in events and errors.
pub const EXCERPT_CHARS: usize = 1024;

/// Parses a payload received as text: checks its size against `max_bytes`, its
/// nesting against [`MAX_DEPTH`], that no integer is beyond 64 bits (which would become
/// a float, as it does nowhere else in the bridge), parses it, and requires a JSON object.
///
/// Every rejection is a [`ErrorClass::Contract`] error.
///
/// ```
/// use cerebros_bridge::core::payload::parse_payload;
///
/// let value = parse_payload(r#"{"run_id": "r1"}"#, 1024).unwrap();
/// assert_eq!(value["run_id"], "r1");
///
/// let err = parse_payload("[1, 2]", 1024).unwrap_err();
/// assert_eq!(err.message, "payload must be a JSON object, got array");
///
/// let deep = "[".repeat(1_000_000);
/// let err = parse_payload(&deep, 2_000_000).unwrap_err();
/// assert_eq!(err.message, "payload nests 1000000 levels deep; the limit is 256");
/// ```
pub fn parse_payload(text: &str, max_bytes: usize) -> Result<Value> {
    check_size(text.len(), max_bytes)?;
    let scan = scan_json(text.as_bytes());
    check_depth(scan.depth)?;
    check_integers(scan.big_int)?;
    let value = parse_json(text)?;
    require_object(&value)?;
    Ok(value)
}

/// Checks a payload built in Rust: it must be a JSON object, nest at most
/// [`MAX_DEPTH`] levels (measured without recursion) and serialize to at most
/// `max_bytes` bytes (counted without building the string).
///
/// ```
/// use cerebros_bridge::core::payload::check_value;
/// use serde_json::json;
///
/// check_value(&json!({"a": [1, 2, {"b": null}]}), 1024).unwrap();
/// let err = check_value(&json!({"a": "x".repeat(100)}), 64).unwrap_err();
/// assert_eq!(err.message, "payload is 108 bytes, over invoke.max_payload_bytes = 64");
/// ```
pub fn check_value(value: &Value, max_bytes: usize) -> Result<()> {
    require_object(value)?;
    let shape = shape(value);
    check_depth(shape.depth)?;
    if shape.size_ceiling <= max_bytes && numbers_fit_the_ceiling() {
        return Ok(());
    }
    check_size(serialized_len(value), max_bytes)
}

/// `text` in at most `max_chars` characters: when it is longer, its start and a `…`
/// that says it was cut.
///
/// ```
/// use cerebros_bridge::core::payload::excerpt;
/// assert_eq!(excerpt("héllo", 3), "hé…");
/// assert_eq!(excerpt("hi", 2), "hi");
/// ```
pub fn excerpt(text: &str, max_chars: usize) -> String {
    if text.char_indices().nth(max_chars).is_none() {
        return text.to_owned();
    }
    let keep = max_chars.saturating_sub(1);
    let cut = text
        .char_indices()
        .nth(keep)
        .map_or(text.len(), |(at, _)| at);
    format!("{}…", &text[..cut])
}

/// Reads a payload given on the command line: `@PATH` reads the file at PATH (its
/// size checked before it is read), anything else is the JSON text itself. Either way
/// it goes through [`parse_payload`].
///
/// ```
/// use cerebros_bridge::core::payload::load_payload_arg;
///
/// let value = load_payload_arg(r#"{"message": "hi"}"#, 1024).unwrap();
/// assert_eq!(value["message"], "hi");
///
/// let err = load_payload_arg("@/nonexistent/payload.json", 1024).unwrap_err();
/// assert!(err.message.contains("/nonexistent/payload.json"));
/// ```
pub fn load_payload_arg(arg: &str, max_bytes: usize) -> Result<Value> {
    match arg.strip_prefix('@') {
        Some(path) => parse_payload(&read_payload_file(Path::new(path), max_bytes)?, max_bytes),
        None => parse_payload(arg, max_bytes),
    }
}

/// The JSON type name of a value (`null`, `boolean`, `number`, `string`, `array`,
/// `object`), for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn contract_error(message: String) -> BridgeError {
    BridgeError::new(ErrorClass::Contract, message)
}

fn check_size(bytes: usize, max_bytes: usize) -> Result<()> {
    check_limit(("bytes", bytes), ("max_bytes", max_bytes), || {
        format!("payload is {bytes} bytes, over invoke.max_payload_bytes = {max_bytes}")
    })
}

fn check_depth(depth: usize) -> Result<()> {
    check_limit(("depth", depth), ("max_depth", MAX_DEPTH), || {
        format!("payload nests {depth} levels deep; the limit is {MAX_DEPTH}")
    })
}

/// A `contract` error saying `message` unless `value <= limit`; its details hold both,
/// under their names.
fn check_limit(
    (name, value): (&str, usize),
    (limit_name, limit): (&str, usize),
    message: impl FnOnce() -> String,
) -> Result<()> {
    if value <= limit {
        return Ok(());
    }
    Err(contract_error(message())
        .with_detail(name, value)
        .with_detail(limit_name, limit))
}

fn check_integers(big_int: Option<String>) -> Result<()> {
    let Some(literal) = big_int else {
        return Ok(());
    };
    let message = format!(
        "payload holds the integer {literal}, beyond 64 bits (JSON numbers become floats past \
         that); send it as a string"
    );
    Err(contract_error(message).with_detail("integer", literal))
}

fn require_object(value: &Value) -> Result<()> {
    if value.is_object() {
        return Ok(());
    }
    let message = format!("payload must be a JSON object, got {}", json_type(value));
    Err(contract_error(message).with_detail("type", json_type(value)))
}

/// What a linear scan of JSON text finds, without parsing it (so without recursion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextScan {
    /// The deepest nesting of `[`/`{` outside strings.
    pub depth: usize,
    /// The first integer literal that fits neither `i64` nor `u64` (a JSON parser would
    /// silently turn it into a float), cut to [`BIG_INT_CHARS`] characters.
    pub big_int: Option<String>,
}

/// The most characters of an oversized integer literal quoted in errors.
pub const BIG_INT_CHARS: usize = 64;

/// Scans JSON text for its nesting depth and its first integer beyond 64 bits, ignoring
/// what is inside strings. Malformed text gets some answer; the parser reports what is
/// wrong with it.
///
/// ```
/// use cerebros_bridge::core::payload::scan_json;
/// let scan = scan_json(br#"{"a": [1, 2.5e3, -9223372036854775808, "[[[1e99999"]}"#);
/// assert_eq!((scan.depth, scan.big_int), (2, None));
/// let scan = scan_json(br#"{"n": 1267650600228229401496703205376}"#);
/// assert_eq!(scan.big_int.as_deref(), Some("1267650600228229401496703205376"));
/// ```
pub fn scan_json(bytes: &[u8]) -> TextScan {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    let mut number_start: Option<usize> = None;
    let mut big_int = None;
    for (index, &byte) in bytes.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if let Some(start) = number_start {
            if matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                continue;
            }
            number_start = None;
            if big_int.is_none() {
                big_int = oversized_integer(&bytes[start..index]);
            }
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => number_start = Some(index),
            _ => {}
        }
    }
    if let (Some(start), None) = (number_start, &big_int) {
        big_int = oversized_integer(&bytes[start..]);
    }
    TextScan {
        depth: deepest,
        big_int,
    }
}

/// `token` (a number literal) when it is an integer that fits neither `i64` nor `u64`.
fn oversized_integer(token: &[u8]) -> Option<String> {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None; // a float, or not a number: the parser decides
    }
    let text = std::str::from_utf8(token).ok()?;
    if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() {
        return None;
    }
    Some(excerpt(text, BIG_INT_CHARS))
}

/// The deepest nesting of arrays and objects in a value, counted with an explicit
/// stack (a scalar is depth 0, `{}` depth 1).
pub fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|child| (child, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|child| (child, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth);
    }
    deepest
}

/// A value's nesting depth (as [`value_depth`] counts it) and a ceiling on the length of
/// its compact JSON, found in one walk: [`check_value`] serializes a payload to count its
/// bytes only when the ceiling is over the limit (a contract payload's walk costs a sixth
/// of its serialization).
struct Shape {
    depth: usize,
    size_ceiling: usize,
}

/// The longest compact JSON of a number `serde_json` writes (`-2.2250738585072014e-308`).
const NUMBER_CEILING: usize = 24;
/// The longest JSON of one byte of a string: a control character as `\u00XX`.
const STRING_BYTE_CEILING: usize = 6;

/// Whether every number `serde_json` holds writes in at most [`NUMBER_CEILING`] bytes: not
/// so when a crate in the build turns on its `arbitrary_precision` feature (numbers then
/// keep their text, however long); asked once.
fn numbers_fit_the_ceiling() -> bool {
    static FIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FIT.get_or_init(|| {
        let long = "1.000000000000000000000000000000001e-300";
        serde_json::from_str::<Value>(long).is_ok_and(|v| v.to_string().len() <= NUMBER_CEILING)
    })
}

fn shape(value: &Value) -> Shape {
    let string = |s: &str| 2 + STRING_BYTE_CEILING * s.len();
    let mut result = Shape {
        depth: 0,
        size_ceiling: 0,
    };
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        result.size_ceiling += match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => NUMBER_CEILING,
            Value::String(s) => string(s),
            Value::Array(items) => {
                stack.extend(items.iter().map(|child| (child, depth + 1)));
                result.depth = result.depth.max(depth);
                2 + items.len()
            }
            Value::Object(map) => {
                stack.extend(map.values().map(|child| (child, depth + 1)));
                result.depth = result.depth.max(depth);
                2 + map.keys().map(|key| string(key) + 2).sum::<usize>()
            }
        };
    }
    result
}

/// The length of a value's compact JSON serialization.
fn serialized_len(value: &Value) -> usize {
    let mut counter = ByteCounter(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// An [`io::Write`] sink that only counts bytes.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Parses JSON text whose depth has already been checked, so serde_json's own
/// recursion limit (128) can be lifted.
fn parse_json(text: &str) -> Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = Value::deserialize(&mut deserializer).map_err(|err| json_error(err, text))?;
    deserializer.end().map_err(|err| json_error(err, text))?;
    Ok(value)
}

/// `malformed JSON payload at line L column C: ...`, naming NaN and Infinity when
/// they are the cause.
fn json_error(err: serde_json::Error, text: &str) -> BridgeError {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    let reason = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full);
    let reason = if non_finite_at(text, line, column) {
        format!("NaN and Infinity are not valid JSON numbers ({reason})")
    } else {
        reason.to_owned()
    };
    contract_error(format!(
        "malformed JSON payload at line {line} column {column}: {reason}"
    ))
    .with_detail("line", line)
    .with_detail("column", column)
    .with_source(err)
}

/// Whether a `NaN` or `Infinity` literal (possibly signed) starts at the 1-based
/// `line` and byte `column` an error was reported at.
fn non_finite_at(text: &str, line: usize, column: usize) -> bool {
    let Some(rest) = text
        .split('\n')
        .nth(line.saturating_sub(1))
        .and_then(|l| l.get(column.saturating_sub(1)..))
    else {
        return false;
    };
    let rest = rest.trim_start_matches(['+', '-']);
    rest.starts_with("NaN") || rest.starts_with("Infinity")
}

/// Reads a payload file, at most `max_bytes` of it (a FIFO or a device included).
fn read_payload_file(path: &Path, max_bytes: usize) -> Result<String> {
    if path.as_os_str().is_empty() {
        return Err(contract_error(
            "expected a file path after @ in the payload argument".to_owned(),
        ));
    }
    bounded_read::read_text(path, max_bytes).map_err(|err| match err {
        ReadError::Io(err) => contract_error(format!(
            "cannot read payload file {}: {err}",
            path.display()
        ))
        .with_detail("path", path.display().to_string())
        .with_source(err),
        ReadError::TooLarge { size, .. } => {
            let size = match size {
                Some(bytes) => format!("{bytes} bytes"),
                None => format!("more than {max_bytes} bytes"),
            };
            contract_error(format!(
                "payload file {}: payload is {size}, over invoke.max_payload_bytes = {max_bytes}",
                path.display()
            ))
            .with_detail("max_bytes", max_bytes)
            .with_detail("path", path.display().to_string())
        }
    })
}

#[cfg(test)]
mod tests;
