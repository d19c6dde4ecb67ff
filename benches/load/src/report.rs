//! The report: every configuration's figures, and the performance targets judged
//! against them.

use crate::{Args, Config, Row, Samples, rows};
use anyhow::Result;
use mesh_suite::registry;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

pub struct Report {
    pub rows: Vec<Row>,
    pub machine: String,
    pub envoy: String,
    pub date: String,
    pub command: String,
    pub rounds: usize,
    pub seconds: u64,
    pub rate: f64,
    /// Distinct tokens cycled in first-seen passes.
    pub first_seen_tokens: usize,
    /// Configurations skipped, and why.
    pub notes: Vec<String>,
}

/// One target: what, the limit, the measured value, met.
pub struct Target {
    pub what: String,
    pub limit: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn text_of(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Report {
    pub fn new(
        all: &[Config],
        samples: &[Samples],
        rss: &[crate::Memory],
        args: &Args,
        rate: f64,
        envoy: &Path,
        notes: Vec<String>,
    ) -> Result<Report> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .unwrap_or("unknown CPU")
            .trim()
            .to_string();
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let envoy_version = text_of(Command::new(envoy).arg("--version"));
        let envoy_version = envoy_version
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unknown")
            .trim()
            .to_string();
        Ok(Report {
            rows: rows(all, samples, rss),
            machine: format!("{model}, {cores} cores"),
            envoy: envoy_version,
            date: text_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            command: format!(
                "cargo xtask bench{}",
                std::env::args()
                    .skip(1)
                    .map(|a| format!(" {a}"))
                    .collect::<String>()
            ),
            rounds: args.rounds,
            seconds: args.seconds,
            rate,
            first_seen_tokens: crate::FIRST_SEEN_TOKENS,
            notes,
        })
    }

    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// CPU added over no filter, µs per request.
    fn added(&self, name: &str) -> Option<f64> {
        Some(self.row(name)?.cpu.median - self.row("none")?.cpu.median)
    }

    pub fn targets(&self) -> Vec<Target> {
        let floor = self.added("wasm-empty");
        let mut out = Vec::new();
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} µs"));
        let mut cpu_target = |what: &str, name: &str, limit: Option<f64>, limit_text: String| {
            let added = self.added(name);
            out.push(Target {
                what: what.to_string(),
                limit: format!("{limit_text} = {}", fmt(limit)),
                measured: fmt(added),
                met: added.zip(limit).map(|(a, l)| a <= l),
            });
        };
        cpu_target(
            "canary router",
            "canary",
            floor.map(|f| f + 4.0),
            "floor + 4".into(),
        );
        cpu_target(
            "rate limit, allowed",
            "rate-limit",
            floor.map(|f| f + 8.0),
            "floor + 8".into(),
        );
        cpu_target(
            "telemetry",
            "telemetry",
            floor.map(|f| f + 8.0),
            "floor + 8".into(),
        );
        for alg in ["rs256", "es256", "eddsa"] {
            cpu_target(
                &format!("JWT {alg} cached"),
                &format!("jwt-{alg}-cached"),
                floor.map(|f| f + 6.0),
                "floor + 6".into(),
            );
        }
        for alg in ["rs256", "es256"] {
            let native = self.added(&format!("native-jwt-{alg}-uncached"));
            cpu_target(
                &format!("JWT {alg} first-seen"),
                &format!("jwt-{alg}-first"),
                native.map(|n| 1.5 * n),
                "1.5 × native uncached".into(),
            );
        }
        cpu_target(
            "all four, separate filters",
            "four-separate",
            floor.map(|f| 4.0 * f + 20.0),
            "4 × floor + 20".into(),
        );
        let native_jwt = self.added("native-jwt-rs256-uncached");
        let suite_limit = floor
            .map(|f| f + 20.0)
            .zip(native_jwt)
            .map(|(a, b)| a.min(b));
        cpu_target(
            "all four, suite module",
            "suite",
            suite_limit,
            "min(floor + 20, native jwt_authn uncached)".into(),
        );
        let rss = |n: &str| self.row(n).map(|r| r.rss_mib);
        let limit = rss("wasm-empty").map(|e| e + 20.0);
        out.push(Target {
            what: "RSS, suite at --concurrency 2".into(),
            limit: format!(
                "empty-module RSS + 20 MiB = {}",
                limit.map_or("n/a".into(), |l| format!("{l:.0} MiB"))
            ),
            measured: rss("suite").map_or("n/a".into(), |r| format!("{r:.0} MiB")),
            met: rss("suite").zip(limit).map(|(r, l)| r <= l),
        });
        let mut sizes: Vec<(String, u64)> = self
            .rows
            .iter()
            .flat_map(|r| r.module_kib.iter().cloned())
            .collect();
        sizes.sort();
        sizes.dedup();
        for (module, kib) in sizes {
            // The budgets of the filter registry; the floor and the probe
            // have none.
            let Some(limit) = registry::by_module(&module).map(|f| f.size_budget_kib) else {
                continue;
            };
            out.push(Target {
                what: format!("size of {module}"),
                limit: format!("{limit} KiB"),
                measured: format!("{kib} KiB"),
                met: Some(kib <= limit),
            });
        }
        out
    }

    pub fn markdown(&self) -> String {
        let none = self.row("none");
        let mut s = String::new();
        s.push_str("# Load benchmark results\n\n");
        s.push_str(&format!(
            "- Machine: {}\n- Envoy: {}\n- Date: {}\n- Command: `{}`\n- {} rounds (after a discarded warm-up round), {} s per pass; Envoy `--concurrency 1` on CPU 0, the load generator on CPU 1; HTTP/1.1, `direct_response`.\n- CPU: Envoy's utime + stime per request over a saturating `wrk -t1 -c32` pass. {}\n- Telemetry: access log on (its default), at `info`; Envoy logs at `warning` (istio-proxy's default for Wasm), so the filter does not build the line.\n- Figures: median [min–max] over the rounds.\n\n",
            self.machine, self.envoy, self.date, self.command, self.rounds, self.seconds,
            if self.rate > 0.0 {
                format!("Latency: `oha --latency-correction -c 16` at {:.0} req/s (half the no-filter maximum of the warm-up round).", self.rate)
            } else {
                "No latency passes (`--cpu-only`).".to_string()
            }
        ));
        s.push_str("| configuration | CPU µs/req | added | req/s at saturation | vs no filter | p50 ms | p99 ms | RSS MiB (c=2) | heap live / held free MiB | module KiB |\n|---|---|---|---|---|---|---|---|---|---|\n");
        let mut over_capacity = false;
        for r in &self.rows {
            // Latency at a rate above what the configuration serves at all
            // is queueing, not the filter's latency.
            let over = r.rps.median < self.rate;
            let latency = |v: f64, mark: &str| {
                if self.rate > 0.0 {
                    format!("{v:.3}{mark}")
                } else {
                    "–".to_string()
                }
            };
            over_capacity |= over;
            let mark = match (r.one_token_latency, over) {
                (true, true) => "¹²",
                (true, false) => "¹",
                (false, true) => "²",
                (false, false) => "",
            };
            let added = none.map_or(f64::NAN, |n| r.cpu.median - n.cpu.median);
            let ratio = none.map_or(f64::NAN, |n| r.rps.median / n.rps.median);
            let modules: Vec<String> = r.module_kib.iter().map(|(_, k)| k.to_string()).collect();
            s.push_str(&format!(
                "| {} ({}) | {:.1} [{:.1}–{:.1}] | {:+.1} | {:.0} [{:.0}–{:.0}] | {:.2} | {} | {} | {:.0} | {} | {} |\n",
                r.name,
                r.what,
                r.cpu.median,
                r.cpu.min,
                r.cpu.max,
                added,
                r.rps.median,
                r.rps.min,
                r.rps.max,
                ratio,
                latency(r.p50.median, mark),
                latency(r.p99.median, mark),
                r.rss_mib,
                r.heap_mib
                    .map_or("–".to_string(), |(live, free)| format!("{live:.0} / {free:.0}")),
                if modules.is_empty() { "–".to_string() } else { modules.join(" + ") },
            ));
        }
        s.push_str(&format!("\n¹ oha sends one token, so the latency of first-seen configurations is that of a cached token; their CPU and throughput figures are first-seen (wrk cycles {} tokens, more than the {}-entry cache holds).\n", self.first_seen_tokens, crate::JWT_CACHE_ENTRIES));
        if over_capacity {
            s.push_str(&format!("\n² {:.0} req/s is more than this configuration serves at saturation: its latency is time queued at an overloaded Envoy.\n", self.rate));
        }
        for n in &self.notes {
            s.push_str(&format!("\nNote: {n}\n"));
        }
        s.push_str("\n## Targets\n\n\"floor\" is the empty Wasm filter's added CPU in the same run.\n\n| target | limit | measured | met |\n|---|---|---|---|\n");
        for t in self.targets() {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t.what,
                t.limit,
                t.measured,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "n/a",
                }
            ));
        }
        s
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let spread = |s: &crate::stats::Spread| json!({"median": s.median, "min": s.min, "max": s.max});
                json!({
                    "name": r.name, "what": r.what,
                    "cpu_us_per_request": spread(&r.cpu),
                    "requests_per_second": spread(&r.rps),
                    "p50_ms": spread(&r.p50), "p99_ms": spread(&r.p99),
                    "rss_mib_concurrency_2": r.rss_mib,
                    "heap_mib_concurrency_2": r.heap_mib.map(|(live, free)| json!({"allocated": live, "held_free": free})),
                    "modules_kib": r.module_kib.iter().map(|(m, k)| json!({"module": m, "kib": k})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| json!({"target": t.what, "limit": t.limit, "measured": t.measured, "met": t.met}))
            .collect();
        json!({
            "machine": self.machine, "envoy": self.envoy, "date": self.date,
            "command": self.command, "rounds": self.rounds, "seconds": self.seconds,
            "latency_rate": self.rate, "first_seen_tokens": self.first_seen_tokens,
            "notes": self.notes, "configurations": rows, "targets": targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Spread;

    fn row(name: &str, cpu: f64, rss_mib: f64, modules: &[(&str, u64)]) -> Row {
        let one = |v: f64| Spread {
            median: v,
            min: v,
            max: v,
        };
        Row {
            name: name.into(),
            what: name.into(),
            cpu: one(cpu),
            rps: one(1000.0),
            p50: one(1.0),
            p99: one(2.0),
            rss_mib,
            heap_mib: None,
            module_kib: modules.iter().map(|(m, k)| (m.to_string(), *k)).collect(),
            one_token_latency: false,
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            rows,
            machine: "test".into(),
            envoy: "test".into(),
            date: "today".into(),
            command: "cargo xtask bench".into(),
            rounds: 5,
            seconds: 3,
            rate: 1000.0,
            first_seen_tokens: 1100,
            notes: vec!["suite skipped".into()],
        }
    }

    fn met(targets: &[Target], what: &str) -> Option<bool> {
        targets
            .iter()
            .find(|t| t.what == what)
            .unwrap_or_else(|| panic!("no target {what}"))
            .met
    }

    #[test]
    fn targets_are_judged_against_the_floor_and_native() {
        // none 40 µs; floor (empty) +10 µs.
        let r = report(vec![
            row("none", 40.0, 60.0, &[]),
            row("wasm-empty", 50.0, 80.0, &[("empty_filter.wasm", 100)]),
            row("canary", 54.0, 90.0, &[("canary_router.wasm", 400)]),
            row("rate-limit", 58.5, 90.0, &[("rate_limit.wasm", 401)]),
            row("telemetry", 58.0, 90.0, &[("telemetry.wasm", 300)]),
            row("jwt-rs256-cached", 56.0, 90.0, &[("jwt_auth.wasm", 600)]),
            row("jwt-rs256-first", 190.0, 90.0, &[("jwt_auth.wasm", 600)]),
            row("jwt-es256-first", 191.0, 90.0, &[("jwt_auth.wasm", 600)]),
            row("native-jwt-rs256-uncached", 140.0, 60.0, &[]),
            row("native-jwt-es256-uncached", 140.0, 60.0, &[]),
            row("four-separate", 100.0, 120.0, &[]),
            row("suite", 70.0, 100.0, &[("mesh_suite.wasm", 1025)]),
        ]);
        let t = r.targets();
        // canary +14 <= floor+4 = 14: met, exactly at the limit.
        assert_eq!(met(&t, "canary router"), Some(true));
        // rate limit +18.5 > 18.
        assert_eq!(met(&t, "rate limit, allowed"), Some(false));
        assert_eq!(met(&t, "telemetry"), Some(true));
        assert_eq!(met(&t, "JWT rs256 cached"), Some(true));
        // Not measured: n/a rather than a verdict.
        assert_eq!(met(&t, "JWT eddsa cached"), None);
        // first-seen +150 <= 1.5 × 100; +151 > 150.
        assert_eq!(met(&t, "JWT rs256 first-seen"), Some(true));
        assert_eq!(met(&t, "JWT es256 first-seen"), Some(false));
        // four separate +60 <= 4 × 10 + 20.
        assert_eq!(met(&t, "all four, separate filters"), Some(true));
        // suite +30 <= min(10 + 20, 100).
        assert_eq!(met(&t, "all four, suite module"), Some(true));
        // RSS 100 <= 80 + 20.
        assert_eq!(met(&t, "RSS, suite at --concurrency 2"), Some(true));
        assert_eq!(met(&t, "size of canary_router.wasm"), Some(true));
        assert_eq!(met(&t, "size of rate_limit.wasm"), Some(false));
        assert_eq!(met(&t, "size of jwt_auth.wasm"), Some(true));
        assert_eq!(met(&t, "size of mesh_suite.wasm"), Some(false));
        assert!(t.iter().all(|t| t.what != "size of empty_filter.wasm"));
        let md = r.markdown();
        assert!(md.contains("| canary router | floor + 4 = 14.0 µs | 14.0 µs | yes |"));
        assert!(md.contains("| rate limit, allowed | floor + 8 = 18.0 µs | 18.5 µs | **no** |"));
        assert!(md.contains("Note: suite skipped"));
        // rps 1000 at a 1000 req/s rate: not over capacity.
        assert!(!md.contains("²"));
        let mut slow = report(vec![row("none", 40.0, 60.0, &[])]);
        slow.rate = 1500.0;
        assert!(slow.markdown().contains("| 1.000² | 2.000² |"));
        let json = r.json();
        assert_eq!(json["configurations"].as_array().map(Vec::len), Some(12));
        assert_eq!(json["targets"][0]["met"], serde_json::json!(true));
    }

    #[test]
    fn the_suite_must_also_beat_native_jwt_authn() {
        let r = report(vec![
            row("none", 40.0, 60.0, &[]),
            row("wasm-empty", 50.0, 80.0, &[]),
            row("native-jwt-rs256-uncached", 60.0, 60.0, &[]),
            row("suite", 65.0, 130.0, &[]),
        ]);
        let t = r.targets();
        // +25 <= floor + 20 = 30, but not below native's +20.
        assert_eq!(met(&t, "all four, suite module"), Some(false));
        assert_eq!(met(&t, "RSS, suite at --concurrency 2"), Some(false));
    }
}
