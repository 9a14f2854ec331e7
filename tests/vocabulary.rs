//! One vocabulary for both languages: the names the host's types define (error classes,
//! contract names, trial and run statuses, objective directions) are exactly those of
//! `python/cerebros_service/vocabulary.json`, the list the Python service reads. Its twin,
//! `tests/python/test_vocabulary.py`, checks every name the Python side uses against the
//! same file, so a name changed on either side alone fails one of the two.

use cerebros_bridge::core::contracts::{RunStatus, TrialStatus, CONTRACT_NAMES};
use cerebros_bridge::nas::spec::Direction;
use cerebros_bridge::ErrorClass;
use serde_json::Value;

const VOCABULARY: &str = include_str!("../python/cerebros_service/vocabulary.json");

/// The list `key` of the vocabulary file.
fn listed(key: &str) -> Vec<String> {
    let table: Value = serde_json::from_str(VOCABULARY).expect("vocabulary.json is JSON");
    serde_json::from_value(table[key].clone())
        .unwrap_or_else(|err| panic!("vocabulary.json: {key} is not a list of names: {err}"))
}

fn names<const N: usize>(items: [impl std::fmt::Display; N]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

#[test]
fn the_error_classes_are_the_listed_ones() {
    assert_eq!(names(ErrorClass::ALL), listed("error_classes"));
}

#[test]
fn the_contract_names_are_the_listed_ones() {
    assert_eq!(names(CONTRACT_NAMES), listed("contracts"));
}

#[test]
fn the_trial_statuses_are_the_listed_ones() {
    assert_eq!(names(TrialStatus::ALL), listed("trial_statuses"));
}

#[test]
fn the_run_statuses_are_the_listed_ones() {
    assert_eq!(names(RunStatus::ALL), listed("run_statuses"));
}

#[test]
fn the_directions_are_the_listed_ones() {
    let ours: Vec<String> = Direction::ALL
        .iter()
        .map(|d| d.as_str().to_owned())
        .collect();
    assert_eq!(ours, listed("directions"));
}

#[test]
fn every_listed_name_parses_as_the_hosts_type() {
    for name in listed("error_classes") {
        assert_eq!(ErrorClass::parse(&name).map(|c| c.to_string()), Some(name));
    }
    for name in listed("trial_statuses") {
        let status: TrialStatus = serde_json::from_value(Value::String(name.clone())).unwrap();
        assert_eq!(status.as_str(), name);
    }
    for name in listed("run_statuses") {
        let status: RunStatus = serde_json::from_value(Value::String(name.clone())).unwrap();
        assert_eq!(status.as_str(), name);
    }
    for name in listed("directions") {
        let direction: Direction = serde_json::from_value(Value::String(name.clone())).unwrap();
        assert_eq!(direction.as_str(), name);
    }
}
