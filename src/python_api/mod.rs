//! The Python front door (DESIGN §8): the native module `cerebros_service._bridge`.
//!
//! maturin builds it from this crate with `--no-default-features --features
//! extension-module` (see `pyproject.toml`): the same [`Client`](crate::client::Client),
//! pool, contracts and error model as the CLI, loaded into a Python process instead of
//! embedding one. In `in_process` mode the pool's worker threads become extra threads of
//! the host interpreter; `Bridge.call` releases the GIL while it waits, so they can run.
//!
//! * [`bridge`]: the `Bridge` class (start, `call`, `stats`, `close`, context manager);
//! * [`errors`]: `BridgeError` and one subclass per [`ErrorClass`](crate::core::error::ErrorClass);
//! * [`contracts`]: `validate_contract` and `contract_schema` (JSON Schema generated from
//!   the Rust contract types, so Python and Rust cannot disagree);
//! * [`payload`]: strict conversion of Python payloads to JSON values (via pythonize);
//! * [`host`]: the interpreter set-up when the interpreter belongs to a Python host.

pub mod bridge;
pub mod contracts;
pub mod errors;
pub mod host;
pub mod payload;

use pyo3::prelude::*;

/// Initialises `cerebros_service._bridge`: the `Bridge` class, the exceptions, the
/// contract functions, and an `atexit` hook that closes every open bridge before the
/// interpreter shuts down (so no worker thread is left waiting for a finalised
/// interpreter).
#[pymodule(name = "_bridge")]
fn bridge_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "SWITCH_INTERVAL_S",
        crate::inprocess::interpreter::SWITCH_INTERVAL_S,
    )?;
    m.add_class::<bridge::Bridge>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(contracts::validate_contract, m)?)?;
    m.add_function(wrap_pyfunction!(contracts::contract_schema, m)?)?;
    m.add_function(wrap_pyfunction!(errors::raise_bridge_error, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::close_all, m)?)?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("_close_all")?,))?;
    // `__all__`: the public names only (pyo3 lists every name added).
    let public: Vec<String> = m
        .getattr("__all__")?
        .extract::<Vec<String>>()?
        .into_iter()
        .filter(|name| !name.starts_with('_') || name == "__version__")
        .collect();
    m.setattr("__all__", public)?;
    Ok(())
}
