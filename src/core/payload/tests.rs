use super::*;
use serde_json::json;

const MIB16: usize = 16 * 1024 * 1024;

fn nested(depth: usize) -> String {
    format!(
        "{}{}",
        "{\"a\":".repeat(depth - 1) + "{}",
        "}".repeat(depth - 1)
    )
}

fn rejection(text: &str, max_bytes: usize) -> String {
    let err = parse_payload(text, max_bytes).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    err.message
}

#[test]
fn accepts_an_object() {
    let value = parse_payload(" {\"a\": [1, \"]]]\\\"[[\"], \"b\": {}} ", MIB16).unwrap();
    assert_eq!(value, json!({"a": [1, "]]]\"[["], "b": {}}));
}

#[test]
fn rejects_oversized_text_before_anything_else() {
    let text = format!("[{}]", " ".repeat(100));
    assert_eq!(
        rejection(&text, 50),
        "payload is 102 bytes, over invoke.max_payload_bytes = 50"
    );
    let err = parse_payload(&"x".repeat(17_000_000), MIB16).unwrap_err();
    assert_eq!(
        err.message,
        "payload is 17000000 bytes, over invoke.max_payload_bytes = 16777216"
    );
    assert_eq!(err.details["bytes"], 17_000_000);
}

#[test]
fn depth_200_is_accepted_past_serde_jsons_default_limit() {
    let value = parse_payload(&nested(200), MIB16).unwrap();
    assert_eq!(value_depth(&value), 200);
    let text = format!("{{\"a\":{}1{}}}", "[".repeat(255), "]".repeat(255));
    assert_eq!(scan_json(text.as_bytes()).depth, 256);
    parse_payload(&text, MIB16).unwrap();
}

#[test]
fn depth_257_is_rejected() {
    assert_eq!(
        rejection(&nested(257), MIB16),
        "payload nests 257 levels deep; the limit is 256"
    );
}

#[test]
fn a_million_levels_are_rejected_without_parsing() {
    let text = "[".repeat(1_000_000);
    assert_eq!(
        rejection(&text, MIB16),
        "payload nests 1000000 levels deep; the limit is 256"
    );
    let text = format!("{}{}", "{\"k\":".repeat(1_000_000), "}".repeat(1_000_000));
    assert!(rejection(&text, MIB16).starts_with("payload nests 1000000 levels"));
}

#[test]
fn integers_beyond_64_bits_are_refused() {
    let big = |text: &str| scan_json(text.as_bytes()).big_int;
    assert_eq!(
        big(&format!("{{\"a\": [{}, {}]}}", u64::MAX, i64::MIN)),
        None
    );
    assert_eq!(
        big("[1.5, -0, 0, 1e400, 123456789012345678901234567890.0]"),
        None
    );
    assert_eq!(
        big("18446744073709551616"),
        Some("18446744073709551616".into())
    );
    assert_eq!(
        big("[-9223372036854775809]"),
        Some("-9223372036854775809".into())
    );
    assert_eq!(big("{\"s\": \"99999999999999999999999\\\"\"}"), None);
    assert_eq!(
        big(&"9".repeat(100)).unwrap().chars().count(),
        BIG_INT_CHARS
    );
    let message = rejection("{\"n\": 1267650600228229401496703205376}", MIB16);
    assert!(
        message.starts_with(
            "payload holds the integer 1267650600228229401496703205376, beyond 64 bits"
        ),
        "{message}"
    );
}

#[test]
fn brackets_inside_strings_do_not_count() {
    let text = format!(
        "{{\"s\": \"{}\\\\\", \"t\": \"\\\"{}\"}}",
        "[".repeat(500),
        "{".repeat(500)
    );
    assert_eq!(scan_json(text.as_bytes()).depth, 1);
    parse_payload(&text, MIB16).unwrap();
}

#[test]
fn malformed_json_names_line_and_column() {
    assert_eq!(
        rejection("{\"a\": 1,\n \"b\": }", MIB16),
        "malformed JSON payload at line 2 column 7: expected value"
    );
    assert_eq!(
        rejection("{} x", MIB16),
        "malformed JSON payload at line 1 column 4: trailing characters"
    );
    assert!(
        rejection("{\"a\": 1", MIB16).starts_with("malformed JSON payload at line 1 column 7: EOF")
    );
    assert!(rejection("", MIB16).starts_with("malformed JSON payload at line 1 column 0: EOF"));
}

#[test]
fn non_finite_numbers_are_named() {
    for literal in ["NaN", "Infinity", "-Infinity", "+Infinity"] {
        let message = rejection(&format!("{{\"loss\": {literal}}}"), MIB16);
        assert!(
            message.starts_with("malformed JSON payload at line 1 column"),
            "{message}"
        );
        assert!(
            message.contains("NaN and Infinity are not valid JSON numbers"),
            "{message}"
        );
    }
    let message = rejection("{\"a\":\n  [1, -Infinity]}", MIB16);
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("NaN and Infinity"), "{message}");
    assert!(rejection("{\"a\": 1e400}", MIB16).ends_with("number out of range"));
}

#[test]
fn non_objects_are_rejected_with_their_type() {
    for (text, kind) in [
        ("[]", "array"),
        ("1", "number"),
        ("\"s\"", "string"),
        ("null", "null"),
        ("true", "boolean"),
    ] {
        assert_eq!(
            rejection(text, MIB16),
            format!("payload must be a JSON object, got {kind}")
        );
    }
}

#[test]
fn check_value_requires_an_object() {
    let err = check_value(&json!([1]), MIB16).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert_eq!(err.message, "payload must be a JSON object, got array");
}

#[test]
fn the_size_ceiling_is_never_below_the_serialized_size() {
    assert!(numbers_fit_the_ceiling());
    for value in [
        json!({}),
        json!({"a": "\u{0}\u{1f}\"\\é😀", "": [null, true, false, [], {}]}),
        json!({"n": [i64::MIN, u64::MAX, -2.2250738585072014e-308, 1.7976931348623157e308]}),
        json!({"deep": [[[[{"k": -0.0}]]]]}),
    ] {
        let shape = shape(&value);
        assert!(shape.size_ceiling >= serialized_len(&value), "{value}");
        assert_eq!(shape.depth, value_depth(&value), "{value}");
    }
}

#[test]
fn check_value_counts_the_serialized_size() {
    let value = json!({"a": "é"});
    assert_eq!(
        serialized_len(&value),
        serde_json::to_string(&value).unwrap().len()
    );
    check_value(&value, 10).unwrap();
    let err = check_value(&value, 9).unwrap_err();
    assert_eq!(
        err.message,
        "payload is 10 bytes, over invoke.max_payload_bytes = 9"
    );
}

/// Builds `{"a": [[...[]...]]}` nesting `depth` levels, without recursion.
fn deep_value(depth: usize) -> Value {
    let mut inner = json!([]);
    for _ in 0..depth - 2 {
        inner = Value::Array(vec![inner]);
    }
    // Not `json!`: it would copy `inner` through (recursive) serialization.
    let mut object = serde_json::Map::new();
    object.insert("a".to_owned(), inner);
    Value::Object(object)
}

/// Takes a deep value apart iteratively, so dropping it cannot overflow the stack.
fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[test]
fn check_value_measures_depth_iteratively() {
    assert_eq!(value_depth(&json!(1)), 0);
    assert_eq!(value_depth(&json!({})), 1);
    assert_eq!(value_depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
    check_value(&deep_value(256), MIB16).unwrap();
    let err = check_value(&deep_value(257), MIB16).unwrap_err();
    assert_eq!(
        err.message,
        "payload nests 257 levels deep; the limit is 256"
    );
    let huge = deep_value(100_000);
    let err = check_value(&huge, MIB16).unwrap_err();
    assert_eq!(
        err.message,
        "payload nests 100000 levels deep; the limit is 256"
    );
    dismantle(huge);
}

#[test]
fn excerpt_cuts_on_char_boundaries() {
    assert_eq!(excerpt("", 3), "");
    assert_eq!(excerpt("abc", 3), "abc");
    assert_eq!(excerpt("abcd", 3), "ab…");
    assert_eq!(excerpt("日本語テキスト", 3), "日本…");
    assert_eq!(
        excerpt(&"x".repeat(5000), EXCERPT_CHARS).chars().count(),
        EXCERPT_CHARS
    );
}

#[test]
fn load_payload_arg_reads_literal_json() {
    assert_eq!(
        load_payload_arg("{\"a\": 1}", MIB16).unwrap(),
        json!({"a": 1})
    );
    assert!(load_payload_arg("[1]", MIB16).is_err());
}

#[test]
fn load_payload_arg_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, "{\"op\": \"echo\"}").unwrap();
    let value = load_payload_arg(&format!("@{}", path.display()), MIB16).unwrap();
    assert_eq!(value, json!({"op": "echo"}));
}

#[test]
fn load_payload_arg_checks_the_file_size_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    std::fs::write(&path, "x".repeat(100)).unwrap();
    let err = load_payload_arg(&format!("@{}", path.display()), 10).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert_eq!(
        err.message,
        format!(
            "payload file {}: payload is 100 bytes, over invoke.max_payload_bytes = 10",
            path.display()
        )
    );
}

#[test]
fn load_payload_arg_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.json");
    let err = load_payload_arg(&format!("@{}", path.display()), MIB16).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    assert!(
        err.message
            .starts_with(&format!("cannot read payload file {}: ", path.display())),
        "{}",
        err.message
    );
    assert_eq!(err.details["path"], path.display().to_string());
    let err = load_payload_arg("@", MIB16).unwrap_err();
    assert_eq!(
        err.message,
        "expected a file path after @ in the payload argument"
    );
}
