//! The suite's `pluginConfig`: each filter's own config under its key.
//!
//! ```json
//! {"jwt": {…}, "rateLimit": {…}, "canary": {…}, "telemetry": {…}}
//! ```
//!
//! Every key is optional, but at least one must be present (an empty suite
//! is almost certainly a mistake). Unknown keys are rejected. A stage's
//! errors carry its key in the path: `rateLimit.rules[2].limit.per`.

use kit::ConfigError;
use kit::config::join;
use serde::Deserialize;
use serde_json::Value;

/// The stage keys, in the order the stages run.
pub const KEYS: [&str; 4] = ["jwt", "rateLimit", "canary", "telemetry"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSuite {
    #[serde(default)]
    jwt: Option<Value>,
    #[serde(default)]
    rate_limit: Option<Value>,
    #[serde(default)]
    canary: Option<Value>,
    #[serde(default)]
    telemetry: Option<Value>,
}

/// Each stage's config as the JSON bytes its filter expects, in [`KEYS`]
/// order; `None` for an absent (or `null`) key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parts {
    pub jwt: Option<Vec<u8>>,
    pub rate_limit: Option<Vec<u8>>,
    pub canary: Option<Vec<u8>>,
    pub telemetry: Option<Vec<u8>>,
}

/// Splits the suite's config into the stages' configs.
pub fn split(bytes: Option<&[u8]>) -> Result<Parts, ConfigError> {
    let raw: RawSuite = kit::config::parse_json(bytes)?;
    let bytes = |key: &str, v: Option<Value>| -> Result<Option<Vec<u8>>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => serde_json::to_vec(&v)
                .map(Some)
                .map_err(|e| ConfigError::new(key, e.to_string())),
            Some(_) => Err(ConfigError::new(key, "expected an object")),
        }
    };
    let parts = Parts {
        jwt: bytes("jwt", raw.jwt)?,
        rate_limit: bytes("rateLimit", raw.rate_limit)?,
        canary: bytes("canary", raw.canary)?,
        telemetry: bytes("telemetry", raw.telemetry)?,
    };
    if parts.jwt.is_none()
        && parts.rate_limit.is_none()
        && parts.canary.is_none()
        && parts.telemetry.is_none()
    {
        return Err(ConfigError::new(
            "",
            "expected at least one of jwt, rateLimit, canary, telemetry",
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
    let parts = split(bytes)?;
    if let Some(b) = &parts.jwt {
        jwt_auth::config::compile_json(Some(b)).map_err(|e| under("jwt", e))?;
    }
    if let Some(b) = &parts.rate_limit {
        rate_limit::config::compile_json(Some(b), plugin_name)
            .map_err(|e| under("rateLimit", e))?;
    }
    if let Some(b) = &parts.canary {
        canary_router::config::compile_json(Some(b)).map_err(|e| under("canary", e))?;
    }
    if let Some(b) = &parts.telemetry {
        telemetry::config::compile_json(Some(b)).map_err(|e| under("telemetry", e))?;
    }
    Ok(())
}
