//! The rate-limit filter in a real Envoy 1.40 (`--concurrency 2`), driven by
//! several parallel client connections (one ureq agent, so one keep-alive
//! connection, per thread). Before a measurement, connections are opened
//! (on an unlimited path) until both workers hold at least one, checked
//! through Envoy's per-worker listener stats, so both worker VMs serve the
//! load.
//!
//! Covered: exact bursts (with and without `burst`), the sustained rate over
//! 10 s, independent keys, shadow mode and its counter, the 429 response and
//! the RateLimit headers, the `maxKeys` cap under 20,000 distinct keys, and
//! config rejection. Burst and sustained also run side by side through
//! Envoy's native `local_ratelimit` (a second Envoy); both admitted counts
//! are printed and ours must be at least as exact.

use e2e::Harness;
use e2e::client;
use e2e::native_ratelimit::{self, Bucket};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Client connections per scenario (at least; more if both workers are not
/// yet serving).
const CONNECTIONS: usize = 8;

fn manifest_dir(name: &str, config: &Value) -> PathBuf {
    e2e::manifest::write_test_plugin(&format!("rl-{name}"), "rate-limit", Some("AUTHZ"), config)
        .unwrap()
}

fn start(name: &str, config: &Value) -> Harness {
    Harness::start(&manifest_dir(name, config)).unwrap()
}

/// Every stat on an Envoy's admin endpoint with an integer value.
fn stats(admin: SocketAddr) -> HashMap<String, u64> {
    let (_, body) = client::admin_get(admin, "/stats?format=json").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
        .collect()
}

/// Active downstream connections per worker on `listener`.
fn worker_connections(admin: SocketAddr, listener: SocketAddr) -> [u64; 2] {
    // Stats name the listener by its configured address (port 0).
    let s = stats(admin);
    let prefix = format!("listener.{}_", listener.ip());
    [0, 1].map(|w| {
        let suffix = format!(".worker_{w}.downstream_cx_active");
        s.iter()
            .filter(|(k, _)| k.starts_with(&prefix) && k.ends_with(&suffix))
            .map(|(_, v)| v)
            .sum()
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One GET on an agent's keep-alive connection; the status.
fn call(agent: &ureq::Agent, url: &str, key: Option<&str>) -> u16 {
    let mut req = agent.get(url);
    if let Some(k) = key {
        req = req.header("x-user-id", k);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let _ = resp.body_mut().read_to_string();
    resp.status().as_u16()
}

/// Client agents, each holding one keep-alive connection to `listener`,
/// opened on `/warm` (a path no limit applies to) until there are at
/// least [`CONNECTIONS`] and both workers hold one.
fn connect(admin: SocketAddr, listener: SocketAddr) -> Vec<ureq::Agent> {
    let url = format!("http://{listener}/warm");
    let mut agents = Vec::new();
    for _ in 0..32 {
        let a = agent();
        assert_eq!(call(&a, &url, None), 200);
        agents.push(a);
        if agents.len() >= CONNECTIONS {
            let per_worker = worker_connections(admin, listener);
            if per_worker.iter().all(|&n| n > 0) {
                eprintln!(
                    "{listener}: {} connections, per worker {per_worker:?}",
                    agents.len()
                );
                return agents;
            }
        }
    }
    panic!(
        "both workers did not get a connection: {:?}",
        worker_connections(admin, listener)
    );
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    admitted: u64,
    denied: u64,
}

impl Counts {
    fn add(&mut self, status: u16) {
        match status {
            200 => self.admitted += 1,
            429 => self.denied += 1,
            s => panic!("unexpected status {s}"),
        }
    }

    fn merge(&mut self, o: Counts) {
        self.admitted += o.admitted;
        self.denied += o.denied;
    }
}

/// `total` requests to `url`, spread over the agents, all threads released
/// at once and sending back to back. `key(i)` is the `x-user-id` of the
/// i-th request.
fn blast(
    agents: &[ureq::Agent],
    url: &str,
    total: usize,
    key: &(dyn Fn(usize) -> Option<String> + Sync),
) -> Counts {
    let n = agents.len();
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(t, a)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut c = Counts::default();
                    barrier.wait();
                    for i in (t..total).step_by(n) {
                        c.add(call(a, url, key(i).as_deref()));
                    }
                    c
                })
            })
            .collect();
        let mut c = Counts::default();
        for h in handles {
            c.merge(h.join().unwrap());
        }
        c
    })
}

fn no_key(_: usize) -> Option<String> {
    None
}

#[derive(Debug, Clone, Copy)]
struct Sustained {
    counts: Counts,
    /// Between the first request sent and the last.
    elapsed: Duration,
}

/// Paced load: `rate` requests/s in total for `duration`, the agents taking
/// turns on one schedule (request k of all is due at `k / rate`).
fn sustained(agents: &[ureq::Agent], url: &str, rate: f64, duration: Duration) -> Sustained {
    let n = agents.len();
    // Far enough ahead for every thread to be spawned.
    let origin = Instant::now() + Duration::from_millis(100);
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(t, a)| {
                s.spawn(move || {
                    let mut c = Counts::default();
                    let (mut first, mut last) = (None, None);
                    for k in (t..).step_by(n) {
                        let due = origin + Duration::from_secs_f64(k as f64 / rate);
                        if due >= origin + duration {
                            break;
                        }
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let sent = Instant::now();
                        first.get_or_insert(sent);
                        last = Some(sent);
                        c.add(call(a, url, None));
                    }
                    (c, first.unwrap(), last.unwrap())
                })
            })
            .collect();
        let mut c = Counts::default();
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        for h in handles {
            let (ct, f, l) = h.join().unwrap();
            c.merge(ct);
            first = Some(first.map_or(f, |x| x.min(f)));
            last = Some(last.map_or(l, |x| x.max(l)));
        }
        Sustained {
            counts: c,
            elapsed: last.unwrap() - first.unwrap(),
        }
    })
}

/// The two Envoys of the side-by-side test, with the same three limits.
const BURST: u32 = 10;
const NO_BURST_REQUESTS: u32 = 15;
/// 50 per 1 s, burst 50.
const SUSTAINED_RATE: u32 = 50;
const SUSTAINED_BURST: u32 = 50;
/// The offered load: well above the limit, at least 200/s.
const OFFERED_RATE: f64 = 250.0;
const LOAD: Duration = Duration::from_secs(10);

fn side_by_side_config() -> Value {
    json!({
        "rules": [
            {"name": "burst", "match": {"pathPrefix": "/burst"},
             "limit": {"requests": 100, "per": "1h", "burst": BURST}},
            {"name": "noburst", "match": {"pathPrefix": "/noburst"},
             "limit": {"requests": NO_BURST_REQUESTS, "per": "1h"}},
            {"name": "sustained", "match": {"pathPrefix": "/sustained"},
             "limit": {"requests": SUSTAINED_RATE, "per": "1s", "burst": SUSTAINED_BURST}}
        ]
    })
}

fn native_buckets() -> Vec<Bucket> {
    let hour = Duration::from_secs(3600);
    vec![
        Bucket {
            prefix: "/burst".into(),
            max_tokens: BURST,
            tokens_per_fill: 100,
            fill_interval: hour,
        },
        Bucket {
            prefix: "/noburst".into(),
            max_tokens: NO_BURST_REQUESTS,
            tokens_per_fill: NO_BURST_REQUESTS,
            fill_interval: hour,
        },
        Bucket {
            prefix: "/sustained".into(),
            max_tokens: SUSTAINED_BURST,
            tokens_per_fill: SUSTAINED_RATE,
            fill_interval: Duration::from_secs(1),
        },
    ]
}

/// Ours must be within 2 % of its expected count, or as close to it as
/// native is to its own: |ours − expected| ≤ max(|native − expected'|,
/// 2 % of expected).
fn as_exact_as_native(what: &str, ours: (u64, f64), native: (u64, f64)) {
    let d_ours = (ours.0 as f64 - ours.1).abs();
    let d_native = (native.0 as f64 - native.1).abs();
    assert!(
        d_ours <= d_native.max(0.02 * ours.1),
        "{what}: ours {ours:?} is further from expected than native {native:?}"
    );
}

/// Burst and sustained rate, side by side with native `local_ratelimit`.
///
/// Burst: 3 × burst requests at once admit exactly `burst` (and exactly
/// `requests` without `burst`); with `per: 1h` nothing is replenished
/// during the burst.
///
/// Sustained (50 per 1 s, burst 50, so one token every T = 20 ms): at a
/// steady 250 requests/s the bucket never goes unclaimed for longer than one
/// request gap (4 ms). GCRA admits the first request at t0 on a full bucket,
/// burst − 1 more at once, then one each time its theoretical arrival time
/// passes: at t0 + k·T for k = 1, 2, …. Over [t0, t0 + E], with E from the
/// first request sent to the last, that is burst + ⌊E / T⌋ = burst +
/// ⌊rate × E⌋; the last slot may fall in the final request gap, hence
/// expected = burst + rate × E within ±1, well inside the asserted ±2 %
/// (±11 of ~550). Sending to arrival at the filter is sub-millisecond on
/// loopback, the same for the first and the last request.
#[test]
fn burst_and_sustained_side_by_side_with_native() {
    let h = start("side", &side_by_side_config());
    let upstream = h.upstream("v1").unwrap().addr;
    let native = native_ratelimit::start(upstream, &native_buckets()).unwrap();
    let ours_agents = connect(h.envoy.admin, h.listener);
    let native_agents = connect(native.envoy.admin, native.listener);

    let mut rows: Vec<(String, u64, u64, f64)> = Vec::new();
    for (path, limit) in [("/burst", BURST), ("/noburst", NO_BURST_REQUESTS)] {
        let total = 3 * limit as usize;
        let ours = blast(&ours_agents, &h.url(path), total, &no_key);
        let theirs = blast(&native_agents, &native.url(path), total, &no_key);
        assert_eq!(ours.admitted + ours.denied, total as u64);
        rows.push((
            format!("burst {path} ({total} sent)"),
            ours.admitted,
            theirs.admitted,
            f64::from(limit),
        ));
        assert_eq!(ours.admitted, u64::from(limit), "{path}: ours admitted");
        let limit = f64::from(limit);
        as_exact_as_native(path, (ours.admitted, limit), (theirs.admitted, limit));
    }

    // Both Envoys under load at the same time.
    let (ours, theirs) = std::thread::scope(|s| {
        let o = s.spawn(|| sustained(&ours_agents, &h.url("/sustained"), OFFERED_RATE, LOAD));
        let n = s.spawn(|| {
            sustained(
                &native_agents,
                &native.url("/sustained"),
                OFFERED_RATE,
                LOAD,
            )
        });
        (o.join().unwrap(), n.join().unwrap())
    });
    let expected = |r: &Sustained| {
        f64::from(SUSTAINED_BURST) + f64::from(SUSTAINED_RATE) * r.elapsed.as_secs_f64()
    };
    for (who, r) in [("ours", &ours), ("native", &theirs)] {
        let sent = r.counts.admitted + r.counts.denied;
        let offered = sent as f64 / r.elapsed.as_secs_f64();
        eprintln!(
            "sustained {who}: {sent} sent over {:.3} s ({offered:.0}/s), {} admitted, expected {:.1}",
            r.elapsed.as_secs_f64(),
            r.counts.admitted,
            expected(r)
        );
        assert!(offered >= 200.0, "{who}: offered only {offered:.0}/s");
        assert!(r.elapsed >= Duration::from_millis(9_900));
    }
    let exp = expected(&ours);
    rows.push((
        format!(
            "sustained 50/1s b50 (ours {:.3} s)",
            ours.elapsed.as_secs_f64()
        ),
        ours.counts.admitted,
        theirs.counts.admitted,
        exp,
    ));

    eprintln!(
        "\n{:<36} {:>8} {:>8} {:>10}",
        "scenario", "ours", "native", "expected"
    );
    for (what, o, n, e) in &rows {
        eprintln!("{what:<36} {o:>8} {n:>8} {e:>10.1}");
    }
    eprintln!();

    let diff = (ours.counts.admitted as f64 - exp).abs();
    assert!(
        diff <= 0.02 * exp,
        "sustained: ours admitted {} vs expected {exp:.1} (±2 %)",
        ours.counts.admitted
    );
    as_exact_as_native(
        "sustained",
        (ours.counts.admitted, exp),
        (theirs.counts.admitted, expected(&theirs)),
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
    let s = stats(h.envoy.admin);
    assert_eq!(
        s["wasmcustom.rate_limit.sustained.allowed"],
        ours.counts.admitted
    );
    assert_eq!(
        s["wasmcustom.rate_limit.sustained.denied"],
        ours.counts.denied
    );
    drop(native);
}

/// Polls a stat until it reads `want` (counters reach the admin endpoint
/// at once, but give them a moment); returns the last reading.
fn stat_eventually(h: &Harness, name: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = h.stat(name);
        if v == Some(want) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Point 3: each `x-user-id` has its own bucket; a request without the
/// header skips the rule (the default `onMissingKey: skip`).
#[test]
fn different_keys_are_independent() {
    let h = start(
        "keys",
        &json!({"rules": [{"name": "per-user", "match": {"pathPrefix": "/api"},
            "key": [{"header": "x-user-id"}],
            "limit": {"requests": 3, "per": "1h"}}]}),
    );
    let agents = connect(h.envoy.admin, h.listener);
    let users = ["alice", "bob", "carol", "dave"];
    // 9 requests per user, interleaved over every connection at once.
    let per_user: Vec<Counts> = std::thread::scope(|s| {
        users
            .map(|u| {
                let agents = &agents;
                let url = h.url("/api/x");
                s.spawn(move || blast(agents, &url, 9, &|_| Some(u.to_string())))
            })
            .map(|t| t.join().unwrap())
            .to_vec()
    });
    for (u, c) in users.iter().zip(&per_user) {
        assert_eq!((c.admitted, c.denied), (3, 6), "{u}");
    }
    // alice is exhausted, a new user is not, and no key skips the rule.
    assert_eq!(call(&agents[0], &h.url("/api/x"), Some("alice")), 429);
    assert_eq!(call(&agents[1], &h.url("/api/x"), Some("erin")), 200);
    for a in &agents {
        assert_eq!(call(a, &h.url("/api/x"), None), 200);
    }
    assert_eq!(
        stat_eventually(&h, "wasmcustom.rate_limit.per-user.allowed", 13),
        Some(13)
    );
    assert_eq!(
        stat_eventually(&h, "wasmcustom.rate_limit.per-user.denied", 25),
        Some(25)
    );
}

/// Point 4: shadow mode admits everything and counts what it would deny.
#[test]
fn shadow_mode_admits_and_counts() {
    let h = start(
        "shadow",
        &json!({"rules": [{"name": "shadowed", "match": {"pathPrefix": "/s"},
            "limit": {"requests": 5, "per": "1h"}, "mode": "shadow"}],
            "rateLimitHeaders": true}),
    );
    let agents = connect(h.envoy.admin, h.listener);
    let c = blast(&agents, &h.url("/s"), 20, &no_key);
    assert_eq!((c.admitted, c.denied), (20, 0));
    assert_eq!(
        stat_eventually(&h, "wasmcustom.rate_limit.shadowed.shadow_denied", 15),
        Some(15)
    );
    assert_eq!(h.stat("wasmcustom.rate_limit.shadowed.allowed"), Some(5));
    assert_eq!(h.stat("wasmcustom.rate_limit.shadowed.denied"), Some(0));
    // Shadow rules do not report headers.
    let r = h.get("/s", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), None);
    assert_eq!(r.header("retry-after"), None);
}

/// `"name";r=<remaining>;t=<reset>` → (remaining, reset).
fn parse_ratelimit(v: &str, name: &str) -> (u64, u64) {
    let rest = v
        .strip_prefix(&format!("\"{name}\";r="))
        .unwrap_or_else(|| panic!("ratelimit {v:?}"));
    let (r, t) = rest.split_once(";t=").unwrap();
    (r.parse().unwrap(), t.parse().unwrap())
}

/// Point 5: the denial carries the configured status, body and headers plus
/// `retry-after`; with `rateLimitHeaders`, allowed and denied responses carry
/// `RateLimit-Policy` and `RateLimit` (draft -10). 2 per hour: one unit every
/// 1800 s, window 2 × 1800 = 3600 s.
#[test]
fn denial_response_and_ratelimit_headers() {
    let h = start(
        "resp",
        &json!({
            "rules": [{"name": "hdr", "match": {"pathPrefix": "/h"},
                "limit": {"requests": 2, "per": "1h"}}],
            "response": {"status": 429, "body": "{\"error\":\"rate_limited\"}",
                "headers": {"content-type": "application/json", "x-limited-by": "mesh"}},
            "rateLimitHeaders": true
        }),
    );
    let policy = "\"hdr\";q=2;w=3600";
    let first = h.get("/h", &[]).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["version"], "v1", "{}", first.body);
    assert_eq!(first.header("ratelimit-policy").as_deref(), Some(policy));
    assert_eq!(
        first.header("ratelimit").as_deref(),
        Some("\"hdr\";r=1;t=1800")
    );
    assert_eq!(first.header("retry-after"), None);
    let second = h.get("/h", &[]).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("ratelimit").as_deref(),
        Some("\"hdr\";r=0;t=3600")
    );

    let denied = h.get("/h", &[]).unwrap();
    assert_eq!(denied.status, 429);
    assert_eq!(denied.body, "{\"error\":\"rate_limited\"}");
    assert_eq!(
        denied.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(denied.header("x-limited-by").as_deref(), Some("mesh"));
    assert_eq!(denied.headers_all("retry-after").len(), 1);
    let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    // The next unit comes back 1800 s after the first request, whole
    // seconds rounded up.
    assert!((1790..=1800).contains(&retry), "retry-after {retry}");
    assert_eq!(denied.header("ratelimit-policy").as_deref(), Some(policy));
    let (remaining, reset) = parse_ratelimit(&denied.header("ratelimit").unwrap(), "hdr");
    assert_eq!(remaining, 0);
    assert!((3590..=3600).contains(&reset), "reset {reset}");
    assert!(
        denied.json().get("version").is_none(),
        "reached the upstream"
    );

    // Paths no rule matches get no RateLimit headers.
    let other = h.get("/other", &[]).unwrap();
    assert_eq!(other.status, 200);
    assert_eq!(other.header("ratelimit"), None);
    assert_eq!(other.header("ratelimit-policy"), None);
    assert_eq!(h.stat("wasmcustom.rate_limit.hdr.denied"), Some(1));
}

/// Envoy's admin `/memory` `allocated` bytes.
fn allocated(admin: SocketAddr) -> u64 {
    let (_, body) = client::admin_get(admin, "/memory").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["allocated"].as_str().unwrap().parse().unwrap()
}

/// Point 6: 20,000 distinct keys against `maxKeys: 100`. At most 100 keys
/// get a slot (each slot's bucket stays partly used for 12 minutes, so none
/// is reused); every other key shares the overflow bucket (burst 5), so at
/// most 105 requests are admitted and the overflow counter counts at least
/// 19,900. Envoy keeps answering and its heap does not grow with the keys.
#[test]
fn key_cap_holds_under_20000_keys() {
    const KEYS: usize = 20_000;
    let h = start(
        "cap",
        &json!({"rules": [{"name": "cap", "match": {"pathPrefix": "/cap"},
            "key": [{"header": "x-user-id"}],
            "limit": {"requests": 5, "per": "1h"}}],
            "maxKeys": 100}),
    );
    let agents = connect(h.envoy.admin, h.listener);
    // Warm up the request path before the baseline.
    blast(&agents, &h.url("/warm"), 200, &|i| Some(format!("w{i}")));
    let before = allocated(h.envoy.admin);
    let t0 = Instant::now();
    let c = blast(&agents, &h.url("/cap"), KEYS, &|i| {
        Some(format!("user-{i}"))
    });
    let took = t0.elapsed();
    let after = allocated(h.envoy.admin);
    assert_eq!(
        stat_eventually(&h, "wasmcustom.rate_limit.cap.allowed", c.admitted),
        Some(c.admitted)
    );
    let overflow = h.stat("wasmcustom.rate_limit.cap.overflow").unwrap();
    eprintln!(
        "{KEYS} keys in {took:?}: {} admitted, {} denied, overflow {overflow}, heap {before} -> {after} bytes",
        c.admitted, c.denied
    );
    assert_eq!(c.admitted + c.denied, KEYS as u64);
    assert!(c.admitted <= 105, "admitted {}", c.admitted);
    assert!(c.admitted >= 5, "admitted {}", c.admitted);
    assert!(overflow >= (KEYS - 100) as u64, "overflow {overflow}");
    // Bounded state: a leak of even 100 bytes a key would show as 2 MB.
    assert!(
        after.saturating_sub(before) < 2_000_000,
        "heap grew {before} -> {after}"
    );
    // Still answering: unlimited paths pass, and a new key lands in the
    // exhausted overflow bucket.
    assert_eq!(call(&agents[0], &h.url("/other"), Some("x")), 200);
    assert_eq!(call(&agents[0], &h.url("/cap"), Some("fresh-key")), 429);
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

/// Point 7: bad config is rejected at load, naming the field.
#[test]
fn bad_config_is_rejected_naming_the_field() {
    let cases = [
        (
            "zero",
            json!({"rules": [{"name": "r", "limit": {"requests": 0, "per": "1s"}}]}),
            "limit.requests",
        ),
        (
            "dup",
            json!({"rules": [
                {"name": "r", "limit": {"requests": 1, "per": "1s"}},
                {"name": "r", "limit": {"requests": 1, "per": "1s"}}]}),
            "appears twice",
        ),
    ];
    for (name, config, field) in cases {
        let err = Harness::validate(&manifest_dir(name, &config)).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(field),
            "{name}: {field} not named in:\n{text}"
        );
    }
}
