//! Property tests (issue 9): the decoders of untrusted input — payload text
//! (`payload`), contracts (`contracts`) and what a child writes (`process::protocol`) —
//! never panic on arbitrary JSON or near-JSON (deep nesting, integers beyond 64 bits,
//! NaN, lone surrogates, odd strings), every execution mode gives the same value or
//! the same error class for the same generated `echo` payload, and a payload an
//! `in_process` worker reads as JSON text becomes the same Python objects as its tree.

mod common;

use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::{Config, Mode};
use cerebros_bridge::core::contracts::{validate_contract, CONTRACT_NAMES};
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use cerebros_bridge::core::payload::{
    check_value, parse_payload, scan_json, value_depth, MAX_DEPTH,
};
use cerebros_bridge::inprocess::{convert, interpreter};
use cerebros_bridge::process::protocol::{decode_reply, read_one_shot, OneShotOutput};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use pyo3::types::PyAnyMethods;
use serde_json::{Map, Number, Value};
use std::sync::OnceLock;

const MAX_BYTES: usize = 1 << 20;

// -- strategies -----------------------------------------------------------------------------

/// Strings with what tends to break encoders: controls, NUL, quotes, backslashes, escapes
/// spelled out (`\ud800`), non-BMP characters, plus any string at all.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just("\u{0}".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("\\ud800".to_owned()),
                Just("\u{7f}\u{1b}[31m".to_owned()),
                Just("\u{2028}\u{feff}".to_owned()),
                Just("😀".to_owned()),
                Just("[{".to_owned()),
                "[a-zé]{0,3}".prop_map(String::from),
            ],
            0..6
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        odd_string().prop_map(Value::String),
    ]
}

/// Any JSON value of a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((odd_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// `value` wrapped in `depth` arrays or objects.
fn nest(value: Value, depth: usize, in_objects: bool) -> Value {
    (0..depth).fold(value, |inner, _| {
        if in_objects {
            Value::Object(Map::from_iter([("k".to_owned(), inner)]))
        } else {
            Value::Array(vec![inner])
        }
    })
}

/// A JSON object, sometimes nested deep: around [`MAX_DEPTH`] and past it.
fn json_object() -> impl Strategy<Value = Value> {
    let depth = prop_oneof![0..4usize, (MAX_DEPTH - 3)..(MAX_DEPTH + 3), 300..400usize];
    (json_value(), depth, any::<bool>()).prop_map(|(value, depth, in_objects)| {
        Value::Object(Map::from_iter([(
            "v".to_owned(),
            nest(value, depth, in_objects),
        )]))
    })
}

/// Near-JSON text: tokens of JSON and of what is not quite JSON, in any order.
fn json_like_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"".to_owned()),
        Just("\"k\":".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"\\\"".to_owned()),
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        Just("1e999".to_owned()),
        Just("-0".to_owned()),
        Just("1267650600228229401496703205376".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just(" \n".to_owned()),
        "-?[0-9]{1,25}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?".prop_map(String::from),
        odd_string().prop_map(|s| format!("{s:?}")),
    ];
    let run = prop_oneof![
        Just("[".repeat(300)),
        Just("{\"a\":".repeat(300)),
        Just("]".repeat(300)),
    ];
    proptest::collection::vec(prop_oneof![9 => token, 1 => run], 0..40)
        .prop_map(|tokens| tokens.concat())
}

/// Text for the decoders: near-JSON, real JSON of deep values, or any bytes.
fn decoder_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_like_text().prop_map(String::into_bytes),
        json_object().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

/// An object shaped like a contract: a known or unknown name and version, and fields of
/// the contracts' names holding anything.
fn contract_like() -> impl Strategy<Value = Value> {
    let fields = [
        "run_id",
        "trial_id",
        "timestamp",
        "index",
        "seed",
        "status",
        "metrics",
        "parameters",
        "search_space",
        "budget",
        "objective",
        "artifact_uri",
        "duration_ms",
        "rank",
        "warnings",
        "best_trial_id",
        "returncode",
        "artifact_refs",
        "payload",
        "pulse_id",
        "extra",
    ];
    let name = prop_oneof![
        proptest::sample::select(CONTRACT_NAMES.to_vec()).prop_map(Value::from),
        scalar(),
    ];
    let version = prop_oneof![Just(Value::from(1)), scalar()];
    let entries = proptest::collection::vec(
        (
            proptest::sample::select(fields.to_vec()),
            prop_oneof![json_value(), odd_string().prop_map(Value::String)],
        ),
        0..10,
    );
    (name, version, entries).prop_map(|(name, version, entries)| {
        let mut map = Map::new();
        map.insert("contract".into(), name);
        map.insert("version".into(), version);
        for (key, value) in entries {
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// -- the decoders never panic ---------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn payload_text_is_decoded_or_refused_as_a_contract_error(bytes in decoder_input()) {
        let text = String::from_utf8_lossy(&bytes);
        match parse_payload(&text, MAX_BYTES) {
            Ok(value) => {
                prop_assert!(value.is_object());
                prop_assert!(value_depth(&value) <= MAX_DEPTH);
                check_value(&value, MAX_BYTES).unwrap();
            }
            Err(err) => prop_assert_eq!(err.class, ErrorClass::Contract),
        }
    }

    #[test]
    fn serialized_objects_read_back_as_they_were(value in json_object()) {
        let text = serde_json::to_string(&value).unwrap();
        prop_assert_eq!(scan_json(text.as_bytes()).depth, value_depth(&value));
        prop_assert_eq!(scan_json(text.as_bytes()).big_int, None);
        let checked = check_value(&value, MAX_BYTES);
        if value_depth(&value) <= MAX_DEPTH {
            // The size limit holds to the byte (check_value skips counting when a quick
            // ceiling is under the limit: the ceiling must never be below the size).
            prop_assert!(check_value(&value, text.len()).is_ok());
            prop_assert!(check_value(&value, text.len() - 1).is_err());
        }
        match parse_payload(&text, MAX_BYTES) {
            Ok(parsed) => {
                prop_assert!(checked.is_ok());
                prop_assert_eq!(parsed, value);
            }
            Err(err) => {
                prop_assert_eq!(checked.unwrap_err().class, err.class);
                prop_assert!(value_depth(&value) > MAX_DEPTH);
            }
        }
    }

    #[test]
    fn contracts_are_decoded_or_refused_as_contract_errors(value in contract_like()) {
        match validate_contract(&value) {
            Ok(contract) => {
                let again = validate_contract(&contract.to_value()).unwrap();
                prop_assert_eq!(again.to_value(), contract.to_value());
            }
            Err(err) => prop_assert_eq!(err.class, ErrorClass::Contract),
        }
    }

    #[test]
    fn any_json_is_no_contract_panic(value in json_value()) {
        if let Err(err) = validate_contract(&value) {
            prop_assert_eq!(err.class, ErrorClass::Contract);
        }
    }

    #[test]
    fn child_output_is_decoded_or_refused(bytes in decoder_input(), ok in any::<bool>()) {
        let _ = decode_reply(&bytes);
        if let OneShotOutput::Object(object) = read_one_shot(&bytes) {
            if let Err(err) = object.into_result() {
                prop_assert_eq!(err.class, ErrorClass::ParseError);
            }
        }
        // The same text inside a reply line: a result refused by the result rules is a
        // `parse_error` for that request, never a broken stream.
        let text = String::from_utf8_lossy(&bytes);
        let field = if ok { "result" } else { "error" };
        let line = format!("{{\"id\": 1, \"ok\": {ok}, \"{field}\": {text}}}");
        if let Ok(reply) = decode_reply(line.as_bytes()) {
            if let Err(err) = reply.outcome {
                prop_assert!(!ok || err.class == ErrorClass::ParseError, "{}", err);
            }
        }
    }
}

// -- every mode gives the same answer -------------------------------------------------------

/// One client per mode over `cerebros_service`, shared by every case.
fn clients() -> &'static [(Mode, Client); 3] {
    static CLIENTS: OnceLock<[(Mode, Client); 3]> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        [Mode::InProcess, Mode::WorkerProcess, Mode::Subprocess].map(|mode| {
            let mut config = Config {
                mode,
                repo_path: common::root().join("python"),
                ..Config::default()
            };
            config.invoke.max_retries = 0;
            config.invoke.pool_size = 1;
            config.invoke.default_timeout_ms = 30_000;
            config.cache.enabled = false;
            (mode, Client::start(&config).expect("the client starts"))
        })
    })
}

/// What a call gave, for comparing modes: the value, or the error's class.
fn outcome(result: Result<Value, BridgeError>) -> Result<Value, ErrorClass> {
    result.map_err(|err| err.class)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn every_mode_echoes_the_same(payload in json_object()) {
        let [(_, in_process), rest @ ..] = clients();
        let expected = outcome(in_process.call_blocking("echo", payload.clone()));
        match &expected {
            Ok(value) => prop_assert_eq!(value, &payload),
            Err(class) => prop_assert_eq!(*class, ErrorClass::Contract),
        }
        for (mode, client) in rest {
            let got = outcome(client.call_blocking("echo", payload.clone()));
            prop_assert_eq!(&got, &expected, "{}", mode);
        }
    }
}

// -- a payload sent as text becomes what its tree becomes ----------------------------------

proptest! {
    #![proptest_config(config())]

    /// What `in_process` workers do with a contract-sized payload (`orjson.loads` of the
    /// text `serde_json` writes) builds exactly the objects the tree conversion builds:
    /// `repr` tells ints from floats and bools, `-0.0` from `0.0`, and shows key order.
    #[test]
    fn text_and_tree_give_the_same_python(value in json_value(), extra in json_value()) {
        interpreter::ensure_started(None).expect("the interpreter starts");
        let payload = serde_json::json!({"v": [value, extra], "z": -0.0, "n": u64::MAX});
        prop_assert!(convert::sent_as_text(&payload));
        pyo3::Python::attach(|py| {
            let loads = py.import("orjson").and_then(|m| m.getattr("loads")).expect("orjson");
            let text = serde_json::to_vec(&payload).unwrap();
            let from_text = convert::text_to_python(&loads, &text).expect("orjson reads it");
            let from_tree = convert::to_python(py, &payload).unwrap();
            prop_assert_eq!(
                from_text.repr().unwrap().to_string(),
                from_tree.repr().unwrap().to_string()
            );
            Ok(())
        })?;
    }
}
