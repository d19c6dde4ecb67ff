//! Each module says which build it is once per VM, so an operator can tell
//! from a sidecar's log which filter build runs there: its name, version
//! and git commit. Every shipped example (one per filter of the registry)
//! runs in a real Envoy, and the line is looked for in its log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::Harness;
use e2e::image::meta;
use mesh_suite::registry::FILTERS;
use std::time::{Duration, Instant};

#[test]
fn every_module_logs_its_name_version_and_commit_at_start() {
    let root = e2e::envoy::workspace_root();
    let packages = meta::filter_packages(&root).unwrap();
    for f in FILTERS {
        let h = Harness::start(&root.join("wasmplugins").join(f.example)).unwrap();
        // With MESH_SUITE=1 the example runs as the suite module.
        let name = if e2e::manifest::suite_mode() {
            "mesh-suite"
        } else {
            f.crate_name
        };
        let version = &packages.iter().find(|p| p.name == name).unwrap().version;
        let want = format!("mesh-filters {name} {version} (commit ");
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let log = h.log();
            if let Some(line) = log.lines().find(|l| l.contains(&want)) {
                break line.to_string();
            }
            assert!(Instant::now() < deadline, "no {want:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let commit = line
            .split("(commit ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line}"));
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{line}"
        );
        // Once per VM, never per request: the harness runs two workers, and
        // the main thread has the base VM and the one that checks the
        // configuration.
        for _ in 0..5 {
            h.get("/", &[]).unwrap();
        }
        let count = h.log().matches(&want).count();
        assert!((1..=4).contains(&count), "{count} start lines");
    }
}
