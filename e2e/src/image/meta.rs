//! What an image says about itself, read from the workspace: the filter
//! crates and their versions (`cargo metadata`), the git commit, and
//! `SOURCE_DATE_EPOCH`. Nothing here reads the clock or the machine, so a
//! rebuild of the same commit elsewhere gives the same annotations.

use super::build::Meta;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A workspace package, as `cargo metadata` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub repository: Option<String>,
    pub manifest_path: PathBuf,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Debug, Clone, Deserialize)]
struct Target {
    #[serde(default)]
    crate_types: Vec<String>,
}

impl Package {
    /// The `.wasm` file `cargo xtask build` writes for this crate.
    pub fn module_file(&self) -> String {
        format!("{}.wasm", self.name.replace('-', "_"))
    }

    fn builds_cdylib(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.crate_types.iter().any(|c| c == "cdylib"))
    }
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

/// `cargo metadata` at `root`, with `args` after the format version.
fn metadata(root: &Path, args: &[&str]) -> Result<Metadata> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1"])
        .args(args)
        .output()
        .with_context(|| format!("running {cargo} metadata"))?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata output")
}

/// The workspace's own packages (`cargo metadata --no-deps`).
pub fn workspace_packages(root: &Path) -> Result<Vec<Package>> {
    Ok(metadata(root, &["--no-deps", "--offline"])?.packages)
}

/// The version of dependency `name` that Cargo.lock pins, as cargo itself
/// resolves it (`--locked`: an out-of-date lock file is an error, not a
/// silent update).
pub fn locked_version(root: &Path, name: &str) -> Result<String> {
    let packages = metadata(root, &["--locked"])?.packages;
    let mut versions: Vec<String> = packages
        .into_iter()
        .filter(|p| p.name == name)
        .map(|p| p.version)
        .collect();
    versions.dedup();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{name} is not in Cargo.lock"),
        many => bail!(
            "Cargo.lock has {name} at {}: expected one version",
            many.join(", ")
        ),
    }
}

/// The filter crates: every workspace crate under `filters/` that builds a
/// cdylib, by name. These are the modules `cargo xtask build` ships and
/// `cargo xtask image` packs.
pub fn filter_packages(root: &Path) -> Result<Vec<Package>> {
    let filters = root.join("filters");
    let mut out: Vec<Package> = workspace_packages(root)?
        .into_iter()
        .filter(|p| p.manifest_path.starts_with(&filters) && p.builds_cdylib())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The commit checked out at `root`, with `-dirty` when tracked files have
/// changes (as `git describe --dirty` counts them: untracked files do not).
/// `None` when `root` is not the top of a git checkout, or git is missing.
pub fn git_revision(root: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // A source tree unpacked inside some other checkout is not that
    // checkout's commit.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), root) {
        return None;
    }
    let commit = git(&["rev-parse", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if status.is_empty() {
        commit
    } else {
        format!("{commit}-dirty")
    })
}

/// `SOURCE_DATE_EPOCH` (seconds since 1970) as RFC 3339, or `None` when it
/// is unset or empty. Without it an image has no `created` time, so builds
/// at different times agree.
pub fn source_date_epoch() -> Result<Option<String>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => rfc3339(&v).map(Some),
        _ => Ok(None),
    }
}

/// Seconds since 1970, as an RFC 3339 UTC time.
pub fn rfc3339(epoch: &str) -> Result<String> {
    let secs: i64 = epoch
        .trim()
        .parse()
        .with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds"))?;
    let time = chrono::DateTime::from_timestamp(secs, 0)
        .with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is out of range"))?;
    Ok(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The [`Meta`] of `package`'s image: its name and version, the checkout's
/// revision, `source` from `--source` or else the crate's `repository`, and
/// `created` from `SOURCE_DATE_EPOCH`.
pub fn meta_for(root: &Path, package: &Package, source: Option<&str>) -> Result<Meta> {
    Ok(Meta {
        name: package.name.clone(),
        version: package.version.clone(),
        revision: git_revision(root),
        source: source
            .map(str::to_string)
            .or_else(|| package.repository.clone())
            .filter(|s| !s.is_empty()),
        created: source_date_epoch()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_from_epoch() {
        assert_eq!(rfc3339("0").unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339("1767225600").unwrap(), "2026-01-01T00:00:00Z");
        assert!(rfc3339("yesterday").is_err());
    }

    #[test]
    fn the_filter_crates_are_the_shipped_modules() {
        let root = crate::envoy::workspace_root();
        let names: Vec<String> = filter_packages(&root)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            [
                "canary-router",
                "jwt-auth",
                "mesh-suite",
                "rate-limit",
                "telemetry"
            ]
        );
    }

    #[test]
    fn no_revision_outside_a_checkout() {
        let dir = std::env::temp_dir().join(format!("no-git-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(git_revision(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn revision_of_a_checkout_and_dirty_tracked_files() {
        let dir = std::env::temp_dir().join(format!("git-rev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .current_dir(&dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.join("a"), "1").unwrap();
        git(&["add", "a"]);
        git(&["commit", "-q", "-m", "one"]);
        let clean = git_revision(&dir).unwrap();
        assert_eq!(clean.len(), 40, "{clean}");
        // Untracked files leave it clean; a changed tracked file does not.
        std::fs::write(dir.join("untracked"), "x").unwrap();
        assert_eq!(git_revision(&dir).unwrap(), clean);
        std::fs::write(dir.join("a"), "2").unwrap();
        assert_eq!(git_revision(&dir).unwrap(), format!("{clean}-dirty"));
        // A subdirectory is not the top of the checkout.
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert_eq!(git_revision(&dir.join("sub")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
