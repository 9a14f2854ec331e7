use super::*;
use serde_json::json;

fn object(value: Value) -> Object {
    value.as_object().unwrap().clone()
}

fn round_trip<T: ContractV1 + PartialEq + fmt::Debug>(contract: T) {
    let value = contract.to_value();
    assert_eq!(value["contract"], T::NAME);
    assert_eq!(value["version"], 1);
    assert_eq!(T::from_value(&value).unwrap(), contract);
    let parsed = validate_contract(&value).unwrap();
    assert_eq!(parsed.name(), T::NAME);
    assert_eq!(parsed.to_value(), value);
}

#[test]
fn run_started_round_trips() {
    let mut c = RunStartedV1::new("r1", "2025-01-01T00:00:00Z");
    c.dataset_id = Some("sklearn:digits".into());
    c.search_space = object(json!({"minimum_levels": 1}));
    c.budget = object(json!({"trials": 4}));
    c.parameters = object(json!({"seed": 42}));
    c.correlation_id = Some("corr".into());
    c.pulse_id = Some("p1".into());
    c.extra = object(json!({"note": "hi"}));
    round_trip(c);
}

#[test]
fn trial_requested_round_trips() {
    let mut c = TrialRequestedV1::new("r1", "t1", 3, u64::MAX);
    c.dataset_id = Some("sklearn:iris".into());
    c.budget = object(json!({"epochs": 2}));
    round_trip(c);
}

#[test]
fn trial_reported_round_trips() {
    let mut c = TrialReportedV1::new("r1", "t1", TrialStatus::Succeeded);
    c.metrics = object(json!({"val_accuracy": 0.93}));
    c.parameters = object(json!({"levels": 2}));
    c.artifact_uri = Some("file:///tmp/a".into());
    c.duration_ms = 1234;
    c.rank = Some(1);
    c.warnings = vec!["slow".into()];
    c.mlflow_run_id = Some("m1".into());
    c.candidate_id = Some("c1".into());
    c.pulse_id = Some("p1".into());
    round_trip(c);
}

#[test]
fn run_finalized_round_trips() {
    let mut c = RunFinalizedV1::new("r1", RunStatus::Failed);
    c.metrics = object(json!({"best": 0.5}));
    c.best_trial_id = Some("t1".into());
    c.duration_ms = 10;
    c.returncode = Some(-9);
    c.artifact_refs = vec![json!("file:///a"), json!({"uri": "b"})];
    c.warnings = vec!["w".into()];
    c.stdout_excerpt = Some("out".into());
    c.payload = object(json!({"x": 1}));
    c.pulse_id = Some("p1".into());
    round_trip(c);
}

#[test]
fn constructors_serialize_only_the_required_fields() {
    let value = RunStartedV1::new("r1", "2025-01-01T00:00:00Z").to_value();
    assert_eq!(
        value,
        json!({"contract": "run_started", "version": 1, "run_id": "r1",
               "timestamp": "2025-01-01T00:00:00Z", "objective": "accuracy"})
    );
    let value = TrialReportedV1::new("r1", "t1", TrialStatus::Skipped).to_value();
    assert_eq!(
        value,
        json!({"contract": "trial_reported", "version": 1, "trial_id": "t1",
               "run_id": "r1", "status": "skipped", "duration_ms": 0})
    );
}

#[test]
fn defaults_fill_optional_fields() {
    let value = json!({"contract": "run_started", "version": 1, "run_id": "r", "timestamp": "t"});
    let Contract::RunStarted(c) = validate_contract(&value).unwrap() else {
        panic!("wrong contract");
    };
    assert_eq!(c.objective, "accuracy");
    assert!(c.search_space.is_empty() && c.extra.is_empty());
    assert_eq!(c.dataset_id, None);
}

#[test]
fn statuses_use_snake_case() {
    for s in TrialStatus::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    for s in [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Timeout,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.to_string()));
    }
}

fn error_of(value: Value) -> BridgeError {
    let err = validate_contract(&value).unwrap_err();
    assert_eq!(err.class, ErrorClass::Contract);
    err
}

#[test]
fn unknown_contract_names_the_expected_ones() {
    let err = error_of(json!({"contract": "foo", "version": 1}));
    assert_eq!(
        err.message,
        "unknown contract \"foo\": expected one of run_started, trial_requested, trial_reported, run_finalized"
    );
}

#[test]
fn unknown_version_is_rejected() {
    let err = error_of(json!({"contract": "run_started", "version": 2, "run_id": "r9"}));
    assert_eq!(
        err.message,
        "contract run_started version 2 is not supported: expected version 1"
    );
    assert_eq!(err.run_id.as_deref(), Some("r9"));
}

#[test]
fn missing_or_mistyped_header_is_rejected() {
    let err = error_of(json!([1]));
    assert_eq!(err.message, "a contract must be a JSON object, got array");
    let err = error_of(json!({"version": 1}));
    assert!(err
        .message
        .starts_with("a contract needs a string field \"contract\""));
    let err = error_of(json!({"contract": 5, "version": 1}));
    assert!(err
        .message
        .starts_with("a contract needs a string field \"contract\""));
    let err = error_of(json!({"contract": "run_finalized"}));
    assert_eq!(
        err.message,
        "contract run_finalized needs an integer field \"version\": expected version 1"
    );
    let err = error_of(json!({"contract": "run_finalized", "version": "1"}));
    assert!(err.message.contains("needs an integer field \"version\""));
    let err = error_of(json!({"contract": "run_finalized", "version": 1.0}));
    assert!(err.message.contains("needs an integer field \"version\""));
}

#[test]
fn missing_field_uses_serde_message() {
    let err = error_of(json!({"contract": "run_started", "version": 1, "timestamp": "t"}));
    assert_eq!(
        err.message,
        "invalid run_started v1: missing field `run_id`"
    );
}

#[test]
fn invalid_fields_are_rejected() {
    let err = error_of(json!({"contract": "trial_reported", "version": 1,
                              "run_id": "r", "trial_id": "t", "status": "great"}));
    assert!(
        err.message
            .starts_with("invalid trial_reported v1: unknown variant `great`"),
        "{}",
        err.message
    );
    let err = error_of(json!({"contract": "run_finalized", "version": 1,
                              "run_id": "r", "status": "failed", "colour": 1}));
    assert!(
        err.message
            .starts_with("invalid run_finalized v1: unknown field `colour`"),
        "{}",
        err.message
    );
    let err = error_of(json!({"contract": "trial_requested", "version": 1,
                              "run_id": "r", "trial_id": "t", "index": -1, "seed": 1}));
    assert!(
        err.message
            .starts_with("invalid trial_requested v1: invalid value"),
        "{}",
        err.message
    );
}

#[test]
fn from_value_checks_a_present_header() {
    let value =
        json!({"contract": "run_finalized", "version": 1, "run_id": "r", "status": "failed"});
    let err = RunStartedV1::from_value(&value).unwrap_err();
    assert_eq!(
        err.message,
        "expected contract run_started, got run_finalized"
    );
    let value = json!({"run_id": "r", "trial_id": "t", "status": "failed", "version": 3});
    let err = TrialReportedV1::from_value(&value).unwrap_err();
    assert_eq!(
        err.message,
        "contract trial_reported version 3 is not supported: expected version 1"
    );
}

#[test]
fn contract_accessors() {
    let c: Contract = TrialRequestedV1::new("r7", "t", 0, 1).into();
    assert_eq!(c.name(), "trial_requested");
    assert_eq!(c.run_id(), "r7");
    let c: Contract = RunFinalizedV1::new("r8", RunStatus::Succeeded).into();
    assert_eq!((c.name(), c.run_id()), ("run_finalized", "r8"));
}

#[test]
fn ops_map_to_contracts() {
    assert_eq!(contract_for_op("start_run"), Some("run_started"));
    assert_eq!(contract_for_op("run_trial"), Some("trial_requested"));
    assert_eq!(contract_for_op("record_trial"), Some("trial_reported"));
    assert_eq!(contract_for_op("finalize_run"), Some("run_finalized"));
    assert_eq!(contract_for_op("health"), None);
}
