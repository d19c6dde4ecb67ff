//! A JWKS endpoint on loopback for the jwt-auth tests: a real HTTP/1.1
//! server (hyper, on its own tokio runtime) answering `GET` on any path
//! with the current document, that tests can break and mend at run time:
//! [`JwksServer::set_document`], [`JwksServer::set_mode`] (serve, answer a
//! status, answer garbage, answer slowly, or go down so that connections are
//! refused, then come back on the same port) and [`JwksServer::fetches`].

use anyhow::{Context, Result, bail};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};
use tokio::task::{AbortHandle, JoinHandle};

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the document.
    Serve,
    /// That status (500 when not a valid status code) with a small JSON
    /// error body, not the document.
    Status(u16),
    /// 200, `application/json`, with a body that is not JSON ([`GARBAGE`]).
    Garbage,
    /// Waits this long (at most [`MAX_DELAY`]), then serves the document.
    Slow(Duration),
    /// Not listening: connections are refused, and open connections are
    /// closed. Any other mode listens again on the same port.
    Down,
}

/// The body [`Mode::Garbage`] answers.
pub const GARBAGE: &str = "<html><body>502 Bad Gateway</body></html>\n{\"keys\": [";

/// The longest [`Mode::Slow`] delay.
pub const MAX_DELAY: Duration = Duration::from_secs(120);

struct State {
    document: Mutex<String>,
    mode: Mutex<Mode>,
    fetches: AtomicU64,
    /// Connection tasks not yet finished.
    live: AtomicUsize,
    connections: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The accept loop's listener; dropping it closes the listener first, then
/// says so.
struct Accepting {
    listener: Option<tokio::net::TcpListener>,
    closed: mpsc::Sender<()>,
}

impl Drop for Accepting {
    fn drop(&mut self) {
        drop(self.listener.take());
        let _ = self.closed.send(());
    }
}

/// A running accept loop.
struct Listening {
    task: JoinHandle<()>,
    closed: mpsc::Receiver<()>,
}

/// Counts a connection task as live until dropped (finished or aborted).
struct LiveGuard(Arc<State>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running JWKS server; dropping it stops it.
pub struct JwksServer {
    /// Where it listens (the same port across [`Mode::Down`]).
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
    listening: Mutex<Option<Listening>>,
}

impl JwksServer {
    /// Starts serving `document` on 127.0.0.1, on a free port.
    pub fn start(document: impl Into<String>) -> Result<JwksServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("jwks-server")
            .build()
            .context("starting the JWKS server runtime")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = JwksServer {
            addr,
            state: Arc::new(State {
                document: Mutex::new(document.into()),
                mode: Mutex::new(Mode::Serve),
                fetches: AtomicU64::new(0),
                live: AtomicUsize::new(0),
                connections: Mutex::new(Vec::new()),
            }),
            runtime: Some(runtime),
            listening: Mutex::new(None),
        };
        let listening = server.listen(listener)?;
        *lock(&server.listening) = Some(listening);
        Ok(server)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the document; the next request gets it.
    pub fn set_document(&self, document: impl Into<String>) {
        *lock(&self.state.document) = document.into();
    }

    pub fn document(&self) -> String {
        lock(&self.state.document).clone()
    }

    pub fn mode(&self) -> Mode {
        lock(&self.state.mode).clone()
    }

    /// Switches mode. Into [`Mode::Down`]: returns once the listener is
    /// closed and every open connection is closed. Out of it: returns once
    /// the same port listens again (an error if it cannot be bound again
    /// within 5 s).
    pub fn set_mode(&self, mode: Mode) -> Result<()> {
        let mut listening = lock(&self.listening);
        *lock(&self.state.mode) = mode.clone();
        if mode == Mode::Down {
            if let Some(l) = listening.take() {
                self.close(l)?;
            }
        } else if listening.is_none() {
            let listener = rebind(self.addr)?;
            *listening = Some(self.listen(listener)?);
        }
        Ok(())
    }

    /// Requests received so far, in any mode, on any path and with any
    /// method (counted on arrival, so a [`Mode::Slow`] request the client
    /// gave up on counts).
    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Waits (at most `timeout`) until [`JwksServer::fetches`] reaches
    /// `at_least`; true if it did.
    pub fn wait_fetches(&self, at_least: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.fetches() >= at_least {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops listening and stops the runtime (as dropping does).
    pub fn stop(&mut self) {
        if let Some(l) = lock(&self.listening).take() {
            let _ = self.close(l);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().context("the JWKS server is stopped")
    }

    /// Spawns the accept loop on `listener`.
    fn listen(&self, listener: std::net::TcpListener) -> Result<Listening> {
        let runtime = self.runtime()?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (closed_tx, closed) = mpsc::channel();
        let accepting = Accepting {
            listener: Some(listener),
            closed: closed_tx,
        };
        let state = self.state.clone();
        let task = runtime.spawn(async move {
            let accepting = accepting;
            let Some(listener) = accepting.listener.as_ref() else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                state.live.fetch_add(1, Ordering::SeqCst);
                let guard = LiveGuard(state.clone());
                let st = state.clone();
                let conn = tokio::spawn(async move {
                    let _guard = guard;
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                let mut connections = lock(&state.connections);
                connections.retain(|c| !c.is_finished());
                connections.push(conn.abort_handle());
            }
        });
        Ok(Listening { task, closed })
    }

    /// Stops the accept loop (the listener is closed when this returns),
    /// then every connection.
    fn close(&self, listening: Listening) -> Result<()> {
        listening.task.abort();
        listening
            .closed
            .recv_timeout(Duration::from_secs(5))
            .context("the JWKS listener did not close within 5 s")?;
        for c in lock(&self.state.connections).drain(..) {
            c.abort();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.state.live.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                bail!("JWKS connections still open after 5 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` again, retrying for up to 5 s.
fn rebind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("binding {addr} again"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = json_response(405, r#"{"error":"method not allowed"}"#.to_string());
        resp.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(resp);
    }
    let mode = lock(&state.mode).clone();
    Ok(match mode {
        Mode::Status(status) => json_response(
            status,
            format!(r#"{{"error":"JWKS server in test mode Status({status})"}}"#),
        ),
        Mode::Garbage => json_response(200, GARBAGE.to_string()),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay.min(MAX_DELAY)).await;
            json_response(200, lock(&state.document).clone())
        }
        // A request on a connection that Down is closing.
        Mode::Serve | Mode::Down => json_response(200, lock(&state.document).clone()),
    })
}

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
