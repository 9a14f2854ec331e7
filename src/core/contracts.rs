//! Contracts, version 1 (DESIGN §3): the typed messages of a NAS run's lifecycle.
//!
//! Each contract serializes with a `contract` name and a `version`; an unknown name or
//! version, or a field that does not fit, is a [`ErrorClass::Contract`] error naming
//! what was expected.

use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::payload::json_type;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The only contract version this crate speaks.
pub const VERSION: u32 = 1;

/// The contract names, in lifecycle order.
pub const CONTRACT_NAMES: [&str; 4] = [
    RunStartedV1::NAME,
    TrialRequestedV1::NAME,
    TrialReportedV1::NAME,
    RunFinalizedV1::NAME,
];

/// A JSON object.
pub type Object = Map<String, Value>;

/// A version-1 contract type, so typed helpers can be generic over the four.
pub trait ContractV1: Serialize + DeserializeOwned {
    /// The value of the `contract` field (`run_started`, …).
    const NAME: &'static str;

    /// Reads a value as this contract. A `contract` or `version` field, if present, must
    /// name this contract and version 1; if absent they are filled in.
    ///
    /// ```
    /// use cerebros_bridge::core::contracts::{ContractV1, RunFinalizedV1, RunStatus};
    /// let value = serde_json::json!({"run_id": "r1", "status": "timeout"});
    /// let finalized = RunFinalizedV1::from_value(&value).unwrap();
    /// assert_eq!(finalized.status, RunStatus::Timeout);
    /// assert_eq!(finalized.contract, "run_finalized");
    /// ```
    fn from_value(value: &Value) -> Result<Self> {
        check_header_for(value, Self::NAME)?;
        deserialize_as(value, Self::NAME)
    }

    /// The contract as a JSON value.
    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn default_objective() -> String {
    "accuracy".to_owned()
}

fn default_version() -> u32 {
    VERSION
}

/// The serde default of a contract's `contract` field.
fn name_of<T: ContractV1>() -> String {
    T::NAME.to_owned()
}

/// The outcome of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// The trial trained and was evaluated.
    Succeeded,
    /// The trial failed.
    Failed,
    /// The trial was not run (e.g. an impossible architecture).
    Skipped,
    /// The trial was cancelled.
    Cancelled,
    /// The pruner stopped the trial early as hopeless (DESIGN §13); its metrics are those
    /// of the epochs it ran. Not a failure, and never a run's best trial.
    Pruned,
}

impl TrialStatus {
    /// Every status, in declaration order.
    pub const ALL: [TrialStatus; 5] = [
        TrialStatus::Succeeded,
        TrialStatus::Failed,
        TrialStatus::Skipped,
        TrialStatus::Cancelled,
        TrialStatus::Pruned,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Succeeded => "succeeded",
            TrialStatus::Failed => "failed",
            TrialStatus::Skipped => "skipped",
            TrialStatus::Cancelled => "cancelled",
            TrialStatus::Pruned => "pruned",
        }
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The run finished.
    Succeeded,
    /// The run failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// The run ran out of time.
    Timeout,
}

impl RunStatus {
    /// Every status, in declaration order.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Timeout,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Timeout => "timeout",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run has started (`run_started` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStartedV1 {
    /// Always `run_started`.
    #[serde(default = "name_of::<RunStartedV1>")]
    pub contract: String,
    /// Always 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The run's id.
    pub run_id: String,
    /// When the run started (RFC 3339).
    pub timestamp: String,
    /// The dataset, e.g. `sklearn:digits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// The NAS search space.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub search_space: Object,
    /// The metric optimized (default `accuracy`).
    #[serde(default = "default_objective")]
    pub objective: String,
    /// The run's budget (trials, epochs, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub budget: Object,
    /// Free-form run parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Object,
    /// Correlates the run with its caller's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The seed system's pulse id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse_id: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Object,
}

impl RunStartedV1 {
    /// A `run_started` with the required fields and defaults for the rest.
    ///
    /// ```
    /// use cerebros_bridge::core::contracts::RunStartedV1;
    /// let started = RunStartedV1::new("run-1", "2025-01-01T00:00:00Z");
    /// let value = serde_json::to_value(&started).unwrap();
    /// assert_eq!(value["contract"], "run_started");
    /// assert_eq!(value["version"], 1);
    /// assert_eq!(value["objective"], "accuracy");
    /// ```
    pub fn new(run_id: impl Into<String>, timestamp: impl Into<String>) -> Self {
        RunStartedV1 {
            contract: name_of::<RunStartedV1>(),
            version: VERSION,
            run_id: run_id.into(),
            timestamp: timestamp.into(),
            dataset_id: None,
            search_space: Object::new(),
            objective: default_objective(),
            budget: Object::new(),
            parameters: Object::new(),
            correlation_id: None,
            pulse_id: None,
            extra: Object::new(),
        }
    }
}

/// The host asks for one trial (`trial_requested` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialRequestedV1 {
    /// Always `trial_requested`.
    #[serde(default = "name_of::<TrialRequestedV1>")]
    pub contract: String,
    /// Always 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The run's id.
    pub run_id: String,
    /// The trial's id.
    pub trial_id: String,
    /// The trial's 0-based index in the run.
    pub index: u32,
    /// The seed the architecture is sampled and trained with.
    pub seed: u64,
    /// The dataset, e.g. `sklearn:digits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// The NAS search space.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub search_space: Object,
    /// The trial's budget (epochs, batch size, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub budget: Object,
    /// Free-form trial parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Object,
}

impl TrialRequestedV1 {
    /// A `trial_requested` with the required fields and defaults for the rest.
    pub fn new(
        run_id: impl Into<String>,
        trial_id: impl Into<String>,
        index: u32,
        seed: u64,
    ) -> Self {
        TrialRequestedV1 {
            contract: name_of::<TrialRequestedV1>(),
            version: VERSION,
            run_id: run_id.into(),
            trial_id: trial_id.into(),
            index,
            seed,
            dataset_id: None,
            search_space: Object::new(),
            budget: Object::new(),
            parameters: Object::new(),
        }
    }
}

/// The outcome of one trial (`trial_reported` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialReportedV1 {
    /// Always `trial_reported`.
    #[serde(default = "name_of::<TrialReportedV1>")]
    pub contract: String,
    /// Always 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The trial's id.
    pub trial_id: String,
    /// The run's id.
    pub run_id: String,
    /// How the trial ended.
    pub status: TrialStatus,
    /// Metrics by name (`val_accuracy`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metrics: Object,
    /// The sampled architecture and hyperparameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Object,
    /// Where the trial's artifacts are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// Wall time of the trial, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The trial's rank in its run, where known (1 = best).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Non-fatal problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The MLflow child run, once synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
    /// The seed system's candidate id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    /// The seed system's pulse id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse_id: Option<String>,
}

impl TrialReportedV1 {
    /// A `trial_reported` with the required fields and defaults for the rest. Note
    /// the argument order: run id first, as in every constructor here.
    pub fn new(
        run_id: impl Into<String>,
        trial_id: impl Into<String>,
        status: TrialStatus,
    ) -> Self {
        TrialReportedV1 {
            contract: name_of::<TrialReportedV1>(),
            version: VERSION,
            trial_id: trial_id.into(),
            run_id: run_id.into(),
            status,
            metrics: Object::new(),
            parameters: Object::new(),
            artifact_uri: None,
            duration_ms: 0,
            rank: None,
            warnings: Vec::new(),
            mlflow_run_id: None,
            candidate_id: None,
            pulse_id: None,
        }
    }
}

/// A run has ended (`run_finalized` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFinalizedV1 {
    /// Always `run_finalized`.
    #[serde(default = "name_of::<RunFinalizedV1>")]
    pub contract: String,
    /// Always 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The run's id.
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// The run's final metrics.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metrics: Object,
    /// The best trial, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial_id: Option<String>,
    /// Wall time of the run, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The exit status of the process that ran it, where there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returncode: Option<i64>,
    /// References to the run's artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifact_refs: Vec<Value>,
    /// Non-fatal problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The start of the run's output (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_excerpt: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub payload: Object,
    /// The seed system's pulse id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse_id: Option<String>,
}

impl RunFinalizedV1 {
    /// A `run_finalized` with the required fields and defaults for the rest.
    pub fn new(run_id: impl Into<String>, status: RunStatus) -> Self {
        RunFinalizedV1 {
            contract: name_of::<RunFinalizedV1>(),
            version: VERSION,
            run_id: run_id.into(),
            status,
            metrics: Object::new(),
            best_trial_id: None,
            duration_ms: 0,
            returncode: None,
            artifact_refs: Vec::new(),
            warnings: Vec::new(),
            stdout_excerpt: None,
            payload: Object::new(),
            pulse_id: None,
        }
    }
}

impl ContractV1 for RunStartedV1 {
    const NAME: &'static str = "run_started";
}

impl ContractV1 for TrialRequestedV1 {
    const NAME: &'static str = "trial_requested";
}

impl ContractV1 for TrialReportedV1 {
    const NAME: &'static str = "trial_reported";
}

impl ContractV1 for RunFinalizedV1 {
    const NAME: &'static str = "run_finalized";
}

/// Any version-1 contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Contract {
    /// `run_started`.
    RunStarted(RunStartedV1),
    /// `trial_requested`.
    TrialRequested(TrialRequestedV1),
    /// `trial_reported`.
    TrialReported(TrialReportedV1),
    /// `run_finalized`.
    RunFinalized(RunFinalizedV1),
}

impl Contract {
    /// The contract's name (`run_started`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Contract::RunStarted(_) => RunStartedV1::NAME,
            Contract::TrialRequested(_) => TrialRequestedV1::NAME,
            Contract::TrialReported(_) => TrialReportedV1::NAME,
            Contract::RunFinalized(_) => RunFinalizedV1::NAME,
        }
    }

    /// The run the contract belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            Contract::RunStarted(c) => &c.run_id,
            Contract::TrialRequested(c) => &c.run_id,
            Contract::TrialReported(c) => &c.run_id,
            Contract::RunFinalized(c) => &c.run_id,
        }
    }

    /// The contract as a JSON object.
    pub fn to_value(&self) -> Value {
        match self {
            Contract::RunStarted(c) => c.to_value(),
            Contract::TrialRequested(c) => c.to_value(),
            Contract::TrialReported(c) => c.to_value(),
            Contract::RunFinalized(c) => c.to_value(),
        }
    }
}

impl From<RunStartedV1> for Contract {
    fn from(c: RunStartedV1) -> Self {
        Contract::RunStarted(c)
    }
}

impl From<TrialRequestedV1> for Contract {
    fn from(c: TrialRequestedV1) -> Self {
        Contract::TrialRequested(c)
    }
}

impl From<TrialReportedV1> for Contract {
    fn from(c: TrialReportedV1) -> Self {
        Contract::TrialReported(c)
    }
}

impl From<RunFinalizedV1> for Contract {
    fn from(c: RunFinalizedV1) -> Self {
        Contract::RunFinalized(c)
    }
}

/// Reads a JSON value as a version-1 contract: it must be an object with a string
/// `contract` naming a known contract, an integer `version` of 1, and fields that fit.
///
/// ```
/// use cerebros_bridge::core::contracts::{validate_contract, Contract};
/// use serde_json::json;
///
/// let value = json!({"contract": "run_started", "version": 1,
///                    "run_id": "r1", "timestamp": "2025-01-01T00:00:00Z"});
/// let contract = validate_contract(&value).unwrap();
/// assert_eq!(contract.name(), "run_started");
/// assert_eq!(contract.run_id(), "r1");
///
/// let err = validate_contract(&json!({"contract": "run_started", "version": 2})).unwrap_err();
/// assert_eq!(err.message, "contract run_started version 2 is not supported: expected version 1");
/// ```
pub fn validate_contract(value: &Value) -> Result<Contract> {
    let name = contract_name(value)?;
    check_version(value, name)?;
    let contract = match name {
        RunStartedV1::NAME => Contract::RunStarted(deserialize_as(value, name)?),
        TrialRequestedV1::NAME => Contract::TrialRequested(deserialize_as(value, name)?),
        TrialReportedV1::NAME => Contract::TrialReported(deserialize_as(value, name)?),
        RunFinalizedV1::NAME => Contract::RunFinalized(deserialize_as(value, name)?),
        _ => unreachable!("contract_name only returns known names"),
    };
    Ok(contract)
}

/// The contract an op takes as its payload: `start_run` → `run_started`,
/// `run_trial` → `trial_requested`, `record_trial` → `trial_reported`,
/// `finalize_run` → `run_finalized`; other ops take free-form payloads.
///
/// ```
/// use cerebros_bridge::core::contracts::contract_for_op;
/// assert_eq!(contract_for_op("run_trial"), Some("trial_requested"));
/// assert_eq!(contract_for_op("echo"), None);
/// ```
pub fn contract_for_op(op: &str) -> Option<&'static str> {
    match op {
        "start_run" => Some(RunStartedV1::NAME),
        "run_trial" => Some(TrialRequestedV1::NAME),
        "record_trial" => Some(TrialReportedV1::NAME),
        "finalize_run" => Some(RunFinalizedV1::NAME),
        _ => None,
    }
}

fn contract_error(message: String, value: &Value) -> BridgeError {
    let run_id = value
        .get("run_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    BridgeError::new(ErrorClass::Contract, message).with_run_id(run_id)
}

fn expected_names() -> String {
    CONTRACT_NAMES.join(", ")
}

/// The known contract named by the value's `contract` field.
fn contract_name(value: &Value) -> Result<&'static str> {
    let Some(object) = value.as_object() else {
        let message = format!("a contract must be a JSON object, got {}", json_type(value));
        return Err(contract_error(message, value));
    };
    let Some(name) = object.get("contract").and_then(Value::as_str) else {
        let message = format!(
            "a contract needs a string field \"contract\": expected one of {}",
            expected_names()
        );
        return Err(contract_error(message, value));
    };
    CONTRACT_NAMES
        .into_iter()
        .find(|known| *known == name)
        .ok_or_else(|| {
            let message = format!(
                "unknown contract {name:?}: expected one of {}",
                expected_names()
            );
            contract_error(message, value).with_detail("contract", name)
        })
}

/// Requires an integer `version` of 1.
fn check_version(value: &Value, name: &str) -> Result<()> {
    match value.get("version") {
        Some(version) if version.as_u64() == Some(u64::from(VERSION)) => Ok(()),
        Some(version) if version.is_i64() || version.is_u64() => {
            let message = format!(
                "contract {name} version {version} is not supported: expected version {VERSION}"
            );
            Err(contract_error(message, value).with_detail("contract", name))
        }
        _ => {
            let message = format!(
                "contract {name} needs an integer field \"version\": expected version {VERSION}"
            );
            Err(contract_error(message, value).with_detail("contract", name))
        }
    }
}

/// For [`ContractV1::from_value`]: an object whose `contract` and `version`, where
/// present, are `name` and 1.
fn check_header_for(value: &Value, name: &str) -> Result<()> {
    if value.get("contract").is_some() {
        let found = contract_name(value)?;
        if found != name {
            let message = format!("expected contract {name}, got {found}");
            return Err(contract_error(message, value).with_detail("contract", found));
        }
    }
    if value.get("version").is_some() {
        check_version(value, name)?;
    }
    Ok(())
}

/// Deserializes without cloning, mapping serde's message to a contract error.
fn deserialize_as<T: DeserializeOwned>(value: &Value, name: &str) -> Result<T> {
    T::deserialize(value).map_err(|err| {
        let message = format!("invalid {name} v{VERSION}: {err}");
        contract_error(message, value)
            .with_detail("contract", name)
            .with_source(err)
    })
}

#[cfg(test)]
mod tests;
