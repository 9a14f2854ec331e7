//! The options of the `synthetic:classification` and `synthetic:regression` datasets
//! (scikit-learn's generators, drawn by the service from the run seed), checked together
//! as the service checks them (`cerebros_service.nas.synthetic`): each option one by one
//! is the shared table's business ([`rules`](super::rules)), the rules across them are
//! here. Every error names its key.

use super::rules::{key_error, rules};
use crate::core::error::Result;
use serde_json::{Map, Value};

/// Two Gaussian clusters per class (scikit-learn's default).
const CLUSTERS_PER_CLASS: u64 = 2;

/// Whether `key` is an option of some synthetic generator.
pub fn is_synthetic_option(key: &str) -> bool {
    rules()
        .synthetic_datasets
        .values()
        .any(|options| options.contains_key(key))
}

/// Checks the options of generator `name` (each already checked by the table) and
/// returns the generator's task (its name). `dataset` names an unknown generator.
pub fn check(name: &str, options: &Map<String, Value>) -> Result<&'static str> {
    let generators = &rules().synthetic_datasets;
    let Some((task, defaults)) = generators.get_key_value(name) else {
        let known: Vec<&str> = generators.keys().map(String::as_str).collect();
        return Err(key_error(
            "dataset",
            &format!(
                "unknown synthetic dataset {name:?} (known: {})",
                known.join(", ")
            ),
        ));
    };
    for key in options.keys().filter(|k| is_synthetic_option(k)) {
        if !defaults.contains_key(key) {
            let users: Vec<String> = generators
                .iter()
                .filter(|(_, options)| options.contains_key(key))
                .map(|(user, _)| format!("synthetic:{user}"))
                .collect();
            return Err(key_error(
                &format!("dataset_options.{key}"),
                &format!("applies to {} only", users.join(" and ")),
            ));
        }
    }
    if let Some(asked) = options.get("task").and_then(Value::as_str) {
        if asked != task {
            return Err(key_error(
                "dataset_options.task",
                &format!("synthetic:{name} is a {task} dataset, not {asked}"),
            ));
        }
    }
    let chosen = |key: &str| -> f64 {
        options
            .get(key)
            .or_else(|| defaults.get(key))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("spec_rules.json: synthetic {name} has no {key}"))
    };
    let (samples, features, informative) =
        (chosen("samples"), chosen("features"), chosen("informative"));
    if informative > features {
        return Err(key_error(
            "dataset_options.informative",
            &format!("must not exceed dataset_options.features ({informative} > {features})"),
        ));
    }
    let max_values = rules().synthetic_max_values;
    if samples * features > max_values as f64 {
        return Err(key_error(
            "dataset_options.samples",
            &format!("samples x features must be at most {max_values}, got {samples} x {features}"),
        ));
    }
    if task == "classification" {
        let (classes, noise) = (chosen("classes"), chosen("noise"));
        let clusters = CLUSTERS_PER_CLASS as f64 * classes;
        if noise > 1.0 {
            return Err(key_error(
                "dataset_options.noise",
                &format!(
                    "is the fraction of labels drawn at random: must be in [0, 1], got {noise}"
                ),
            ));
        }
        if samples < clusters {
            return Err(key_error(
                "dataset_options.samples",
                &format!("must be at least 2 x classes = {clusters}, got {samples}"),
            ));
        }
        if clusters > 2f64.powf(informative) {
            return Err(key_error(
                "dataset_options.classes",
                &format!(
                    "{classes} classes of 2 clusters need 2 x classes <= 2 ** informative \
                     ({informative} informative features)"
                ),
            ));
        }
    }
    Ok(task.as_str())
}
