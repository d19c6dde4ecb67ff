//! Durations as operators write them: "250ms", "30s", "1m", "1h", "1h30m".

use serde::de::{self, Deserialize, Deserializer};
use std::fmt;

/// A duration read from config. Deserialising a bad one fails with
/// `expected a duration like "1m"`, under the field's JSON path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

/// Parses one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`;
/// the number may have a fraction ("1.5s").
pub fn parse_duration(input: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("expected a duration like \"1m\" (units ms, s, m, h), got {input:?}");
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().map_err(|_| bad())? * scale / 10u128.pow(frac.len() as u32)
        };
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(frac_value))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(std::time::Duration::new(
        secs,
        (nanos % 1_000_000_000) as u32,
    ))
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Duration)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map(Duration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn parses_operator_durations() {
        assert_eq!(parse_duration("250ms"), Ok(D::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(D::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(D::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(D::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(D::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(D::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(D::ZERO));
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "5",
            "5x",
            "m",
            "1.2.3s",
            "-1s",
            "1 m",
            "s5",
            "1e3s",
            "99999999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.starts_with("expected a duration like \"1m\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn deserialize_error_names_the_problem() {
        let e = serde_json::from_str::<Duration>("\"5x\"").unwrap_err();
        assert!(
            e.to_string().contains("expected a duration like \"1m\""),
            "{e}"
        );
        let e = serde_json::from_str::<Duration>("5").unwrap_err();
        assert!(
            e.to_string().contains("expected a duration like \"1m\""),
            "{e}"
        );
    }
}
