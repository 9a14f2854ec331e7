//! The hostile suite (DESIGN §10): service modules that lie, hang, print, crash or reach
//! past their own call, run against every mode where the case applies. Each test here
//! failed before the fix it guards. The hostile Python modules live in `services/`.

#[path = "../common/mod.rs"]
mod common;
mod host;
mod mlflow;
mod nas;
mod ops;
mod proc;
