//! An in-memory [`Host`] for native tests. It serves canned headers, time,
//! properties and shared data (with Envoy's CAS rules), records what a
//! filter did, and behaves like Envoy where Envoy is strict: a response
//! header set during the request phase is `BadArgument`.

use crate::headers::Headers;
use crate::host::{Host, HostError, HostResult, LogLevel, MapType, MetricType, SharedValue};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The stage of a request, which decides what Envoy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
    Log,
}

/// A reply the filter sent with `send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub details: String,
}

type ForeignFn = Box<dyn Fn(&[u8]) -> HostResult<Option<Vec<u8>>>>;

#[derive(Default)]
struct Metric {
    kind: Option<MetricType>,
    name: String,
    value: i128,
    samples: Vec<u64>,
}

pub struct FakeHost {
    phase: Cell<Phase>,
    now: Cell<SystemTime>,
    rng: Cell<u64>,
    log_level: Cell<LogLevel>,
    config: RefCell<Option<Vec<u8>>>,
    maps: RefCell<HashMap<MapType, Headers>>,
    properties: RefCell<HashMap<Vec<String>, Vec<u8>>>,
    shared: RefCell<HashMap<String, SharedValue>>,
    metrics: RefCell<Vec<Metric>>,
    foreign: RefCell<HashMap<String, ForeignFn>>,
    failures: RefCell<HashMap<&'static str, HostError>>,
    /// How often each method was called.
    calls: RefCell<HashMap<&'static str, usize>>,
    /// Everything logged, in order.
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// Foreign functions called, in order.
    pub foreign_calls: RefCell<Vec<String>>,
    pub local_response: RefCell<Option<LocalResponse>>,
    /// HTTP calls started, in order.
    pub http_calls: RefCell<Vec<HttpCall>>,
    /// The response `http_call_response_*` serve.
    pub http_call_response: RefCell<Option<crate::HttpCallResponse>>,
    pub tick_period: Cell<Option<Duration>>,
    /// The effective context, and the contexts resumed, in order.
    pub effective_context: Cell<u32>,
    pub resumed: RefCell<Vec<u32>>,
    ended: RefCell<Vec<u32>>,
    /// Writes by "another VM", each landing just before the next
    /// `set_shared_data` on its key: a race between a read and a CAS.
    interleaved: RefCell<Vec<(String, Vec<u8>)>>,
}

/// An HTTP call a filter started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost::new()
    }
}

impl FakeHost {
    pub fn new() -> FakeHost {
        FakeHost {
            phase: Cell::new(Phase::Request),
            now: Cell::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            rng: Cell::new(1),
            log_level: Cell::new(LogLevel::Info),
            config: RefCell::new(None),
            maps: RefCell::new(HashMap::new()),
            properties: RefCell::new(HashMap::new()),
            shared: RefCell::new(HashMap::new()),
            metrics: RefCell::new(Vec::new()),
            foreign: RefCell::new(HashMap::new()),
            failures: RefCell::new(HashMap::new()),
            calls: RefCell::new(HashMap::new()),
            logs: RefCell::new(Vec::new()),
            foreign_calls: RefCell::new(Vec::new()),
            local_response: RefCell::new(None),
            http_calls: RefCell::new(Vec::new()),
            http_call_response: RefCell::new(None),
            tick_period: Cell::new(None),
            effective_context: Cell::new(0),
            resumed: RefCell::new(Vec::new()),
            ended: RefCell::new(Vec::new()),
            interleaved: RefCell::new(Vec::new()),
        }
    }

    /// Makes another VM's write of `value` to `key` land just before this
    /// host's next `set_shared_data` on `key`, so that a CAS taken before it
    /// fails.
    pub fn interleave_write(&self, key: &str, value: &[u8]) {
        self.interleaved
            .borrow_mut()
            .push((key.to_string(), value.to_vec()));
    }

    /// Makes a context unknown, as Envoy does once a request has ended.
    pub fn end_context(&self, context_id: u32) {
        self.ended.borrow_mut().push(context_id);
    }

    /// A host whose request carries `headers`.
    pub fn with_request(headers: &[(&str, &[u8])]) -> FakeHost {
        let host = FakeHost::new();
        host.set_map(
            MapType::RequestHeaders,
            Headers::from_pairs(headers.iter().map(|(n, v)| (*n, *v))),
        );
        host
    }

    /// Puts a fresh request on the host: the request phase, these request
    /// headers, no response headers and no local reply yet. Shared data,
    /// metrics, properties, logs and the clock stay as they are.
    pub fn start_request(&self, headers: &[(&str, &[u8])]) {
        self.set_phase(Phase::Request);
        *self.local_response.borrow_mut() = None;
        self.set_map(
            MapType::RequestHeaders,
            Headers::from_pairs(headers.iter().map(|(n, v)| (*n, *v))),
        );
        self.set_map(MapType::ResponseHeaders, Headers::new());
    }

    /// How often `method` (a `Host` method name) was called so far.
    pub fn calls(&self, method: &str) -> usize {
        self.calls.borrow().get(method).copied().unwrap_or(0)
    }

    /// Forgets the call counts.
    pub fn reset_calls(&self) {
        self.calls.borrow_mut().clear();
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.set(phase);
    }

    pub fn set_config(&self, config: &str) {
        *self.config.borrow_mut() = Some(config.as_bytes().to_vec());
    }

    pub fn set_map(&self, map: MapType, headers: Headers) {
        self.maps.borrow_mut().insert(map, headers);
    }

    pub fn map(&self, map: MapType) -> Headers {
        self.maps.borrow().get(&map).cloned().unwrap_or_default()
    }

    /// Envoy's log level as the plugin sees it.
    pub fn set_log_level(&self, level: LogLevel) {
        self.log_level.set(level);
    }

    pub fn set_now(&self, now: SystemTime) {
        self.now.set(now);
    }

    pub fn advance(&self, by: Duration) {
        self.now.set(self.now.get() + by);
    }

    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
    }

    /// Makes every later call of `method` (a [`Host`] method name) fail.
    pub fn fail(&self, method: &'static str, error: HostError) {
        self.failures.borrow_mut().insert(method, error);
    }

    pub fn set_foreign_function(
        &self,
        name: &str,
        f: impl Fn(&[u8]) -> HostResult<Option<Vec<u8>>> + 'static,
    ) {
        self.foreign
            .borrow_mut()
            .insert(name.to_string(), Box::new(f));
    }

    /// The value of a metric by name: counter or gauge total.
    pub fn metric_value(&self, name: &str) -> Option<i128> {
        self.metrics
            .borrow()
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every value recorded in a histogram, by name.
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        self.metrics
            .borrow()
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    }

    fn check(&self, method: &'static str) -> HostResult<()> {
        *self.calls.borrow_mut().entry(method).or_default() += 1;
        match self.failures.borrow().get(method) {
            Some(e) => Err(*e),
            None => Ok(()),
        }
    }

    fn writable(&self, map: MapType) -> HostResult<()> {
        let response = matches!(map, MapType::ResponseHeaders | MapType::ResponseTrailers);
        match (self.phase.get(), response) {
            (Phase::Request, true) | (Phase::Log, _) => Err(HostError::BadArgument),
            _ => Ok(()),
        }
    }

    fn with_metric<T>(&self, id: u32, f: impl FnOnce(&mut Metric) -> T) -> HostResult<T> {
        let mut metrics = self.metrics.borrow_mut();
        let metric = metrics
            .get_mut(id as usize)
            .filter(|m| m.kind.is_some())
            .ok_or(HostError::NotFound)?;
        Ok(f(metric))
    }
}

impl Host for FakeHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn log_level(&self) -> HostResult<LogLevel> {
        self.check("log_level")?;
        Ok(self.log_level.get())
    }

    fn now(&self) -> HostResult<SystemTime> {
        self.check("now")?;
        Ok(self.now.get())
    }

    fn random_u64(&self) -> u64 {
        let state = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(state);
        crate::hash::mix64(state)
    }

    fn plugin_config(&self) -> HostResult<Option<Vec<u8>>> {
        self.check("plugin_config")?;
        Ok(self.config.borrow().clone())
    }

    fn headers(&self, map: MapType) -> HostResult<Headers> {
        self.check("headers")?;
        Ok(self.map(map))
    }

    fn header(&self, map: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
        self.check("header")?;
        Ok(self.map(map).get(name).map(<[u8]>::to_vec))
    }

    fn set_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        self.check("set_header")?;
        self.writable(map)?;
        self.maps
            .borrow_mut()
            .entry(map)
            .or_default()
            .set(name, value);
        Ok(())
    }

    fn add_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        self.check("add_header")?;
        self.writable(map)?;
        self.maps
            .borrow_mut()
            .entry(map)
            .or_default()
            .push(name.to_ascii_lowercase(), value.to_vec());
        Ok(())
    }

    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()> {
        self.check("remove_header")?;
        self.writable(map)?;
        self.maps.borrow_mut().entry(map).or_default().remove(name);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        self.check("property")?;
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        Ok(self.properties.borrow().get(&key).cloned())
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        self.check("set_property")?;
        FakeHost::set_property(self, path, value);
        Ok(())
    }

    fn shared_data(&self, key: &str) -> HostResult<Option<SharedValue>> {
        self.check("shared_data")?;
        Ok(self.shared.borrow().get(key).cloned())
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.check("set_shared_data")?;
        let pending = {
            let mut list = self.interleaved.borrow_mut();
            list.iter()
                .position(|(k, _)| k == key)
                .map(|i| list.remove(i))
        };
        if let Some((k, v)) = pending {
            self.set_shared_data(&k, &v, None)?;
        }
        let mut shared = self.shared.borrow_mut();
        // As in Envoy: a CAS on an absent key is ignored, 0 means no CAS.
        let next = match shared.get(key) {
            Some(current) => {
                if matches!(cas, Some(c) if c != 0 && c != current.cas) {
                    return Err(HostError::CasMismatch);
                }
                current.cas.wrapping_add(1).max(1)
            }
            None => 1,
        };
        shared.insert(
            key.to_string(),
            SharedValue {
                value: value.to_vec(),
                cas: next,
            },
        );
        Ok(())
    }

    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) -> HostResult<()> {
        self.check("send_local_response")?;
        *self.local_response.borrow_mut() = Some(LocalResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
            details: details.to_string(),
        });
        Ok(())
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        self.check("call_foreign_function")?;
        self.foreign_calls.borrow_mut().push(name.to_string());
        match self.foreign.borrow().get(name) {
            Some(f) => f(args),
            // Envoy 1.40 has clear_route_cache; behave the same by default.
            None if name == "clear_route_cache" => Ok(None),
            None => Err(HostError::NotFound),
        }
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32> {
        self.check("define_metric")?;
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics.iter().position(|m| m.name == name) {
            return Ok(i as u32);
        }
        metrics.push(Metric {
            kind: Some(kind),
            name: name.to_string(),
            ..Metric::default()
        });
        Ok((metrics.len() - 1) as u32)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        self.check("increment_metric")?;
        self.with_metric(id, |m| m.value += i128::from(offset))
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.check("record_metric")?;
        self.with_metric(id, |m| match m.kind {
            Some(MetricType::Histogram) => m.samples.push(value),
            _ => m.value = i128::from(value),
        })
    }

    fn set_tick_period(&self, period: Duration) -> HostResult<()> {
        self.check("set_tick_period")?;
        self.tick_period.set(Some(period));
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> HostResult<u32> {
        self.check("http_call")?;
        let mut calls = self.http_calls.borrow_mut();
        let token = calls.len() as u32 + 1;
        calls.push(HttpCall {
            token,
            cluster: cluster.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
            timeout,
        });
        Ok(token)
    }

    fn http_call_response_headers(&self) -> HostResult<Headers> {
        self.check("http_call_response_headers")?;
        Ok(self
            .http_call_response
            .borrow()
            .as_ref()
            .map(|r| r.headers.clone())
            .unwrap_or_default())
    }

    fn http_call_response_body(&self) -> HostResult<Option<Vec<u8>>> {
        self.check("http_call_response_body")?;
        Ok(self
            .http_call_response
            .borrow()
            .as_ref()
            .map(|r| r.body.clone()))
    }

    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        self.check("set_effective_context")?;
        if self.ended.borrow().contains(&context_id) {
            return Err(HostError::BadArgument);
        }
        self.effective_context.set(context_id);
        Ok(())
    }

    fn resume_request(&self) -> HostResult<()> {
        self.check("resume_request")?;
        self.resumed.borrow_mut().push(self.effective_context.get());
        Ok(())
    }

    fn metric(&self, id: u32) -> HostResult<u64> {
        self.check("metric")?;
        self.with_metric(id, |m| m.value.clamp(0, i128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_follows_envoy_cas_rules() {
        let h = FakeHost::new();
        assert_eq!(h.shared_data("k").unwrap(), None);
        // A CAS on an absent key is ignored.
        h.set_shared_data("k", b"a", Some(42)).unwrap();
        let v = h.shared_data("k").unwrap().unwrap();
        assert_eq!(v.value, b"a");
        assert_eq!(
            h.set_shared_data("k", b"b", Some(v.cas + 1)),
            Err(HostError::CasMismatch)
        );
        h.set_shared_data("k", b"b", Some(v.cas)).unwrap();
        assert_eq!(
            h.set_shared_data("k", b"c", Some(v.cas)),
            Err(HostError::CasMismatch)
        );
    }

    #[test]
    fn response_headers_are_read_only_in_the_request_phase() {
        let h = FakeHost::new();
        assert_eq!(
            h.add_header(MapType::ResponseHeaders, "x", b"1"),
            Err(HostError::BadArgument)
        );
        h.set_phase(Phase::Response);
        h.add_header(MapType::ResponseHeaders, "x", b"1").unwrap();
        assert_eq!(h.map(MapType::ResponseHeaders).get("x"), Some(&b"1"[..]));
    }

    #[test]
    fn clear_route_cache_tolerates_a_missing_function() {
        let h = FakeHost::new();
        h.set_foreign_function("clear_route_cache", |_| Err(HostError::NotFound));
        assert_eq!(h.clear_route_cache(), Ok(()));
        h.set_foreign_function("clear_route_cache", |_| Err(HostError::InternalFailure));
        assert_eq!(h.clear_route_cache(), Err(HostError::InternalFailure));
    }

    #[test]
    fn every_status_maps_to_an_error() {
        assert_eq!(HostError::from_status(0), None);
        for s in 1..=20 {
            assert!(HostError::from_status(s).is_some());
        }
        assert_eq!(HostError::from_status(99), Some(HostError::Unknown(99)));
    }
}
