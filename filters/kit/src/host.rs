//! The host interface every filter uses, and its error type.
//!
//! The proxy-wasm SDK's `hostcalls` panic on any status they do not expect and
//! on non-UTF-8 header values; a panic traps the VM and fails every later
//! request on that worker. This trait returns `Result` for every call and
//! hands header values over as bytes.

use crate::headers::Headers;
use std::time::SystemTime;

/// A proxy-wasm status other than `Ok`. Every status the ABI defines has a
/// variant, and anything else is kept as [`HostError::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("not found")]
    NotFound,
    #[error("bad argument")]
    BadArgument,
    #[error("serialization failure")]
    SerializationFailure,
    #[error("parse failure")]
    ParseFailure,
    #[error("bad expression")]
    BadExpression,
    #[error("invalid memory access")]
    InvalidMemoryAccess,
    #[error("empty")]
    Empty,
    #[error("compare-and-swap mismatch")]
    CasMismatch,
    #[error("result mismatch")]
    ResultMismatch,
    #[error("internal failure")]
    InternalFailure,
    #[error("broken connection")]
    BrokenConnection,
    #[error("unimplemented")]
    Unimplemented,
    #[error("unknown status {0}")]
    Unknown(u32),
}

impl HostError {
    /// Maps a raw proxy-wasm status; `0` (Ok) is `None`.
    pub fn from_status(status: u32) -> Option<HostError> {
        Some(match status {
            0 => return None,
            1 => HostError::NotFound,
            2 => HostError::BadArgument,
            3 => HostError::SerializationFailure,
            4 => HostError::ParseFailure,
            5 => HostError::BadExpression,
            6 => HostError::InvalidMemoryAccess,
            7 => HostError::Empty,
            8 => HostError::CasMismatch,
            9 => HostError::ResultMismatch,
            10 => HostError::InternalFailure,
            11 => HostError::BrokenConnection,
            12 => HostError::Unimplemented,
            other => HostError::Unknown(other),
        })
    }

    /// The result of a host call that returned `status`.
    pub fn check(status: u32) -> Result<(), HostError> {
        match HostError::from_status(status) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// Log levels, numbered as in the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Header maps, numbered as in the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
}

/// Metric kinds, numbered as in the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// A value in shared data with its compare-and-swap token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue {
    pub value: Vec<u8>,
    pub cas: u32,
}

/// Everything a filter may ask of Envoy. Implemented by `proxy::ProxyHost`
/// over the real ABI and by `FakeHost` in tests. No method panics.
pub trait Host {
    /// Writes one line to Envoy's log.
    fn log(&self, level: LogLevel, message: &str);
    /// Envoy's current log level for this plugin.
    fn log_level(&self) -> HostResult<LogLevel>;
    /// Wall-clock time as Envoy sees it.
    fn now(&self) -> HostResult<SystemTime>;
    /// A random number (not for secrets).
    fn random_u64(&self) -> u64;

    /// The plugin configuration (`configuration` in Envoy, `pluginConfig` in
    /// Istio); `None` when empty.
    fn plugin_config(&self) -> HostResult<Option<Vec<u8>>>;

    /// All headers of a map, values as bytes.
    fn headers(&self, map: MapType) -> HostResult<Headers>;
    /// One header value, as bytes; `None` when absent.
    fn header(&self, map: MapType, name: &str) -> HostResult<Option<Vec<u8>>>;
    /// Replaces (or adds) a header.
    fn set_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()>;
    /// Adds a header value beside any existing ones.
    fn add_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()>;
    /// Removes a header; absent is not an error.
    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()>;

    /// A property such as `["request", "duration"]`; `None` when absent.
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>>;
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()>;

    /// Shared data of the whole Envoy process; `None` when the key is absent.
    fn shared_data(&self, key: &str) -> HostResult<Option<SharedValue>>;
    /// Sets shared data. With `cas`, fails with [`HostError::CasMismatch`]
    /// when the value changed since that token was read.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()>;

    /// Answers the request without the upstream.
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) -> HostResult<()>;

    /// Calls an Envoy foreign function such as `clear_route_cache`.
    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>>;

    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32>;
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()>;
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()>;
    fn metric(&self, id: u32) -> HostResult<u64>;

    /// Calls `on_tick` every `period` (zero stops it).
    fn set_tick_period(&self, period: std::time::Duration) -> HostResult<()>;

    /// Starts an HTTP call to an Envoy cluster (in Istio,
    /// `outbound|PORT||HOST`). `headers` must hold `:method`, `:path` and
    /// `:authority`. The answer arrives in `Filter::on_http_call_response`.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: std::time::Duration,
    ) -> HostResult<u32>;
    /// During `on_http_call_response`: the response's headers.
    fn http_call_response_headers(&self) -> HostResult<Headers>;
    /// During `on_http_call_response`: the response's body.
    fn http_call_response_body(&self) -> HostResult<Option<Vec<u8>>>;

    /// Makes later calls act on another context (a paused request, say).
    fn set_effective_context(&self, context_id: u32) -> HostResult<()>;
    /// Resumes the paused request of the effective context.
    fn resume_request(&self) -> HostResult<()>;

    /// This plugin's name (in Istio `<namespace>.<name>`), or `default` when
    /// the host gives none. Shared data is per process and Istio leaves
    /// `vm_id` empty, so filters prefix their shared-data keys with it.
    fn plugin_name(&self, default: &str) -> String {
        self.property(&["plugin_name"])
            .ok()
            .flatten()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| default.to_string())
    }

    /// Makes Envoy pick the route again after a request header changed.
    ///
    /// Envoy re-selects the route by itself after a header change for ABI
    /// 0.2.1 modules; the foreign function keeps this working under newer ABIs.
    /// A host without it is not an error.
    fn clear_route_cache(&self) -> HostResult<()> {
        match self.call_foreign_function("clear_route_cache", &[]) {
            Ok(_) | Err(HostError::NotFound) | Err(HostError::Unimplemented) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
