//! `validate_contract` and `contract_schema`: the version-1 contracts (DESIGN §3) as
//! Python sees them, answered by the same Rust types the bridge validates with.

use super::errors::to_py_err;
use super::payload;
use crate::core::contracts::{self as core, ContractV1};
use crate::core::contracts::{RunFinalizedV1, RunStartedV1, TrialReportedV1, TrialRequestedV1};
use pyo3::prelude::*;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// Validates a version-1 contract and returns it normalised: defaults filled in
/// (`objective`, `duration_ms`), absent and empty optional fields left out. An invalid
/// contract (not a dict, unknown `contract`, `version` other than 1, a missing required
/// field, a field of the wrong type, an unknown field) raises `ContractError` naming
/// what was expected.
#[pyfunction]
pub fn validate_contract<'py>(
    py: Python<'py>,
    contract: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let value = payload::from_python(contract, "contract").map_err(|e| to_py_err(py, &e))?;
    let contract = core::validate_contract(&value).map_err(|e| to_py_err(py, &e))?;
    Ok(pythonize::pythonize(py, &contract.to_value())?)
}

/// The JSON Schema (draft 2020-12) of the version-1 contracts, generated from the Rust
/// types with schemars: `oneOf` the four contracts, each under `$defs` with its
/// properties, `required` fields (including `contract` and `version`, which
/// `validate_contract` requires) and `additionalProperties: false`.
#[pyfunction]
pub fn contract_schema(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(pythonize::pythonize(py, schema())?)
}

/// The schema, built once.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let refs = vec![
        generator.subschema_for::<RunStartedV1>().to_value(),
        generator.subschema_for::<TrialRequestedV1>().to_value(),
        generator.subschema_for::<TrialReportedV1>().to_value(),
        generator.subschema_for::<RunFinalizedV1>().to_value(),
    ];
    let mut defs = generator.take_definitions(true);
    pin_header::<RunStartedV1>(&mut defs, "RunStartedV1");
    pin_header::<TrialRequestedV1>(&mut defs, "TrialRequestedV1");
    pin_header::<TrialReportedV1>(&mut defs, "TrialReportedV1");
    pin_header::<RunFinalizedV1>(&mut defs, "RunFinalizedV1");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cerebros-bridge contracts, version 1",
        "description": "The messages of a NAS run's lifecycle (DESIGN §3), generated from the Rust contract types.",
        "oneOf": refs,
        "$defs": defs,
    })
}

/// Makes a contract's `contract` and `version` fields constants and required: the
/// types give them serde defaults, but `validate_contract` needs both to know which
/// contract it reads.
fn pin_header<T: ContractV1>(defs: &mut Map<String, Value>, def_name: &str) {
    let Some(Value::Object(def)) = defs.get_mut(def_name) else {
        return;
    };
    if let Some(Value::Object(properties)) = def.get_mut("properties") {
        properties.insert(
            "contract".into(),
            json!({"description": format!("Always `{}`.", T::NAME), "const": T::NAME}),
        );
        properties.insert(
            "version".into(),
            json!({"description": "Always 1.", "const": core::VERSION}),
        );
    }
    let required = def
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(required) = required {
        for field in ["version", "contract"] {
            if !required.iter().any(|r| r == field) {
                required.insert(0, Value::from(field));
            }
        }
    }
}
