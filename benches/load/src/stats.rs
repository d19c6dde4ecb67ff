//! Parsing the tools' output and /proc, and the median with its spread.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The median and the range of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn median_spread(samples: &[f64]) -> Spread {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`, counted after the parenthesised command name).
pub fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&text)
}

pub fn parse_stat_ticks(stat: &str) -> Result<u64> {
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in /proc/<pid>/stat")?;
    // After the name: state is field 3, so utime (14) is index 11 here.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// VmRSS of a process, in KiB.
pub fn proc_rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&text)
}

pub fn parse_rss_kib(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?)
}

/// From wrk's summary: (requests, requests per second, non-2xx/3xx).
pub fn wrk_summary(text: &str) -> Result<(u64, f64, u64)> {
    let mut requests = None;
    let mut rps = None;
    let mut bad = 0;
    for line in text.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ")
            && !rest.is_empty()
        {
            requests = Some(n.trim().parse()?);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse()?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            bad = v.trim().parse()?;
        }
    }
    match (requests, rps) {
        (Some(r), Some(s)) => Ok((r, s, bad)),
        _ => bail!("no summary in wrk's output"),
    }
}

/// From oha's JSON (`--output-format json`): (p50, p99) in ms.
pub fn oha_latency(text: &str) -> Result<(f64, f64)> {
    let v: Value = serde_json::from_str(text.trim()).context("oha's output is not JSON")?;
    let p = &v["latencyPercentiles"];
    let get = |k: &str| -> Result<f64> {
        p[k].as_f64()
            .map(|s| s * 1000.0)
            .with_context(|| format!("no latencyPercentiles.{k}"))
    };
    Ok((get("p50")?, get("p99")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = median_spread(&[3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert_eq!(median_spread(&[1.0, 2.0]).median, 1.5);
        assert!(median_spread(&[]).median.is_nan());
    }

    #[test]
    fn proc_stat_with_spaces_in_the_name() {
        let stat = "4242 (envoy worker 0) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 325);
        assert!(parse_stat_ticks("garbage").is_err());
        assert_eq!(
            parse_rss_kib("Name:\tenvoy\nVmRSS:\t  91234 kB\n").unwrap(),
            91234
        );
    }

    #[test]
    fn wrk_output() {
        let text = "Running 3s test @ http://127.0.0.1:1/orders/1\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   760.50us  100.00us   2.00ms   90.00%\n  123456 requests in 3.00s, 12.34MB read\n  Non-2xx or 3xx responses: 7\nRequests/sec:  41152.00\nTransfer/sec:      4.11MB\n";
        assert_eq!(wrk_summary(text).unwrap(), (123456, 41152.0, 7));
        assert!(wrk_summary("nothing").is_err());
    }

    #[test]
    fn oha_output() {
        let text = r#"{"summary": {}, "latencyPercentiles": {"p10": 0.0001, "p50": 0.00025, "p99": 0.002}}"#;
        let (p50, p99) = oha_latency(text).unwrap();
        assert!((p50 - 0.25).abs() < 1e-9 && (p99 - 2.0).abs() < 1e-9);
        assert!(oha_latency("{}").is_err());
    }
}
