//! `cargo xtask image` as a user runs it: against a fresh registry (the
//! CNCF Distribution registry on loopback), with its printed references,
//! digests and pinned manifests, twice for the same digests, and its
//! argument errors.

use e2e::registry_server::RegistryServer;
use std::collections::BTreeMap;
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(e2e::envoy::workspace_root())
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pushed oci://… sha256 …` lines, by image name.
fn pushed(stdout: &str) -> BTreeMap<String, (String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("pushed ")?;
            let (url, digest) = rest.split_once(" sha256 ")?;
            let name = e2e::image::manifests::image_name(url)?.to_string();
            Some((name, (url.to_string(), digest.to_string())))
        })
        .collect()
}

#[test]
fn image_push_prints_each_reference_and_digest_and_repeats_them() {
    let server = RegistryServer::start().unwrap();
    let host = server.host();
    let manifests = e2e::harness::run_dir("xtask-pinned-").unwrap();
    let target = format!("{host}/mesh-filters");
    let args = [
        "image",
        "--push",
        target.as_str(),
        "--write-manifests",
        manifests.to_str().unwrap(),
    ];
    let first = xtask(&args);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}\n{stderr}");
    let got = pushed(&stdout);
    // Every shipped module (the list itself is pinned in e2e::image::meta).
    let shipped: Vec<String> = e2e::image::meta::filter_packages(&e2e::envoy::workspace_root())
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), shipped);
    assert_eq!(shipped.len(), 5);
    for (name, (url, digest)) in &got {
        assert_eq!(url, &format!("oci://{host}/mesh-filters/{name}:0.1.0"));
        assert_eq!(digest.len(), 64, "{digest}");
        // The table row and the OCI image layout agree with the push.
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}:0.1.0 ")))
            .unwrap_or_else(|| panic!("no table row for {name}:\n{stdout}"));
        assert!(
            row.contains("compat") && row.contains(&format!("sha256:{digest}")),
            "{row}"
        );
        let module = std::fs::read(
            e2e::harness::module_dir().join(format!("{}.wasm", name.replace('-', "_"))),
        )
        .unwrap();
        assert!(row.contains(&e2e::image::sha256_hex(&module)), "{row}");
        let layout = e2e::envoy::target_dir().join("images").join(name);
        let back = e2e::image::layout::read(&layout, "0.1.0").unwrap();
        assert_eq!(back.descriptor.digest, format!("sha256:{digest}"));
    }
    // The pinned manifests name these urls and digests.
    let pinned =
        std::fs::read_to_string(manifests.join("examples/reviews/canary-router.yaml")).unwrap();
    let (url, digest) = &got["canary-router"];
    assert!(pinned.contains(&format!("url: {url}")), "{pinned}");
    assert!(
        pinned.contains(&format!("sha256: \"{digest}\"")),
        "{pinned}"
    );

    // Again, into the same registry: the same digests.
    let second = xtask(&args);
    let (stdout2, stderr2) = text(&second);
    assert!(second.status.success(), "{stdout2}\n{stderr2}");
    assert_eq!(pushed(&stdout2), got);

    // One image, the oci variant.
    let one = xtask(&[
        "image",
        "canary-router",
        "--variant",
        "oci",
        "--push",
        &target,
    ]);
    let (stdout3, stderr3) = text(&one);
    assert!(one.status.success(), "{stdout3}\n{stderr3}");
    let only = pushed(&stdout3);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["canary-router"]);
    assert_ne!(only["canary-router"].1, got["canary-router"].1);
    assert!(stdout3.contains(" oci "), "{stdout3}");

    // SOURCE_DATE_EPOCH, and only it, sets a created time. (Here, in the
    // same test: both runs write target/images/canary-router.)
    let dated = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(e2e::envoy::workspace_root())
        .args(["image", "canary-router"])
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .output()
        .unwrap();
    assert!(dated.status.success(), "{:?}", text(&dated));
    let layout = e2e::envoy::target_dir().join("images/canary-router");
    let back = e2e::image::layout::read(&layout, "0.1.0").unwrap();
    let manifest: e2e::image::Manifest = serde_json::from_slice(&back.manifest).unwrap();
    assert_eq!(
        manifest.annotations["org.opencontainers.image.created"],
        "2026-01-01T00:00:00Z"
    );
    let config: serde_json::Value = serde_json::from_slice(&back.blobs[0].1).unwrap();
    assert_eq!(config["created"], "2026-01-01T00:00:00Z");
    assert_ne!(
        back.descriptor.digest,
        format!("sha256:{}", got["canary-router"].1)
    );
}

#[test]
fn image_argument_errors_say_what_is_wrong_before_building() {
    for (args, expected) in [
        (
            &["image", "no-such-filter"][..],
            "no module named \"no-such-filter\"",
        ),
        (
            &["image", "--write-manifests", "/tmp/x"][..],
            "needs --push",
        ),
        (
            &["image", "--push", "http://127.0.0.1:5000/x"][..],
            "without a scheme",
        ),
        (&["image", "--push", "mesh-filters"][..], "registry host"),
        (&["image", "--variant", "docker"][..], "compat or oci"),
        (&["image", "--colour"][..], "unknown option --colour"),
    ] {
        let out = xtask(args);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("==> build"),
            "{args:?} built first: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}
