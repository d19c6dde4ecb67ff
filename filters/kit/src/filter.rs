//! The host-independent shape of a filter. A filter compiles its config once
//! into a [`Filter`] value; each request gets a fresh [`HttpFilter`]. The
//! proxy-wasm glue (`proxy::register`) and the tests drive both through a
//! [`Host`], so the same code runs in Envoy and against `FakeHost`.

use crate::config::ConfigError;
use crate::host::Host;
use std::rc::Rc;

/// What a filter tells Envoy after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// A configured filter: built once per plugin configuration, shared by every
/// request on the worker.
pub trait Filter: Sized + 'static {
    /// The filter's name, for messages about it.
    const NAME: &'static str;
    type Http: HttpFilter;

    /// Parses and compiles the plugin configuration. An error names the JSON
    /// path, and makes Envoy reject the plugin at load time.
    fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError>;

    /// The per-request part.
    fn new_http(self: &Rc<Self>) -> Self::Http;

    /// How often `on_tick` runs on each worker; `None` for never.
    fn tick_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// Runs every `tick_period` on each worker, before paused requests are
    /// woken.
    fn on_tick(self: &Rc<Self>, _host: &dyn Host) {}

    /// The answer to `Host::http_call` `token`; `None` when the call failed
    /// (reset, timeout) before a response arrived.
    fn on_http_call_response(
        self: &Rc<Self>,
        _host: &dyn Host,
        _token: u32,
        _response: Option<HttpCallResponse>,
    ) {
    }
}

/// A response to `Host::http_call`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    pub status: u16,
    pub headers: crate::Headers,
    pub body: Vec<u8>,
}

/// What a paused request does when woken (after each tick or HTTP call
/// response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Let the request go on.
    Resume,
    /// Stay paused.
    Wait,
    /// The filter answered it (a local reply); forget it.
    Done,
}

/// The per-request callbacks. Defaults do nothing.
pub trait HttpFilter {
    fn on_request_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    /// Runs for every request, including those answered by an earlier filter.
    fn on_log(&mut self, _host: &dyn Host) {}

    /// A request paused by `on_request_headers` (returning `Pause`) is woken
    /// after every tick and HTTP call response until this says otherwise.
    fn on_wake(&mut self, _host: &dyn Host) -> Wake {
        Wake::Resume
    }
}
