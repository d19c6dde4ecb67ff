//! The CNCF Distribution registry (Debian's `docker-registry`, or the
//! upstream `registry` binary through `REGISTRY_BIN`) on a loopback port,
//! with a fresh storage directory, for the image tests. Optionally behind
//! htpasswd basic auth. Dropping it stops the process.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian package that provides the registry.
pub const PACKAGE: &str = "docker-registry";

/// A user the [`RegistryServer::start_with_auth`] registry accepts (test
/// credentials only).
pub const TEST_USER: &str = "mesh-test";
/// Its password.
pub const TEST_PASSWORD: &str = "mesh-test-password";
/// bcrypt (cost 4) of [`TEST_PASSWORD`], as htpasswd stores it.
const TEST_HTPASSWD: &str =
    "mesh-test:$2b$04$dKJ51RNvgdFN82oxvRA98.PDuGE7jQODVPL8eEPrIgJqGo8p3Rlf.";

/// The registry binary: `REGISTRY_BIN`, else `docker-registry` (Debian),
/// else `registry` (upstream) on the PATH.
pub fn find_registry() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("REGISTRY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    for name in [PACKAGE, "registry"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(PathBuf::from(name));
        }
    }
    bail!(
        "the CNCF Distribution registry is not installed: `cargo xtask setup` installs Debian's {PACKAGE} package as root; without root run `sudo apt-get install {PACKAGE}`, or set REGISTRY_BIN to a `registry` binary"
    )
}

/// A running registry.
pub struct RegistryServer {
    child: Option<Child>,
    /// Where it listens, on loopback.
    pub addr: SocketAddr,
    /// Its filesystem storage root (`docker/registry/v2/…` below it).
    pub storage: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

/// How a [`RegistryServer`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerOptions {
    /// Require [`TEST_USER`] / [`TEST_PASSWORD`] (HTTP basic auth from an
    /// htpasswd file).
    pub auth: bool,
    /// Serve reads, refuse every upload (the registry's maintenance mode).
    pub read_only: bool,
}

impl RegistryServer {
    /// Starts a registry without authentication.
    pub fn start() -> Result<RegistryServer> {
        RegistryServer::start_with(ServerOptions::default())
    }

    /// Starts a registry configured by `options`.
    pub fn start_with(options: ServerOptions) -> Result<RegistryServer> {
        let auth = options.auth;
        let bin = find_registry()?;
        let dir = crate::harness::run_dir("registry-")?;
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let auth_section = if auth {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{TEST_HTPASSWD}\n"))?;
            format!(
                "auth:\n  htpasswd:\n    realm: mesh-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        // Port 0: the registry logs the port it bound. A fixed secret
        // silences the multi-instance warning; uploads never span processes.
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {}\nhttp:\n  addr: 127.0.0.1:0\n  secret: mesh-filters-test\n{auth_section}",
            storage.display(),
            options.read_only
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("registry.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&bin);
        // The registry reads REGISTRY_* variables as overrides of its
        // config file (REGISTRY_BIN, ours, included): none may leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = RegistryServer {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage,
            log,
        };
        server.addr = server
            .wait_listening(Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("{e:#}\n--- registry log ---\n{}", server.log_text()))?;
        Ok(server)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the registry exited during start-up: {status}");
            }
            let text = self.log_text();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split(['"', ' ']).next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                bail!("the registry did not listen within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The file the registry stores blob `digest` (`sha256:…`) in.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the registry: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::envoy::terminate(child);
        }
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop();
    }
}
