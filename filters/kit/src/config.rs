//! Configuration errors that name the JSON path of the problem, and the JSON
//! parsing that produces them.

use serde::de::DeserializeOwned;

/// A configuration problem at a JSON path, shown as
/// `services[0].split: weights must total 100, got 90`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The JSON path, e.g. `services[0].rules[2].version`; empty for the root.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

/// Parses `bytes` as `T`, naming the path of any error. An absent or empty
/// configuration reads as `{}`, so a missing required field is named.
pub fn parse_json<T: DeserializeOwned>(bytes: Option<&[u8]>) -> Result<T, ConfigError> {
    let bytes = match bytes {
        Some(b) if !b.trim_ascii().is_empty() => b,
        _ => b"{}",
    };
    // serde would also read a struct from a JSON array; configs are objects.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ConfigError::new("", "expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", format!("trailing data after the JSON value: {e}")))?;
    Ok(value)
}

/// Whether `s` is an HTTP token (RFC 9110): a valid header or cookie name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name from config, lowercased as Envoy keeps them.
pub fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if !is_token(name) {
        return Err(ConfigError::new(
            path,
            format!("expected an HTTP header name, got {name:?}"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A cookie name from config: an HTTP token, kept as written.
pub fn cookie_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if !is_token(name) {
        return Err(ConfigError::new(
            path,
            format!("expected a cookie name, got {name:?}"),
        ));
    }
    Ok(name.to_string())
}

/// A query parameter name from config: any non-empty text (it is compared
/// percent-decoded).
pub fn param_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(path, "expected a parameter name"));
    }
    Ok(name.to_string())
}

/// Headers with a meaning of their own. A filter that sets or strips a
/// header on every request must not be configured to own one of these.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];

/// Compiles `pattern` to match a whole value, as Istio's (RE2) regexes do.
/// `path` names the field in the error.
pub fn full_match_regex(path: &str, pattern: &str) -> Result<regex_lite::Regex, ConfigError> {
    regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new(path, format!("invalid regex {pattern:?}: {e}")))
}

/// Joins a JSON path and a field: `join("services[0]", "split")`.
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        max_count: u32,
    }

    #[test]
    fn errors_name_the_path() {
        let e = parse_json::<Outer>(Some(br#"{"items":[{"maxCount":1},{"maxCount":"x"}]}"#))
            .unwrap_err();
        assert_eq!(e.path, "items[1].maxCount");
        assert!(
            e.to_string()
                .starts_with("items[1].maxCount: invalid type: string")
        );

        let e = parse_json::<Outer>(Some(br#"{"items":[{"maxCount":1,"extra":2}]}"#)).unwrap_err();
        assert_eq!(e.path, "items[0].extra");
        assert!(e.message.contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn empty_config_names_the_missing_field() {
        let e = parse_json::<Outer>(None).unwrap_err();
        assert!(e.to_string().contains("missing field `items`"), "{e}");
        assert!(parse_json::<Outer>(Some(b"{\"items\":[]} x")).is_err());
    }
}
