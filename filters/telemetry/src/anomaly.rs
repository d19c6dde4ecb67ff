//! The anomaly signal: per configured route, a rolling baseline of the error
//! rate and the p95 latency, and an alert when a window strays far from it.
//!
//! **Counting.** Each request adds to this VM's [`Local`] counts for its
//! route (no host call). Every tick, each worker merges its counts into the
//! route's [`Shared`] record in shared data with a CAS write, so every worker
//! contributes to one window.
//!
//! **Judging.** A window `[k·w, (k+1)·w)` is closed by the first worker
//! whose tick comes at least `grace` (two ticks) after its end, so every
//! worker has flushed its counts by then. Closing happens inside the same
//! CAS write, so exactly one worker closes each window, and exactly one
//! worker sees each state change and writes its event.
//!
//! A closed window with at least `minRequests` requests is judged. For each
//! kind, `error_rate` (share of responses >= 500 or none) and `latency`
//! (p95 from [`BUCKETS`] log-scale buckets, a quarter octave each), it
//! fires when all hold:
//! - the baseline is warm: `baseline / window` windows learnt;
//! - current >= `factor` x baseline;
//! - current - baseline >= `minDelta` (error rate) or `minLatencyDelta`.
//!
//! It clears when a judged window no longer meets them. The baseline is an
//! EWMA with weight `window / baseline` per judged window; a firing kind
//! does not learn, so a lasting fault cannot become the new normal. Windows
//! with fewer requests neither judge nor learn.
//!
//! A change sets the gauge `route_anomaly{route,kind}` (1 firing, 0 not)
//! and writes one warn-level JSON line:
//! `{"event":"route_anomaly","state":"firing","route":"orders","kind":"error_rate","baseline":0.01,"current":0.4,"unit":"ratio","samples":120,"window":"5s"}`.

use crate::config::Anomaly;
use kit::{Host, HostError, LogLevel, MetricType};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::time::Duration;

/// Latency buckets: bucket 0 holds <= 1 ms, bucket `i` holds
/// `(2^((i-1)/4), 2^(i/4)]` ms, the last one everything above.
pub const BUCKETS: usize = 64;

/// CAS attempts per route and tick before the counts wait for the next tick.
const CAS_ATTEMPTS: usize = 4;

/// The latency bucket of `ms`.
pub fn bucket(ms: u64) -> usize {
    if ms <= 1 {
        return 0;
    }
    let i = (4.0 * (ms as f64).log2()).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// The upper bound, in ms, of bucket `i`.
pub fn bucket_bound(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

/// The p95 of `buckets`: the upper bound of the bucket holding the
/// 95th-percentile sample; 0 with no samples.
pub fn p95(buckets: &[u32]) -> f64 {
    let n: u64 = buckets.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return 0.0;
    }
    let rank = (n * 95).div_ceil(100);
    let mut seen = 0u64;
    for (i, &c) in buckets.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            return bucket_bound(i);
        }
    }
    bucket_bound(BUCKETS - 1)
}

/// One window's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(rename = "n")]
    pub requests: u64,
    #[serde(rename = "e")]
    pub errors: u64,
    #[serde(rename = "b")]
    pub buckets: Vec<u32>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            requests: 0,
            errors: 0,
            buckets: vec![0; BUCKETS],
        }
    }
}

impl Counts {
    pub fn add(&mut self, error: bool, ms: u64) {
        self.requests += 1;
        self.errors += u64::from(error);
        if let Some(b) = self.buckets.get_mut(bucket(ms)) {
            *b = b.saturating_add(1);
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.buckets.resize(BUCKETS, 0);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The two kinds of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ErrorRate,
    Latency,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::ErrorRate, Kind::Latency];

    pub fn label(self) -> &'static str {
        match self {
            Kind::ErrorRate => "error_rate",
            Kind::Latency => "latency",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::ErrorRate => "ratio",
            Kind::Latency => "ms",
        }
    }
}

/// The baseline of one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Judged windows so far (saturating).
    pub learnt: u32,
    pub error_rate: f64,
    pub p95_ms: f64,
}

/// A route's record in shared data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// The window length this record was made for; another one resets it.
    pub window_ms: u64,
    /// The open window's index (`time / window`).
    pub window: u64,
    pub counts: Counts,
    pub baseline: Baseline,
    pub firing_error_rate: bool,
    pub firing_latency: bool,
}

impl Shared {
    fn firing(&self, kind: Kind) -> bool {
        match kind {
            Kind::ErrorRate => self.firing_error_rate,
            Kind::Latency => self.firing_latency,
        }
    }

    fn set_firing(&mut self, kind: Kind, on: bool) {
        match kind {
            Kind::ErrorRate => self.firing_error_rate = on,
            Kind::Latency => self.firing_latency = on,
        }
    }
}

/// A state change, to be published by the worker whose write made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub route: String,
    pub kind: Kind,
    pub firing: bool,
    pub baseline: f64,
    pub current: f64,
    pub samples: u64,
}

impl Event {
    /// The warn-level JSON line.
    pub fn to_json(&self, window: Duration) -> String {
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        serde_json::json!({
            "event": "route_anomaly",
            "state": if self.firing { "firing" } else { "resolved" },
            "route": self.route,
            "kind": self.kind.label(),
            "baseline": round(self.baseline),
            "current": round(self.current),
            "unit": self.kind.unit(),
            "samples": self.samples,
            "window": human(window),
        })
        .to_string()
    }
}

/// `5s`, `500ms`, `1m`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Judges the closed window in `rec` against the baseline, updates the
/// baseline and the firing flags, and returns the changes.
pub fn judge(cfg: &Anomaly, route: &str, rec: &mut Shared) -> Vec<Event> {
    let c = &rec.counts;
    if c.requests < cfg.min_requests {
        return Vec::new();
    }
    let window = cfg.window.as_secs_f64();
    let needed = (cfg.baseline.as_secs_f64() / window).ceil() as u32;
    let warm = rec.baseline.learnt >= needed;
    let alpha = (window / cfg.baseline.as_secs_f64()).clamp(0.0, 1.0);
    let first = rec.baseline.learnt == 0;
    let samples = c.requests;
    let current_err = c.error_rate();
    let current_p95 = p95(&c.buckets);
    let mut events = Vec::new();
    for kind in Kind::ALL {
        let (current, base, min_delta) = match kind {
            Kind::ErrorRate => (current_err, rec.baseline.error_rate, cfg.min_delta),
            Kind::Latency => (
                current_p95,
                rec.baseline.p95_ms,
                cfg.min_latency_delta.as_secs_f64() * 1000.0,
            ),
        };
        let anomalous = warm && current >= cfg.factor * base && current - base >= min_delta;
        if anomalous != rec.firing(kind) {
            rec.set_firing(kind, anomalous);
            events.push(Event {
                route: route.to_string(),
                kind,
                firing: anomalous,
                baseline: base,
                current,
                samples,
            });
        }
        if !anomalous {
            let learnt = if first {
                current
            } else {
                base + alpha * (current - base)
            };
            match kind {
                Kind::ErrorRate => rec.baseline.error_rate = learnt,
                Kind::Latency => rec.baseline.p95_ms = learnt,
            }
        }
    }
    rec.baseline.learnt = rec.baseline.learnt.saturating_add(1);
    events
}

/// One route's counts on this VM, by window index.
#[derive(Debug, Default)]
struct Local {
    slots: Vec<(u64, Counts)>,
}

/// The per-VM state of the anomaly signal.
#[derive(Debug)]
pub struct Detector {
    pub config: Anomaly,
    /// Route names, in config order.
    routes: Vec<String>,
    /// `<prefix>/<route>` is each route's shared-data key.
    prefix: String,
    local: RefCell<Vec<Local>>,
    /// The open window as of the last tick; requests count into it.
    window: Cell<u64>,
    gauges: RefCell<Vec<[Option<u32>; 2]>>,
}

impl Detector {
    pub fn new(config: Anomaly, routes: Vec<String>, plugin_name: &str) -> Detector {
        let n = routes.len();
        Detector {
            config,
            routes,
            prefix: format!("mesh-filters/telemetry/{plugin_name}/anomaly"),
            local: RefCell::new((0..n).map(|_| Local::default()).collect()),
            window: Cell::new(0),
            gauges: RefCell::new(vec![[None; 2]; n]),
        }
    }

    pub fn key(&self, route: usize) -> String {
        format!(
            "{}/{}",
            self.prefix,
            self.routes.get(route).map_or("", |s| s)
        )
    }

    fn window_ms(&self) -> u64 {
        (self.config.window.as_millis() as u64).max(1)
    }

    /// How often each worker flushes: a fifth of the window, 100 ms to 1 s.
    pub fn tick_period(&self) -> Duration {
        (self.config.window / 5).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// How long after a window's end it is closed.
    pub fn grace(&self) -> Duration {
        self.tick_period() * 2
    }

    /// Creates every route's record when absent, so that every later write
    /// is a CAS write (Envoy ignores the CAS on an absent key), and defines
    /// the gauges.
    pub fn start(&self, host: &dyn Host) -> Result<(), HostError> {
        for i in 0..self.routes.len() {
            let key = self.key(i);
            if host.shared_data(&key)?.is_none() {
                let rec = Shared {
                    window_ms: self.window_ms(),
                    ..Shared::default()
                };
                let bytes =
                    serde_json::to_vec(&rec).map_err(|_| HostError::SerializationFailure)?;
                host.set_shared_data(&key, &bytes, None)?;
            }
        }
        Ok(())
    }

    /// Counts one request of route `route`.
    pub fn observe(&self, route: usize, status: u32, duration_ms: u64) {
        let mut local = self.local.borrow_mut();
        let Some(l) = local.get_mut(route) else {
            return;
        };
        let window = self.window.get();
        let counts = match l.slots.iter().position(|(w, _)| *w == window) {
            Some(i) => &mut l.slots[i].1,
            None => {
                l.slots.push((window, Counts::default()));
                match l.slots.last_mut() {
                    Some(s) => &mut s.1,
                    None => return,
                }
            }
        };
        counts.add(status == 0 || status >= 500, duration_ms);
    }

    /// The tick: flush this VM's counts, close due windows, publish changes.
    pub fn on_tick(&self, host: &dyn Host) {
        let Some(now) = kit::clock::since_epoch(host) else {
            return;
        };
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let current = now_ms / self.window_ms();
        self.window.set(current);
        for route in 0..self.routes.len() {
            for _ in 0..CAS_ATTEMPTS {
                match self.flush(host, route, now_ms, current) {
                    Err(HostError::CasMismatch) => continue,
                    _ => break,
                }
            }
        }
    }

    fn flush(
        &self,
        host: &dyn Host,
        route: usize,
        now_ms: u64,
        current: u64,
    ) -> Result<(), HostError> {
        let key = self.key(route);
        let window_ms = self.window_ms();
        let (mut rec, cas) = match host.shared_data(&key)? {
            Some(v) => (
                serde_json::from_slice::<Shared>(&v.value).unwrap_or_default(),
                Some(v.cas),
            ),
            None => (Shared::default(), None),
        };
        // A record from another window length, or from the future (a clock
        // step), starts over.
        if rec.window_ms != window_ms || rec.window > current {
            rec = Shared {
                window_ms,
                window: current,
                ..Shared::default()
            };
        }
        let merge_upto = |rec: &mut Shared, upto: u64, local: &[(u64, Counts)]| {
            for (w, c) in local {
                if *w <= upto {
                    rec.counts.merge(c);
                }
            }
        };
        let mut events = Vec::new();
        let taken_upto;
        {
            let local = self.local.borrow();
            let slots = local.get(route).map_or(&[][..], |l| &l.slots[..]);
            let due = rec.window < current
                && now_ms >= (rec.window + 1) * window_ms + self.grace().as_millis() as u64;
            if due {
                let open = rec.window;
                merge_upto(&mut rec, open, slots);
                let name = self.routes.get(route).map_or("", |s| s);
                events = judge(&self.config, name, &mut rec);
                rec.counts = Counts::default();
                rec.window = current;
                merge_upto(&mut rec, current, slots);
                taken_upto = current;
            } else {
                let open = rec.window;
                merge_upto(&mut rec, open, slots);
                taken_upto = rec.window;
            }
        }
        let bytes = serde_json::to_vec(&rec).map_err(|_| HostError::SerializationFailure)?;
        host.set_shared_data(&key, &bytes, cas)?;
        if let Some(l) = self.local.borrow_mut().get_mut(route) {
            l.slots.retain(|(w, _)| *w > taken_upto);
        }
        self.publish(host, route, &events);
        Ok(())
    }

    fn gauge(&self, host: &dyn Host, route: usize, kind: Kind) -> Option<u32> {
        let slot = kind as usize;
        if let Some(id) = self.gauges.borrow().get(route).and_then(|g| g[slot]) {
            return Some(id);
        }
        let name = crate::metrics::stat_name(
            crate::metrics::ROUTE_ANOMALY,
            &[
                ("route".into(), self.routes.get(route)?.clone()),
                ("kind".into(), kind.label().into()),
            ],
        );
        let id = host.define_metric(MetricType::Gauge, &name).ok()?;
        if let Some(g) = self.gauges.borrow_mut().get_mut(route) {
            g[slot] = Some(id);
        }
        Some(id)
    }

    /// Defines every gauge (at 0 until an alert), so dashboards show the
    /// routes being watched.
    pub fn define_gauges(&self, host: &dyn Host) {
        for route in 0..self.routes.len() {
            for kind in Kind::ALL {
                let _ = self.gauge(host, route, kind);
            }
        }
    }

    fn publish(&self, host: &dyn Host, route: usize, events: &[Event]) {
        for e in events {
            if let Some(id) = self.gauge(host, route, e.kind) {
                let _ = host.record_metric(id, u64::from(e.firing));
            }
            host.log(LogLevel::Warn, &e.to_json(self.config.window));
        }
    }
}
