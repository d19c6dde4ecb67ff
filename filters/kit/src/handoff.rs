//! Names by which one filter leaves a result for another on the same
//! request. Both sides use these constants, so they cannot drift apart.

/// The filter-state property where the rate limiter writes its decision
/// (`allowed`, `denied` or `shadow_denied`), for telemetry's
/// `rate_limit_decision` label and access-log field.
pub const RATE_LIMIT_DECISION: &str = "rate_limit_decision";
