//! The wire formats of the process modes.
//!
//! * `worker_process`: newline-delimited JSON over the child's stdin and stdout.
//!   Requests are `{"id": 7, "op": "echo", "payload": {...}}` (plus `"traceparent"`
//!   when the call is traced, DESIGN §14); replies are
//!   `{"id": 7, "ok": true, "result": {...}}` or
//!   `{"id": 7, "ok": false, "error": {"class", "message", "details"}}`. Id 0 is the
//!   child's start-up report (`{"ready": true, "pid", "module"}` or a `dependency`
//!   error). A reply with `"id": null` answers a line the child could not read.
//! * `subprocess`: the result object on stdout, or, with a non-zero exit status,
//!   `{"ok": false, "error": {...}}`.
//!
//! The `class` of an error maps back to the same [`ErrorClass`] the `in_process` mode
//! gives for the same call, and a result is held to the same rules: the child refuses
//! dict keys that are not strings, and the host refuses what the text shows (integers
//! beyond 64 bits, nesting deeper than [`MAX_DEPTH`]) with a `parse_error`, as
//! [`crate::inprocess::convert::from_python`] does.

use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::payload::{excerpt, json_type, scan_json, value_depth, EXCERPT_CHARS, MAX_DEPTH};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::Write;

/// The id of the start-up report of a `--serve-stdio` child.
pub const READY_ID: u64 = 0;

/// The deepest nesting read from a child. Python's `json.dumps` cannot write much
/// deeper than its recursion limit (1000) anyway; this guards the reader's stack.
pub const MAX_WIRE_DEPTH: usize = 1100;

/// One request line, newline included.
///
/// ```
/// use cerebros_bridge::process::protocol::encode_request;
/// let line = encode_request(7, "echo", &serde_json::json!({"a": "é"}));
/// assert_eq!(line, "{\"id\":7,\"op\":\"echo\",\"payload\":{\"a\":\"é\"}}\n".as_bytes());
/// ```
pub fn encode_request(id: u64, op: &str, payload: &Value) -> Vec<u8> {
    encode_traced_request(id, op, payload, None)
}

/// [`encode_request`] of a traced call: the line carries its W3C `traceparent`.
///
/// ```
/// use cerebros_bridge::process::protocol::encode_traced_request;
/// let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// let line = encode_traced_request(7, "echo", &serde_json::json!({}), Some(tp));
/// let text = String::from_utf8(line).unwrap();
/// assert!(text.ends_with(&format!(",\"traceparent\":\"{tp}\"}}\n")));
/// ```
pub fn encode_traced_request(
    id: u64,
    op: &str,
    payload: &Value,
    traceparent: Option<&str>,
) -> Vec<u8> {
    let mut line = Vec::with_capacity(48 + op.len());
    // Writing to a Vec cannot fail, and strings and Values always serialize.
    let _ = write!(line, "{{\"id\":{id},\"op\":");
    let _ = serde_json::to_writer(&mut line, op);
    line.extend_from_slice(b",\"payload\":");
    let _ = serde_json::to_writer(&mut line, payload);
    if let Some(traceparent) = traceparent {
        line.extend_from_slice(b",\"traceparent\":");
        let _ = serde_json::to_writer(&mut line, traceparent);
    }
    line.extend_from_slice(b"}\n");
    line
}

/// A reply line, decoded.
#[derive(Debug)]
pub struct Reply {
    /// The request it answers (`None`: a line the child could not read).
    pub id: Option<u64>,
    /// The op's result or error.
    pub outcome: Result<Value>,
}

/// Decodes one reply line (without its newline). An error is a line that breaks the
/// protocol (not JSON, no `ok`): the stream can no longer be trusted.
///
/// ```
/// use cerebros_bridge::core::error::ErrorClass;
/// use cerebros_bridge::process::protocol::decode_reply;
/// let reply = decode_reply(br#"{"id": 3, "ok": true, "result": {"x": 1}}"#).unwrap();
/// assert_eq!((reply.id, reply.outcome.unwrap()["x"].as_i64()), (Some(3), Some(1)));
/// let reply = decode_reply(
///     br#"{"id": 4, "ok": false, "error": {"class": "contract", "message": "unknown op", "details": {}}}"#,
/// )
/// .unwrap();
/// assert_eq!(reply.outcome.unwrap_err().class, ErrorClass::Contract);
/// assert!(decode_reply(b"Traceback (most recent call last):").is_err());
/// ```
pub fn decode_reply(line: &[u8]) -> std::result::Result<Reply, String> {
    let (value, big_int) = parse_wire_json(line)?;
    let Value::Object(mut doc) = value else {
        return Err(format!(
            "a reply must be a JSON object, got {}",
            json_type(&value)
        ));
    };
    let id = match doc.get("id") {
        Some(Value::Null) => None,
        Some(id) => Some(
            id.as_u64()
                .ok_or_else(|| format!("a reply id must be a whole number, got {id}"))?,
        ),
        None => return Err("a reply has no id".to_owned()),
    };
    let outcome = match doc.get("ok") {
        Some(Value::Bool(true)) => match doc.remove("result") {
            Some(result @ Value::Object(_)) => check_result(result, big_int),
            Some(other) => Err(BridgeError::new(
                ErrorClass::ParseError,
                format!(
                    "the result must be a JSON object, got {}",
                    json_type(&other)
                ),
            )),
            None => Err(BridgeError::new(
                ErrorClass::ParseError,
                "the reply has no result",
            )),
        },
        Some(Value::Bool(false)) => Err(error_from_wire(doc.get("error").unwrap_or(&Value::Null))),
        _ => return Err("a reply has no ok flag".to_owned()),
    };
    Ok(Reply { id, outcome })
}

/// The [`BridgeError`] of a wire error object `{"class", "message", "details"}`. An
/// unknown class reads as `exception`; details that are not an object are kept under
/// `details`.
pub fn error_from_wire(error: &Value) -> BridgeError {
    let class = error
        .get("class")
        .and_then(Value::as_str)
        .and_then(ErrorClass::parse)
        .unwrap_or(ErrorClass::Exception);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the service reported an error without a message");
    let mut err = BridgeError::new(class, message);
    match error.get("details") {
        Some(Value::Object(details)) => err.details = details.clone(),
        None | Some(Value::Null) => {}
        Some(other) => err.details = Map::from_iter([("details".to_owned(), other.clone())]),
    }
    err
}

/// Holds an op's result, read from a child, to the rules the in-process mode applies
/// ([`crate::inprocess::convert::from_python`]) that JSON text can show: no integer beyond 64 bits
/// (`big_int`, found by [`scan_json`]: the parser turned it into a float) and at most
/// [`MAX_DEPTH`] levels of nesting. Either is a `parse_error`.
fn check_result(result: Value, big_int: Option<String>) -> Result<Value> {
    if let Some(literal) = big_int {
        return Err(BridgeError::new(
            ErrorClass::ParseError,
            format!("the result holds the integer {literal}, beyond 64 bits"),
        )
        .with_detail("integer", literal));
    }
    let depth = value_depth(&result);
    if depth > MAX_DEPTH {
        return Err(BridgeError::new(
            ErrorClass::ParseError,
            format!("the result nests {depth} levels deep; the limit is {MAX_DEPTH}"),
        )
        .with_detail("depth", depth));
    }
    Ok(result)
}

/// What the stdout of a one-shot (`--bridge-op`) child holds.
#[derive(Debug)]
pub enum OneShotOutput {
    /// A JSON object: the result, or, after a non-zero exit, possibly an error report.
    Object(WireObject),
    /// JSON that is not an object.
    NotAnObject(&'static str),
    /// Nothing, or text that is not JSON.
    Unreadable(String),
}

/// A JSON object a one-shot child wrote.
#[derive(Debug)]
pub struct WireObject {
    /// The object.
    pub doc: Map<String, Value>,
    /// Its first integer literal beyond 64 bits (read as a float), if any.
    big_int: Option<String>,
}

impl WireObject {
    /// The object as an op's result: a `parse_error` if it breaks the result rules.
    pub fn into_result(self) -> Result<Value> {
        check_result(Value::Object(self.doc), self.big_int)
    }
}

/// Reads the stdout of a one-shot child: the whole text as JSON, else its last
/// non-empty line (a script may print other lines first).
pub fn read_one_shot(stdout: &[u8]) -> OneShotOutput {
    let text = trim_ascii(stdout);
    if text.is_empty() {
        return OneShotOutput::Unreadable("the process wrote nothing to stdout".to_owned());
    }
    let parsed = parse_wire_json(text).or_else(|first| {
        let last = text
            .rsplit(|b| *b == b'\n')
            .map(trim_ascii)
            .find(|line| !line.is_empty())
            .unwrap_or(text);
        if last.len() == text.len() {
            Err(first)
        } else {
            parse_wire_json(last).map_err(|_| first)
        }
    });
    match parsed {
        Ok((Value::Object(doc), big_int)) => OneShotOutput::Object(WireObject { doc, big_int }),
        Ok((other, _)) => OneShotOutput::NotAnObject(json_type(&other)),
        Err(why) => OneShotOutput::Unreadable(why),
    }
}

/// The error report of a one-shot child, if `doc` is one: `{"ok": false, "error": {}}`.
pub fn one_shot_error(doc: &Map<String, Value>) -> Option<BridgeError> {
    match (doc.get("ok"), doc.get("error")) {
        (Some(Value::Bool(false)), Some(error @ Value::Object(_))) => Some(error_from_wire(error)),
        _ => None,
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

/// Parses JSON written by a child, allowing nesting up to [`MAX_WIRE_DEPTH`] (checked
/// by a scan before parsing, so the parser's recursion stays bounded). Returns the value
/// and the first integer literal beyond 64 bits the scan found.
fn parse_wire_json(bytes: &[u8]) -> std::result::Result<(Value, Option<String>), String> {
    let scan = scan_json(bytes);
    if scan.depth > MAX_WIRE_DEPTH {
        return Err(format!(
            "the output nests {} levels deep; the limit is {MAX_WIRE_DEPTH}",
            scan.depth
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de).and_then(|value| de.end().map(|()| value));
    value.map(|value| (value, scan.big_int)).map_err(|err| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(4 * EXCERPT_CHARS)]);
        format!(
            "not valid JSON ({err}): {}",
            excerpt(shown.trim(), EXCERPT_CHARS)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_round_trip_through_json() {
        let payload = json!({"s": "a\nb\u{0}\u{1F600}", "n": [1, 2.5, null]});
        let line = encode_request(42, "echo", &payload);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, json!({"id": 42, "op": "echo", "payload": payload}));
    }

    #[test]
    fn replies_decode_with_classes_and_details() {
        let reply = decode_reply(
            br#"{"id": 9, "ok": false, "error": {"class": "exception", "message": "ValueError: boom", "details": {"type": "ValueError"}}}"#,
        )
        .unwrap();
        let err = reply.outcome.unwrap_err();
        assert_eq!(err.class, ErrorClass::Exception);
        assert_eq!(err.details["type"], "ValueError");
        let reply = decode_reply(
            br#"{"id": null, "ok": false, "error": {"class": "contract", "message": "bad line"}}"#,
        )
        .unwrap();
        assert_eq!(reply.id, None);
        let reply = decode_reply(br#"{"id": 1, "ok": true, "result": [1]}"#).unwrap();
        assert_eq!(reply.outcome.unwrap_err().class, ErrorClass::ParseError);
        let err = error_from_wire(&json!({"class": "weird", "details": 3}));
        assert_eq!(err.class, ErrorClass::Exception);
        assert_eq!(err.details["details"], 3);
        assert!(decode_reply(br#"{"ok": true}"#).is_err());
        assert!(decode_reply(br#"{"id": 1}"#).is_err());
        assert!(decode_reply(br#"[1]"#).is_err());
    }

    #[test]
    fn deep_but_bounded_nesting_is_read_and_refused_as_a_result() {
        let reply = |depth: usize| {
            let line = format!(
                "{{\"id\": 1, \"ok\": true, \"result\": {{\"a\": {}{}}}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            );
            decode_reply(line.as_bytes()).unwrap().outcome
        };
        assert!(reply(MAX_DEPTH).is_ok());
        let err = reply(MAX_DEPTH + 1).unwrap_err();
        assert_eq!(err.class, ErrorClass::ParseError);
        assert_eq!(
            err.message,
            "the result nests 257 levels deep; the limit is 256"
        );
        assert_eq!(reply(1000).unwrap_err().class, ErrorClass::ParseError);
        let too_deep = "[".repeat(MAX_WIRE_DEPTH + 1);
        assert!(decode_reply(too_deep.as_bytes())
            .unwrap_err()
            .contains("levels deep"));
    }

    #[test]
    fn integers_beyond_64_bits_in_a_result_are_parse_errors() {
        let line = br#"{"id": 2, "ok": true, "result": {"n": 1267650600228229401496703205376}}"#;
        let err = decode_reply(line).unwrap().outcome.unwrap_err();
        assert_eq!(err.class, ErrorClass::ParseError);
        assert_eq!(err.details["integer"], "1267650600228229401496703205376");
        let line = format!(
            r#"{{"id": 2, "ok": true, "result": {{"n": {}}}}}"#,
            u64::MAX
        );
        assert!(decode_reply(line.as_bytes()).unwrap().outcome.is_ok());
        let OneShotOutput::Object(object) = read_one_shot(b"{\"n\": -99999999999999999999}") else {
            panic!("an object");
        };
        assert_eq!(
            object.into_result().unwrap_err().class,
            ErrorClass::ParseError
        );
    }

    #[test]
    fn one_shot_output_is_read_from_the_last_line() {
        match read_one_shot(b"noise\n{\"x\": 1}\n") {
            OneShotOutput::Object(object) => assert_eq!(object.doc["x"], 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_one_shot(b"[1, 2]"),
            OneShotOutput::NotAnObject("array")
        ));
        assert!(matches!(read_one_shot(b""), OneShotOutput::Unreadable(_)));
        assert!(matches!(
            read_one_shot(b"Segmentation fault"),
            OneShotOutput::Unreadable(_)
        ));
        let doc = json!({"ok": false, "error": {"class": "parse_error", "message": "m"}});
        let err = one_shot_error(doc.as_object().unwrap()).unwrap();
        assert_eq!(err.class, ErrorClass::ParseError);
        assert!(one_shot_error(json!({"ok": true}).as_object().unwrap()).is_none());
    }
}
