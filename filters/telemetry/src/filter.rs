//! The glue between Envoy and the telemetry.
//!
//! - `on_request_headers`: trace context. A valid W3C `traceparent` passes
//!   unchanged; when it is absent or invalid and `tracing.generateTraceparent`
//!   is set, a new one (random trace and span id, flags `01`) replaces it.
//!   `x-request-id` is added when absent. B3 headers are left alone.
//! - `on_response_headers`: the trace id in `tracing.responseHeader`, if
//!   configured (never in the request phase, where Envoy refuses response
//!   headers).
//! - `on_log`: metrics and the access log. This is the only callback a
//!   request answered locally by an earlier filter (401, 429) still reaches,
//!   so every request is counted here, from `request.duration`,
//!   `response.code`, `request.total_size`, `response.total_size` and the
//!   final request headers.
//!
//! The access log is one JSON line per request through the proxy log at
//! `accessLog.level`, sampled with `accessLog.sample`; with
//! `accessLog.onlyErrors` only responses with status >= 500 (or none) are
//! logged. `path` loses its query string unless `accessLog.includeQuery`.

use crate::anomaly::Detector;
use crate::config::Config;
use crate::labels::{self, Caps};
use crate::metrics;
use kit::metrics::MetricIds;
use kit::{Action, ConfigError, Filter, Host, HttpFilter, MapType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const TRACEPARENT: &str = "traceparent";
pub const REQUEST_ID: &str = "x-request-id";
pub const DECISION_PROPERTY: &str = kit::handoff::RATE_LIMIT_DECISION;

/// How many raw label sets a VM remembers the metrics of. Each label's cap
/// bounds the series, not the raw values, so this bounds the memory.
const MEMO_ENTRIES: usize = 4096;

/// The metrics every request records, in [`LabelIds`] order.
const RECORDED: [(&str, MetricType); 4] = [
    (metrics::REQUESTS_TOTAL, MetricType::Counter),
    (metrics::REQUEST_DURATION, MetricType::Histogram),
    (metrics::REQUEST_BYTES, MetricType::Histogram),
    (metrics::RESPONSE_BYTES, MetricType::Histogram),
];

/// The metrics of one set of raw label values: the [`RECORDED`] ones
/// (defined on first use), and the overflow counters to bump.
#[derive(Debug)]
struct LabelIds {
    overflow: Vec<u32>,
    names: [String; 4],
    ids: [Option<u32>; 4],
}

pub struct Telemetry {
    pub config: Config,
    /// Per VM: the label caps and the metric ids.
    caps: RefCell<Caps>,
    registry: MetricIds,
    /// Raw label values (joined) → their metrics, at most `MEMO_ENTRIES`.
    memo: RefCell<HashMap<String, LabelIds>>,
    /// With `anomaly` configured.
    pub anomaly: Option<Detector>,
}

impl Filter for Telemetry {
    const NAME: &'static str = "telemetry";
    type Http = TelemetryHttp;

    fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError> {
        let config = crate::config::compile_json(config)?;
        let caps = Caps::new(config.dimensions.len(), config.max_values_per_label);
        let anomaly = match &config.anomaly {
            Some(a) => {
                let plugin = host.plugin_name(Self::NAME);
                let routes = config.routes.iter().map(|r| r.name.clone()).collect();
                let detector = Detector::new(a.clone(), routes, &plugin);
                detector.start(host).map_err(|e| {
                    ConfigError::new(
                        "anomaly",
                        format!("cannot create the anomaly state in shared data: {e}"),
                    )
                })?;
                Some(detector)
            }
            None => None,
        };
        Ok(Telemetry {
            config,
            caps: RefCell::new(caps),
            registry: MetricIds::default(),
            memo: RefCell::new(HashMap::new()),
            anomaly,
        })
    }

    fn tick_period(&self) -> Option<std::time::Duration> {
        self.anomaly.as_ref().map(Detector::tick_period)
    }

    fn on_tick(self: &Rc<Self>, host: &dyn Host) {
        if let Some(d) = &self.anomaly {
            d.define_gauges(host);
            d.on_tick(host);
        }
    }

    fn new_http(self: &Rc<Self>) -> TelemetryHttp {
        TelemetryHttp {
            filter: Rc::clone(self),
            trace_id: None,
        }
    }
}

impl Telemetry {
    /// How many distinct stat names this VM has defined.
    pub fn defined_metrics(&self) -> usize {
        self.registry.len()
    }

    fn record(&self, host: &dyn Host, r: &Record) {
        let raw = labels::values(&self.config, &r.headers, r.status);
        // The same raw values always give the same capped labels (a label's
        // admitted values only grow, and a value refused once is refused
        // for good), so their metric ids are remembered per VM: a request
        // with values seen before builds no stat name and does one lookup.
        let key = raw.join("\u{0}");
        let mut memo = self.memo.borrow_mut();
        if let Some(ids) = memo.get_mut(&key) {
            self.record_with(host, ids, r);
            return;
        }
        let mut ids = self.label_ids(host, raw);
        self.record_with(host, &mut ids, r);
        // Past the bound (values that mostly end up as `other`), a new set
        // is worked out afresh on each request.
        if memo.len() < MEMO_ENTRIES {
            memo.insert(key, ids);
        }
    }

    /// The capped labels of `raw` and their stat names.
    fn label_ids(&self, host: &dyn Host, raw: Vec<String>) -> LabelIds {
        let mut pairs = Vec::with_capacity(raw.len());
        let mut overflow = Vec::new();
        {
            let mut caps = self.caps.borrow_mut();
            for (i, (dim, value)) in self.config.dimensions.iter().zip(raw).enumerate() {
                let (value, over) = caps.bound(i, value);
                if over {
                    overflow.push(dim.label());
                }
                pairs.push((dim.label(), value));
            }
        }
        let reg = &self.registry;
        let overflow = overflow
            .into_iter()
            .filter_map(|label| {
                let name = metrics::stat_name(metrics::LABEL_OVERFLOW, &[("label".into(), label)]);
                reg.id(host, MetricType::Counter, &name)
            })
            .collect();
        let names = RECORDED.map(|(m, _)| metrics::stat_name(m, &pairs));
        LabelIds {
            overflow,
            names,
            ids: [None; 4],
        }
    }

    fn record_with(&self, host: &dyn Host, l: &mut LabelIds, r: &Record) {
        for id in &l.overflow {
            let _ = host.increment_metric(*id, 1);
        }
        let values = [Some(1), r.duration_ms, r.bytes_in, r.bytes_out];
        for (i, ((_, kind), value)) in RECORDED.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            if l.ids[i].is_none() {
                l.ids[i] = self.registry.id(host, *kind, &l.names[i]);
            }
            if let Some(id) = l.ids[i] {
                let _ = match kind {
                    MetricType::Counter => host.increment_metric(id, 1),
                    _ => host.record_metric(id, value),
                };
            }
        }
    }

    fn access_log(&self, host: &dyn Host, r: &Record) {
        let cfg = &self.config.access_log;
        let error = r.status == 0 || r.status >= 500;
        if !cfg.enabled || (cfg.only_errors && !error) || !sampled(host, cfg.sample) {
            return;
        }
        // Envoy would drop the line (istio-proxy logs Wasm at warning by
        // default): do not build it.
        if host.log_level().is_ok_and(|envoy| cfg.level < envoy) {
            return;
        }
        let mut line = serde_json::Map::new();
        for field in &cfg.fields {
            let value = match *field {
                "timestamp" => host.now().ok().map(rfc3339).into(),
                "method" => r.headers.get_str(":method").into(),
                "path" => r
                    .headers
                    .path()
                    .map(|p| {
                        let p = if cfg.include_query {
                            p
                        } else {
                            labels::strip_query(p)
                        };
                        String::from_utf8_lossy(p).into_owned()
                    })
                    .into(),
                "status" => r.status.into(),
                "duration_ms" => r.duration_ms.into(),
                "bytes_in" => r.bytes_in.into(),
                "bytes_out" => r.bytes_out.into(),
                "version" => r.headers.get_str(&self.config.version_header).into(),
                "route" => labels::route_name(&self.config.routes, &r.headers).into(),
                "trace_id" => r
                    .headers
                    .get(TRACEPARENT)
                    .and_then(parse_traceparent)
                    .into(),
                "request_id" => r.headers.get_str(REQUEST_ID).into(),
                "user" => cfg
                    .user_claim
                    .as_ref()
                    .and_then(|c| c.extract(&r.headers))
                    .into(),
                // Read only when logged: each is a host call.
                "rate_limit_decision" => prop_str(host, &[DECISION_PROPERTY]).into(),
                "source_address" => prop_str(host, &["source", "address"]).into(),
                _ => serde_json::Value::Null,
            };
            line.insert((*field).to_string(), value);
        }
        host.log(cfg.level, &serde_json::Value::Object(line).to_string());
    }
}

/// Whether this request is logged at sample rate `sample`.
fn sampled(host: &dyn Host, sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    if sample <= 0.0 {
        return false;
    }
    ((host.random_u64() >> 11) as f64 / (1u64 << 53) as f64) < sample
}

/// What `on_log` reads of one request.
struct Record {
    headers: kit::Headers,
    status: u32,
    duration_ms: Option<u64>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
}

/// An integer property as Envoy encodes it: 8 bytes, little-endian (also
/// accepted: decimal text).
pub fn int_property(bytes: &[u8]) -> Option<u64> {
    if let Ok(b) = <[u8; 8]>::try_from(bytes) {
        return u64::try_from(i64::from_le_bytes(b)).ok();
    }
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn prop_int(host: &dyn Host, path: &[&str]) -> Option<u64> {
    host.property(path)
        .ok()
        .flatten()
        .and_then(|v| int_property(&v))
}

fn prop_str(host: &dyn Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .filter(|s| !s.is_empty())
}

/// The trace id of a valid W3C `traceparent`
/// (`version-traceid-spanid-flags`, lowercase hex, ids not all zeros,
/// version not `ff`; versions above `00` may carry more after a `-`).
pub fn parse_traceparent(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.len() < 55 {
        return None;
    }
    let (head, rest) = s.split_at(55);
    let version = &head[0..2];
    if version == "00" && !rest.is_empty() {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with('-') {
        return None;
    }
    let hex = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let b = head.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&head[3..35], &head[36..52], &head[53..55]);
    if !hex(version) || version == "ff" || !hex(trace) || !hex(span) || !hex(flags) {
        return None;
    }
    if trace.bytes().all(|c| c == b'0') || span.bytes().all(|c| c == b'0') {
        return None;
    }
    Some(trace.to_string())
}

fn nonzero(host: &dyn Host) -> u64 {
    let v = host.random_u64();
    if v == 0 { 1 } else { v }
}

/// A new `traceparent` (version 00, sampled) and its trace id.
pub fn generate_traceparent(host: &dyn Host) -> (String, String) {
    let trace = format!("{:016x}{:016x}", host.random_u64(), nonzero(host));
    let span = format!("{:016x}", nonzero(host));
    (format!("00-{trace}-{span}-01"), trace)
}

/// A random UUID (version 4) for `x-request-id`.
pub fn generate_request_id(host: &dyn Host) -> String {
    let hi = (host.random_u64() & !0xf000) | 0x4000;
    let lo = (host.random_u64() & !(0xc000 << 48)) | (0x8000 << 48);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// RFC 3339 in UTC with milliseconds: `2023-11-14T22:13:20.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

pub struct TelemetryHttp {
    filter: Rc<Telemetry>,
    trace_id: Option<String>,
}

impl HttpFilter for TelemetryHttp {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let tracing = &self.filter.config.tracing;
        let current = host
            .header(MapType::RequestHeaders, TRACEPARENT)
            .ok()
            .flatten();
        self.trace_id = current.as_deref().and_then(parse_traceparent);
        if self.trace_id.is_none() && tracing.generate_traceparent {
            let (value, trace) = generate_traceparent(host);
            if host
                .set_header(MapType::RequestHeaders, TRACEPARENT, value.as_bytes())
                .is_ok()
            {
                self.trace_id = Some(trace);
            }
        }
        let has_id = host
            .header(MapType::RequestHeaders, REQUEST_ID)
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty());
        if !has_id {
            let id = generate_request_id(host);
            let _ = host.set_header(MapType::RequestHeaders, REQUEST_ID, id.as_bytes());
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        if let (Some(name), Some(trace)) =
            (&self.filter.config.tracing.response_header, &self.trace_id)
        {
            let _ = host.set_header(MapType::ResponseHeaders, name, trace.as_bytes());
        }
        Action::Continue
    }

    fn on_log(&mut self, host: &dyn Host) {
        let record = Record {
            headers: host.headers(MapType::RequestHeaders).unwrap_or_default(),
            status: prop_int(host, &["response", "code"])
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            duration_ms: prop_int(host, &["request", "duration"]).map(|ns| ns / 1_000_000),
            bytes_in: prop_int(host, &["request", "total_size"]),
            bytes_out: prop_int(host, &["response", "total_size"]),
        };
        self.filter.record(host, &record);
        if let Some(d) = &self.filter.anomaly
            && let Some(route) = labels::route_index(&self.filter.config.routes, &record.headers)
        {
            d.observe(route, record.status, record.duration_ms.unwrap_or(0));
        }
        self.filter.access_log(host, &record);
    }
}
