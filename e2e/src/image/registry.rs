//! One registry, through `oci-client`: push an image (its blobs, then its
//! manifest by tag, as the exact bytes we built, so the registry's digest is
//! ours), read manifests and blobs back.
//!
//! - **Transport.** Loopback registries (`127.0.0.1`, `localhost`, `[::1]`)
//!   are spoken to over plain HTTP, as a local registry serves it; others
//!   over HTTPS. `insecure` (`--insecure`) accepts any certificate and falls
//!   back to plain HTTP when the registry does not speak TLS, as Docker's
//!   `insecure-registries` and istio-agent's insecure registries do.
//! - **Credentials** come from the Docker config (`$DOCKER_CONFIG/config.json`,
//!   else `~/.docker/config.json`), credential helpers included, as docker,
//!   crane and oras read them; never from the command line. Without an entry
//!   the registry is used anonymously.
//! - **Errors** name the registry and the image and say what to do: an
//!   unreachable registry, 401 (how to log in), 403, a missing tag, a failed
//!   blob upload.

use super::build::{Blob, Descriptor, Image};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may stall.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to a registry, said so that the next step is
/// clear.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot reach registry {registry} for {image}: {detail}. Check that the registry is running and that the address is right{hint}"
    )]
    Unreachable {
        registry: String,
        image: String,
        detail: String,
        hint: String,
    },
    #[error(
        "registry {registry} wants credentials for {image} (401 Unauthorized{sent}). Log in with `docker login {registry}` (or `crane auth login`, `oras login`): credentials are read from {config}"
    )]
    Unauthorized {
        registry: String,
        image: String,
        /// `, and rejected the credentials from …` when some were sent.
        sent: String,
        config: String,
    },
    #[error(
        "registry {registry} denied {action} {image} (403 Forbidden): the credentials from {config} are not allowed to {action} this repository. Log in as a user who may: `docker login {registry}`"
    )]
    Forbidden {
        registry: String,
        image: String,
        action: &'static str,
        config: String,
    },
    #[error(
        "{what} not found in registry {registry} ({detail}); check the name and tag, and push it first with `cargo xtask image --push`"
    )]
    NotFound {
        registry: String,
        what: String,
        detail: String,
    },
    #[error(
        "uploading blob {blob} of {image} to registry {registry} failed: {detail}. Retry the push; if it fails again, look at the registry's log (storage full or read-only, a size limit in a proxy in front of it)"
    )]
    BlobUpload {
        registry: String,
        image: String,
        /// `sha256:… (layer …, N bytes)`.
        blob: String,
        detail: String,
    },
    #[error(
        "registry {registry} served {digest} of {image} with different content (sha256 {actual}): the blob is corrupt in the registry's storage, or something between us changed it"
    )]
    Corrupt {
        registry: String,
        image: String,
        digest: String,
        actual: String,
    },
    #[error("reading the credentials for {registry} from {config}: {detail}")]
    Credentials {
        registry: String,
        config: String,
        detail: String,
    },
    #[error("registry {registry}, {image}: {detail}")]
    Other {
        registry: String,
        image: String,
        detail: String,
    },
}

/// An image pushed by tag.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `oci://<registry>/<repository>:<tag>`.
    pub url: String,
    /// `sha256:<hex>` of the manifest, as the registry resolves the tag.
    pub digest: String,
}

impl Pushed {
    /// The digest without `sha256:`: the WasmPlugin's `sha256`.
    pub fn sha256(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// A registry `<host>[:port]`, with the transport and credentials chosen.
pub struct Registry {
    host: String,
    client: Client,
    auth: RegistryAuth,
    /// Where credentials were looked for, for messages.
    config: String,
    runtime: tokio::runtime::Runtime,
}

/// The Docker config file credentials are read from.
pub fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The credentials for `host` in the Docker config at `path` (`None`: the
/// usual place, [`docker_config_path`]), and how to name that file in
/// messages. No file, or no entry for `host`, means anonymous.
fn credentials(host: &str, path: Option<&Path>) -> Result<(RegistryAuth, String), RegistryError> {
    let Some(path) = path.map(Path::to_path_buf).or_else(docker_config_path) else {
        return Ok((
            RegistryAuth::Anonymous,
            "$DOCKER_CONFIG/config.json or ~/.docker/config.json (neither DOCKER_CONFIG nor HOME is set)".to_string(),
        ));
    };
    let shown = path.display().to_string();
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok((RegistryAuth::Anonymous, format!("{shown} (not present)")));
    };
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), host) {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok((RegistryAuth::Basic(user, password), shown))
        }
        Ok(DockerCredential::IdentityToken(_)) => Err(RegistryError::Credentials {
            registry: host.to_string(),
            config: shown,
            detail: "it holds an OAuth identity token, which this tool cannot exchange; log in with a username and password or access token instead".to_string(),
        }),
        Err(E::NoCredentialConfigured) => Ok((RegistryAuth::Anonymous, shown)),
        Err(e) => Err(RegistryError::Credentials {
            registry: host.to_string(),
            config: shown,
            detail: e.to_string(),
        }),
    }
}

/// rustls needs one process-wide crypto provider; ring is the one built in.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only means another provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client(protocol: ClientProtocol, accept_invalid: bool) -> Client {
    install_crypto_provider();
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: accept_invalid,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        // Indexes are resolved by the caller, the way Istio resolves them.
        platform_resolver: None,
        user_agent: concat!("mesh-filters/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

/// The text of an error and its sources, one after another.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Registry {
    /// A registry at `host` (`127.0.0.1:5000`, `ghcr.io`), with the
    /// credentials for it from the Docker config. Opens no connection yet,
    /// except with `insecure`, where it finds out whether TLS answers.
    pub fn new(host: &str, insecure: bool) -> Result<Registry, RegistryError> {
        Registry::with_docker_config(host, insecure, None)
    }

    /// [`Registry::new`] with the Docker config at `docker_config` instead
    /// of the usual place.
    pub fn with_docker_config(
        host: &str,
        insecure: bool,
        docker_config: Option<&Path>,
    ) -> Result<Registry, RegistryError> {
        let (auth, config) = credentials(host, docker_config)?;
        let loopback = super::is_loopback_registry(host);
        let protocol = if loopback {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Other {
                registry: host.to_string(),
                image: String::new(),
                detail: format!("starting the I/O runtime: {e}"),
            })?;
        let mut registry = Registry {
            host: host.to_string(),
            client: client(protocol, insecure),
            auth,
            config,
            runtime,
        };
        if insecure && !loopback && !registry.probe_ok() {
            // No TLS there (or no answer at all): try plain HTTP, and keep
            // HTTPS if that does not answer either, for its error message.
            let plain = client(ClientProtocol::Http, true);
            let probe = Reference::with_tag(host.to_string(), "library/probe".into(), "x".into());
            let answers = registry
                .runtime
                .block_on(plain.auth(&probe, &registry.auth, RegistryOperation::Pull))
                .is_ok();
            if answers {
                registry.client = plain;
            }
        }
        Ok(registry)
    }

    fn probe_ok(&self) -> bool {
        let probe = Reference::with_tag(self.host.clone(), "library/probe".into(), "x".into());
        self.runtime
            .block_on(
                self.client
                    .auth(&probe, &self.auth, RegistryOperation::Pull),
            )
            .is_ok()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `<host>/<repository>:<tag>`.
    pub fn tagged(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), repository.to_string(), tag.to_string())
    }

    /// `<host>/<repository>@<digest>`.
    pub fn by_digest(&self, repository: &str, digest: &str) -> Reference {
        Reference::with_digest(
            self.host.clone(),
            repository.to_string(),
            digest.to_string(),
        )
    }

    /// Maps an oci-client error on `image` to one that says what to do.
    fn explain(&self, e: OciDistributionError, image: &str, action: &'static str) -> RegistryError {
        let registry = self.host.clone();
        let image = image.to_string();
        let unauthorized = || RegistryError::Unauthorized {
            registry: self.host.clone(),
            image: image.clone(),
            sent: match &self.auth {
                RegistryAuth::Anonymous => String::new(),
                _ => format!(", and it rejected the credentials from {}", self.config),
            },
            config: self.config.clone(),
        };
        let forbidden = || RegistryError::Forbidden {
            registry: self.host.clone(),
            image: image.clone(),
            action,
            config: self.config.clone(),
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::ServerError { code: 401, .. } => unauthorized(),
            OciDistributionError::ServerError { code: 403, .. } => forbidden(),
            OciDistributionError::RegistryError { ref envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.contains(&&OciErrorCode::Unauthorized) {
                    unauthorized()
                } else if codes.contains(&&OciErrorCode::Denied) {
                    forbidden()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    RegistryError::NotFound {
                        registry,
                        what: image,
                        detail: envelope.to_string(),
                    }
                } else {
                    RegistryError::Other {
                        registry,
                        image,
                        detail: envelope.to_string(),
                    }
                }
            }
            OciDistributionError::ImageManifestNotFoundError(detail) => RegistryError::NotFound {
                registry,
                what: image,
                detail,
            },
            OciDistributionError::RequestError(ref r) if r.status().is_some() => {
                match r.status().map(|s| s.as_u16()) {
                    Some(401) => unauthorized(),
                    Some(403) => forbidden(),
                    Some(404) => RegistryError::NotFound {
                        registry,
                        what: image,
                        detail: chain(r),
                    },
                    _ => RegistryError::Other {
                        registry,
                        image,
                        detail: chain(r),
                    },
                }
            }
            OciDistributionError::RequestError(ref r) => {
                let detail = chain(r);
                let tls = [
                    "certificate",
                    "tls",
                    "TLS",
                    "InvalidContentType",
                    "corrupt message",
                ]
                .iter()
                .any(|t| detail.contains(t));
                let hint = if tls && !super::is_loopback_registry(&self.host) {
                    format!(
                        "; if {} serves plain HTTP or a self-signed certificate, push with `cargo xtask image --push … --insecure` (that trusts the network to it)",
                        self.host
                    )
                } else {
                    String::new()
                };
                RegistryError::Unreachable {
                    registry,
                    image,
                    detail,
                    hint,
                }
            }
            OciDistributionError::DigestError(d) => RegistryError::Corrupt {
                registry,
                image,
                digest: String::new(),
                actual: d.to_string(),
            },
            other => RegistryError::Other {
                registry,
                image,
                detail: chain(&other),
            },
        }
    }

    /// Checks that the registry answers and takes our credentials for
    /// `action` on `reference`: the first request of every operation, so an
    /// unreachable registry is reported before anything else happens.
    fn connect(&self, reference: &Reference, op: RegistryOperation) -> Result<(), RegistryError> {
        let action = match op {
            RegistryOperation::Push => "pushing",
            RegistryOperation::Pull => "pulling",
        };
        self.runtime
            .block_on(self.client.auth(reference, &self.auth, op))
            .map(|_| ())
            .map_err(|e| self.explain(e, &reference.whole(), action))
    }

    /// Uploads `blob` to `repository` unless the registry has it already.
    pub fn push_blob(
        &self,
        repository: &str,
        blob: &Blob,
        what: &str,
    ) -> Result<(), RegistryError> {
        // Blob requests name the repository; the digest is the blob's own.
        let reference = self.by_digest(repository, &blob.digest);
        let image = format!("{}/{repository}", self.host);
        let exists = self
            .runtime
            .block_on(self.client.blob_exists(&reference, &blob.digest))
            .map_err(|e| self.explain(e, &image, "pushing"))?;
        if exists {
            return Ok(());
        }
        self.runtime
            .block_on(
                self.client
                    .push_blob(&reference, blob.bytes.clone(), &blob.digest),
            )
            .map(|_| ())
            .map_err(|e| match self.explain(e, &image, "pushing") {
                e @ (RegistryError::Unauthorized { .. }
                | RegistryError::Forbidden { .. }
                | RegistryError::Unreachable { .. }) => e,
                other => RegistryError::BlobUpload {
                    registry: self.host.clone(),
                    image: image.clone(),
                    blob: format!("{} ({what}, {} bytes)", blob.digest, blob.bytes.len()),
                    detail: match other {
                        RegistryError::Other { detail, .. } => detail,
                        e => e.to_string(),
                    },
                },
            })
    }

    /// Puts `manifest` (bytes as they are) under `tag` in `repository` and
    /// returns its digest as the registry resolves the tag afterwards, which
    /// must be the digest of our bytes.
    pub fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<String, RegistryError> {
        let reference = self.tagged(repository, tag);
        let image = reference.whole();
        let content_type = media_type.parse().map_err(|_| RegistryError::Other {
            registry: self.host.clone(),
            image: image.clone(),
            detail: format!("{media_type:?} is not a valid Content-Type"),
        })?;
        self.runtime
            .block_on(
                self.client
                    .push_manifest_raw(&reference, manifest.to_vec(), content_type),
            )
            .map_err(|e| self.explain(e, &image, "pushing"))?;
        let ours = super::sha256_digest(manifest);
        let (_, resolved) = self.manifest(&reference, &[media_type])?;
        if resolved != ours {
            return Err(RegistryError::Other {
                registry: self.host.clone(),
                image,
                detail: format!(
                    "the tag resolves to {resolved} after pushing {ours}: the registry rewrote the manifest, or another push to the same tag raced this one"
                ),
            });
        }
        Ok(ours)
    }

    /// Pushes `image` as `<repository>:<tag>`: its blobs, then its manifest.
    pub fn push(&self, image: &Image, repository: &str) -> Result<Pushed, RegistryError> {
        let reference = self.tagged(repository, image.tag());
        self.connect(&reference, RegistryOperation::Push)?;
        for blob in image.blobs() {
            let what = if blob.digest == image.config.digest {
                format!("config {}", blob.media_type)
            } else {
                format!("layer {}", blob.media_type)
            };
            self.push_blob(repository, blob, &what)?;
        }
        let digest = self.push_manifest(
            repository,
            image.tag(),
            image.manifest_media_type(),
            &image.manifest,
        )?;
        Ok(Pushed {
            url: format!("oci://{}/{repository}:{}", self.host, image.tag()),
            digest,
        })
    }

    /// The manifest `reference` resolves to, accepting `media_types`: its
    /// bytes and digest. The digest is computed from the bytes and checked
    /// against the registry's `Docker-Content-Digest` and, for a reference
    /// by digest, against that digest (oci-client does both).
    pub fn manifest(
        &self,
        reference: &Reference,
        media_types: &[&str],
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let image = reference.whole();
        self.connect(reference, RegistryOperation::Pull)?;
        let (bytes, digest) = self
            .runtime
            .block_on(
                self.client
                    .pull_manifest_raw(reference, &self.auth, media_types),
            )
            .map_err(|e| match self.explain(e, &image, "pulling") {
                RegistryError::NotFound {
                    registry, detail, ..
                } => RegistryError::NotFound {
                    registry,
                    what: match reference.tag() {
                        Some(tag) if reference.digest().is_none() => {
                            format!("tag {tag} of {}", reference.repository())
                        }
                        _ => image.clone(),
                    },
                    detail,
                },
                RegistryError::Corrupt {
                    registry, actual, ..
                } => RegistryError::Corrupt {
                    registry,
                    image: image.clone(),
                    digest: "the manifest".to_string(),
                    actual,
                },
                other => other,
            })?;
        Ok((bytes.to_vec(), digest))
    }

    /// The blob `descriptor` names, from `repository`, checked against its
    /// digest and size.
    pub fn blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let reference = self.by_digest(repository, &descriptor.digest);
        let image = format!("{}/{repository}", self.host);
        let mut out = Vec::new();
        let pulled = self.runtime.block_on(self.client.pull_blob(
            &reference,
            descriptor.digest.as_str(),
            &mut out,
        ));
        match pulled {
            Ok(()) => {}
            Err(OciDistributionError::DigestError(_)) => {
                return Err(RegistryError::Corrupt {
                    registry: self.host.clone(),
                    image,
                    digest: descriptor.digest.clone(),
                    actual: super::sha256_digest(&out),
                });
            }
            Err(e) => return Err(self.explain(e, &image, "pulling")),
        }
        // oci-client checked the digest while reading; check it and the size
        // here too, so no code path trusts a blob it did not verify.
        let actual = super::sha256_digest(&out);
        if actual != descriptor.digest || out.len() as u64 != descriptor.size {
            return Err(RegistryError::Corrupt {
                registry: self.host.clone(),
                image,
                digest: descriptor.digest.clone(),
                actual: format!("{actual}, {} bytes for {}", out.len(), descriptor.size),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "from the registry".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "https://registry.example.com/v2/x".into(),
        }
    }

    fn registry() -> Registry {
        Registry::with_docker_config(
            "registry.example.com",
            false,
            Some(Path::new("/nonexistent/config.json")),
        )
        .unwrap()
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        let r = registry();
        let image = "registry.example.com/mf/canary-router:0.1.0";
        let e = r.explain(envelope(OciErrorCode::Denied), image, "pushing");
        let text = e.to_string();
        assert!(matches!(e, RegistryError::Forbidden { .. }), "{text}");
        assert!(
            text.contains(
                "denied pushing registry.example.com/mf/canary-router:0.1.0 (403 Forbidden)"
            ),
            "{text}"
        );
        assert!(text.contains("docker login registry.example.com"), "{text}");
        let e = r.explain(
            OciDistributionError::ServerError {
                code: 403,
                url: String::new(),
                message: String::new(),
            },
            image,
            "pulling",
        );
        assert!(e.to_string().contains("denied pulling"), "{e}");
        let e = r.explain(envelope(OciErrorCode::Unauthorized), image, "pushing");
        let text = e.to_string();
        assert!(
            text.contains("401") && text.contains("docker login registry.example.com"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/config.json"), "{text}");
        assert!(
            !text.contains("rejected"),
            "anonymous: nothing was rejected: {text}"
        );
        let e = r.explain(envelope(OciErrorCode::ManifestUnknown), image, "pulling");
        assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
        let e = r.explain(envelope(OciErrorCode::Toomanyrequests), image, "pulling");
        assert!(e.to_string().contains("registry.example.com"), "{e}");
    }

    #[test]
    fn credentials_come_from_the_docker_config() {
        let dir = std::env::temp_dir().join(format!("docker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        // base64("user:pass"), under a key with a scheme, as `docker login` may write it.
        std::fs::write(
            &path,
            r#"{"auths": {"https://registry.example.com": {"auth": "dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let (auth, shown) = credentials("registry.example.com", Some(&path)).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "user" && p == "pass"));
        assert_eq!(shown, path.display().to_string());
        let (auth, _) = credentials("other.example.com", Some(&path)).unwrap();
        assert!(matches!(auth, RegistryAuth::Anonymous));
        std::fs::write(&path, "{not json").unwrap();
        let e = credentials("registry.example.com", Some(&path)).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
