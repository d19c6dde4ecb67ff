//! `wasmplugins/stats_tags.json`, the `stats_config.stats_tags` list shipped
//! for operators, is exactly [`stats_tags`], so the two cannot drift.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use telemetry::metrics::stats_tags;

const SHIPPED: &str = include_str!("../../../wasmplugins/stats_tags.json");

#[test]
fn shipped_stats_tags_match_the_filter() {
    let shipped: serde_json::Value =
        serde_json::from_str(SHIPPED).expect("wasmplugins/stats_tags.json is JSON");
    assert_eq!(
        shipped,
        stats_tags(),
        "regenerate wasmplugins/stats_tags.json from telemetry::metrics::stats_tags()"
    );
}
