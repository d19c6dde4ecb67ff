//! Which build this is. Each module logs its name, version and commit once
//! when a VM starts, so an operator can tell which build runs in which
//! sidecar (`kubectl logs … -c istio-proxy | grep mesh-filters`).

/// The git commit the workspace was built from (12 hex digits), or
/// `unknown` outside a git checkout. It says nothing of uncommitted edits.
pub const GIT_COMMIT: &str = env!("MESH_FILTERS_GIT_COMMIT");

/// The start-up line: `mesh-filters canary-router 0.1.0 (commit 1a2b3c4d5e6f)`.
pub fn banner(name: &str, version: &str) -> String {
    format!("mesh-filters {name} {version} (commit {GIT_COMMIT})")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_banner_names_the_build() {
        let line = super::banner("canary-router", "0.1.0");
        assert!(line.starts_with("mesh-filters canary-router 0.1.0 (commit "));
        assert!(!super::GIT_COMMIT.is_empty());
    }
}
