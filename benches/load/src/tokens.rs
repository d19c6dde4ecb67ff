//! The benchmark's tokens, minted once with `e2e::jose` and kept under
//! `target/bench-tokens/` while they stay valid (RSA signing is slow, and a
//! first-seen pass needs more distinct tokens than the filter's cache holds).

use anyhow::{Context, Result};
use e2e::jose::TestKey;
use serde_json::{Value, json};
use std::path::Path;

/// How long freshly minted tokens stay valid.
const LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// Cached tokens are minted again when they expire sooner than this.
const MIN_REMAINING_SECS: u64 = 24 * 3600;

/// `count` distinct tokens signed by `key` for `jwks`, from `dir` when a
/// cached set still fits, minted (and cached) otherwise.
pub fn tokens(
    dir: &Path,
    name: &str,
    key: &TestKey,
    jwks: &str,
    count: usize,
    now: u64,
) -> Result<Vec<String>> {
    let path = dir.join(format!("{name}.json"));
    if let Some(cached) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| reusable(&v, jwks, count, now))
    {
        return Ok(cached);
    }
    eprintln!(
        "minting {count} {name} tokens (cached in {})",
        path.display()
    );
    let exp = now + LIFETIME_SECS;
    let list: Vec<String> = (0..count)
        .map(|i| {
            key.token(e2e::jose::patch(
                e2e::jose::claims(now),
                json!({"sub": format!("user-{i}"), "jti": format!("bench-{i}"), "exp": exp}),
            ))
        })
        .collect();
    std::fs::create_dir_all(dir)?;
    let file = json!({"jwks": jwks, "exp": exp, "tokens": list});
    std::fs::write(&path, serde_json::to_vec(&file)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(list)
}

/// The first `count` tokens of a cached set, if it was minted for this JWKS,
/// holds enough of them and does not expire within a day.
pub fn reusable(cached: &Value, jwks: &str, count: usize, now: u64) -> Option<Vec<String>> {
    if cached["jwks"].as_str()? != jwks || cached["exp"].as_u64()? < now + MIN_REMAINING_SECS {
        return None;
    }
    let list: Vec<String> = cached["tokens"]
        .as_array()?
        .iter()
        .map(|t| t.as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    (list.len() >= count).then(|| list.into_iter().take(count).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_set_is_reused_only_while_it_fits() {
        let now = 1_000_000;
        let set = json!({"jwks": "K", "exp": now + 2 * 24 * 3600, "tokens": ["a", "b", "c"]});
        assert_eq!(
            reusable(&set, "K", 2, now),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(reusable(&set, "K", 3, now).map(|l| l.len()), Some(3));
        // Too few, another JWKS, expiring within a day, malformed.
        assert_eq!(reusable(&set, "K", 4, now), None);
        assert_eq!(reusable(&set, "other", 2, now), None);
        assert_eq!(reusable(&set, "K", 2, now + 2 * 24 * 3600 - 3600), None);
        assert_eq!(
            reusable(
                &json!({"jwks": "K", "exp": now * 2, "tokens": [1]}),
                "K",
                1,
                now
            ),
            None
        );
        assert_eq!(reusable(&json!({}), "K", 0, now), None);
    }
}
