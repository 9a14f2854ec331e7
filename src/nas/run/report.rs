//! Checking a `run_trial` reply before it reaches the store (DESIGN §10: replies are data
//! to check). The host records a reply under the ids *it* asked for; a reply that names
//! other ids, reports a metric that is not a finite number, lacks the objective of a
//! succeeded trial, reports an accuracy outside [0, 1] or an artifact outside the run's
//! artifacts folder is refused as a `contract` error, which makes the trial `failed`.

use crate::core::contracts::{TrialReportedV1, TrialStatus};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::artifacts::contained_file;
use crate::nas::store::ArtifactRecord;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The metric key that holds per-epoch curves (`{"val_loss": [..], ...}`).
const CURVES: &str = "curve";

/// Metrics whose name ends with this are fractions, in [0, 1].
const BOUNDED_SUFFIX: &str = "accuracy";

/// What the host asked for, against which a reply is checked.
pub(super) struct Expected<'a> {
    /// The run the trial belongs to.
    pub run_id: &'a str,
    /// The trial.
    pub trial_id: &'a str,
    /// The run's objective metric (required in a succeeded trial).
    pub objective: &'a str,
    /// The run's artifacts folder.
    pub run_folder: &'a Path,
}

/// A reply that passed every check, in typed values.
#[derive(Debug)]
pub(super) struct CheckedReport {
    /// How the trial ended.
    pub status: TrialStatus,
    /// Its metrics.
    pub metrics: Metrics,
    /// The sampled architecture and hyper-parameters (free-form, shown as reported).
    pub parameters: Map<String, Value>,
    /// The trained model, when the reply named one.
    pub artifact: Option<ArtifactRecord>,
    /// Why a trial the service reports as not succeeded did not: its warnings.
    pub warnings: Vec<String>,
}

/// A trial's metrics: finite numbers by name, and per-epoch curves whose entries are
/// finite numbers or `null` (an epoch whose value was not finite).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Metrics {
    values: BTreeMap<String, Number>,
    curves: BTreeMap<String, Vec<Option<Number>>>,
}

impl Metrics {
    /// The metrics as stored: the values by name, the curves under `curve`.
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), Value::Number(v.clone())))
            .collect();
        if !self.curves.is_empty() {
            let curves = self
                .curves
                .iter()
                .map(|(k, points)| {
                    let points = points
                        .iter()
                        .map(|p| p.clone().map_or(Value::Null, Value::Number))
                        .collect();
                    (k.clone(), Value::Array(points))
                })
                .collect();
            map.insert(CURVES.into(), Value::Object(curves));
        }
        Value::Object(map)
    }
}

/// Checks `report` against what the host asked for.
pub(super) fn check_report(
    report: &TrialReportedV1,
    expected: &Expected<'_>,
) -> Result<CheckedReport> {
    for (key, named, asked) in [
        ("run_id", &report.run_id, expected.run_id),
        ("trial_id", &report.trial_id, expected.trial_id),
    ] {
        if named != asked {
            return Err(refused(
                key,
                format!("the reply names {key} {named:?}, but the host asked for {asked:?}"),
            ));
        }
    }
    let metrics = check_metrics(&report.metrics)?;
    if report.status == TrialStatus::Succeeded && !metrics.values.contains_key(expected.objective) {
        return Err(refused(
            &format!("metrics.{}", expected.objective),
            format!(
                "a succeeded trial must report the objective {:?}",
                expected.objective
            ),
        ));
    }
    let artifact = match &report.artifact_uri {
        Some(uri) => Some(check_artifact(
            uri,
            &report.parameters,
            expected.run_folder,
        )?),
        None => None,
    };
    Ok(CheckedReport {
        status: report.status,
        metrics,
        parameters: report.parameters.clone(),
        artifact,
        warnings: report.warnings.clone(),
    })
}

fn check_metrics(raw: &Map<String, Value>) -> Result<Metrics> {
    let mut metrics = Metrics::default();
    for (name, value) in raw {
        if name == CURVES {
            metrics.curves = check_curves(value)?;
        } else {
            metrics.values.insert(
                name.clone(),
                metric_value(&format!("metrics.{name}"), value)?,
            );
        }
    }
    Ok(metrics)
}

fn check_curves(value: &Value) -> Result<BTreeMap<String, Vec<Option<Number>>>> {
    let key = format!("metrics.{CURVES}");
    let Value::Object(curves) = value else {
        return Err(refused(&key, "must be an object of lists".into()));
    };
    let mut out = BTreeMap::new();
    for (name, points) in curves {
        let key = format!("{key}.{name}");
        let Value::Array(points) = points else {
            return Err(refused(&key, "must be a list".into()));
        };
        let points = points
            .iter()
            .map(|p| match p {
                Value::Null => Ok(None),
                p => metric_value(&key, p).map(Some),
            })
            .collect::<Result<_>>()?;
        out.insert(name.clone(), points);
    }
    Ok(out)
}

/// A metric value: a finite number (never a bool or a string), in [0, 1] for an
/// accuracy. JSON numbers the bridge hands over are always finite.
fn metric_value(key: &str, value: &Value) -> Result<Number> {
    let Value::Number(number) = value else {
        return Err(refused(
            key,
            format!("must be a finite number, got {value}"),
        ));
    };
    let bounded = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .ends_with(BOUNDED_SUFFIX);
    match number.as_f64() {
        Some(x) if !x.is_finite() => Err(refused(key, format!("must be finite, got {x}"))),
        Some(x) if bounded && !(0.0..=1.0).contains(&x) => Err(refused(
            key,
            format!("is an accuracy, so in [0, 1], got {x}"),
        )),
        Some(_) => Ok(number.clone()),
        None => Err(refused(
            key,
            format!("must be a finite number, got {number}"),
        )),
    }
}

/// The artifact of a reply, when its file lies inside the run's folder; its size is the
/// file's own, its sha256 the reported one when it is 64 hex digits.
fn check_artifact(
    uri: &str,
    parameters: &Map<String, Value>,
    folder: &Path,
) -> Result<ArtifactRecord> {
    let real = contained_file(uri, folder).map_err(|why| refused("artifact_uri", why))?;
    let bytes = std::fs::metadata(&real).ok().map(|m| m.len());
    let sha256 = parameters
        .get("artifact")
        .and_then(|a| a.get("sha256"))
        .and_then(Value::as_str)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Ok(ArtifactRecord {
        kind: "model".into(),
        uri: uri.to_owned(),
        sha256,
        bytes,
    })
}

fn refused(key: &str, why: String) -> BridgeError {
    BridgeError::new(
        ErrorClass::Contract,
        format!("run_trial reply refused: {key}: {why}"),
    )
    .with_op("run_trial")
    .with_detail("key", key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(metrics: Value) -> TrialReportedV1 {
        let mut report = TrialReportedV1::new("r1", "r1-t000", TrialStatus::Succeeded);
        report.metrics = metrics.as_object().cloned().unwrap();
        report
    }

    fn check(report: &TrialReportedV1) -> Result<CheckedReport> {
        let expected = Expected {
            run_id: "r1",
            trial_id: "r1-t000",
            objective: "val_accuracy",
            run_folder: Path::new("/nonexistent"),
        };
        check_report(report, &expected)
    }

    #[test]
    fn good_metrics_keep_their_shape() {
        let metrics = json!({"val_accuracy": 0.9, "params": 120,
                             "curve": {"val_loss": [1.5, null, 0.5]}});
        let checked = check(&report(metrics.clone())).unwrap();
        assert_eq!(checked.metrics.to_json(), metrics);
    }

    #[test]
    fn lies_are_refused_naming_the_key() {
        let cases = [
            (json!({"val_accuracy": "high"}), "metrics.val_accuracy"),
            (json!({"val_accuracy": true}), "metrics.val_accuracy"),
            (json!({"val_accuracy": 7}), "metrics.val_accuracy"),
            (json!({"val_accuracy": -0.1}), "metrics.val_accuracy"),
            (json!({"val_accuracy": 0.5, "loss": null}), "metrics.loss"),
            (json!({"val_loss": 0.5}), "metrics.val_accuracy"),
            (json!({"val_accuracy": 0.5, "curve": [1]}), "metrics.curve"),
            (
                json!({"val_accuracy": 0.5, "curve": {"val_accuracy": [0.5, 2]}}),
                "metrics.curve.val_accuracy",
            ),
        ];
        for (metrics, key) in cases {
            let err = check(&report(metrics.clone())).unwrap_err();
            assert_eq!(err.class, ErrorClass::Contract, "{metrics}");
            assert_eq!(err.details["key"], key, "{metrics}: {}", err.message);
        }
    }

    #[test]
    fn other_ids_are_refused() {
        let mut lie = report(json!({"val_accuracy": 0.5}));
        lie.run_id = "r0".into();
        assert_eq!(check(&lie).unwrap_err().details["key"], "run_id");
        let mut lie = report(json!({"val_accuracy": 0.5}));
        lie.trial_id = "r1-t001".into();
        assert_eq!(check(&lie).unwrap_err().details["key"], "trial_id");
    }

    #[test]
    fn a_failed_trial_needs_no_objective() {
        let mut failed = report(json!({"epochs_run": 3}));
        failed.status = TrialStatus::Failed;
        assert!(check(&failed).is_ok());
    }
}
