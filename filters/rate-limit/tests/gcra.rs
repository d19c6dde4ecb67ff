//! The GCRA store over fake shared data: exact bursts, replenishment, one
//! limit across VMs, bounded keys, races and contention.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use governor::Quota;
use governor::nanos::Nanos;
use kit::{FakeHost, HostError};
use rate_limit::gcra::{Buckets, FailureMode, Outcome};
use std::num::NonZeroU32;
use std::time::Duration;

/// 1_700_000_000 s after the epoch, in nanoseconds.
const T0: u64 = 1_700_000_000 * 1_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn buckets(per_minute: u32, burst: u32, slots: u64) -> Buckets {
    let quota = Quota::with_period(Duration::from_secs(60) / per_minute)
        .unwrap()
        .allow_burst(NonZeroU32::new(burst).unwrap());
    Buckets {
        prefix: "mesh-filters/rate-limit/test/rule".into(),
        slots,
        quota,
        max_retries: 4,
        failure_mode: FailureMode::Allow,
    }
}

fn allowed(o: Outcome) -> bool {
    matches!(o, Outcome::Allowed { .. })
}

fn admitted(b: &Buckets, host: &FakeHost, key: u64, at: u64, n: usize) -> usize {
    (0..n)
        .filter(|_| allowed(b.check(host, key, Nanos::from(at)).0))
        .count()
}

#[test]
fn a_burst_admits_exactly_burst_then_says_when_to_retry() {
    let host = FakeHost::new();
    let b = buckets(60, 5, 16);
    b.create(&host).unwrap();
    assert_eq!(admitted(&b, &host, 42, T0, 20), 5);
    match b.check(&host, 42, Nanos::from(T0)).0 {
        Outcome::Denied { retry_after } => {
            let secs = retry_after.as_u64() as f64 / SECOND as f64;
            assert!((0.9..=1.1).contains(&secs), "retry after {secs}s");
        }
        other => panic!("{other:?}"),
    }
    // One more per second at 60/min.
    assert_eq!(admitted(&b, &host, 42, T0 + SECOND, 5), 1);
    assert_eq!(admitted(&b, &host, 42, T0 + 11 * SECOND, 20), 5);
}

#[test]
fn two_vms_on_one_envoy_share_one_limit() {
    // Two Buckets values stand for two worker VMs' copies of the rule.
    let host = FakeHost::new();
    let vm1 = buckets(60, 10, 16);
    let vm2 = buckets(60, 10, 16);
    vm1.create(&host).unwrap();
    vm2.create(&host).unwrap();
    let mut n = 0;
    for i in 0..40 {
        let vm = if i % 2 == 0 { &vm1 } else { &vm2 };
        n += admitted(vm, &host, 7, T0, 1);
    }
    assert_eq!(n, 10, "not 10 per VM");
}

#[test]
fn sustained_load_admits_burst_plus_rate_times_elapsed() {
    let host = FakeHost::new();
    let b = buckets(600, 20, 16); // 10/s
    b.create(&host).unwrap();
    let mut n = 0;
    // 100 requests/s for 10 s.
    for i in 0..1000u64 {
        n += admitted(&b, &host, 9, T0 + i * SECOND / 100, 1);
    }
    let expected = 20 + 10 * 10;
    assert!(
        (expected - 2..=expected + 2).contains(&n),
        "admitted {n}, expected about {expected}"
    );
}

#[test]
fn keys_are_independent_and_capped_by_the_overflow_bucket() {
    let host = FakeHost::new();
    let b = buckets(60, 3, 4);
    b.create(&host).unwrap();
    // Four keys in four slots: each gets its own burst.
    for key in 1..=4u64 {
        assert_eq!(admitted(&b, &host, key, T0, 10), 3, "key {key}");
    }
    // Keys hashing onto live slots share the overflow bucket: 3 in all.
    let (_, events) = b.check(&host, 1000 * 4 + 1, Nanos::from(T0));
    assert!(events.overflow);
    let mut n = 1;
    for key in 2000..2100u64 {
        n += admitted(&b, &host, key * 4 + 1, T0, 1);
    }
    assert!(n <= 3, "overflow admitted {n}");
    // 20,000 distinct keys create no new shared data.
    for key in 0..20_000u64 {
        b.check(
            &host,
            key.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            Nanos::from(T0),
        );
    }
    for slot in 0..=4 {
        assert!(
            kit::Host::shared_data(&host, &format!("{}/{slot}", b.prefix))
                .unwrap()
                .is_some()
        );
    }
    assert!(
        kit::Host::shared_data(&host, &format!("{}/5", b.prefix))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_idle_slot_is_reused_once_its_bucket_is_full_again() {
    let host = FakeHost::new();
    let b = buckets(60, 3, 1);
    b.create(&host).unwrap();
    assert_eq!(admitted(&b, &host, 5, T0, 10), 3);
    // Another key on the only slot while 5 is live: overflow.
    assert!(b.check(&host, 6, Nanos::from(T0)).1.overflow);
    // Three seconds later key 5's bucket is full again: 6 takes the slot.
    let (o, events) = b.check(&host, 6, Nanos::from(T0 + 3 * SECOND));
    assert!(allowed(o));
    assert!(!events.overflow);
}

#[test]
fn a_write_by_another_vm_between_read_and_cas_is_not_lost() {
    let host = FakeHost::new();
    let b = buckets(60, 2, 1);
    b.create(&host).unwrap();
    // Another VM spends the whole burst of key 9 between our read and our
    // CAS: our CAS fails, we re-read, and the request is refused.
    let key = format!("{}/0", b.prefix);
    let mut spent = [0u8; 16];
    spent[..8].copy_from_slice(&9u64.to_le_bytes());
    spent[8..].copy_from_slice(&(T0 + 2 * SECOND).to_le_bytes());
    host.interleave_write(&key, &spent);
    let (o, events) = b.check(&host, 9, Nanos::from(T0));
    assert!(!allowed(o), "{o:?}");
    assert!(!events.contention);
}

#[test]
fn contention_past_the_retries_follows_the_failure_mode() {
    for (mode, expect_allowed) in [(FailureMode::Allow, true), (FailureMode::Deny, false)] {
        let host = FakeHost::new();
        let mut b = buckets(60, 5, 4);
        b.failure_mode = mode;
        b.create(&host).unwrap();
        host.fail("set_shared_data", HostError::CasMismatch);
        let (o, events) = b.check(&host, 3, Nanos::from(T0));
        assert_eq!(allowed(o), expect_allowed, "{mode:?}");
        assert!(events.contention);
        if let Outcome::Denied { retry_after } = o {
            // About one replenish interval (1 s at 60/min), not decades.
            let secs = retry_after.as_u64() as f64 / SECOND as f64;
            assert!((0.5..=1.5).contains(&secs), "retry after {secs}s");
        }
    }
}
