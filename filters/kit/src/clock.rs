//! The host's wall clock as the numbers filters keep: seconds for token
//! expiry, milliseconds for key refreshes, nanoseconds for rate-limit
//! buckets. A host that cannot tell the time reads as the epoch (or `None`),
//! never as a panic.

use crate::host::Host;
use std::time::{Duration, UNIX_EPOCH};

/// Time since the Unix epoch; `None` when the host cannot say or its clock
/// is before 1970.
pub fn since_epoch(host: &dyn Host) -> Option<Duration> {
    host.now().ok()?.duration_since(UNIX_EPOCH).ok()
}

/// Whole seconds since the epoch; 0 when unknown.
pub fn unix_secs(host: &dyn Host) -> u64 {
    since_epoch(host).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch; 0 when unknown.
pub fn unix_millis(host: &dyn Host) -> u64 {
    since_epoch(host).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nanoseconds since the epoch; `None` when unknown or past `u64` (2554).
pub fn unix_nanos(host: &dyn Host) -> Option<u64> {
    u64::try_from(since_epoch(host)?.as_nanos()).ok()
}
