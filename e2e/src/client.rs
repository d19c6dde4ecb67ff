//! A small HTTP client for tests and readiness checks. Header values are
//! bytes, so tests can send what a browser never would.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use ureq::http::{HeaderName, HeaderValue};

/// A response, with header values as bytes and the body as text.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: String,
}

impl Response {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers_all(name).into_iter().next()
    }

    /// Every value of a header, as text.
    pub fn headers_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The body as JSON (the demo upstreams answer JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into()
    })
}

/// Sends a request with the given headers (a `host` header sets the
/// authority).
pub fn request(method: &str, url: &str, headers: &[(&str, &[u8])]) -> Result<Response> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_bytes(value)?,
        );
    }
    let request = builder.body(())?;
    let mut response = agent()
        .run(request)
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Ok(Response {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str, headers: &[(&str, &[u8])]) -> Result<Response> {
    request("GET", url, headers)
}

/// GET on Envoy's admin endpoint.
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let r = get(&format!("http://{admin}{path}"), &[])?;
    Ok((r.status, r.body))
}
