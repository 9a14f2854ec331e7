//! Telemetry mirrors the seed: a `cerebros.bridge.invoke` span per call with
//! `start`, `stop` and `exception` events carrying the attempt, duration and
//! excerpts; cache events on their own target. Captured with a recording subscriber.

mod common;

use cerebros_bridge::client::telemetry::EXCERPT_CHARS;
use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::{Config, InvokeConfig, Mode};
use cerebros_bridge::core::error::ErrorClass;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One recorded span or event: its name or target and its fields as strings.
#[derive(Debug, Clone)]
struct Record {
    kind: &'static str,
    name: String,
    target: String,
    fields: BTreeMap<String, String>,
    span_fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

impl<S> Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields.0.clone());
        }
        self.0.lock().push(Record {
            kind: "span",
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            fields: fields.0,
            span_fields: BTreeMap::new(),
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let span_fields = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<BTreeMap<String, String>>().cloned())
            .unwrap_or_default();
        self.0.lock().push(Record {
            kind: "event",
            name: event.metadata().name().to_owned(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
            span_fields,
        });
    }
}

fn events(records: &[Record], target: &str) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.kind == "event" && r.target == target)
        .cloned()
        .collect()
}

/// Every `event` event carries `field`, and it was cut to [`EXCERPT_CHARS`] characters
/// plus the `…` that marks the cut (each excerpted text here is longer than that).
fn assert_cut(records: &[Record], event: &str, field: &str) {
    let matching: Vec<&Record> = records
        .iter()
        .filter(|r| r.fields.get("event").map(String::as_str) == Some(event))
        .collect();
    assert!(!matching.is_empty(), "no {event} event in {records:?}");
    for record in matching {
        let value = record
            .fields
            .get(field)
            .unwrap_or_else(|| panic!("the {event} event has no {field}: {record:?}"));
        assert_cut_text(&format!("{event}.{field}"), value);
    }
}

/// `value` is a text longer than [`EXCERPT_CHARS`] cut to that many characters, the
/// `…` that marks the cut included.
fn assert_cut_text(name: &str, value: &str) {
    let chars = value.chars().count();
    assert!(
        chars == EXCERPT_CHARS && value.contains('…'),
        "{name} is {chars} chars, not cut to {EXCERPT_CHARS}"
    );
}

#[test]
fn invoke_spans_events_and_cache_events_are_emitted() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let config = Config {
        module: "fault_service".into(),
        repo_path: common::root().join("tests/fixtures"),
        invoke: InvokeConfig {
            default_timeout_ms: 200,
            retry_backoff_ms: 10,
            max_retries: 2,
            ..Default::default()
        },
        ..Config::default()
    };
    let client = Client::start(&config).unwrap();

    // Two timeouts, then success: start ×3, exception ×2, stop ×1, all in one span.
    let payload = json!({"key": "telemetry", "fail_times": 2, "sleep_seconds": 1,
                         "run_id": "run-t", "correlation_id": "corr-9"});
    client.call_blocking("flaky", payload).unwrap();
    let records = recorder.0.lock().clone();
    let span = records
        .iter()
        .find(|r| r.kind == "span" && r.name == "cerebros.bridge.invoke")
        .expect("an invoke span");
    assert_eq!(span.fields["op"], "flaky");
    assert_eq!(span.fields["run_id"], "run-t");
    assert_eq!(span.fields["correlation_id"], "corr-9");
    assert_eq!(span.fields["mode"], "in_process");
    let invoke = events(&records, "cerebros.bridge.invoke");
    let phases: Vec<(String, String)> = invoke
        .iter()
        .map(|e| (e.fields["event"].clone(), e.fields["attempt"].clone()))
        .collect();
    let expected = [
        ("start", "1"),
        ("exception", "1"),
        ("start", "2"),
        ("exception", "2"),
        ("start", "3"),
        ("stop", "3"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(phases, expected);
    for event in &invoke {
        assert_eq!(
            event.span_fields.get("op").map(String::as_str),
            Some("flaky")
        );
        if event.fields["event"] != "start" {
            let ms: f64 = event.fields["duration_ms"].parse().unwrap();
            assert!(ms > 0.0);
        }
    }
    let exception = invoke
        .iter()
        .find(|e| e.fields["event"] == "exception")
        .unwrap();
    assert_eq!(exception.fields["error_class"], "timeout");
    assert_eq!(exception.fields["retrying"], "true");

    // Excerpts are cut to EXCERPT_CHARS characters (plus the `…` that marks the cut):
    // the payload and result of a large echo, the message of a large error.
    recorder.0.lock().clear();
    client
        .call_blocking("echo", json!({"text": "é".repeat(5000)}))
        .unwrap();
    client
        .call_blocking("fail", json!({"message": "x".repeat(5000)}))
        .unwrap_err();
    let records = recorder.0.lock().clone();
    let invoke = events(&records, "cerebros.bridge.invoke");
    assert_cut(&invoke, "start", "payload_excerpt");
    assert_cut(&invoke, "stop", "result_excerpt");
    assert_cut(&invoke, "exception", "error_excerpt");

    // A process-mode failure: the error keeps excerpts of the child's stdout and
    // stderr, and the exception event carries the stderr excerpt.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("noisy.py");
    std::fs::write(
        &script,
        "import sys\n\
         sys.stdin.read()\n\
         sys.stdout.write('o' * 5000)\n\
         sys.stderr.write('e' * 5000)\n\
         sys.exit(1)\n",
    )
    .unwrap();
    let subprocess = Client::start(&Config {
        mode: Mode::Subprocess,
        script_path: Some(script),
        invoke: InvokeConfig {
            max_retries: 0,
            ..Default::default()
        },
        ..config.clone()
    })
    .unwrap();
    recorder.0.lock().clear();
    let err = subprocess.call_blocking("noisy", json!({})).unwrap_err();
    assert_eq!(err.class, ErrorClass::SubprocessExit, "{err}");
    for field in ["stdout_excerpt", "stderr_excerpt"] {
        let value = err.details.get(field).and_then(|v| v.as_str());
        let value = value.unwrap_or_else(|| panic!("no {field} in {:?}", err.details));
        assert_cut_text(field, value);
    }
    let records = recorder.0.lock().clone();
    assert_cut(
        &events(&records, "cerebros.bridge.invoke"),
        "exception",
        "stderr_excerpt",
    );

    // Cache events: miss, store, then hit.
    recorder.0.lock().clear();
    let keyed = CallOptions {
        cache_key: Some("telemetry-key".into()),
        ..CallOptions::default()
    };
    client
        .call_blocking_with("echo", json!({}), keyed.clone())
        .unwrap();
    client.call_blocking_with("echo", json!({}), keyed).unwrap();
    let records = recorder.0.lock().clone();
    let cache: Vec<String> = events(&records, "cerebros.bridge.cache")
        .iter()
        .map(|e| e.fields["event"].clone())
        .collect();
    assert_eq!(cache, ["miss", "store", "hit"]);
}
