//! The suite's `pluginConfig`: each filter's own config under its key.
//!
//! ```json
//! {"jwt": {…}, "rateLimit": {…}, "canary": {…}, "telemetry": {…}}
//! ```
//!
//! Every key is optional, but at least one must be present (an empty suite
//! is almost certainly a mistake). Unknown keys are rejected. A stage's
//! errors carry its key in the path: `rateLimit.rules[2].limit.per`.

use crate::registry::{self, FilterEntry, SuiteStage};
use kit::ConfigError;
use kit::config::join;
use serde_json::{Map, Value};

/// Each present stage, with its filter and its config as the JSON bytes the
/// filter expects, in stage order. An absent (or `null`) key has no stage.
pub type Parts = Vec<(&'static FilterEntry, &'static SuiteStage, Vec<u8>)>;

/// Splits the suite's config into the stages' configs.
pub fn split(bytes: Option<&[u8]>) -> Result<Parts, ConfigError> {
    let mut raw: Map<String, Value> = kit::config::parse_json(bytes)?;
    let known = || registry::suite_keys().collect::<Vec<_>>().join(", ");
    if let Some(unknown) = raw
        .keys()
        .find(|k| !registry::suite_keys().any(|s| s == k.as_str()))
    {
        return Err(ConfigError::new(
            unknown.as_str(),
            format!("unknown field `{unknown}`, expected one of {}", known()),
        ));
    }
    let mut parts = Vec::new();
    for (filter, stage) in registry::stages() {
        let key = stage.key;
        match raw.remove(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => {
                let bytes =
                    serde_json::to_vec(&v).map_err(|e| ConfigError::new(key, e.to_string()))?;
                parts.push((filter, stage, bytes));
            }
            Some(_) => return Err(ConfigError::new(key, "expected an object")),
        }
    }
    if parts.is_empty() {
        return Err(ConfigError::new(
            "",
            format!("expected at least one of {}", known()),
        ));
    }
    Ok(parts)
}

/// `e`, a stage's error, with the stage's key in front of its path.
pub fn under(key: &str, e: ConfigError) -> ConfigError {
    ConfigError::new(join(key, &e.path), e.message)
}

/// Compiles every present stage's config with its filter's own config code,
/// without a host: for manifest checks. `plugin_name` is the rate limiter's
/// shared-data prefix.
pub fn compile_json(bytes: Option<&[u8]>, plugin_name: &str) -> Result<(), ConfigError> {
    for (filter, stage, bytes) in split(bytes)? {
        (filter.compile)(Some(&bytes), plugin_name).map_err(|e| under(stage.key, e))?;
    }
    Ok(())
}
