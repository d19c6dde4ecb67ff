//! Copies of the shipped manifests pinned to pushed images
//! (`cargo xtask image --push … --write-manifests DIR`): every `.yaml` file
//! under `wasmplugins/` is written to the same relative path under `DIR`,
//! and each WasmPlugin whose `oci://` url names a pushed image gets that
//! image's url and its manifest digest as `sha256`. The directory then
//! applies as it is (`kubectl apply -f DIR/examples/reviews/`).
//!
//! The edit is made on the text, so the comments that explain each manifest
//! stay; the result is parsed again and checked: the url and `sha256` read
//! back as written, and every document passes the Istio CRD check.

use super::registry::Pushed;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What [`write`] did.
#[derive(Debug, Default)]
pub struct Written {
    /// Every file written, relative to the output directory.
    pub files: Vec<PathBuf>,
    /// `(file, WasmPlugin, url)` of each pinned plugin.
    pub pinned: Vec<(PathBuf, String, String)>,
    /// `(file, WasmPlugin, url)` of plugins whose image was not pushed.
    pub unpinned: Vec<(PathBuf, String, String)>,
}

/// The image name an `oci://` url refers to: its last path segment without
/// tag or digest (`oci://r/p/canary-router:0.1.0` → `canary-router`).
pub fn image_name(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("oci://")?;
    let rest = rest.split('@').next().unwrap_or(rest);
    let last = rest.rsplit('/').next().unwrap_or(rest);
    // A registry port is in an earlier segment; here ':' starts the tag.
    Some(last.split(':').next().unwrap_or(last)).filter(|n| !n.is_empty())
}

/// Splits YAML text into documents at `---` lines, keeping every line.
fn documents(text: &str) -> Vec<Vec<String>> {
    let mut docs: Vec<Vec<String>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim_end() == "---"
            && let Some(last) = docs.last_mut()
            && !last.is_empty()
        {
            docs.push(vec![line.to_string()]);
            continue;
        }
        if let Some(last) = docs.last_mut() {
            last.push(line.to_string());
        }
    }
    docs
}

/// Rewrites one WasmPlugin document's `spec.url` and `spec.sha256` lines.
fn pin(lines: &mut Vec<String>, old_url: &str, new_url: &str, sha256: &str) -> Result<()> {
    let unquote = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    let Some((at, indent)) = lines.iter().enumerate().find_map(|(i, l)| {
        let trimmed = l.trim_start();
        let value = trimmed.strip_prefix("url:")?;
        let indent = &l[..l.len() - trimmed.len()];
        (!indent.is_empty() && unquote(value) == old_url).then(|| (i, indent.to_string()))
    }) else {
        bail!("no `url: {old_url}` line under spec");
    };
    lines[at] = format!("{indent}url: {new_url}");
    let at_indent = |l: &String, prefix: &str| {
        l.strip_prefix(indent.as_str())
            .is_some_and(|rest| rest.starts_with(prefix))
    };
    let line = format!("{indent}sha256: \"{sha256}\"  # the pushed image's manifest digest");
    if let Some(i) = lines.iter().position(|l| at_indent(l, "sha256:")) {
        lines[i] = line;
    } else if let Some(end) = lines.iter().position(|l| at_indent(l, "# sha256: <")) {
        // The shipped manifests explain the missing sha256 in the comment
        // lines that end with this placeholder; with the value set, the
        // explanation goes too.
        let mut start = end;
        while start > 0 && at_indent(&lines[start - 1], "#") {
            start -= 1;
        }
        lines.splice(start..=end, [line]);
    } else {
        lines.insert(at + 1, line);
    }
    Ok(())
}

/// Writes copies of every manifest under `source` (the shipped
/// `wasmplugins/`) to `out`, with WasmPlugins pinned to `pushed` (by image
/// name). Fails, writing nothing more, when a copy would not pass the CRD
/// check or the edit does not read back.
pub fn write(source: &Path, out: &Path, pushed: &BTreeMap<String, Pushed>) -> Result<Written> {
    let mut files = Vec::new();
    crate::manifest::collect(source, &mut files)?;
    let mut written = Written::default();
    for file in files {
        let rel = file.strip_prefix(source).unwrap_or(&file).to_path_buf();
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut docs = documents(&text);
        let mut changed = false;
        for lines in &mut docs {
            let doc_text = lines.join("\n");
            let parsed = crate::crd::parse_yaml_documents(&doc_text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", rel.display()))?;
            let Some(doc) = parsed.first() else { continue };
            if doc["kind"] != "WasmPlugin" {
                continue;
            }
            let name = format!(
                "{}/{}",
                doc["metadata"]["namespace"].as_str().unwrap_or("default"),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            let url = doc["spec"]["url"].as_str().unwrap_or_default().to_string();
            let Some(image) = image_name(&url).and_then(|n| pushed.get(n)) else {
                written.unpinned.push((rel.clone(), name, url));
                continue;
            };
            pin(lines, &url, &image.url, image.sha256())
                .with_context(|| format!("{}: WasmPlugin {name}", rel.display()))?;
            let check = crate::crd::parse_yaml_documents(&lines.join("\n"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", rel.display()))?;
            let spec = check.first().map(|d| &d["spec"]).unwrap_or(&Value::Null);
            if spec["url"] != image.url.as_str() || spec["sha256"] != image.sha256() {
                bail!(
                    "{}: WasmPlugin {name}: the pinned copy reads back url {} and sha256 {}",
                    rel.display(),
                    spec["url"],
                    spec["sha256"]
                );
            }
            written.pinned.push((rel.clone(), name, image.url.clone()));
            changed = true;
        }
        let mut new_text = String::new();
        if changed {
            new_text.push_str(
                "# Pinned by `cargo xtask image --push`: each WasmPlugin's url and sha256\n# name the pushed image and its manifest digest.\n",
            );
        }
        new_text.push_str(
            &docs
                .iter()
                .map(|d| d.join("\n"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        new_text.push('\n');
        for (i, doc) in crate::crd::parse_yaml_documents(&new_text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", rel.display()))?
            .iter()
            .enumerate()
        {
            let istio = doc["apiVersion"]
                .as_str()
                .is_some_and(crate::crd::is_istio_api_version);
            if istio && let Err(errors) = crate::crd::validate(doc) {
                bail!(
                    "{} (document {i}) would not pass the CRD check:\n  {}",
                    rel.display(),
                    errors.join("\n  ")
                );
            }
        }
        let target = out.join(&rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&target, new_text)
            .with_context(|| format!("writing {}", target.display()))?;
        written.files.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_from_urls() {
        assert_eq!(
            image_name("oci://registry.example.com/mesh-filters/canary-router:0.1.0"),
            Some("canary-router")
        );
        assert_eq!(
            image_name("oci://127.0.0.1:5000/p/jwt-auth@sha256:abc"),
            Some("jwt-auth")
        );
        assert_eq!(
            image_name("oci://127.0.0.1:5000/rate-limit"),
            Some("rate-limit")
        );
        assert_eq!(image_name("file:///x/canary_router.wasm"), None);
    }

    #[test]
    fn pins_the_url_and_inserts_sha256_keeping_comments() {
        let text = "# a comment\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: c\nspec:\n  # why\n  url: oci://registry.example.com/mesh-filters/canary-router:0.1.0\n  imagePullPolicy: IfNotPresent\n  # sha256 explained: no placeholder\n  # can be valid\n  # sha256: <64 lowercase hex digits>\n  pluginConfig:\n    url: not-this-one\n---\nkind: ConfigMap\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        let mut lines = docs[0].clone();
        let sha = "a".repeat(64);
        pin(
            &mut lines,
            "oci://registry.example.com/mesh-filters/canary-router:0.1.0",
            "oci://127.0.0.1:5000/mf/canary-router:0.1.0",
            &sha,
        )
        .unwrap();
        let out = lines.join("\n");
        assert!(out.contains("  # why\n  url: oci://127.0.0.1:5000/mf/canary-router:0.1.0\n  imagePullPolicy: IfNotPresent\n  sha256: \"aaaa"), "{out}");
        assert!(
            !out.contains("placeholder") && !out.contains("<64"),
            "{out}"
        );
        assert!(out.contains("# a comment"));
        assert!(out.contains("    url: not-this-one"));
        // An existing sha256 line is replaced, not doubled.
        let mut again = lines.clone();
        pin(
            &mut again,
            "oci://127.0.0.1:5000/mf/canary-router:0.1.0",
            "oci://127.0.0.1:5000/mf/canary-router:0.1.0",
            &"b".repeat(64),
        )
        .unwrap();
        assert_eq!(
            again.iter().filter(|l| l.starts_with("  sha256: ")).count(),
            1
        );
        assert!(pin(&mut lines, "oci://elsewhere/x:1", "oci://y/x:1", &sha).is_err());
    }

    #[test]
    fn without_a_placeholder_sha256_goes_after_the_url_and_stays_a_string() {
        let text = "kind: WasmPlugin\nspec:\n  url: oci://r/p/x:1\n  pluginName: x\n";
        let mut lines = documents(text).remove(0);
        // All digits: YAML would read it as a number unless quoted.
        let digits = "1".repeat(64);
        pin(&mut lines, "oci://r/p/x:1", "oci://s/p/x:1", &digits).unwrap();
        assert_eq!(lines[2], "  url: oci://s/p/x:1");
        assert!(lines[3].starts_with("  sha256: \""), "{}", lines[3]);
        let doc = crate::crd::parse_yaml_documents(&lines.join("\n")).unwrap();
        assert_eq!(doc[0]["spec"]["sha256"], digits.as_str());
    }
}
