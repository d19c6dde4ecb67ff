//! Runs WasmPlugin manifests against a local Envoy and the demo upstreams.
//!
//! Usage: mesh-harness [--pull] [PATH]   (a manifest file or directory;
//! default: the bundled examples in wasmplugins/examples). With `--pull`,
//! every `oci://` and `http(s)://` url is fetched as istio-agent fetches it
//! instead of running the modules built here. Ctrl-C stops everything.

use anyhow::{Result, bail};
use e2e::envoy::workspace_root;
use e2e::modules::Pull;
use e2e::{Harness, Options};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

fn main() {
    if let Err(e) = run() {
        eprintln!("mesh-harness: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: mesh-harness [--pull] [MANIFEST_FILE_OR_DIR]\n\nWith no path, runs wasmplugins/examples.\n--pull  fetch every oci:// and http(s):// url as istio-agent does (digests, sha256,\n        imagePullPolicy; cache in target/wasm-cache) instead of the modules built here"
        );
        return Ok(());
    }
    let pull = args.iter().any(|a| a == "--pull");
    args.retain(|a| a != "--pull");
    if let Some(flag) = args.iter().find(|a| a.starts_with('-')) {
        bail!("unknown option {flag} (see --help)");
    }
    let path = match args.as_slice() {
        [] => workspace_root().join("wasmplugins/examples"),
        [one] => PathBuf::from(one),
        _ => bail!("expected at most one manifest file or directory"),
    };

    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;

    let options = Options {
        pull: Pull {
            enabled: pull,
            cache: None,
        },
        ..Options::default()
    };
    let mut harness = Harness::start_with(&path, options)?;
    print_banner(&harness, &path);

    // Wait for Ctrl-C (or SIGTERM), or for Envoy to stop by itself.
    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            println!("\nstopping");
            break;
        }
        if !harness.envoy.is_running() {
            harness.stop();
            bail!("envoy stopped unexpectedly; its log:\n{}", harness.log());
        }
    }
    harness.stop();
    Ok(())
}

fn print_banner(h: &Harness, path: &std::path::Path) {
    println!("mesh-harness: Envoy is running {}", path.display());
    println!("  listener   http://{}", h.listener);
    println!("  admin      http://{}", h.envoy.admin);
    for u in &h.upstreams.servers {
        println!("  upstream   {} at http://{}", u.version(), u.addr);
    }
    println!("  envoy log  {}", h.envoy.log.display());
    println!("  plugins (in filter-chain order):");
    for (p, m) in h.manifests.plugins.iter().zip(&h.modules) {
        println!(
            "    {} (root_id {:?}, {:?}) from {}",
            p.filter_name(),
            p.plugin_name,
            p.phase,
            p.source.display()
        );
        println!("      module {} ({})", m.path.display(), m.describe(&p.url));
        println!("      sha256 {}", m.sha256);
    }
    let hosts: Vec<String> = h
        .manifests
        .plugins
        .iter()
        .filter_map(|p| {
            p.plugin_config
                .as_ref()?
                .get("services")?
                .as_array()
                .cloned()
        })
        .flatten()
        .filter_map(|s| s.get("host")?.as_str().map(str::to_string))
        .collect();
    let host = hosts
        .first()
        .map(|h| h.trim_start_matches("*.").to_string())
        .unwrap_or_else(|| "reviews".to_string());
    let url = format!("http://{}", h.listener);
    let host = host.as_str();
    println!("\ntry:");
    println!("  curl -s -H 'host: {host}' {url}/                      # the split picks a version");
    println!("  curl -s -H 'host: {host}' -H 'x-user-id: alice' {url}/ # sticky per user");
    println!("  curl -s -H 'host: {host}' -H 'canary: true' {url}/    # a rule selects v2");
    println!("  curl -s -H 'host: {host}' '{url}/?version=v2'          # query rule");
    println!("  curl -s -i -H 'host: {host}' {url}/ | grep -i set-cookie  # the pin cookie");
    println!(
        "  curl -s {}/_demo/faults?fail=0.5\\&forMs=30000  # make v1 fail half its requests for 30s",
        h.upstreams
            .servers
            .first()
            .map(|u| format!("http://{}", u.addr))
            .unwrap_or_default()
    );
    if let Some(jwks) = &h.jwks {
        print_jwt_help(h, jwks.addr, &url, host);
    }
    println!("\nCtrl-C stops Envoy and the upstreams.");
}

/// For JWT plugins: a demo token signed by the harness's demo key (test key
/// only), with the first provider's issuer and audience, valid for an hour.
fn print_jwt_help(h: &Harness, jwks: std::net::SocketAddr, url: &str, host: &str) {
    let Some(provider) = h
        .manifests
        .plugins
        .iter()
        .filter_map(|p| {
            p.plugin_config
                .as_ref()?
                .get("providers")?
                .as_array()?
                .first()
                .cloned()
        })
        .next()
    else {
        return;
    };
    let issuer = provider
        .get("issuer")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let audience = provider
        .get("audiences")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("api");
    let Ok(keys) = e2e::jose::TestKeys::load() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": issuer, "aud": audience, "sub": "demo-user",
        "iat": now, "exp": now + 3600, "groups": ["beta"]
    });
    let token = keys.alg(e2e::jose::Alg::RS256).token(claims);
    println!("\nJWT: every jwksUri is served by a demo JWKS server at http://{jwks} (test keys).");
    println!("  TOKEN={token}");
    println!(
        "  curl -s -H 'host: {host}' -H \"authorization: Bearer $TOKEN\" {url}/api   # claims reach the upstream"
    );
    println!(
        "  curl -s -i -H 'host: {host}' {url}/api                                  # 401 without a token"
    );
}
