//! Embeds the git commit of the checkout being built, so that each module
//! can say at start which build it is. Only a new commit (or a checkout of
//! another one) reruns this: there is no dirty flag, because watching the
//! working tree would rebuild every module on every edit.

use std::path::{Path, PathBuf};
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
    // keeps a ref as a file of its own or in packed-refs. Only files that
    // exist are watched: cargo reruns a script whose watched file is missing
    // on every build, which would rebuild every module every time.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watch(&head);
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watch(&packed);
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(loose) = git(&["rev-parse", "--git-path", &reference])
        && !watch(&loose)
    {
        // A packed ref: a commit writes it as a file again, in this folder.
        if let Some(folder) = Path::new(&loose).parent() {
            watch(&folder.to_string_lossy());
        }
    }
    // A source tree without git (a release tarball) may name its commit.
    let commit = std::env::var("MESH_FILTERS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESH_FILTERS_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=MESH_FILTERS_GIT_COMMIT");
    // Without a rerun-if-changed line cargo would rerun the script on any
    // change in the crate; outside git, one on the script itself stops that.
    println!("cargo:rerun-if-changed=build.rs");
}

/// Reruns the build script when `path` (relative to the crate, as git
/// prints it) changes; `false`, and nothing watched, when it does not exist.
fn watch(path: &str) -> bool {
    let mut full = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    full.push(path);
    if !full.exists() {
        return false;
    }
    println!("cargo:rerun-if-changed={}", full.display());
    true
}
