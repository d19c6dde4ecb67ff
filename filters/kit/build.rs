//! Embeds the git commit of the checkout being built, so that each module
//! can say at start which build it is. Only a new commit (or a checkout of
//! another one) reruns this: there is no dirty flag, because watching the
//! working tree would rebuild every module on every edit.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

fn main() {
    // HEAD moves on a checkout; the ref it points to moves on a commit. Git
    // may keep that ref in packed-refs instead, so watch that file too.
    for file in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            watch(path);
        }
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &reference])
    {
        watch(path);
    }
    // A source tree without git (a release tarball) may name its commit.
    let commit = std::env::var("MESH_FILTERS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESH_FILTERS_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=MESH_FILTERS_GIT_COMMIT");
}

/// Reruns the build script when `path` (relative to the crate, as git
/// prints it) changes, or appears.
fn watch(path: String) {
    let mut full = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    full.push(path);
    println!("cargo:rerun-if-changed={}", full.display());
}
