//! The load benchmark: Envoy 1.40 once per configuration, one
//! worker pinned to CPU 0, the load generator pinned to CPU 1, HTTP/1.1, a
//! `direct_response` route so only the filter chain costs.
//!
//! For every configuration, over interleaved rounds (a warm-up round is
//! discarded), it measures:
//! - CPU µs per request: Envoy's utime + stime (`/proc/<pid>/stat`) over a
//!   saturating `wrk` pass, divided by the requests served in it;
//! - throughput at saturation (`wrk`);
//! - p50 / p99 at a fixed rate of half the no-filter maximum, with `oha
//!   --latency-correction` (corrects for coordinated omission);
//! - Envoy's RSS at `--concurrency 2` (once, separately), and module sizes.
//!
//! Results: `benches/results/latest.md` and `latest.json`.
//!
//! `cargo xtask bench` builds the modules, installs the tools, and runs this
//! (`--rounds N`, `--seconds S`, `--quick`, `--only NAME[,NAME]`).

use anyhow::{Context, Result, bail};
use e2e::envoy::{Envoy, StartOptions};
use e2e::jose::{Alg, TestKeys};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod stats;
mod tokens;
use stats::{Spread, median_spread, oha_latency, proc_cpu_ticks, proc_rss_kib, wrk_summary};

const PATH: &str = "/orders/1";
const ENVOY_CPU: &str = "0";
const LOAD_CPU: &str = "1";
/// The JWT filter's verified-token cache, in every JWT configuration: the
/// filter's default (`DEFAULT_CACHE_ENTRIES`, an LRU).
const JWT_CACHE_ENTRIES: usize = 1000;
/// Distinct tokens cycled for "first-seen": more than the cache holds, so
/// that every request misses the LRU and verifies the signature.
const FIRST_SEEN_TOKENS: usize = JWT_CACHE_ENTRIES + 100;

/// One Envoy configuration under test.
struct Config {
    name: String,
    /// What it stands for, for the report.
    what: String,
    filters: Vec<Value>,
    routes: Vec<Value>,
    headers: Vec<(String, String)>,
    /// Tokens cycled in `authorization: Bearer` (one: the same every time).
    tokens: Vec<String>,
    modules: Vec<PathBuf>,
}

fn direct_route() -> Vec<Value> {
    vec![json!({"match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok"}}})]
}

fn wasm_filter(name: &str, module: &Path, config: &Value) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": "",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The filters' configs on their hot paths.
struct Setup {
    jwks: String,
    tokens: BTreeMap<&'static str, Vec<String>>,
}

fn jwt_config(jwks: &str) -> Value {
    json!({
        "providers": [{"name": "bench", "issuer": e2e::jose::ISSUER,
                       "audiences": [e2e::jose::AUDIENCE], "jwks": jwks}],
        "rules": [{"match": {"pathPrefix": "/"}, "requires": ["bench"]}],
        "cache": {"maxEntries": JWT_CACHE_ENTRIES},
    })
}

fn rate_limit_config() -> Value {
    json!({"rules": [{"name": "per-client", "key": [{"header": "x-client"}],
        "limit": {"requests": 1_000_000_000u64, "per": "1s", "burst": 1_000_000}}]})
}

fn canary_config() -> Value {
    json!({"services": [{"host": "*",
        "rules": [{"match": {"header": {"name": "x-canary", "exact": "yes"}}, "version": "v2"}],
        "split": [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]}]})
}

fn telemetry_config() -> Value {
    // The realistic default: access log on at info; Envoy runs at warning
    // (istio-proxy's default for Wasm), so the line is built and dropped.
    json!({"routes": [{"name": "orders", "pathPrefix": "/orders"},
                      {"name": "user", "regex": "^/users/[0-9]+$"}],
           "dimensions": ["route", "method", "response_code", "version"]})
}

fn native_local_ratelimit() -> Value {
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench",
            "token_bucket": {"max_tokens": 1_000_000_000u64, "tokens_per_fill": 1_000_000_000u64,
                             "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                               "runtime_key": "bench_enabled"},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                                "runtime_key": "bench_enforced"}
        }
    })
}

fn native_jwt(jwks: &str, cache: bool) -> Value {
    let mut provider = json!({
        "issuer": e2e::jose::ISSUER,
        "audiences": [e2e::jose::AUDIENCE],
        "local_jwks": {"inline_string": jwks},
        "forward": true,
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1000});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
        }
    })
}

fn configs(setup: &Setup, modules: &Path) -> Vec<Config> {
    let module = |n: &str| modules.join(format!("{n}.wasm"));
    let base = |name: &str, what: &str| Config {
        name: name.to_string(),
        what: what.to_string(),
        filters: vec![],
        routes: direct_route(),
        headers: vec![
            ("x-canary".into(), "yes".into()),
            ("x-client".into(), "tenant-42".into()),
        ],
        tokens: vec![],
        modules: vec![],
    };
    let mut out = vec![base("none", "no filter")];
    let mut c = base(
        "wasm-empty",
        "an empty Rust proxy-wasm filter (the Wasm floor)",
    );
    c.filters = vec![wasm_filter("empty", &module("empty_filter"), &json!({}))];
    c.modules = vec![module("empty_filter")];
    out.push(c);
    let mut c = base("canary", "canary router, header rule match");
    c.filters = vec![wasm_filter(
        "canary",
        &module("canary_router"),
        &canary_config(),
    )];
    c.modules = vec![module("canary_router")];
    out.push(c);
    let mut c = base("rate-limit", "rate limit, allowed");
    c.filters = vec![wasm_filter(
        "rate-limit",
        &module("rate_limit"),
        &rate_limit_config(),
    )];
    c.modules = vec![module("rate_limit")];
    out.push(c);
    let mut c = base("telemetry", "telemetry, record in on_log");
    c.filters = vec![wasm_filter(
        "telemetry",
        &module("telemetry"),
        &telemetry_config(),
    )];
    c.modules = vec![module("telemetry")];
    out.push(c);
    for alg in ["RS256", "ES256", "EdDSA"] {
        let tokens = setup.tokens.get(alg).cloned().unwrap_or_default();
        for (kind, toks) in [
            ("first", tokens.clone()),
            ("cached", tokens.iter().take(1).cloned().collect()),
        ] {
            let mut c = base(
                &format!("jwt-{}-{kind}", alg.to_lowercase()),
                &format!(
                    "JWT {alg}, {}",
                    if kind == "first" {
                        "first-seen token"
                    } else {
                        "cached token"
                    }
                ),
            );
            c.filters = vec![wasm_filter(
                "jwt",
                &module("jwt_auth"),
                &jwt_config(&setup.jwks),
            )];
            c.modules = vec![module("jwt_auth")];
            c.tokens = toks;
            out.push(c);
        }
    }
    let rs_cached: Vec<String> = setup
        .tokens
        .get("RS256")
        .map(|t| t.iter().take(1).cloned().collect())
        .unwrap_or_default();
    let mut c = base(
        "four-separate",
        "all four as separate filters (JWT RS256 cached)",
    );
    c.filters = vec![
        wasm_filter("jwt", &module("jwt_auth"), &jwt_config(&setup.jwks)),
        wasm_filter("rate-limit", &module("rate_limit"), &rate_limit_config()),
        wasm_filter("canary", &module("canary_router"), &canary_config()),
        wasm_filter("telemetry", &module("telemetry"), &telemetry_config()),
    ];
    c.modules = vec![
        module("jwt_auth"),
        module("rate_limit"),
        module("canary_router"),
        module("telemetry"),
    ];
    c.tokens = rs_cached.clone();
    out.push(c);
    if suite_present(modules) {
        let mut c = base("suite", "all four in mesh_suite.wasm (JWT RS256 cached)");
        c.filters = vec![wasm_filter(
            "suite",
            &module("mesh_suite"),
            &json!({"jwt": jwt_config(&setup.jwks), "rateLimit": rate_limit_config(),
                    "canary": canary_config(), "telemetry": telemetry_config()}),
        )];
        c.modules = vec![module("mesh_suite")];
        c.tokens = rs_cached.clone();
        out.push(c);
    }
    let mut c = base("native-local-ratelimit", "native local_ratelimit, allowed");
    c.filters = vec![native_local_ratelimit()];
    out.push(c);
    for (alg, name) in [("RS256", "rs256"), ("ES256", "es256")] {
        let tokens = setup.tokens.get(alg).cloned().unwrap_or_default();
        let mut c = base(
            &format!("native-jwt-{name}-uncached"),
            &format!("native jwt_authn {alg}, no cache"),
        );
        c.filters = vec![native_jwt(&setup.jwks, false)];
        c.tokens = tokens.clone();
        out.push(c);
        let mut c = base(
            &format!("native-jwt-{name}-cached"),
            &format!("native jwt_authn {alg} with jwt_cache_config"),
        );
        c.filters = vec![native_jwt(&setup.jwks, true)];
        c.tokens = tokens.into_iter().take(1).collect();
        out.push(c);
    }
    let mut c = base(
        "native-canary-route",
        "native header-match route (canary case)",
    );
    c.routes = vec![
        json!({"match": {"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"exact": "yes"}}]},
               "direct_response": {"status": 200, "body": {"inline_string": "v2"}}}),
        direct_route().remove(0),
    ];
    out.push(c);
    out
}

/// The probe filter's operations, each repeated `PROBE_CALLS` times per
/// request (`phase:op` runs in that callback, else in request headers).
const PROBE_OPS: &[&str] = &[
    "header_map",
    "header_get",
    "header_missing",
    "header_set",
    "clear_route_cache",
    "property",
    "log:property_response_code",
    "log:property_duration",
    "log:header_map",
    "set_property",
    "shared_get",
    "shared_cas",
    "metric_inc",
    "time",
    "log_level",
];
const PROBE_CALLS: u32 = 10;

/// `--probe`: the empty filter, the kit with no call (`probe-kit`), and one
/// configuration per host call. A call costs
/// `(added - probe-kit added) / PROBE_CALLS`.
fn probe_configs(modules: &Path) -> Vec<Config> {
    let module = modules.join("probe_filter.wasm");
    let base = |name: String, what: String, config: Value| Config {
        name,
        what,
        filters: vec![wasm_filter("probe", &module, &config)],
        routes: direct_route(),
        headers: vec![("x-client".into(), "tenant-42".into())],
        tokens: vec![],
        modules: vec![module.clone()],
    };
    let mut out = vec![base(
        "probe-kit".into(),
        "the kit's glue, no host call".into(),
        json!({"op": "none", "n": 0}),
    )];
    for op in PROBE_OPS {
        out.push(base(
            format!("probe-{}", op.replace(':', "-")),
            format!("{PROBE_CALLS} x {op}"),
            json!({"op": op, "n": PROBE_CALLS}),
        ));
    }
    out
}

/// `c` with every module taken from `dir` instead, if `dir` has them all.
fn variant(c: &Config, dir: &Path) -> Option<Config> {
    if c.modules.is_empty() || c.name == "wasm-empty" {
        return None;
    }
    let mut filters = serde_json::to_string(&c.filters).ok()?;
    let mut modules = Vec::new();
    for m in &c.modules {
        let other = dir.join(m.file_name()?);
        if !other.exists() {
            return None;
        }
        filters = filters.replace(&m.display().to_string(), &other.display().to_string());
        modules.push(other);
    }
    Some(Config {
        name: format!("{}@b", c.name),
        what: format!("{}, modules from {}", c.what, dir.display()),
        filters: serde_json::from_str(&filters).ok()?,
        routes: c.routes.clone(),
        headers: c.headers.clone(),
        tokens: c.tokens.clone(),
        modules,
    })
}

fn suite_present(modules: &Path) -> bool {
    modules.join("mesh_suite.wasm").exists()
}

/// A running configuration.
struct Running {
    envoy: Envoy,
    addr: SocketAddr,
    script: PathBuf,
}

fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = e2e::envoy::target_dir().join("bench-runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The wrk Lua script: the headers, and the tokens in turn.
fn lua(c: &Config) -> String {
    let mut s = String::from("local tokens = {\n");
    for t in &c.tokens {
        s.push_str(&format!("  \"{t}\",\n"));
    }
    s.push_str("}\nlocal i = 0\nrequest = function()\n  local h = {}\n");
    for (k, v) in &c.headers {
        s.push_str(&format!("  h[\"{k}\"] = \"{v}\"\n"));
    }
    s.push_str(&format!(
        "  if #tokens > 0 then\n    i = i + 1\n    h[\"authorization\"] = \"Bearer \" .. tokens[(i % #tokens) + 1]\n  end\n  return wrk.format(\"GET\", \"{PATH}\", h)\nend\n"
    ));
    s
}

fn start(bin: &Path, c: &Config, concurrency: u32, pin: bool) -> Result<Running> {
    let dir = run_dir(&format!("{}-c{concurrency}", c.name))?;
    let bootstrap = e2e::bootstrap::skeleton("bench", c.routes.clone(), c.filters.clone(), vec![]);
    let path = dir.join("envoy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap)?)?;
    let options = StartOptions {
        concurrency,
        log_level: "warning".to_string(),
        cpus: pin.then(|| ENVOY_CPU.to_string()),
    };
    let envoy = Envoy::start_with(bin, &path, &dir, &options)
        .with_context(|| format!("starting configuration {}", c.name))?;
    let addr = envoy.listener_address(e2e::bootstrap::LISTENER)?;
    let script = dir.join("load.lua");
    std::fs::write(&script, lua(c))?;
    Ok(Running {
        envoy,
        addr,
        script,
    })
}

/// A saturating wrk pass: (requests, requests per second, CPU µs per
/// request).
fn saturate(r: &Running, seconds: u64, ticks_per_sec: f64) -> Result<(u64, f64, f64)> {
    let pid = r.envoy.pid().context("envoy pid")?;
    let before = proc_cpu_ticks(pid)?;
    let out = Command::new("taskset")
        .args(["-c", LOAD_CPU, "wrk", "-t1", "-c32"])
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&r.script)
        .arg(format!("http://{}{PATH}", r.addr))
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk")?;
    let after = proc_cpu_ticks(pid)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, rps, non2xx) =
        wrk_summary(&text).with_context(|| format!("wrk said:\n{text}"))?;
    if non2xx > 0 {
        bail!("{non2xx} non-2xx answers:\n{text}");
    }
    let cpu_us = (after - before) as f64 / ticks_per_sec * 1e6;
    Ok((requests, rps, cpu_us / requests.max(1) as f64))
}

/// A fixed-rate oha pass: (p50 ms, p99 ms).
fn latency(c: &Config, r: &Running, seconds: u64, rate: f64) -> Result<(f64, f64)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json"])
        .args(["-z", &format!("{seconds}s"), "-c", "16", "-q"])
        .arg(format!("{}", rate.max(1.0).round()))
        .arg("--latency-correction");
    for (k, v) in &c.headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(t) = c.tokens.first() {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("http://{}{PATH}", r.addr))
        .stderr(Stdio::inherit())
        .output()
        .context("running oha")?;
    let text = String::from_utf8_lossy(&out.stdout);
    oha_latency(&text).with_context(|| format!("oha said:\n{text}"))
}

#[derive(Default, Clone)]
struct Samples {
    cpu_us: Vec<f64>,
    rps: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
}

struct Args {
    rounds: usize,
    seconds: u64,
    only: Option<Vec<String>>,
    /// The host-call cost model instead of the filters (see `probe_configs`).
    probe: bool,
    /// CPU and throughput only (no latency pass): for quick comparisons.
    cpu_only: bool,
    /// A directory of other builds of the modules: every selected Wasm
    /// configuration runs a second time with them (`<name>@b`), in the same
    /// rounds, for an A/B comparison of a change.
    variant: Option<PathBuf>,
    out: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        rounds: 5,
        seconds: 3,
        only: None,
        probe: false,
        cpu_only: false,
        variant: None,
        out: e2e::envoy::workspace_root().join("benches/results"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--seconds" => a.seconds = it.next().context("--seconds S")?.parse()?,
            "--quick" => {
                a.rounds = 1;
                a.seconds = 1;
            }
            "--only" => {
                a.only = Some(
                    it.next()
                        .context("--only NAME[,NAME]")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--probe" => a.probe = true,
            "--cpu-only" => a.cpu_only = true,
            "--variant" => a.variant = Some(PathBuf::from(it.next().context("--variant DIR")?)),
            "--out" => a.out = PathBuf::from(it.next().context("--out DIR")?),
            other => bail!("unknown argument {other:?}; see benches/README.md"),
        }
    }
    Ok(a)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() -> Result<()> {
    let mut args = args()?;
    if args.probe {
        args.cpu_only = true;
    }
    if args.probe && args.out == e2e::envoy::workspace_root().join("benches/results") {
        args.out = args.out.join("probe");
    }
    let bin = e2e::envoy::ensure_envoy()?;
    let modules = e2e::harness::module_dir();
    let keys = TestKeys::load()?;
    let jwks = e2e::jose::jwks(&[
        keys.alg(Alg::RS256),
        keys.alg(Alg::ES256),
        keys.alg(Alg::EdDSA),
    ]);
    let token_dir = e2e::envoy::target_dir().join("bench-tokens");
    let mut tokens = BTreeMap::new();
    for (name, alg) in [
        ("RS256", Alg::RS256),
        ("ES256", Alg::ES256),
        ("EdDSA", Alg::EdDSA),
    ] {
        let list = tokens::tokens(
            &token_dir,
            name,
            keys.alg(alg),
            &jwks,
            FIRST_SEEN_TOKENS,
            now(),
        )?;
        tokens.insert(name, list);
    }
    let mut notes = Vec::new();
    if !suite_present(&modules) {
        let note = format!(
            "suite skipped: {} is absent (build it with `cargo xtask build`).",
            modules.join("mesh_suite.wasm").display()
        );
        eprintln!("{note}");
        notes.push(note);
    }
    let setup = Setup { jwks, tokens };
    let mut all = configs(&setup, &modules);
    if args.probe {
        all.retain(|c| c.name == "none" || c.name == "wasm-empty");
        all.extend(probe_configs(&modules));
    }
    if let Some(only) = &args.only {
        let unknown: Vec<&String> = only
            .iter()
            .filter(|n| *n != "suite" && !all.iter().any(|c| &c.name == *n))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "--only: unknown configuration(s) {unknown:?}; known: {}",
                known.join(", ")
            );
        }
        all.retain(|c| c.name == "none" || c.name == "wasm-empty" || only.contains(&c.name));
    }
    if let Some(dir) = &args.variant {
        let extra: Vec<Config> = all.iter().filter_map(|c| variant(c, dir)).collect();
        all.extend(extra);
    }
    let ticks = clk_tck();

    eprintln!(
        "starting {} Envoys (one worker each, on CPU {ENVOY_CPU})",
        all.len()
    );
    let running: Vec<Running> = all
        .iter()
        .map(|c| start(&bin, c, 1, true))
        .collect::<Result<_>>()?;

    let mut samples: Vec<Samples> = vec![Samples::default(); all.len()];
    let mut rate = 0.0;
    for round in 0..=args.rounds {
        let warm = round == 0;
        eprintln!(
            "round {round}/{}{}",
            args.rounds,
            if warm { " (warm-up, discarded)" } else { "" }
        );
        for (i, (c, r)) in all.iter().zip(&running).enumerate() {
            let (_, rps, cpu) = saturate(r, args.seconds, ticks)?;
            if warm {
                eprintln!("  {:<24} {rps:>9.0} req/s", c.name);
                if c.name == "none" {
                    rate = rps / 2.0;
                }
                continue;
            }
            // Quick comparisons and the cost model need CPU only.
            let (p50, p99) = if args.cpu_only {
                (0.0, 0.0)
            } else {
                latency(c, r, args.seconds, rate)?
            };
            eprintln!(
                "  {:<24} {cpu:>7.1} µs/req {rps:>9.0} req/s  p50 {p50:.3} ms  p99 {p99:.3} ms",
                c.name
            );
            let s = &mut samples[i];
            s.cpu_us.push(cpu);
            s.rps.push(rps);
            s.p50_ms.push(p50);
            s.p99_ms.push(p99);
        }
    }
    drop(running);

    eprintln!("RSS at --concurrency 2");
    let mut rss = Vec::new();
    for c in &all {
        let r = start(&bin, c, 2, false)?;
        for _ in 0..200 {
            let mut headers: Vec<(&str, &[u8])> = c
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            let bearer = c.tokens.first().map(|t| format!("Bearer {t}"));
            if let Some(b) = &bearer {
                headers.push(("authorization", b.as_bytes()));
            }
            let resp = e2e::client::get(&format!("http://{}{PATH}", r.addr), &headers)?;
            if resp.status != 200 {
                bail!("{}: status {}", c.name, resp.status);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        rss.push(Memory {
            rss_mib: proc_rss_kib(r.envoy.pid().context("pid")?)? as f64 / 1024.0,
            heap: heap_mib(&r.envoy),
        });
    }

    let rate = if args.cpu_only { 0.0 } else { rate };
    let report = report::Report::new(&all, &samples, &rss, &args, rate, &bin, notes)?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_vec_pretty(&report.json())?,
    )?;
    std::fs::write(args.out.join("latest.md"), report.markdown())?;
    println!("{}", report.markdown());
    eprintln!("wrote {}", args.out.join("latest.md").display());
    Ok(())
}

mod report;

/// Everything the report needs of one configuration.
pub struct Row {
    pub name: String,
    pub what: String,
    pub cpu: Spread,
    pub rps: Spread,
    pub p50: Spread,
    pub p99: Spread,
    pub rss_mib: f64,
    /// Envoy's heap (tcmalloc, admin `/memory`): (allocated, held free).
    pub heap_mib: Option<(f64, f64)>,
    pub module_kib: Vec<(String, u64)>,
    /// Latency measured with one token (oha cannot cycle them).
    pub one_token_latency: bool,
}

/// Envoy's memory at `--concurrency 2`.
pub struct Memory {
    pub rss_mib: f64,
    /// Allocated, and held free (page heap and thread caches), from admin
    /// `/memory`: RSS beyond live memory is mostly the heap keeping what
    /// module loading freed.
    pub heap: Option<(f64, f64)>,
}

fn heap_mib(envoy: &Envoy) -> Option<(f64, f64)> {
    let (status, body) = e2e::client::admin_get(envoy.admin, "/memory").ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let field = |k: &str| {
        v[k].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|b| b / (1024.0 * 1024.0))
    };
    let free = field("pageheap_free")? + field("total_thread_cache")?;
    Some((field("allocated")?, free))
}

fn rows(all: &[Config], samples: &[Samples], rss: &[Memory]) -> Vec<Row> {
    all.iter()
        .zip(samples)
        .zip(rss)
        .map(|((c, s), rss)| Row {
            name: c.name.clone(),
            what: c.what.clone(),
            cpu: median_spread(&s.cpu_us),
            rps: median_spread(&s.rps),
            p50: median_spread(&s.p50_ms),
            p99: median_spread(&s.p99_ms),
            rss_mib: rss.rss_mib,
            heap_mib: rss.heap,
            module_kib: c
                .modules
                .iter()
                .map(|m| {
                    (
                        m.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        std::fs::metadata(m).map(|m| m.len() / 1024).unwrap_or(0),
                    )
                })
                .collect(),
            // Native jwt_authn without a cache verifies every request anyway.
            one_token_latency: c.tokens.len() > 1 && !c.name.starts_with("native-"),
        })
        .collect()
}
