//! Demo upstreams: one real HTTP/1.1 server per version on loopback. Each
//! answers JSON naming the version that served the request and echoing the
//! request headers it received, so tests see what the filters forwarded.
//!
//! Faults, per request (headers) or for a while ([`Upstream::set_faults`] or
//! `GET /_demo/faults?fail=0.5&status=503&delayMs=100&forMs=10000`):
//! - `x-demo-fail: 0.3` fails that share of requests, with `x-demo-status`
//!   (default 503);
//! - `x-demo-status: 500` alone always answers that status;
//! - `x-demo-delay-ms: 200` adds latency.

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Faults an upstream applies to every request until `until`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of requests to fail, 0.0 to 1.0.
    pub fail_ratio: f64,
    /// Status of a failed request (503 when 0).
    pub status: u16,
    pub delay: Duration,
    /// `None`: until cleared.
    pub until: Option<Instant>,
}

struct State {
    version: String,
    served: AtomicU64,
    rng: AtomicU64,
    faults: Mutex<Faults>,
}

impl State {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active_faults(&self) -> Faults {
        let mut f = self.faults();
        if matches!(f.until, Some(t) if Instant::now() >= t) {
            *f = Faults::default();
        }
        f.clone()
    }

    /// A uniform draw in [0, 1).
    fn draw(&self) -> f64 {
        let x = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One running demo upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Upstream {
    pub fn version(&self) -> &str {
        &self.state.version
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// Applies faults to every request for `duration` (`None`: until cleared).
    pub fn set_faults(&self, faults: Faults, duration: Option<Duration>) {
        *self.state.faults() = Faults {
            until: duration.map(|d| Instant::now() + d),
            ..faults
        };
    }

    pub fn clear_faults(&self) {
        *self.state.faults() = Faults::default();
    }
}

/// The demo upstreams and the runtime serving them; dropping stops them.
pub struct Upstreams {
    runtime: Option<tokio::runtime::Runtime>,
    pub servers: Vec<Upstream>,
}

impl Upstreams {
    /// Starts one server per version on 127.0.0.1, each on a free port.
    pub fn start(versions: &[&str]) -> Result<Upstreams> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("demo-upstream")
            .build()
            .context("starting the upstream runtime")?;
        let mut servers = Vec::new();
        for (i, version) in versions.iter().enumerate() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            let state = Arc::new(State {
                version: version.to_string(),
                served: AtomicU64::new(0),
                rng: AtomicU64::new(i as u64 + 1),
                faults: Mutex::new(Faults::default()),
            });
            let st = state.clone();
            runtime.spawn(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let st = st.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| handle(st.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            servers.push(Upstream { addr, state });
        }
        Ok(Upstreams {
            runtime: Some(runtime),
            servers,
        })
    }

    pub fn get(&self, version: &str) -> Option<&Upstream> {
        self.servers.iter().find(|u| u.version() == version)
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn query_params(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() == "/_demo/faults" {
        return Ok(control(&state, &req));
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    let faults = state.active_faults();
    let delay = header_str(&req, "x-demo-delay-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(faults.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay.min(Duration::from_secs(30))).await;
    }
    let asked_status = header_str(&req, "x-demo-status").and_then(|v| v.parse::<u16>().ok());
    let fail_ratio = header_str(&req, "x-demo-fail")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(if asked_status.is_some() {
            1.0
        } else {
            faults.fail_ratio
        });
    let failed = fail_ratio > 0.0 && state.draw() < fail_ratio;
    let status = if failed {
        asked_status
            .or((faults.status != 0).then_some(faults.status))
            .unwrap_or(503)
    } else {
        200
    };

    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let body = json!({
        "version": state.version,
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "headers": headers,
    });
    Ok(json_response(status, &state.version, &body))
}

fn control(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let q = query_params(req);
    if q.contains_key("clear") {
        *state.faults() = Faults::default();
    } else if !q.is_empty() {
        let num = |k: &str| q.get(k).and_then(|v| v.parse::<f64>().ok());
        *state.faults() = Faults {
            fail_ratio: num("fail").unwrap_or(0.0).clamp(0.0, 1.0),
            status: num("status").map(|s| s as u16).unwrap_or(503),
            delay: Duration::from_millis(num("delayMs").unwrap_or(0.0) as u64),
            until: num("forMs").map(|ms| Instant::now() + Duration::from_millis(ms as u64)),
        };
    }
    let f = state.active_faults();
    let body = json!({
        "version": state.version,
        "fail": f.fail_ratio,
        "status": f.status,
        "delayMs": f.delay.as_millis() as u64,
        "remainingMs": f.until.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
    });
    json_response(200, &state.version, &body)
}

fn json_response(status: u16, version: &str, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(version) {
        resp.headers_mut().insert("x-demo-version", v);
    }
    resp
}
