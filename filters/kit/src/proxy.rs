//! The real host over the proxy-wasm ABI, and the glue that runs a
//! [`Filter`] as a proxy-wasm module. This is the only code that needs Envoy;
//! everything it calls is tested natively with `FakeHost`.

use crate::abi;
use crate::filter::{Action, Filter, HttpCallResponse, HttpFilter};
use crate::headers::{self, Headers};
use crate::host::{Host, HostError, HostResult, LogLevel, MapType, MetricType, SharedValue};
use crate::pause::PausedRequests;
use std::cell::{Cell, RefCell};
use std::ptr::null_mut;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;

/// The host as Envoy provides it. Every call maps its status to a
/// [`HostError`]; none panics.
pub struct ProxyHost {
    rng: Cell<u64>,
}

impl Default for ProxyHost {
    fn default() -> Self {
        ProxyHost::new()
    }
}

impl ProxyHost {
    /// Seeds the random generator once per VM from WASI `random_get`, or
    /// from the clock if that fails.
    pub fn new() -> ProxyHost {
        let mut seed = [0u8; 8];
        // SAFETY: the buffer is valid for 8 bytes.
        let errno = unsafe { abi::random_get(seed.as_mut_ptr(), seed.len()) };
        let mut seed = u64::from_le_bytes(seed);
        if errno != 0 || seed == 0 {
            let mut nanos = 0u64;
            // SAFETY: valid out pointer.
            unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) };
            seed = nanos | 1;
        }
        ProxyHost {
            rng: Cell::new(seed),
        }
    }
}

/// Runs a host call that returns a buffer. `Ok` with a null buffer is an
/// empty one.
fn get_raw(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    HostError::check(call(&mut data, &mut size))?;
    // SAFETY: on Ok the host returned a buffer it allocated through our
    // allocator, or null.
    Ok(unsafe { abi::take(data, size) })
}

/// Like [`get_raw`], with `NotFound` and `Empty` as `None`.
fn get_bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Option<Vec<u8>>> {
    match get_raw(call) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(HostError::NotFound) | Err(HostError::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

impl Host for ProxyHost {
    fn log(&self, level: LogLevel, message: &str) {
        // SAFETY: pointer and length come from one &str.
        unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    fn log_level(&self) -> HostResult<LogLevel> {
        let mut level = 0u32;
        // SAFETY: valid out pointer.
        HostError::check(unsafe { abi::proxy_get_log_level(&mut level) })?;
        Ok(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        })
    }

    fn now(&self) -> HostResult<SystemTime> {
        let mut nanos = 0u64;
        // SAFETY: valid out pointer.
        HostError::check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) })?;
        Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    fn random_u64(&self) -> u64 {
        // SplitMix64: fast, and good enough for weighted draws.
        let state = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(state);
        crate::hash::mix64(state)
    }

    fn plugin_config(&self) -> HostResult<Option<Vec<u8>>> {
        get_bytes(|d, s| unsafe {
            // SAFETY: valid out pointers.
            abi::proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, usize::MAX, d, s)
        })
        .map(|b| b.filter(|b| !b.is_empty()))
    }

    fn headers(&self, map: MapType) -> HostResult<Headers> {
        // SAFETY: valid out pointers.
        let wire = get_bytes(|d, s| unsafe { abi::proxy_get_header_map_pairs(map as u32, d, s) })?;
        Headers::from_wire_vec(wire.unwrap_or_default()).ok_or(HostError::ParseFailure)
    }

    fn header(&self, map: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
        get_bytes(|d, s| unsafe {
            // SAFETY: pointer and length from one &str; valid out pointers.
            abi::proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s)
        })
    }

    fn set_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        // SAFETY: pointers and lengths from slices.
        HostError::check(unsafe {
            abi::proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn add_header(&self, map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
        // SAFETY: pointers and lengths from slices.
        HostError::check(unsafe {
            abi::proxy_add_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn remove_header(&self, map: MapType, name: &str) -> HostResult<()> {
        // SAFETY: pointer and length from one &str.
        match HostError::check(unsafe {
            abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
        }) {
            Err(HostError::NotFound) => Ok(()),
            other => other,
        }
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        let path = property_path(path);
        // SAFETY: pointer and length from one Vec; valid out pointers.
        get_bytes(|d, s| unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), d, s) })
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        let path = property_path(path);
        // SAFETY: pointers and lengths from slices.
        HostError::check(unsafe {
            abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
        })
    }

    fn shared_data(&self, key: &str) -> HostResult<Option<SharedValue>> {
        let mut cas = 0u32;
        let value = get_bytes(|d, s| unsafe {
            // SAFETY: pointer and length from one &str; valid out pointers.
            abi::proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas)
        })?;
        Ok(value.map(|value| SharedValue { value, cas }))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        // SAFETY: pointers and lengths from slices.
        HostError::check(unsafe {
            abi::proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        })
    }

    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) -> HostResult<()> {
        let headers = headers::to_wire(headers);
        // SAFETY: pointers and lengths from slices.
        HostError::check(unsafe {
            abi::proxy_send_local_response(
                status,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        // NotFound stays an error here: it means the function does not exist.
        get_raw(|d, s| unsafe {
            // SAFETY: pointers and lengths from slices; valid out pointers.
            abi::proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                d,
                s,
            )
        })
        .map(|b| (!b.is_empty()).then_some(b))
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32> {
        let mut id = 0u32;
        // SAFETY: pointer and length from one &str; valid out pointer.
        HostError::check(unsafe {
            abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
        })?;
        Ok(id)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        // SAFETY: no pointers.
        HostError::check(unsafe { abi::proxy_increment_metric(id, offset) })
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        // SAFETY: no pointers.
        HostError::check(unsafe { abi::proxy_record_metric(id, value) })
    }

    fn set_tick_period(&self, period: Duration) -> HostResult<()> {
        let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
        // SAFETY: no pointers.
        HostError::check(unsafe { abi::proxy_set_tick_period_milliseconds(ms) })
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout: Duration,
    ) -> HostResult<u32> {
        // Through the SDK, which records the token so that its dispatcher
        // can route the response back (it panics on a token it did not see).
        // Its panic arm covers statuses other than Ok, BadArgument and
        // InternalFailure, which Envoy's httpCall never returns.
        let headers = headers
            .iter()
            .map(|(n, v)| std::str::from_utf8(v).map(|v| (*n, v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| HostError::BadArgument)?;
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers,
            (!body.is_empty()).then_some(body),
            vec![],
            timeout,
        )
        .map_err(|s| HostError::from_status(s as u32).unwrap_or(HostError::InternalFailure))
    }

    fn http_call_response_headers(&self) -> HostResult<Headers> {
        self.headers(MapType::HttpCallResponseHeaders)
    }

    fn http_call_response_body(&self) -> HostResult<Option<Vec<u8>>> {
        get_bytes(|d, s| unsafe {
            // SAFETY: valid out pointers.
            abi::proxy_get_buffer_bytes(BUFFER_HTTP_CALL_RESPONSE_BODY, 0, usize::MAX, d, s)
        })
    }

    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        // SAFETY: no pointers.
        HostError::check(unsafe { abi::proxy_set_effective_context(context_id) })
    }

    fn resume_request(&self) -> HostResult<()> {
        // SAFETY: no pointers.
        HostError::check(unsafe { abi::proxy_continue_stream(STREAM_HTTP_REQUEST) })
    }

    fn metric(&self, id: u32) -> HostResult<u64> {
        let mut value = 0u64;
        // SAFETY: valid out pointer.
        HostError::check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
        Ok(value)
    }
}

/// Registers `F` as this module's root context. Call it from `_initialize`
/// (see [`crate::export_filter!`]); `version` is the filter crate's.
pub fn register<F: Filter>(version: &'static str) {
    crate::logger::init();
    let _ = VERSION.set(version);
    proxy_wasm::set_root_context(|_| Box::new(Root::<F>::new()));
}

/// The filter crate's version, for the start-up line. The root context
/// factory is a plain `fn`, so it cannot carry it.
static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

struct Root<F: Filter> {
    host: Rc<ProxyHost>,
    filter: Option<Rc<F>>,
    paused: Rc<PausedRequests<F::Http>>,
}

impl<F: Filter> Root<F> {
    fn new() -> Root<F> {
        Root {
            host: Rc::new(ProxyHost::new()),
            filter: None,
            paused: Rc::new(PausedRequests::default()),
        }
    }
}

impl<F: Filter> proxy_wasm::traits::Context for Root<F> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let Some(filter) = &self.filter else {
            return;
        };
        let host = &*self.host;
        // Envoy reports a failed call (reset, timeout) with no headers.
        let response = host
            .http_call_response_headers()
            .ok()
            .filter(|h| !h.is_empty())
            .map(|headers| HttpCallResponse {
                status: headers
                    .get_str(":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                body: host
                    .http_call_response_body()
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                headers,
            });
        filter.on_http_call_response(host, token, response);
        self.paused.wake_all(host);
    }
}

impl<F: Filter> proxy_wasm::traits::RootContext for Root<F> {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // Once per VM: each worker's, and the throwaway one that checks
        // the configuration.
        log::info!(
            "{}",
            crate::build::banner(F::NAME, VERSION.get().copied().unwrap_or("?"))
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        crate::logger::sync_level(&*self.host);
        let config = match self.host.plugin_config() {
            Ok(config) => config,
            Err(e) => {
                log::error!("cannot read the plugin configuration: {e}");
                return false;
            }
        };
        match F::configure(config.as_deref(), &*self.host) {
            Ok(filter) => {
                if let Some(period) = filter.tick_period()
                    && let Err(e) = self.host.set_tick_period(period)
                {
                    log::error!("cannot set the tick period: {e}");
                    return false;
                }
                self.filter = Some(Rc::new(filter));
                true
            }
            Err(e) => {
                // Returning false makes Envoy reject the plugin (and
                // `envoy --mode validate` fail) with this line in the log.
                log::error!("invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(filter) = &self.filter {
            filter.on_tick(&*self.host);
        }
        self.paused.wake_all(&*self.host);
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn proxy_wasm::traits::HttpContext>> {
        Some(Box::new(Http::<F> {
            id,
            host: self.host.clone(),
            inner: self
                .filter
                .as_ref()
                .map(|f| Rc::new(RefCell::new(f.new_http()))),
            paused: self.paused.clone(),
        }))
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}

/// One request. Without a configured filter (which Envoy does not allow) it
/// passes everything through. Callbacks that arrive while the filter is busy
/// (Envoy re-entering during a local reply sent from a wake) are skipped.
struct Http<F: Filter> {
    id: u32,
    host: Rc<ProxyHost>,
    inner: Option<Rc<RefCell<F::Http>>>,
    paused: Rc<PausedRequests<F::Http>>,
}

impl<F: Filter> Http<F> {
    fn with(&self, f: impl FnOnce(&mut F::Http, &dyn Host) -> Action) -> proxy_wasm::types::Action {
        let action = match self.inner.as_ref().map(|h| h.try_borrow_mut()) {
            Some(Ok(mut http)) => f(&mut http, &*self.host),
            _ => Action::Continue,
        };
        match action {
            Action::Continue => proxy_wasm::types::Action::Continue,
            Action::Pause => proxy_wasm::types::Action::Pause,
        }
    }
}

impl<F: Filter> proxy_wasm::traits::Context for Http<F> {}

impl<F: Filter> proxy_wasm::traits::HttpContext for Http<F> {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> proxy_wasm::types::Action {
        let action = self.with(|h, host| h.on_request_headers(host, eos));
        if action == proxy_wasm::types::Action::Pause
            && let Some(http) = &self.inner
        {
            self.paused.add(self.id, http.clone());
        }
        action
    }

    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> proxy_wasm::types::Action {
        self.with(|h, host| h.on_response_headers(host, eos))
    }

    fn on_log(&mut self) {
        self.with(|h, host| {
            h.on_log(host);
            Action::Continue
        });
    }
}

impl<F: Filter> Drop for Http<F> {
    fn drop(&mut self) {
        self.paused.remove(self.id);
    }
}

/// Exports a [`Filter`] as this module's proxy-wasm entry point.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        unsafe extern "C" {
            fn __wasm_call_ctors();
        }

        /// The reactor entry point Envoy calls once per VM.
        #[unsafe(no_mangle)]
        pub extern "C" fn _initialize() {
            // SAFETY: runs the static constructors once, as a reactor must.
            unsafe { __wasm_call_ctors() };
            $crate::proxy::register::<$filter>(env!("CARGO_PKG_VERSION"));
        }
    };
}
