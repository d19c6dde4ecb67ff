//! Every filter of the workspace, named once. The suite's stages, the
//! manifest checks, the harness's suite rewrite and xtask's size limits all
//! read this table, so adding a filter is its crate, one entry here, its
//! `wasmplugins/<name>/` manifest and its `docs/<name>.md` page. A test in
//! `e2e` fails, saying what to add, when a crate under `filters/` has no
//! entry.
//!
//! The suite holds the filters because it is the one crate that links them
//! all; the table lives beside it so that the function pointers it carries
//! (compile a config, build a stage) need no second list.

use crate::suite::{Stage, stage};
use kit::{ConfigError, Host};

/// Builds a filter as one stage of the suite, from its config bytes.
pub(crate) type StageFn = fn(&[u8], &dyn Host) -> Result<Box<dyn Stage>, ConfigError>;

/// One filter.
pub struct FilterEntry {
    /// The crate under `filters/`, and the filter's name in logs and images.
    pub crate_name: &'static str,
    /// The module `cargo xtask build` ships (`target/wasm32-wasip1/release/`).
    pub module: &'static str,
    /// The largest the optimised module may be, in KiB (the size targets in
    /// `benches/README.md`); `cargo xtask build` fails above it.
    pub size_budget_kib: u64,
    /// Its example WasmPlugin, relative to `wasmplugins/`.
    pub example: &'static str,
    /// Its reference page, relative to the repository root.
    pub doc: &'static str,
    /// Compiles a `pluginConfig` with the filter's own config code, without
    /// a host: for manifest checks. The second argument is the plugin name
    /// (it only prefixes shared-data keys).
    pub compile: fn(Option<&[u8]>, &str) -> Result<(), ConfigError>,
    /// How it runs inside the suite; `None` for the suite itself.
    pub stage: Option<SuiteStage>,
}

/// A filter as one stage of the suite.
pub struct SuiteStage {
    /// The key of its config in the suite's `pluginConfig`.
    pub key: &'static str,
    /// Builds the stage from its config bytes.
    pub(crate) build: StageFn,
}

impl FilterEntry {
    /// The key of its config in the suite's `pluginConfig`; `None` for the
    /// suite itself.
    pub fn suite_key(&self) -> Option<&'static str> {
        self.stage.as_ref().map(|s| s.key)
    }
}

/// The filters, in the order the suite runs its stages: as separate
/// filters would run in Istio's phases (authentication, then rate limit,
/// then routing, then stats).
pub const FILTERS: &[FilterEntry] = &[
    FilterEntry {
        crate_name: "jwt-auth",
        module: "jwt_auth.wasm",
        size_budget_kib: 600,
        example: "jwt-auth/wasmplugin.yaml",
        doc: "docs/jwt-auth.md",
        compile: |bytes, _| jwt_auth::config::compile_json(bytes).map(drop),
        stage: Some(SuiteStage {
            key: "jwt",
            build: stage::<jwt_auth::JwtAuth>,
        }),
    },
    FilterEntry {
        crate_name: "rate-limit",
        module: "rate_limit.wasm",
        size_budget_kib: 400,
        example: "rate-limit/wasmplugin.yaml",
        doc: "docs/rate-limit.md",
        compile: |bytes, plugin| rate_limit::config::compile_json(bytes, plugin).map(drop),
        stage: Some(SuiteStage {
            key: "rateLimit",
            build: stage::<rate_limit::RateLimit>,
        }),
    },
    FilterEntry {
        crate_name: "canary-router",
        module: "canary_router.wasm",
        size_budget_kib: 400,
        example: "canary-router/wasmplugin.yaml",
        doc: "docs/canary-router.md",
        compile: |bytes, _| canary_router::config::compile_json(bytes).map(drop),
        stage: Some(SuiteStage {
            key: "canary",
            build: stage::<canary_router::CanaryRouter>,
        }),
    },
    FilterEntry {
        crate_name: "telemetry",
        module: "telemetry.wasm",
        size_budget_kib: 400,
        example: "telemetry/wasmplugin.yaml",
        doc: "docs/telemetry.md",
        compile: |bytes, _| telemetry::config::compile_json(bytes).map(drop),
        stage: Some(SuiteStage {
            key: "telemetry",
            build: stage::<telemetry::Telemetry>,
        }),
    },
    FilterEntry {
        crate_name: "mesh-suite",
        module: "mesh_suite.wasm",
        size_budget_kib: 1024,
        example: "mesh-suite/wasmplugin.yaml",
        doc: "docs/mesh-suite.md",
        compile: crate::config::compile_json,
        stage: None,
    },
];

/// The entry of crate `name`.
pub fn by_crate(name: &str) -> Option<&'static FilterEntry> {
    FILTERS.iter().find(|f| f.crate_name == name)
}

/// The entry whose module file is `file` (`canary_router.wasm`).
pub fn by_module(file: &str) -> Option<&'static FilterEntry> {
    FILTERS.iter().find(|f| f.module == file)
}

/// The suite's stages, in the order they run, with their filters.
pub fn stages() -> impl Iterator<Item = (&'static FilterEntry, &'static SuiteStage)> {
    FILTERS
        .iter()
        .filter_map(|f| f.stage.as_ref().map(|s| (f, s)))
}

/// The suite's config keys, in stage order.
pub fn suite_keys() -> impl Iterator<Item = &'static str> {
    stages().map(|(_, s)| s.key)
}

/// The suite module's entry.
pub fn suite() -> Option<&'static FilterEntry> {
    FILTERS.iter().find(|f| f.stage.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_files_follow_crates() {
        for (i, f) in FILTERS.iter().enumerate() {
            assert_eq!(f.module, format!("{}.wasm", f.crate_name.replace('-', "_")));
            assert!(f.example.starts_with(&format!("{}/", f.crate_name)));
            assert_eq!(f.doc, format!("docs/{}.md", f.crate_name));
            for g in &FILTERS[i + 1..] {
                assert_ne!(f.crate_name, g.crate_name);
                assert!(f.suite_key().is_none() || f.suite_key() != g.suite_key());
            }
        }
        assert_eq!(FILTERS.iter().filter(|f| f.stage.is_none()).count(), 1);
        assert_eq!(
            suite_keys().collect::<Vec<_>>(),
            ["jwt", "rateLimit", "canary", "telemetry"]
        );
    }
}
