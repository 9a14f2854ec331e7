//! `/metrics` (`serve::metrics`): real calls through a real client, recorded from
//! `Metrics::install` on, rendered with a store's runs and trials as Prometheus text that
//! a strict line-by-line reading of the exposition format accepts.
//!
//! The recorder is process-wide, so this file holds one test: its first call is made
//! before anything is installed.

mod common;

use cerebros_bridge::client::{CallOptions, Client};
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::error::ErrorClass;
use cerebros_bridge::nas::spec::RunSpec;
use cerebros_bridge::nas::store::{Owner, RunEnd, Store, TrialRecord, TrialState};
use cerebros_bridge::serve::metrics::{record_http_request, Metrics, Snapshot};
use serde_json::json;

#[test]
fn calls_are_recorded_from_install_on_and_everything_renders_as_prometheus_text() {
    let client = Client::start(&Config::default()).expect("the client starts");
    let echo = || client.call_blocking("echo", json!({"run_id": "r1"}));
    client
        .call_blocking("health", json!({}))
        .expect("health answers");

    let metrics = Metrics::install().expect("the recorder installs");
    Metrics::install().expect("installing again is a no-op");
    echo().unwrap();
    echo().unwrap();
    let cached = || CallOptions {
        cache_key: Some("metrics-test".into()),
        ..CallOptions::default()
    };
    let reply = client.call_blocking_with("echo", json!({"n": 1}), cached());
    assert_eq!(reply.unwrap()["n"], 1);
    let reply = client.call_blocking_with("echo", json!({"n": 2}), cached());
    assert_eq!(reply.unwrap()["n"], 1, "the second call is a cache hit");
    let unknown = client.call_blocking("no_such_op", json!({}));
    assert_eq!(unknown.unwrap_err().class, ErrorClass::Contract);
    let odd = client.call_blocking("no.such-op", json!({}));
    assert_eq!(odd.unwrap_err().class, ErrorClass::Contract);
    record_http_request("/api/runs/{id}", 404);
    record_http_request("/api/runs/{id}", 404);

    let dir = tempfile::tempdir().unwrap();
    let store = store_with_runs(dir.path());
    let stats = client.stats();
    let snapshot = Snapshot {
        client: stats.clone(),
        store: store.counts().unwrap(),
        outbox: store.outbox_counts().unwrap(),
        sse_clients: 3,
    };
    let text = metrics.render(&snapshot);
    let families = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |name: &str, labels: &[(&str, &str)]| exposition::value(&families, name, labels);

    // Calls: by op, mode and outcome, from install on.
    let mode = "in_process";
    let echo_ok = [("op", "echo"), ("mode", mode), ("outcome", "ok")];
    assert_eq!(value("cerebros_bridge_calls_total", &echo_ok), Some(4.0));
    let unknown = [
        ("op", "no_such_op"),
        ("mode", mode),
        ("outcome", "contract"),
    ];
    assert_eq!(value("cerebros_bridge_calls_total", &unknown), Some(1.0));
    let odd = [("op", "other"), ("mode", mode), ("outcome", "contract")];
    assert_eq!(value("cerebros_bridge_calls_total", &odd), Some(1.0));
    assert_eq!(
        value(
            "cerebros_bridge_calls_total",
            &[("op", "health"), ("mode", mode), ("outcome", "ok")]
        ),
        None,
        "a call made before install is not recorded"
    );
    let calls = &families["cerebros_bridge_calls_total"];
    assert_eq!(calls.kind, "counter");
    assert_eq!(calls.samples.len(), 3, "{:?}", calls.samples);

    // Latency: one observation per call, in the configured buckets.
    let latency = &families["cerebros_bridge_call_duration_seconds"];
    assert_eq!(latency.kind, "histogram");
    for (op, n) in [("echo", 4.0), ("no_such_op", 1.0), ("other", 1.0)] {
        let labels = [("op", op), ("mode", mode)];
        assert_eq!(
            value("cerebros_bridge_call_duration_seconds_count", &labels),
            Some(n)
        );
        let buckets = latency
            .samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket") && s.labels["op"] == op)
            .count();
        assert_eq!(buckets, 23, "22 bounds and +Inf");
    }
    let smallest = [("op", "echo"), ("mode", mode), ("le", "0.00001")];
    assert!(value("cerebros_bridge_call_duration_seconds_bucket", &smallest).is_some());

    // The client's own counters and its workers.
    let of_mode = [("mode", mode)];
    let workers = &stats.workers;
    for (name, expected) in [
        ("cerebros_bridge_cache_hits_total", stats.cache_hits),
        ("cerebros_bridge_cache_misses_total", stats.cache_misses),
        ("cerebros_bridge_retries_total", stats.retries),
        ("cerebros_bridge_workers", workers.workers as u64),
        (
            "cerebros_bridge_workers_alive",
            workers.workers_alive as u64,
        ),
        ("cerebros_bridge_workers_stuck", workers.workers_stuck),
        (
            "cerebros_bridge_workers_retired_total",
            workers.workers_retired,
        ),
        (
            "cerebros_bridge_workers_replaced_total",
            workers.workers_replaced,
        ),
        ("cerebros_bridge_queued_calls", workers.queued as u64),
    ] {
        assert_eq!(value(name, &of_mode), Some(expected as f64), "{name}");
    }
    assert_eq!((stats.cache_hits, stats.cache_misses), (1, 1));
    assert!(workers.workers_alive > 0);

    // The store: runs and trials by status, the outbox.
    for (status, n) in [
        ("queued", 1.0),
        ("running", 1.0),
        ("succeeded", 1.0),
        ("failed", 0.0),
        ("cancelled", 0.0),
        ("interrupted", 1.0),
    ] {
        assert_eq!(
            value("cerebros_runs", &[("status", status)]),
            Some(n),
            "{status}"
        );
    }
    for (status, n) in [
        ("running", 1.0),
        ("succeeded", 2.0),
        ("failed", 1.0),
        ("skipped", 0.0),
        ("cancelled", 0.0),
        ("pruned", 0.0),
    ] {
        assert_eq!(
            value("cerebros_trials", &[("status", status)]),
            Some(n),
            "{status}"
        );
    }
    let outbox = snapshot.outbox;
    assert!(
        outbox.pending > 0,
        "the finished run and its trials wait for MLflow"
    );
    for (status, n) in [
        ("pending", outbox.pending),
        ("synced", outbox.synced),
        ("failed", outbox.failed),
    ] {
        let labels = [("status", status)];
        assert_eq!(
            value("cerebros_mlflow_outbox_items", &labels),
            Some(n as f64)
        );
    }

    // The server's own figures.
    assert_eq!(value("cerebros_sse_clients", &[]), Some(3.0));
    let not_found = [("route", "/api/runs/{id}"), ("status", "404")];
    assert_eq!(value("cerebros_http_requests_total", &not_found), Some(2.0));

    // A later scrape sees later calls.
    echo().unwrap();
    let text = metrics.render(&snapshot);
    let families = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        exposition::value(&families, "cerebros_bridge_calls_total", &echo_ok),
        Some(5.0)
    );
    client.shutdown(std::time::Duration::from_millis(200));
}

#[test]
fn the_exposition_reader_rejects_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b\"} 2\n";
    let families = exposition::parse(good).unwrap();
    assert_eq!(
        exposition::value(&families, "a_total", &[("x", "1"), ("y", "a\"b")]),
        Some(2.0)
    );
    let histogram = |buckets: &str, count: u32| {
        format!("# HELP h H.\n# TYPE h histogram\n{buckets}h_sum 1\nh_count {count}\n")
    };
    let rising = "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n";
    assert!(exposition::parse(&histogram(rising, 2)).is_ok());
    for bad in [
        "a_total 1\n".to_owned(),
        "# TYPE a_total counter\na_total 1\n".to_owned(),
        "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n".to_owned(),
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n".to_owned(),
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\" y=\"2\"} 1\n".to_owned(),
        "# HELP a A.\n# TYPE a gauge\na one\n".to_owned(),
        histogram(rising, 3),
        histogram("h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n", 1),
        histogram("h_bucket{le=\"1\"} 2\n", 2),
    ] {
        assert!(exposition::parse(&bad).is_err(), "accepted {bad:?}");
    }
}

/// A store with a queued run, a running one (this process drives it), an interrupted one
/// (its owner has exited) and a succeeded one; trials: one running, two succeeded, one
/// failed.
fn store_with_runs(dir: &std::path::Path) -> Store {
    let store = Store::open(&dir.join("store.db")).unwrap();
    let spec = RunSpec::from_toml_str(&common::iris_spec("metrics", 3, 1), dir).unwrap();
    for run in ["queued", "running", "interrupted", "succeeded"] {
        store.create_run(run, &spec).unwrap();
    }
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let gone = Owner {
        pid: exited.id(),
        ..Owner::current()
    };
    exited.wait().unwrap();
    store.claim("running", &Owner::current()).unwrap();
    store.claim("interrupted", &gone).unwrap();
    store.claim("succeeded", &Owner::current()).unwrap();
    store
        .trial_started("running", "running-t000", 0, 1)
        .unwrap();
    for (index, status) in [
        (0, TrialState::Succeeded),
        (1, TrialState::Succeeded),
        (2, TrialState::Failed),
    ] {
        store
            .record_trial(&trial("succeeded", index, status), None)
            .unwrap();
    }
    store
        .finish_run("succeeded", RunEnd::Succeeded, None)
        .unwrap();
    store
}

fn trial(run_id: &str, index: u32, status: TrialState) -> TrialRecord {
    TrialRecord {
        run_id: run_id.into(),
        trial_id: format!("{run_id}-t{index:03}"),
        index,
        seed: 1,
        status,
        metrics: json!({"val_accuracy": 0.5}),
        parameters: json!({}),
        duration_ms: 1,
        artifact_uri: None,
        error: None,
        attempts: 1,
        started_at: None,
        finished_at: None,
        mlflow_run_id: None,
        placement: None,
    }
}

/// A strict reader of the Prometheus text exposition format (version 0.0.4): every
/// family has `# HELP` and `# TYPE` before its samples, every sample belongs to the
/// family above it, label names and values are well formed, and each histogram's
/// buckets rise in `le` and count, end with `+Inf`, and agree with `_count`.
mod exposition {
    use std::collections::BTreeMap;

    /// One sample line.
    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    /// One metric family.
    #[derive(Debug, Default)]
    pub struct Family {
        pub help: Option<String>,
        pub kind: String,
        pub samples: Vec<Sample>,
    }

    /// The families of `text`, by name, or what is wrong with it.
    pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut current: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("no help text".into()))?;
                check_name(name).map_err(at)?;
                let family = families.entry(name.to_owned()).or_default();
                if family.help.replace(help.to_owned()).is_some() || !family.samples.is_empty() {
                    return Err(at("HELP repeated or after samples".into()));
                }
                current = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
                let family = families.entry(name.to_owned()).or_default();
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !known.contains(&kind) || !family.kind.is_empty() || !family.samples.is_empty() {
                    return Err(at("unknown, repeated or late TYPE".into()));
                }
                family.kind = kind.to_owned();
                current = Some(name.to_owned());
            } else if line.starts_with('#') {
                return Err(at("a comment the exporter does not write".into()));
            } else {
                let sample = parse_sample(line).map_err(at)?;
                let name = current
                    .as_deref()
                    .ok_or_else(|| at("sample before TYPE".into()))?;
                let family = families.get_mut(name).expect("the current family exists");
                let suffixes: &[&str] = match family.kind.as_str() {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "" => return Err(at("sample before TYPE".into())),
                    _ => &[""],
                };
                let belongs = suffixes.iter().any(|s| sample.name == format!("{name}{s}"));
                if !belongs {
                    return Err(at(format!("sample outside its family {name}")));
                }
                family.samples.push(sample);
            }
        }
        for (name, family) in &families {
            if family.help.is_none() || family.kind.is_empty() {
                return Err(format!("{name}: no HELP or no TYPE"));
            }
            if family.kind == "histogram" {
                check_histogram(name, family)?;
            }
        }
        Ok(families)
    }

    /// The value of the sample of `name` whose labels are exactly `labels`.
    pub fn value(
        families: &BTreeMap<String, Family>,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name && s.labels == wanted);
        let sample = found.next()?;
        assert!(found.next().is_none(), "two samples of {name} {labels:?}");
        Some(sample.value)
    }

    fn check_name(name: &str) -> Result<(), String> {
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        ok.then_some(())
            .ok_or_else(|| format!("bad metric name {name:?}"))
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value after the name")?;
        let name = &line[..name_end];
        check_name(name)?;
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = inner.split_once("=\"").ok_or("a label without =\"")?;
                if key.is_empty()
                    || key.starts_with(|c: char| c.is_ascii_digit())
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("bad label name {key:?}"));
                }
                let (value, after) = label_value(after)?;
                if labels.insert(key.to_owned(), value).is_some() {
                    return Err(format!("label {key} repeated"));
                }
                inner = after.strip_prefix(',').unwrap_or(after);
                if !after.starts_with([',', '}']) {
                    return Err("labels not separated by commas".into());
                }
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
        };
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    /// A quoted label value (after its opening quote) with `\\`, `\"` and `\n` escapes,
    /// and what follows its closing quote.
    fn label_value(text: &str) -> Result<(String, &str), String> {
        let mut value = String::new();
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((value, &text[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '\n' => return Err("a raw newline in a label value".into()),
                c => value.push(c),
            }
        }
        Err("an unterminated label value".into())
    }

    fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
        let series = |s: &Sample| {
            let mut labels = s.labels.clone();
            labels.remove("le");
            labels
        };
        let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut sums = BTreeMap::new();
        for sample in &family.samples {
            if sample.name.ends_with("_bucket") {
                let le = sample
                    .labels
                    .get("le")
                    .ok_or(format!("{name}: a bucket without le"))?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("{name}: le {le:?}"))?
                };
                buckets
                    .entry(series(sample))
                    .or_default()
                    .push((le, sample.value));
            } else if sample.name.ends_with("_count") {
                counts.insert(series(sample), sample.value);
            } else {
                sums.insert(series(sample), sample.value);
            }
        }
        for (labels, series_buckets) in &buckets {
            let rising = series_buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let last = series_buckets.last().expect("at least one bucket");
            if !rising || last.0 != f64::INFINITY {
                return Err(format!("{name} {labels:?}: buckets {series_buckets:?}"));
            }
            if counts.get(labels) != Some(&last.1) || !sums.contains_key(labels) {
                return Err(format!("{name} {labels:?}: +Inf is not _count, or no _sum"));
            }
        }
        if counts.len() != buckets.len() || sums.len() != buckets.len() {
            return Err(format!("{name}: a _count or _sum without buckets"));
        }
        Ok(())
    }
}
