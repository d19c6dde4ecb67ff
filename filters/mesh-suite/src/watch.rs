//! A [`Host`] that passes every call through and notes what a stage did
//! that the suite must know: a local reply (later stages then see only
//! `on_log`, as separate filters do) and the tokens of its HTTP calls (whose
//! answers go back to that stage).

use kit::host::{HostResult, SharedValue};
use kit::{Headers, Host, LogLevel, MapType, MetricType};
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

pub struct Watch<'h> {
    inner: &'h dyn Host,
    replied: Cell<bool>,
    calls: RefCell<Vec<u32>>,
}

impl<'h> Watch<'h> {
    pub fn new(inner: &'h dyn Host) -> Watch<'h> {
        Watch {
            inner,
            replied: Cell::new(false),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// Whether the stage sent a local reply.
    pub fn replied(&self) -> bool {
        self.replied.get()
    }

    /// The tokens of the HTTP calls the stage started.
    pub fn take_calls(&self) -> Vec<u32> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl Host for Watch<'_> {
    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }
    fn log_level(&self) -> HostResult<LogLevel> {
        self.inner.log_level()
    }
    fn now(&self) -> HostResult<SystemTime> {
        self.inner.now()
    }
    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }
    fn plugin_config(&self) -> HostResult<Option<Vec<u8>>> {
        self.inner.plugin_config()
    }
    fn headers(&self, map: MapType) -> HostResult<Headers> {
        self.inner.headers(map)
    }
    fn header(&self, map: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
        self.inner.header(map, name)
    }
    fn set_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        self.inner.set_header(map, name, value)
    }
    fn add_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        self.inner.add_header(map, name, value)
    }
    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()> {
        self.inner.remove_header(map, name)
    }
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        self.inner.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        self.inner.set_property(path, value)
    }
    fn shared_data(&self, key: &str) -> HostResult<Option<SharedValue>> {
        self.inner.shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.inner.set_shared_data(key, value, cas)
    }
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) -> HostResult<()> {
        let result = self
            .inner
            .send_local_response(status, headers, body, details);
        if result.is_ok() {
            self.replied.set(true);
        }
        result
    }
    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        self.inner.call_foreign_function(name, args)
    }
    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32> {
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        self.inner.increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.inner.record_metric(id, value)
    }
    fn metric(&self, id: u32) -> HostResult<u64> {
        self.inner.metric(id)
    }
    fn set_tick_period(&self, period: Duration) -> HostResult<()> {
        self.inner.set_tick_period(period)
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> HostResult<u32> {
        let token = self.inner.http_call(cluster, headers, body, timeout)?;
        self.calls.borrow_mut().push(token);
        Ok(token)
    }
    fn http_call_response_headers(&self) -> HostResult<Headers> {
        self.inner.http_call_response_headers()
    }
    fn http_call_response_body(&self) -> HostResult<Option<Vec<u8>>> {
        self.inner.http_call_response_body()
    }
    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        self.inner.set_effective_context(context_id)
    }
    fn resume_request(&self) -> HostResult<()> {
        self.inner.resume_request()
    }
    fn clear_route_cache(&self) -> HostResult<()> {
        self.inner.clear_route_cache()
    }
}
