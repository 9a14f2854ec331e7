//! The one table of a run spec's checked values, shared with the Python service:
//! `python/cerebros_service/nas/spec_rules.json`, embedded here and loaded there by
//! `cerebros_service.nas.rules`. It lists, for each section (`search_space`, `budget`,
//! `search`, `dataset_options`), every key's kind, bounds and default, the activations the
//! trainer implements, the search-space pairs that must be ordered, the scikit-learn datasets
//! and the synthetic generators' options.
//! `tests/fixtures/spec_cases.json` holds good and bad values both languages are tested
//! against, so the host never accepts a spec the service refuses.

use crate::core::error::{BridgeError, ErrorClass, Result};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../../../python/cerebros_service/nas/spec_rules.json");

/// The table (see the module docs).
#[derive(Debug, Deserialize)]
pub struct Rules {
    /// The top-level `trainer` key: which trainer trains the trials.
    pub trainer: Rule,
    /// Activation names the trainer implements.
    pub activations: Vec<String>,
    /// The search space's keys.
    pub search_space: BTreeMap<String, Rule>,
    /// Pairs of search-space keys whose first value must not exceed the second.
    pub ordered: Vec<(String, String)>,
    /// The budget's keys.
    pub budget: BTreeMap<String, Rule>,
    /// The search's keys (strategy and pruner, DESIGN §13).
    pub search: BTreeMap<String, Rule>,
    /// The dataset options' keys.
    pub dataset_options: BTreeMap<String, Rule>,
    /// What each objective needs and its natural direction.
    pub objectives: BTreeMap<String, Objective>,
    /// The task (`classification` or `regression`) of each `sklearn:` dataset.
    pub sklearn_datasets: BTreeMap<String, String>,
    /// The options each `synthetic:NAME` generator accepts, with their defaults (NAME is
    /// the generator's task).
    pub synthetic_datasets: BTreeMap<String, Map<String, Value>>,
    /// The most values (`samples * features`) a synthetic dataset may hold.
    pub synthetic_max_values: u64,
}

/// An objective a run can optimise.
#[derive(Debug, Deserialize)]
pub struct Objective {
    /// The task of the datasets it applies to (`None`: either).
    pub task: Option<String>,
    /// `maximize` or `minimize`: the direction used when a spec names none.
    pub direction: String,
}

/// What one key accepts.
#[derive(Debug, Deserialize)]
pub struct Rule {
    /// The kind of value.
    pub kind: Kind,
    /// Inclusive lower bound.
    pub minimum: Option<f64>,
    /// Inclusive upper bound.
    pub maximum: Option<f64>,
    /// Exclusive lower bound.
    pub exclusive_minimum: Option<f64>,
    /// Exclusive upper bound.
    pub exclusive_maximum: Option<f64>,
    /// The allowed values of a `choice`.
    #[serde(default)]
    pub values: Vec<String>,
    /// The value used when the key is absent.
    pub default: Option<Value>,
}

/// The kinds of value a key may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An integer, or a float with an integral value; never a bool.
    Integer,
    /// A finite number; never a bool.
    Number,
    /// A non-empty string.
    String,
    /// One of `values`.
    Choice,
    /// An activation name or a non-empty list of them (case and blanks ignored).
    Activations,
    /// A `[low, high]` pair of numbers with `low <= high`.
    Range,
}

/// The table, parsed once.
pub fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| serde_json::from_str(TABLE).expect("spec_rules.json is valid"))
}

impl Rules {
    /// The rules of a section by name.
    fn section(&self, section: Section) -> &BTreeMap<String, Rule> {
        match section {
            Section::SearchSpace => &self.search_space,
            Section::Budget => &self.budget,
            Section::Search => &self.search,
            Section::DatasetOptions => &self.dataset_options,
        }
    }

    /// The default of an integer key of the budget.
    pub fn budget_default(&self, key: &str) -> u64 {
        self.budget
            .get(key)
            .and_then(|r| r.default.as_ref())
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("spec_rules.json: budget.{key} has no integer default"))
    }

    /// The default of a string key of the search.
    pub fn search_default(&self, key: &str) -> String {
        self.search
            .get(key)
            .and_then(|r| r.default.as_ref())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("spec_rules.json: search.{key} has no string default"))
            .to_owned()
    }
}

/// A section of a spec checked by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[search_space]`.
    SearchSpace,
    /// `[budget]`.
    Budget,
    /// `[search]`.
    Search,
    /// `[dataset_options]`.
    DatasetOptions,
}

impl Section {
    /// The section's key in a spec.
    pub fn name(self) -> &'static str {
        match self {
            Section::SearchSpace => "search_space",
            Section::Budget => "budget",
            Section::Search => "search",
            Section::DatasetOptions => "dataset_options",
        }
    }
}

/// Checks the table `raw` of `section` and returns it normalised (integral floats as
/// integers, activations lower-cased without repeats); absent keys stay absent, a `null`
/// counts as absent. Errors are `contract` errors naming the key (`budget.trials`).
pub fn check_section(section: Section, raw: &Map<String, Value>) -> Result<Map<String, Value>> {
    let table = rules();
    let rules = table.section(section);
    let prefix = section.name();
    if let Some(unknown) = raw.keys().find(|k| !rules.contains_key(*k)) {
        let known: Vec<&str> = rules.keys().map(String::as_str).collect();
        return Err(key_error(
            &format!("{prefix}.{unknown}"),
            &format!(
                "is not a {prefix} key; expected one of {}",
                known.join(", ")
            ),
        ));
    }
    let mut checked = Map::new();
    for (key, value) in raw {
        if !value.is_null() {
            let value = check_value(&rules[key], value, &format!("{prefix}.{key}"))?;
            checked.insert(key.clone(), value);
        }
    }
    for (low, high) in &table.ordered {
        let (Some(lo), Some(hi)) = (
            value_or_default(&checked, rules, low),
            value_or_default(&checked, rules, high),
        ) else {
            continue;
        };
        if lo > hi {
            return Err(key_error(
                &format!("{prefix}.{low}"),
                &format!("= {lo} is above {prefix}.{high} = {hi}"),
            ));
        }
    }
    Ok(checked)
}

fn value_or_default(
    checked: &Map<String, Value>,
    rules: &BTreeMap<String, Rule>,
    key: &str,
) -> Option<f64> {
    let rule = rules.get(key)?;
    checked
        .get(key)
        .or(rule.default.as_ref())
        .and_then(Value::as_f64)
}

/// `value` checked against one rule, normalised.
pub fn check_value(rule: &Rule, value: &Value, key: &str) -> Result<Value> {
    match rule.kind {
        Kind::Integer => {
            let n = integer(value).ok_or_else(|| {
                key_error(key, &format!("must be an integer, got {}", shown(value)))
            })?;
            bounded(rule, n as f64, key)?;
            i64::try_from(n)
                .map(Value::from)
                .or_else(|_| u64::try_from(n).map(Value::from))
                .map_err(|_| key_error(key, &format!("is out of range, got {n}")))
        }
        Kind::Number => {
            let x = number(value).ok_or_else(|| {
                key_error(key, &format!("must be a number, got {}", shown(value)))
            })?;
            bounded(rule, x, key)?;
            Ok(value.clone())
        }
        Kind::String => match value {
            Value::String(s) if !s.is_empty() => Ok(value.clone()),
            _ => Err(key_error(
                key,
                &format!("must be a non-empty string, got {}", shown(value)),
            )),
        },
        Kind::Choice => match value.as_str() {
            Some(s) if rule.values.iter().any(|v| v == s) => Ok(value.clone()),
            _ => Err(key_error(
                key,
                &format!(
                    "must be one of {}, got {}",
                    rule.values.join(", "),
                    shown(value)
                ),
            )),
        },
        Kind::Activations => activations(value, key),
        Kind::Range => range(rule, value, key),
    }
}

/// An integer: a JSON integer, or a float with an integral value (as `3.0`).
fn integer(value: &Value) -> Option<i128> {
    let Value::Number(n) = value else { return None };
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let x = n.as_f64()?;
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 1e30).then_some(x as i128)
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().filter(|x| x.is_finite())
}

fn bounded(rule: &Rule, x: f64, key: &str) -> Result<()> {
    if within(rule, x) {
        Ok(())
    } else {
        Err(key_error(
            key,
            &format!("must be {}, got {x}", describe(rule)),
        ))
    }
}

fn within(rule: &Rule, x: f64) -> bool {
    rule.minimum.is_none_or(|m| x >= m)
        && rule.maximum.is_none_or(|m| x <= m)
        && rule.exclusive_minimum.is_none_or(|m| x > m)
        && rule.exclusive_maximum.is_none_or(|m| x < m)
}

/// The interval a number must lie in: `in [0, 1]`, `in (0, 1)`, `at least 1`.
fn describe(rule: &Rule) -> String {
    let low = rule.minimum.or(rule.exclusive_minimum);
    let high = rule.maximum.or(rule.exclusive_maximum);
    match (low, high) {
        (Some(low), Some(high)) => {
            let left = if rule.minimum.is_some() { "[" } else { "(" };
            let right = if rule.maximum.is_some() { "]" } else { ")" };
            format!("in {left}{low}, {high}{right}")
        }
        (Some(low), None) if rule.minimum.is_some() => format!("at least {low}"),
        (Some(low), None) => format!("greater than {low}"),
        (None, Some(high)) if rule.maximum.is_some() => format!("at most {high}"),
        (None, Some(high)) => format!("less than {high}"),
        (None, None) => "a number".into(),
    }
}

fn activations(value: &Value, key: &str) -> Result<Value> {
    let names: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        _ => {
            return Err(key_error(
                key,
                &format!(
                    "must be an activation name or a non-empty list of them, got {}",
                    shown(value)
                ),
            ))
        }
    };
    let known = &rules().activations;
    let mut result: Vec<Value> = Vec::new();
    for name in names {
        let normal = name.as_str().map(|s| s.trim().to_lowercase());
        let Some(normal) = normal.filter(|n| known.contains(n)) else {
            return Err(key_error(
                key,
                &format!(
                    "unsupported activation {} (supported: {})",
                    shown(name),
                    known.join(", ")
                ),
            ));
        };
        let normal = Value::String(normal);
        if !result.contains(&normal) {
            result.push(normal);
        }
    }
    Ok(Value::Array(result))
}

fn range(rule: &Rule, value: &Value, key: &str) -> Result<Value> {
    let pair: Option<Vec<f64>> = value
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| a.iter().map(number).collect());
    let Some([low, high]) = pair.as_deref().map(|p| [p[0], p[1]]) else {
        return Err(key_error(
            key,
            &format!(
                "must be a [low, high] pair of numbers, got {}",
                shown(value)
            ),
        ));
    };
    if low > high {
        return Err(key_error(
            key,
            &format!("must satisfy low <= high, got [{low}, {high}]"),
        ));
    }
    for (name, x) in [("low", low), ("high", high)] {
        if !within(rule, x) {
            return Err(key_error(
                key,
                &format!("{name} must be {}, got [{low}, {high}]", describe(rule)),
            ));
        }
    }
    let pair = [low, high].map(|x| Number::from_f64(x).map_or(Value::Null, Value::Number));
    Ok(Value::Array(pair.to_vec()))
}

/// A value for a message, cut to a readable length.
pub(super) fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A `contract` error naming `key` (in the message and in `details.key`).
pub(super) fn key_error(key: &str, problem: &str) -> BridgeError {
    BridgeError::new(ErrorClass::Contract, format!("{key} {problem}")).with_detail("key", key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_and_has_every_default_it_needs() {
        let rules = rules();
        assert_eq!(rules.trainer.default, Some(Value::from("numpy")));
        assert!(rules.activations.contains(&"relu".to_string()));
        // trial_memory_mb is optional: no memory is reserved unless a spec asks.
        for key in rules.budget.keys().filter(|k| *k != "trial_memory_mb") {
            rules.budget_default(key);
        }
        for key in rules.search.keys() {
            rules.search_default(key);
        }
        for (low, high) in &rules.ordered {
            assert!(rules.search_space[low].default.is_some());
            assert!(rules.search_space[high].default.is_some());
        }
    }

    #[test]
    fn the_shared_cases_are_decided_as_the_service_decides_them() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/spec_cases.json"
        );
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let section = match case["section"].as_str().unwrap() {
                "search_space" => Section::SearchSpace,
                "budget" => Section::Budget,
                "search" => Section::Search,
                "dataset_options" => Section::DatasetOptions,
                other => panic!("unknown section {other}"),
            };
            let outcome = check_section(section, case["value"].as_object().unwrap());
            match (outcome, case["error"].as_str()) {
                (Ok(_), None) => {}
                (Err(err), Some(key)) => assert_eq!(err.details["key"], key, "{case}: {err}"),
                (outcome, _) => panic!("{case}: {outcome:?}"),
            }
        }
    }
}
