//! The filter registry (`filters/mesh-suite/src/registry.rs`) names every
//! filter crate, and what each entry points at exists: so a new filter
//! cannot be half-added, and a missed step fails here saying what to add.

use e2e::envoy::workspace_root as root;
use e2e::image::meta;
use e2e::manifest;
use mesh_suite::registry::{self, FILTERS};

#[test]
fn registry_lists_every_filter_crate() {
    let crates = meta::filter_packages(&root()).expect("cargo metadata");
    assert!(crates.len() >= 5, "found only {crates:?}");
    let mut missing = Vec::new();
    for p in &crates {
        if registry::by_crate(&p.name).is_none() {
            missing.push(format!(
                "filters/{name} builds a Wasm module but the filter registry has no entry \
                 for it: add a FilterEntry {{ crate_name: {name:?}, module: \"{module}\", \
                 size_budget_kib, example: \"{name}/wasmplugin.yaml\", \
                 doc: \"docs/{name}.md\", compile, stage }} to \
                 filters/mesh-suite/src/registry.rs (see CONTRIBUTING.md)",
                name = p.name,
                module = p.module_file(),
            ));
        }
    }
    for f in FILTERS {
        if !crates.iter().any(|p| p.name == f.crate_name) {
            missing.push(format!(
                "the filter registry names {:?}, but no crate under filters/ builds it as a \
                 cdylib: remove the entry or add the crate",
                f.crate_name
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_entry_has_its_manifest_and_its_page() {
    let root = root();
    let mut problems = Vec::new();
    for f in FILTERS {
        let example = root.join("wasmplugins").join(f.example);
        match manifest::load_with(&example, false) {
            Err(e) => problems.push(format!(
                "{}: its example wasmplugins/{} cannot be read: {e:#}",
                f.crate_name, f.example
            )),
            Ok(m) => {
                let runs = m
                    .plugins
                    .iter()
                    .filter_map(|p| p.module_file_name().ok())
                    .collect::<Vec<_>>();
                if !runs.iter().any(|file| file == f.module) {
                    problems.push(format!(
                        "{}: wasmplugins/{} runs {runs:?}, not {}",
                        f.crate_name, f.example, f.module
                    ));
                }
                for p in &m.plugins {
                    if let Err(e) = p.check_config() {
                        problems.push(format!("{}: wasmplugins/{}: {e}", f.crate_name, f.example));
                    }
                }
            }
        }
        if !root.join(f.doc).is_file() {
            problems.push(format!(
                "{}: its reference page {} is missing",
                f.crate_name, f.doc
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_workspace_takes_every_filter_crate_by_glob() {
    // A `default-members` list would have to repeat every crate again.
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        cargo_toml.contains("\"filters/*\""),
        "members should glob filters/*"
    );
    assert!(!cargo_toml.contains("default-members"));
}
