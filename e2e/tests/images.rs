//! Wasm images against a real registry (the CNCF Distribution registry,
//! Debian's `docker-registry`, on loopback with fresh storage): every module
//! pushed in both variants and checked against the Wasm image specification
//! at the registry's own API, pulled back through the harness as
//! istio-agent pulls it and run in Envoy, and every refusal istio-agent
//! makes, made here too before Envoy starts.

use e2e::image::build::{self, Image, Meta, Variant};
use e2e::image::fetch::{FetchError, Fetcher, Origin, PullPolicy};
use e2e::image::meta::{self, Package};
use e2e::image::registry::{Pushed, Registry, RegistryError};
use e2e::image::{
    Blob, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST, VARIANT_ANNOTATION, WASM_CONFIG, WASM_LAYER, sha256_digest, sha256_hex,
};
use e2e::jose::{self, Alg, TestKeys};
use e2e::modules::{ModuleOrigin, Pull};
use e2e::registry_server::{RegistryServer, ServerOptions, TEST_PASSWORD, TEST_USER};
use e2e::{Harness, Options};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    e2e::envoy::workspace_root()
}

fn packages() -> Vec<Package> {
    meta::filter_packages(&root()).unwrap()
}

/// The canary router's package: the module most tests push and run.
fn canary() -> Package {
    packages()
        .into_iter()
        .find(|p| p.name == "canary-router")
        .unwrap()
}

fn module_of(p: &Package) -> Vec<u8> {
    let path = e2e::harness::module_dir().join(p.module_file());
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask build`", path.display()))
}

fn image_of(p: &Package, variant: Variant) -> Image {
    let meta = meta::meta_for(&root(), p, None).unwrap();
    build::build(&module_of(p), &meta, variant).unwrap()
}

fn registry(server: &RegistryServer) -> Registry {
    // No Docker config: these registries need no credentials.
    Registry::with_docker_config(&server.host(), false, Some(Path::new("/nonexistent"))).unwrap()
}

/// Pushes every module in `variant` under `<prefix>/<name>`.
fn push_all(server: &RegistryServer, prefix: &str, variant: Variant) -> BTreeMap<String, Pushed> {
    let reg = registry(server);
    packages()
        .iter()
        .map(|p| {
            let pushed = reg
                .push(&image_of(p, variant), &format!("{prefix}/{}", p.name))
                .unwrap();
            (p.name.clone(), pushed)
        })
        .collect()
}

fn cache_dir(name: &str) -> PathBuf {
    e2e::harness::run_dir(&format!("wasm-cache-{name}-")).unwrap()
}

fn pull_options(cache: &Path) -> Options {
    Options {
        pull: Pull {
            enabled: true,
            cache: Some(cache.to_path_buf()),
        },
        ..Options::default()
    }
}

/// A one-plugin manifest directory running `url` (canary router config).
fn plugin_dir(name: &str, url: &str, extra_spec: &str) -> PathBuf {
    let dir = e2e::harness::run_dir(&format!("manifests-{name}-")).unwrap();
    let yaml = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  url: {url}\n  pluginName: canary-router\n{extra_spec}  pluginConfig:\n    routingHeader: x-route-version\n    services:\n    - host: reviews\n      rules:\n      - match:\n          header:\n            name: canary\n            exact: \"true\"\n        version: v2\n      split:\n      - version: v1\n        weight: 100\n      - version: v2\n        weight: 0\n"
    );
    let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    e2e::crd::validate(&doc).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
    std::fs::write(dir.join("plugin.yaml"), yaml).unwrap();
    dir
}

fn version(h: &Harness, headers: &[(&str, &[u8])]) -> String {
    let r = h.get("/", headers).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["version"].as_str().unwrap().to_string()
}

/// GET on the registry's own API, with plain HTTP and no client library.
fn registry_get(server: &RegistryServer, path: &str, accept: &str) -> e2e::client::Response {
    e2e::client::request(
        "GET",
        &format!("http://{}{path}", server.addr),
        &[("accept", accept.as_bytes())],
    )
    .unwrap()
}

#[test]
fn every_module_pushes_in_both_variants_as_the_spec_lays_them_out() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let revision = meta::git_revision(&root());
    let fetcher = Fetcher::new(&cache_dir("all"));
    let mut names = Vec::new();
    for variant in [Variant::Compat, Variant::Oci] {
        let prefix = format!("mesh-filters-{variant}");
        let pushed = push_all(&server, &prefix, variant);
        for p in packages() {
            names.push(p.name.clone());
            let module = module_of(&p);
            let image = image_of(&p, variant);
            let done = &pushed[&p.name];
            // Pulled back as istio-agent pulls it: the built module, byte
            // for byte.
            let got = fetcher
                .fetch(&done.url, Some(done.sha256()), PullPolicy::Always)
                .unwrap();
            assert_eq!(got.origin, Origin::Pulled);
            assert!(std::fs::read(&got.path).unwrap() == module, "{}", done.url);
            let repo = format!("{prefix}/{}", p.name);
            assert_eq!(done.digest, image.digest, "{repo}");
            assert_eq!(
                done.url,
                format!("oci://{}/{repo}:{}", server.host(), p.version)
            );
            // The registry serves our manifest bytes under the tag, as an
            // OCI image manifest (not an index), with our digest.
            let r = registry_get(
                &server,
                &format!("/v2/{repo}/manifests/{}", p.version),
                OCI_MANIFEST,
            );
            assert_eq!(r.status, 200, "{repo}: {}", r.body);
            assert_eq!(r.header("content-type").as_deref(), Some(OCI_MANIFEST));
            assert_eq!(
                r.header("docker-content-digest").as_deref(),
                Some(image.digest.as_str())
            );
            assert_eq!(r.body.as_bytes(), image.manifest.as_slice());
            let m: Manifest = serde_json::from_str(&r.body).unwrap();
            assert_eq!(m.schema_version, 2);
            assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
            // The standard annotations.
            let a = &m.annotations;
            assert_eq!(a["org.opencontainers.image.title"], p.name);
            assert_eq!(a["org.opencontainers.image.version"], p.version);
            assert_eq!(
                a.get("org.opencontainers.image.revision"),
                revision.as_ref()
            );
            // A created time only from SOURCE_DATE_EPOCH.
            assert_eq!(
                a.get("org.opencontainers.image.created"),
                meta::source_date_epoch().unwrap().as_ref()
            );
            // Every blob is there, with its size and digest.
            for d in std::iter::once(&m.config).chain(&m.layers) {
                let r = e2e::client::request(
                    "HEAD",
                    &format!("http://{}/v2/{repo}/blobs/{}", server.addr, d.digest),
                    &[],
                )
                .unwrap();
                assert_eq!(r.status, 200, "{repo} {}", d.digest);
                assert_eq!(r.header("content-length"), Some(d.size.to_string()));
                assert_eq!(
                    r.header("docker-content-digest").as_deref(),
                    Some(d.digest.as_str())
                );
            }
            match variant {
                Variant::Compat => {
                    assert_eq!(a[VARIANT_ANNOTATION], "compat");
                    assert_eq!(m.config.media_type, OCI_CONFIG);
                    assert_eq!(m.layers.len(), 1);
                    assert_eq!(m.layers[0].media_type, OCI_LAYER);
                    let gz = reg.blob(&repo, &m.layers[0]).unwrap();
                    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
                    let entries: Vec<(String, u32, u64, u64, Vec<u8>)> = archive
                        .entries()
                        .unwrap()
                        .map(|e| {
                            let mut e = e.unwrap();
                            let h = e.header().clone();
                            let mut bytes = Vec::new();
                            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                            (
                                e.path().unwrap().display().to_string(),
                                h.mode().unwrap(),
                                h.mtime().unwrap(),
                                h.uid().unwrap() + h.gid().unwrap(),
                                bytes,
                            )
                        })
                        .collect();
                    assert_eq!(entries.len(), 1, "{repo}: one file");
                    let (path, mode, mtime, ids, bytes) = &entries[0];
                    assert_eq!(
                        (path.as_str(), *mode, *mtime, *ids),
                        ("plugin.wasm", 0o644, 0, 0)
                    );
                    assert!(*bytes == module, "{repo}: plugin.wasm is the built module");
                    let config: Value =
                        serde_json::from_slice(&reg.blob(&repo, &m.config).unwrap()).unwrap();
                    assert_eq!(config["rootfs"]["type"], "layers");
                    assert_eq!(config["architecture"], "wasm");
                }
                Variant::Oci => {
                    assert!(!a.contains_key(VARIANT_ANNOTATION));
                    assert_eq!(m.config.media_type, WASM_CONFIG);
                    let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
                    assert_eq!(
                        types,
                        [WASM_CONFIG, WASM_LAYER],
                        "{repo}: exactly two layers"
                    );
                    let runtime: Value =
                        serde_json::from_slice(&reg.blob(&repo, &m.layers[0]).unwrap()).unwrap();
                    assert_eq!(runtime["type"], "envoy_proxy");
                    assert_eq!(runtime["abiVersions"], json!(["proxy_abi_version_0_2_1"]));
                    assert_eq!(runtime["config"]["root_ids"], json!([p.name]));
                    assert!(reg.blob(&repo, &m.layers[1]).unwrap() == module);
                    assert_eq!(m.layers[1].digest, sha256_digest(&module));
                }
            }
        }
    }
    names.sort();
    names.dedup();
    // Every shipped module (the list itself is pinned in e2e::image::meta).
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn pushing_twice_gives_the_same_digests() {
    let server = RegistryServer::start().unwrap();
    for variant in [Variant::Compat, Variant::Oci] {
        let first = push_all(&server, "twice", variant);
        let second = push_all(&server, "twice", variant);
        for (name, a) in &first {
            assert_eq!(a.digest, second[name].digest, "{name} {variant}");
        }
    }
}

#[test]
fn pulled_images_run_canary_and_jwt_traffic_in_envoy() {
    let server = RegistryServer::start().unwrap();
    let pushed = push_all(&server, "mesh-filters", Variant::Compat);
    let out = e2e::harness::run_dir("pinned-").unwrap();
    let written = e2e::image::manifests::write(&root().join("wasmplugins"), &out, &pushed).unwrap();
    // Every copy passes the CRD check (write checks too; this does not
    // trust it), and every shipped WasmPlugin is pinned.
    assert_eq!(written.pinned.len(), 9, "{:?}", written.pinned);
    assert!(written.unpinned.is_empty(), "{:?}", written.unpinned);
    for file in &written.files {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        for doc in e2e::crd::parse_yaml_documents(&text).unwrap() {
            if doc["apiVersion"]
                .as_str()
                .is_some_and(e2e::crd::is_istio_api_version)
            {
                e2e::crd::validate(&doc).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
            }
            if doc["kind"] == "WasmPlugin" {
                let url = doc["spec"]["url"].as_str().unwrap();
                let name = e2e::image::manifests::image_name(url).unwrap();
                assert_eq!(url, pushed[name].url);
                assert_eq!(doc["spec"]["sha256"], pushed[name].sha256());
            }
        }
        if !text.contains("kind: WasmPlugin") {
            let original = std::fs::read_to_string(root().join("wasmplugins").join(file)).unwrap();
            assert_eq!(text.trim_end(), original.trim_end(), "{}", file.display());
        }
    }

    // The reviews canary, pulled: a rule sends `canary: true` to v2.
    let cache = cache_dir("traffic");
    let mut h = Harness::start_with(&out.join("examples/reviews"), pull_options(&cache)).unwrap();
    let canary = canary();
    assert_eq!(h.modules.len(), 1);
    assert_eq!(h.modules[0].origin, ModuleOrigin::Pulled);
    assert_eq!(h.modules[0].sha256, sha256_hex(&module_of(&canary)));
    assert_eq!(
        h.modules[0].digest.as_deref(),
        Some(pushed["canary-router"].sha256())
    );
    assert!(h.modules[0].path.starts_with(&cache));
    let host: (&str, &[u8]) = ("host", b"reviews");
    assert_eq!(version(&h, &[host, ("canary", b"true")]), "v2");
    assert_eq!(
        version(&h, &[host, ("x-user-id", b"u1"), ("canary", b"false")]),
        "v1"
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
    h.stop();

    // The Keycloak JWT example, pulled: a demo token passes, none gets 401.
    let mut h = Harness::start_with(&out.join("examples/keycloak"), pull_options(&cache)).unwrap();
    assert_eq!(h.modules[0].origin, ModuleOrigin::Pulled);
    let keys = TestKeys::load().unwrap();
    let claims = jose::patch(
        jose::claims(now()),
        json!({"iss": "https://keycloak.example.com/realms/app", "aud": "api", "sub": "pulled-user"}),
    );
    let auth = format!("Bearer {}", keys.alg(Alg::RS256).token(claims));
    let r = h
        .get("/api", &[("authorization", auth.as_bytes())])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-jwt-sub"], "pulled-user");
    assert_eq!(h.get("/api", &[]).unwrap().status, 401);
    h.stop();

    // The same manifests again: the cache serves them, nothing is pulled.
    let h = Harness::start_with(&out.join("examples/reviews"), pull_options(&cache)).unwrap();
    assert_eq!(h.modules[0].origin, ModuleOrigin::Cached);
    assert_eq!(version(&h, &[host, ("canary", b"true")]), "v2");
}

#[test]
fn the_oci_variant_and_docker_images_and_indexes_pull_and_run() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    let module = module_of(&canary);
    let oci = image_of(&canary, Variant::Oci);
    let pushed = reg.push(&oci, "artifact/canary-router").unwrap();
    let cache = cache_dir("variants");
    let dir = plugin_dir(
        "oci-variant",
        &pushed.url,
        &format!("  sha256: \"{}\"\n", pushed.sha256()),
    );
    let h = Harness::start_with(&dir, pull_options(&cache)).unwrap();
    assert_eq!(h.modules[0].origin, ModuleOrigin::Pulled);
    assert_eq!(h.modules[0].sha256, sha256_hex(&module));
    assert_eq!(
        version(&h, &[("host", b"reviews"), ("canary", b"true")]),
        "v2"
    );
    drop(h);

    // A Docker schema 2 image, as `docker push` of a FROM-scratch image
    // holding plugin.wasm writes it.
    let tar = build::tar_of("plugin.wasm", &module).unwrap();
    let layer = Blob::new(DOCKER_LAYER, build::gzip(&tar).unwrap());
    let config = Blob::new(
        DOCKER_CONFIG,
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&tar)]}}))
        .unwrap(),
    );
    let docker = Manifest {
        schema_version: 2,
        media_type: Some(DOCKER_MANIFEST.into()),
        config: config.descriptor(),
        layers: vec![layer.descriptor()],
        annotations: BTreeMap::new(),
    };
    let docker_bytes = serde_json::to_vec(&docker).unwrap();
    reg.push_blob("docker/canary-router", &config, "config")
        .unwrap();
    reg.push_blob("docker/canary-router", &layer, "layer")
        .unwrap();
    let docker_digest = reg
        .push_manifest(
            "docker/canary-router",
            "1.0",
            DOCKER_MANIFEST,
            &docker_bytes,
        )
        .unwrap();
    let fetcher = Fetcher::new(&cache);
    let url = format!("oci://{}/docker/canary-router:1.0", server.host());
    let got = fetcher.fetch(&url, None, PullPolicy::Always).unwrap();
    assert_eq!(got.digest, docker_digest.trim_start_matches("sha256:"));
    assert!(std::fs::read(&got.path).unwrap() == module);

    // An index: the linux/amd64 entry is the image, and its digest is the
    // one compared with sha256, as Istio resolves it.
    let compat = image_of(&canary, Variant::Compat);
    reg.push(&compat, "indexed/canary-router").unwrap();
    reg.push(&oci, "indexed/canary-router").unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": oci.digest, "size": oci.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": compat.digest, "size": compat.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    reg.push_manifest(
        "indexed/canary-router",
        "multi",
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let url = format!("oci://{}/indexed/canary-router:multi", server.host());
    let got = fetcher
        .fetch(&url, Some(compat.digest_hex()), PullPolicy::Always)
        .unwrap();
    assert_eq!(got.digest, compat.digest_hex());
    assert!(std::fs::read(&got.path).unwrap() == module);
}

/// The harness's error for `dir` with `--pull`; it must fail before Envoy
/// starts, so no Envoy run directory may appear for it.
fn refusal(dir: &Path, cache: &Path) -> String {
    let e = Harness::start_with(dir, pull_options(cache))
        .err()
        .expect("the harness must refuse");
    format!("{e:#}")
}

#[test]
fn the_harness_refuses_what_istio_agent_refuses_before_envoy_starts() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    let image = image_of(&canary, Variant::Compat);
    let pushed = reg.push(&image, "refuse/canary-router").unwrap();
    let cache = cache_dir("refusals");

    // A wrong sha256.
    let wrong = "0".repeat(64);
    let dir = plugin_dir(
        "wrong-sha",
        &pushed.url,
        &format!("  sha256: \"{wrong}\"\n"),
    );
    let e = refusal(&dir, &cache);
    assert!(e.contains("WasmPlugin bookinfo.wrong-sha"), "{e}");
    assert!(e.contains(&pushed.url), "{e}");
    assert!(e.contains("sha256 mismatch"), "{e}");
    assert!(e.contains(pushed.sha256()) && e.contains(&wrong), "{e}");

    // A missing tag.
    let missing = format!("oci://{}/refuse/canary-router:9.9.9", server.host());
    let e = refusal(&plugin_dir("missing-tag", &missing, ""), &cache);
    assert!(e.contains(&missing) && e.contains("tag 9.9.9"), "{e}");
    assert!(e.contains("not found in registry"), "{e}");

    // A layer that is not Wasm.
    let not_wasm = b"#!/bin/sh\necho this is not a module\n".to_vec();
    let layer = Blob::new(
        OCI_LAYER,
        build::gzip(&build::tar_of("plugin.wasm", &not_wasm).unwrap()).unwrap(),
    );
    let config = Blob::new(OCI_CONFIG, b"{}".to_vec());
    let manifest = |layers: Vec<&Blob>| {
        serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: config.descriptor(),
            layers: layers.iter().map(|l| l.descriptor()).collect(),
            annotations: BTreeMap::new(),
        })
        .unwrap()
    };
    for b in [&layer, &config, &image.layers[0]] {
        reg.push_blob("refuse/odd", b, "test").unwrap();
    }
    reg.push_manifest(
        "refuse/odd",
        "not-wasm",
        OCI_MANIFEST,
        &manifest(vec![&layer]),
    )
    .unwrap();
    let url = format!("oci://{}/refuse/odd:not-wasm", server.host());
    let e = refusal(&plugin_dir("not-wasm", &url, ""), &cache);
    assert!(e.contains(&url) && e.contains("not Wasm"), "{e}");

    // More than one candidate layer.
    reg.push_manifest(
        "refuse/odd",
        "two-layers",
        OCI_MANIFEST,
        &manifest(vec![&image.layers[0], &layer]),
    )
    .unwrap();
    let url = format!("oci://{}/refuse/odd:two-layers", server.host());
    let e = refusal(&plugin_dir("two-layers", &url, ""), &cache);
    assert!(
        e.contains(&url) && e.contains("more than one candidate layer"),
        "{e}"
    );

    // An unreachable registry: a loopback port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("oci://{dead}/refuse/canary-router:0.1.0");
    let e = refusal(&plugin_dir("unreachable", &url, ""), &cache);
    assert!(e.contains(&url), "{e}");
    assert!(e.contains(&format!("cannot reach registry {dead}")), "{e}");

    // Nothing refused reached the cache.
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let modules: Vec<&PathBuf> = cached.iter().filter(|p| p.ends_with("oci")).collect();
    for dir in modules {
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "{}",
            dir.display()
        );
    }
}

#[test]
fn a_blob_corrupted_in_the_registry_storage_is_refused() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    for variant in [Variant::Compat, Variant::Oci] {
        let image = image_of(&canary, variant);
        let repo = format!("corrupt-{variant}/canary-router");
        let pushed = reg.push(&image, &repo).unwrap();
        let layer = image.layers.last().unwrap();
        let path = server.blob_path(&layer.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let cache = cache_dir("corrupt");
        let dir = plugin_dir(
            "corrupt",
            &pushed.url,
            &format!("  sha256: \"{}\"\n", pushed.sha256()),
        );
        let e = refusal(&dir, &cache);
        assert!(e.contains(&pushed.url), "{e}");
        assert!(
            e.contains("corrupt") && e.contains(&layer.digest),
            "{variant}: {e}"
        );
    }
}

#[test]
fn if_not_present_uses_the_cache_and_always_resolves_the_tag_again() {
    let mut server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    let first = image_of(&canary, Variant::Compat);
    let second = image_of(&canary, Variant::Oci);
    assert_ne!(first.digest, second.digest);
    reg.push(&first, "policy/canary-router").unwrap();
    let url = format!("oci://{}/policy/canary-router:0.1.0", server.host());
    let fetcher = Fetcher::new(&cache_dir("policy"));
    let got = fetcher.fetch(&url, None, PullPolicy::IfNotPresent).unwrap();
    assert_eq!(
        (got.origin, got.digest.as_str()),
        (Origin::Pulled, first.digest_hex())
    );

    // The tag moves to another image.
    reg.push(&second, "policy/canary-router").unwrap();
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Unspecified] {
        let got = fetcher.fetch(&url, None, policy).unwrap();
        assert_eq!(
            (got.origin, got.digest.as_str()),
            (Origin::Cached, first.digest_hex()),
            "{policy:?}"
        );
    }
    let got = fetcher.fetch(&url, None, PullPolicy::Always).unwrap();
    assert_eq!(
        (got.origin, got.digest.as_str()),
        (Origin::Pulled, second.digest_hex())
    );
    // `:latest` without a policy is resolved every time, as in Istio.
    reg.push_manifest(
        "policy/canary-router",
        "latest",
        OCI_MANIFEST,
        &first.manifest,
    )
    .unwrap();
    let latest = format!("oci://{}/policy/canary-router:latest", server.host());
    let got = fetcher
        .fetch(&latest, None, PullPolicy::Unspecified)
        .unwrap();
    assert_eq!(got.origin, Origin::Pulled);

    // A cached module changed on disk is not used: it is pulled again.
    let cached = fetcher.fetch(&url, None, PullPolicy::IfNotPresent).unwrap();
    let mut bytes = std::fs::read(&cached.path).unwrap();
    bytes.push(0);
    std::fs::write(&cached.path, bytes).unwrap();
    let again = fetcher.fetch(&url, None, PullPolicy::IfNotPresent).unwrap();
    assert_eq!(again.origin, Origin::Pulled);
    assert_eq!(again.module_sha256, cached.module_sha256);

    // With the registry gone, cached modules still serve; resolving cannot.
    server.stop();
    let got = fetcher.fetch(&url, None, PullPolicy::IfNotPresent).unwrap();
    assert_eq!(got.origin, Origin::Cached);
    let pinned = fetcher
        .fetch(&url, Some(second.digest_hex()), PullPolicy::Always)
        .unwrap();
    assert_eq!(
        pinned.origin,
        Origin::Cached,
        "a pinned module is content-addressed"
    );
    match fetcher.fetch(&url, None, PullPolicy::Always) {
        Err(FetchError::Registry(RegistryError::Unreachable { registry, .. })) => {
            assert_eq!(registry, server.host());
        }
        other => panic!("expected an unreachable registry, got {other:?}"),
    }
}

#[test]
fn http_urls_are_checked_against_the_module_digest() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    let module = module_of(&canary);
    let oci = image_of(&canary, Variant::Oci);
    reg.push(&oci, "web/canary-router").unwrap();
    // The registry's blob URL is a plain web server for the module bytes.
    let blob_url = |digest: &str| {
        format!(
            "http://{}/v2/web/canary-router/blobs/{digest}",
            server.host()
        )
    };
    let url = blob_url(&sha256_digest(&module));
    let module_sha = sha256_hex(&module);
    let cache = cache_dir("http");
    let dir = plugin_dir("http-url", &url, &format!("  sha256: \"{module_sha}\"\n"));
    let h = Harness::start_with(&dir, pull_options(&cache)).unwrap();
    assert_eq!(h.modules[0].origin, ModuleOrigin::Pulled);
    assert_eq!(h.modules[0].digest.as_deref(), Some(module_sha.as_str()));
    assert_eq!(
        version(&h, &[("host", b"reviews"), ("canary", b"true")]),
        "v2"
    );
    drop(h);

    // The image's manifest digest is not the module's: refused.
    let dir = plugin_dir(
        "http-wrong",
        &url,
        &format!("  sha256: \"{}\"\n", oci.digest_hex()),
    );
    let e = refusal(&dir, &cache_dir("http-wrong"));
    assert!(
        e.contains("sha256 mismatch") && e.contains(&module_sha),
        "{e}"
    );
    // A download that is not Wasm: the runtime config.
    let dir = plugin_dir("http-json", &blob_url(&oci.config.digest), "");
    let e = refusal(&dir, &cache_dir("http-json"));
    assert!(e.contains("not Wasm"), "{e}");
    // A 404.
    let dir = plugin_dir("http-404", &blob_url(&sha256_digest(b"nothing")), "");
    let e = refusal(&dir, &cache_dir("http-404"));
    assert!(e.contains("404"), "{e}");
}

#[test]
fn push_errors_name_the_registry_and_image_and_say_what_to_do() {
    let canary = canary();
    let image = image_of(&canary, Variant::Compat);

    // 401: how to log in; then the same push with credentials in the
    // Docker config works, and a wrong password is named as such.
    let server = RegistryServer::start_with(ServerOptions {
        auth: true,
        ..Default::default()
    })
    .unwrap();
    let host = server.host();
    let configs = e2e::harness::run_dir("docker-config-").unwrap();
    let anonymous =
        Registry::with_docker_config(&host, false, Some(&configs.join("none.json"))).unwrap();
    let e = anonymous
        .push(&image, "auth/canary-router")
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("registry {host}")), "{e}");
    assert!(e.contains("auth/canary-router"), "{e}");
    assert!(
        e.contains("401") && e.contains(&format!("docker login {host}")),
        "{e}"
    );
    let config_with = |password: &str| {
        use base64::Engine;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USER}:{password}"));
        let path = configs.join(format!("{password}.json"));
        std::fs::write(
            &path,
            json!({"auths": {host.as_str(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
        path
    };
    let good = config_with(TEST_PASSWORD);
    let logged_in = Registry::with_docker_config(&host, false, Some(&good)).unwrap();
    let pushed = logged_in.push(&image, "auth/canary-router").unwrap();
    assert_eq!(pushed.digest, image.digest);
    let bad = Registry::with_docker_config(&host, false, Some(&config_with("wrong"))).unwrap();
    let e = bad
        .push(&image, "auth/canary-router")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rejected the credentials"), "{e}");
    drop(server);

    // A failed blob upload: a registry in read-only maintenance mode.
    let server = RegistryServer::start_with(ServerOptions {
        read_only: true,
        ..Default::default()
    })
    .unwrap();
    let e = registry(&server)
        .push(&image, "ro/canary-router")
        .unwrap_err();
    assert!(matches!(e, RegistryError::BlobUpload { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.starts_with("uploading blob sha256:"), "{e}");
    assert!(
        e.contains(&format!("registry {}", server.host())) && e.contains("ro/canary-router"),
        "{e}"
    );
    assert!(e.contains("Retry the push"), "{e}");
    drop(server);

    // Unreachable.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let reg = Registry::with_docker_config(&dead, false, Some(Path::new("/nonexistent"))).unwrap();
    let e = reg
        .push(&image, "gone/canary-router")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("cannot reach registry {dead}")),
        "{e}"
    );
    assert!(
        e.contains("gone/canary-router") && e.contains("is running"),
        "{e}"
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn meta_comes_from_the_workspace() {
    let p = packages()
        .into_iter()
        .find(|p| p.name == "jwt-auth")
        .unwrap();
    let m: Meta = meta::meta_for(&root(), &p, Some("https://example.com/src")).unwrap();
    assert_eq!(m.version, p.version);
    assert_eq!(m.source.as_deref(), Some("https://example.com/src"));
    assert_eq!(m.revision, meta::git_revision(&root()));
}

/// Runs the `mesh-harness` binary with `args` until its banner is complete
/// (or it exits), then stops it with SIGTERM. Returns stdout, stderr and
/// the exit status.
fn run_harness_binary(args: &[&str]) -> (String, String, std::process::ExitStatus) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-harness"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (out, err, status)
}

#[test]
fn mesh_harness_pull_says_what_each_plugin_runs_or_why_it_refused() {
    let server = RegistryServer::start().unwrap();
    let reg = registry(&server);
    let canary = canary();
    let image = image_of(&canary, Variant::Compat);
    let pushed = reg.push(&image, "banner/canary-router").unwrap();
    let module_sha = sha256_hex(&module_of(&canary));

    let dir = plugin_dir(
        "banner",
        &pushed.url,
        &format!("  sha256: \"{}\"\n", pushed.sha256()),
    );
    let (out, err, _) = run_harness_binary(&["--pull", dir.to_str().unwrap()]);
    assert!(
        out.contains("  listener   http://127.0.0.1:"),
        "{out}\n{err}"
    );
    assert!(out.contains("\ntry:\n"), "{out}");
    let module_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("module "))
        .unwrap_or_else(|| panic!("no module line:\n{out}"));
    // Pulled now, or by an earlier run into the shared default cache.
    assert!(
        module_line.contains(&format!("(pulled from {}", pushed.url))
            && module_line.ends_with(&format!("digest {})", pushed.sha256())),
        "{module_line}"
    );
    assert!(out.contains(&format!("      sha256 {module_sha}")), "{out}");
    // Without --pull, the same manifest runs the module built here.
    let (out, err, _) = run_harness_binary(&[dir.to_str().unwrap()]);
    let module_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("module "))
        .unwrap_or_else(|| panic!("no module line:\n{out}\n{err}"));
    assert!(
        module_line.ends_with("canary_router.wasm (built here)"),
        "{module_line}"
    );
    assert!(out.contains(&format!("      sha256 {module_sha}")), "{out}");

    // A refusal: a message naming the plugin and url, a non-zero exit, and
    // no Envoy.
    let wrong = plugin_dir(
        "banner-wrong",
        &pushed.url,
        &format!("  sha256: \"{}\"\n", "1".repeat(64)),
    );
    let (out, err, status) = run_harness_binary(&["--pull", wrong.to_str().unwrap()]);
    assert!(!status.success(), "{out}\n{err}");
    assert!(!out.contains("Envoy is running"), "{out}");
    assert!(
        err.starts_with("mesh-harness: WasmPlugin bookinfo.banner-wrong"),
        "{err}"
    );
    assert!(
        err.contains(&pushed.url) && err.contains("sha256 mismatch"),
        "{err}"
    );
}
