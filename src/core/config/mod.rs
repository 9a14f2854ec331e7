//! Configuration (DESIGN §6): a [`Config`] read from `cerebros.toml` and overridden by
//! environment variables with the seed's names.
//!
//! Every error here is of class [`ErrorClass::Config`]; its message names the key, the
//! value, where the value came from and what the key accepts, and its `details` carry
//! `key` and `source`.
//!
//! * `types`: [`Config`] and its tables, with their defaults; `mode`: [`Mode`];
//! * `load`: [`Config::load`] and the file; `toml_error`: what a bad file is told;
//! * `env`: the environment's overrides;
//! * `validate`: the bounds of every key; `store_url`: the check of `store.url`.

mod collector;
mod env;
mod load;
mod mode;
mod store_url;
mod toml_error;
mod types;
mod validate;

pub use collector::CollectorAddress;
pub use load::{CONFIG_ENV, DEFAULT_FILE_NAME};
pub use mode::{Mode, ParseModeError};
pub use store_url::{check_store_path, store_path};
pub use types::{
    CacheConfig, Config, ConfigSource, ExecutorConfig, ExecutorKind, InvokeConfig, MlflowConfig,
    OtlpProtocol, ServeConfig, StoreConfig, TelemetryConfig, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_SERVE_LISTEN, DEFAULT_SERVICE_NAME,
};
pub use validate::{MAX_POOL_SIZE, MAX_RETRIES, MAX_TIMEOUT_MS};

use crate::core::error::{BridgeError, ErrorClass};
use std::fmt;

/// `KEY = VALUE (from SOURCE): EXPECTED`, with `key` and `source` in the details.
fn value_error(key: &str, value: impl fmt::Display, source: &str, expected: &str) -> BridgeError {
    BridgeError::new(
        ErrorClass::Config,
        format!("{key} = {value} (from {source}): {expected}"),
    )
    .with_detail("key", key)
    .with_detail("source", source)
}

#[cfg(test)]
mod tests;
