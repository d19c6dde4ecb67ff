//! The real host over the proxy-wasm ABI, and the glue that runs a
//! [`Filter`] as a proxy-wasm module. This is the only code that needs Envoy;
//! everything it calls is tested natively with [`crate::FakeHost`].

use crate::abi;
use crate::filter::{Action, Filter, HttpFilter};
use crate::headers::{self, Headers};
use crate::host::{Host, HostError, HostResult, LogLevel, MapType, MetricType, SharedValue};
use std::cell::Cell;
use std::ptr::null_mut;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

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
        Headers::from_wire(wire.as_deref().unwrap_or_default()).ok_or(HostError::ParseFailure)
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

    fn metric(&self, id: u32) -> HostResult<u64> {
        let mut value = 0u64;
        // SAFETY: valid out pointer.
        HostError::check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
        Ok(value)
    }
}

/// Registers `F` as this module's root context. Call it from `_initialize`
/// (see [`crate::export_filter!`]).
pub fn register<F: Filter>() {
    crate::logger::init();
    proxy_wasm::set_root_context(|_| Box::new(Root::<F>::new()));
}

struct Root<F: Filter> {
    host: Rc<ProxyHost>,
    filter: Option<Rc<F>>,
}

impl<F: Filter> Root<F> {
    fn new() -> Root<F> {
        Root {
            host: Rc::new(ProxyHost::new()),
            filter: None,
        }
    }
}

impl<F: Filter> proxy_wasm::traits::Context for Root<F> {}

impl<F: Filter> proxy_wasm::traits::RootContext for Root<F> {
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

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn proxy_wasm::traits::HttpContext>> {
        Some(Box::new(Http::<F> {
            host: self.host.clone(),
            inner: self.filter.as_ref().map(|f| f.new_http()),
        }))
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}

/// One request. Without a configured filter (which Envoy does not allow) it
/// passes everything through.
struct Http<F: Filter> {
    host: Rc<ProxyHost>,
    inner: Option<F::Http>,
}

fn to_proxy(action: Action) -> proxy_wasm::types::Action {
    match action {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}

impl<F: Filter> proxy_wasm::traits::Context for Http<F> {}

impl<F: Filter> proxy_wasm::traits::HttpContext for Http<F> {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> proxy_wasm::types::Action {
        match &mut self.inner {
            Some(f) => to_proxy(f.on_request_headers(&*self.host, eos)),
            None => proxy_wasm::types::Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> proxy_wasm::types::Action {
        match &mut self.inner {
            Some(f) => to_proxy(f.on_response_headers(&*self.host, eos)),
            None => proxy_wasm::types::Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let Some(f) = &mut self.inner {
            f.on_log(&*self.host);
        }
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
            $crate::proxy::register::<$filter>();
        }
    };
}
