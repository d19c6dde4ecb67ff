//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) of one
//! image, which crane, skopeo and oras read: `skopeo inspect
//! oci:target/images/canary-router:0.1.0`, `oras manifest fetch --oci-layout
//! target/images/canary-router:0.1.0`.

use super::build::{Descriptor, Image};
use super::{OCI_INDEX, sha256_digest};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The annotation that names a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: String,
    manifests: Vec<Descriptor>,
}

/// Writes `image` as an OCI image layout into `dir`, replacing whatever was
/// there, with its tag as the `ref.name` of the one manifest in `index.json`.
pub fn write(image: &Image, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let write_blob = |digest: &str, bytes: &[u8]| -> Result<()> {
        let path = blobs.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for blob in image.blobs() {
        write_blob(&blob.digest, &blob.bytes)?;
    }
    write_blob(&image.digest, &image.manifest)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX.to_string(),
        manifests: vec![Descriptor {
            media_type: image.manifest_media_type().to_string(),
            digest: image.digest.clone(),
            size: image.manifest.len() as u64,
            annotations: BTreeMap::from([(REF_NAME.to_string(), image.tag().to_string())]),
        }],
    };
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// An image read back from a layout.
pub struct Read {
    /// The descriptor `index.json` gives the manifest.
    pub descriptor: Descriptor,
    pub manifest: Vec<u8>,
    /// The config, then each layer, with their bytes.
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
}

/// Reads the layout in `dir` back: the manifest tagged `tag`, its bytes, and
/// every blob it references, each checked against its digest.
pub fn read(dir: &Path, tag: &str) -> Result<Read> {
    let text = std::fs::read(dir.join("index.json"))
        .with_context(|| format!("reading {}/index.json", dir.display()))?;
    let index: Index = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}/index.json", dir.display()))?;
    let Some(desc) = index
        .manifests
        .into_iter()
        .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
    else {
        bail!("{}: no manifest tagged {tag}", dir.display());
    };
    let blob = |d: &Descriptor| -> Result<Vec<u8>> {
        let path = dir
            .join("blobs/sha256")
            .join(d.digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if sha256_digest(&bytes) != d.digest || bytes.len() as u64 != d.size {
            bail!(
                "{}: does not match its descriptor {}",
                path.display(),
                d.digest
            );
        }
        Ok(bytes)
    };
    let manifest_bytes = blob(&desc)?;
    let manifest: super::Manifest = serde_json::from_slice(&manifest_bytes)?;
    let mut blobs = vec![(manifest.config.clone(), blob(&manifest.config)?)];
    for layer in &manifest.layers {
        blobs.push((layer.clone(), blob(layer)?));
    }
    Ok(Read {
        descriptor: desc,
        manifest: manifest_bytes,
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::build::{Meta, Variant, build};

    #[test]
    fn layout_round_trips() {
        let dir = std::env::temp_dir().join(format!("layout-{}", std::process::id()));
        let meta = Meta {
            name: "t".into(),
            version: "1.2.3".into(),
            revision: None,
            source: None,
            created: None,
        };
        let module = crate::image::build::tests_support::tiny_module();
        for variant in [Variant::Compat, Variant::Oci] {
            let image = build(&module, &meta, variant).unwrap();
            write(&image, &dir).unwrap();
            let layout: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).unwrap()).unwrap();
            assert_eq!(layout["imageLayoutVersion"], "1.0.0");
            let back = read(&dir, "1.2.3").unwrap();
            assert_eq!(back.descriptor.digest, image.digest);
            assert_eq!(back.manifest, image.manifest);
            assert_eq!(back.blobs.len(), 1 + image.layers.len());
            assert!(read(&dir, "9.9.9").is_err());
            // Only this image's blobs: the directory was replaced.
            let count = std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
            assert_eq!(count, image.blobs().len() + 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
