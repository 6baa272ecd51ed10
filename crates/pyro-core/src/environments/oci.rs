//! Publishing environments to, and pulling them from, an OCI registry.
//!
//! An environment image is an OCI image manifest (schema 2) whose config is
//! `application/vnd.oci.image.config.v1+json` (linux/amd64, `io.pyro.*` labels) and whose
//! three `application/vnd.oci.image.layer.v1.tar+gzip` layers each hold exactly one plain
//! file (mtime 0, uid/gid 0, mode 0644): `vmlinux`, `rootfs.ext4` and
//! `environment-metadata.json` (what the environment is plus the sha256 of both artifacts).
//!
//! Pulls verify every digest on the way: the manifest against its digest, each layer blob
//! while it streams to a temp file in the staging directory (blobs never sit in memory),
//! then the extracted artifacts against the digests the metadata layer records. Layers
//! holding anything but one regular file with a plain name are rejected.
//!
//! Registries that need credentials get them from [`env_vars::ENV_REGISTRY_USERNAME`] / [`env_vars::ENV_REGISTRY_PASSWORD`]
//! (HTTP basic, or exchanged for a bearer token when the registry asks for one); without
//! them access is anonymous.

use crate::env_vars;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, OciManifest, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE, IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE,
    IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::manifest::{InstallManifest, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};
use crate::catalog::{EnvironmentSpec, CATALOG_VERSION, PLATFORM};
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, Progress};

/// File name of the metadata layer's only file.
pub const METADATA_FILE: &str = "environment-metadata.json";
/// Media type of every layer we publish.
pub const LAYER_MEDIA_TYPE: &str = IMAGE_LAYER_GZIP_MEDIA_TYPE;

/// How long [`Registry::probe`] waits for `/v2/`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connect timeout of registry requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence tolerated while reading a registry response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest config or metadata document accepted.
const MAX_SMALL_DOCUMENT: u64 = 1 << 20;
/// Size of the pieces layers are read, hashed and extracted in.
const CHUNK: usize = 1 << 20;
/// Size of the pieces layers are uploaded in (one PATCH each; oci-client's maximum).
const UPLOAD_CHUNK: usize = 4 << 20;
/// Granularity at which all-zero data is written as holes.
const SPARSE_BLOCK: usize = 4096;
/// The files an image carries, in layer order.
const IMAGE_FILES: [&str; 3] = [KERNEL_FILE, ROOTFS_FILE, METADATA_FILE];
const LOCATION_FORMAT: &str = "expected [http://|https://]host[:port][/namespace]";

/// A registry location: `[http://|https://]host[:port][/namespace]`.
///
/// `http://` selects plain HTTP; `https://` or no scheme selects HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The location as given (trimmed, without trailing slashes), for messages.
    location: String,
    /// `host[:port]`.
    host: String,
    /// Repository prefix, possibly empty (`team/images`).
    namespace: String,
    /// Plain HTTP.
    insecure: bool,
}

/// What a pull installed.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `oci://<registry>/<repository>@<manifest digest>`.
    pub source: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
}

/// What a publish pushed.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Full reference pushed.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
}

/// Contents of the metadata layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetadata {
    /// Environment name.
    pub name: String,
    /// Environment version.
    pub version: String,
    /// Always [`PLATFORM`].
    pub platform: String,
    /// Distribution (`debian`).
    pub distribution: String,
    /// Distribution version (`12`).
    #[serde(default)]
    pub distribution_version: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Packages the rootfs was built with.
    #[serde(default)]
    pub default_packages: Vec<String>,
    /// Catalog version of the publishing pyro.
    #[serde(default)]
    pub catalog_version: String,
    /// sha256 of the guest agent inside the rootfs.
    #[serde(default)]
    pub agent_sha256: String,
    /// Digest and size of `vmlinux` and `rootfs.ext4`.
    pub artifacts: BTreeMap<String, ImageArtifact>,
}

/// One artifact as recorded in [`ImageMetadata`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageArtifact {
    /// Hex sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: u64,
}

impl Registry {
    /// Parses a registry location.
    pub fn parse(location: &str) -> Result<Self> {
        let trimmed = location.trim();
        let invalid = |reason: &str| Error::InvalidArgument(format!("invalid registry location '{trimmed}': {reason}; {LOCATION_FORMAT}"));
        if trimmed.is_empty() {
            return Err(Error::InvalidArgument(format!("registry location is empty; {LOCATION_FORMAT}")));
        }
        let lower = trimmed.to_ascii_lowercase();
        let (insecure, rest) = if lower.starts_with("http://") {
            (true, &trimmed["http://".len()..])
        } else if lower.starts_with("https://") {
            (false, &trimmed["https://".len()..])
        } else if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(invalid(&format!("unsupported scheme '{scheme}://'")));
        } else {
            (false, trimmed)
        };
        let rest = rest.trim_end_matches('/');
        let (host, namespace) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if let Some(bad) = host.chars().find(|c| matches!(c, '@' | '?' | '#') || c.is_whitespace()) {
            return Err(invalid(&format!("unexpected '{bad}' in host")));
        }
        validate_host(host).map_err(|reason| invalid(&reason))?;
        if namespace.contains(['?', '#']) {
            return Err(invalid("query strings and fragments are not supported"));
        }
        for component in namespace.split('/').filter(|_| !namespace.is_empty()) {
            if !is_repository_component(component) {
                return Err(invalid(&format!("namespace component '{component}' must be lowercase letters and digits separated by '.', '_', '__' or '-'")));
            }
        }
        let scheme = if insecure {
            "http://"
        } else if lower.starts_with("https://") {
            "https://"
        } else {
            ""
        };
        Ok(Self { location: format!("{scheme}{rest}"), host: host.to_ascii_lowercase(), namespace: namespace.to_string(), insecure })
    }

    /// `host[:port]` of the registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Repository prefix (possibly empty).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether the registry is spoken to over plain HTTP.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Repository path of `spec` in this registry: `<namespace>/<oci repository>`.
    pub fn repository(&self, spec: &EnvironmentSpec) -> String {
        if self.namespace.is_empty() {
            spec.oci_repository()
        } else {
            format!("{}/{}", self.namespace, spec.oci_repository())
        }
    }

    /// Image reference of `spec`: `<host>/<namespace>/<repository>:<version>`.
    pub fn reference(&self, spec: &EnvironmentSpec) -> String {
        format!("{}/{}:{}", self.host, self.repository(spec), spec.version)
    }

    fn oci_reference(&self, spec: &EnvironmentSpec) -> Reference {
        Reference::with_tag(self.host.clone(), self.repository(spec), spec.version.to_string())
    }

    fn scheme(&self) -> &'static str {
        if self.insecure {
            "http"
        } else {
            "https"
        }
    }

    /// Checks that the registry answers `GET /v2/` (a 401/403 counts: it is there).
    pub async fn probe(&self) -> Result<()> {
        let url = format!("{}://{}/v2/", self.scheme(), self.host);
        let unreachable = |reason: String| Error::Registry(format!("registry {} is unreachable: {reason}", self.location));
        let client = reqwest::Client::builder()
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT)
            .build()
            .map_err(|e| unreachable(format!("cannot create an HTTP client: {}", innermost(&e))))?;
        let answer = tokio::time::timeout(PROBE_TIMEOUT + Duration::from_millis(500), client.get(&url).send()).await;
        match answer {
            Err(_) => Err(unreachable(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))),
            Ok(Err(e)) if e.is_timeout() => Err(unreachable(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))),
            Ok(Err(e)) => Err(unreachable(self.connection_problem(&e))),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                    Ok(())
                } else {
                    Err(unreachable(format!("GET {url} answered HTTP {} (not an OCI registry?)", status.as_u16())))
                }
            }
        }
    }

    /// What went wrong connecting, with a hint when a TLS handshake failed (typically a
    /// plain-HTTP registry addressed without `http://`).
    fn connection_problem(&self, e: &reqwest::Error) -> String {
        let mut cause: &(dyn std::error::Error + 'static) = e;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let reason = one_line(cause);
        // TLS failures surface as `InvalidData` I/O errors (or as the TLS library's own).
        let tls = match cause.downcast_ref::<std::io::Error>() {
            Some(mut io) => loop {
                if io.kind() == std::io::ErrorKind::InvalidData {
                    break true;
                }
                match io.get_ref().and_then(|inner| inner.downcast_ref::<std::io::Error>()) {
                    Some(inner) => io = inner,
                    None => break false,
                }
            },
            None => cause.downcast_ref::<reqwest::Error>().is_none(),
        };
        if !self.insecure && tls {
            let plain = self.location.strip_prefix("https://").unwrap_or(&self.location);
            format!("TLS handshake failed: {reason} (for a plain-HTTP registry use http://{plain})")
        } else {
            reason
        }
    }

    fn client(&self) -> Result<Client> {
        let config = ClientConfig {
            protocol: if self.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            ..Default::default()
        };
        Client::try_from(config).map_err(|e| Error::Registry(format!("cannot create a client for registry {}: {}", self.location, one_line(&e))))
    }

    /// Turns a client error into a one-line [`Error::Registry`]; `not_found` is the
    /// message for a 404.
    fn error(&self, action: &str, not_found: &str, e: OciDistributionError) -> Error {
        use OciDistributionError as E;
        let location = &self.location;
        let denied = || {
            Error::Registry(format!(
                "registry {location} denied access while {action}: authentication required or credentials rejected (set {env_registry_username_var} and {env_registry_password_var})"
            , env_registry_password_var = env_vars::ENV_REGISTRY_PASSWORD, env_registry_username_var = env_vars::ENV_REGISTRY_USERNAME))
        };
        match e {
            E::DigestError(DigestError::VerificationError { expected, actual }) => {
                Error::Registry(format!("OCI blob digest mismatch for {expected}; got {actual}"))
            }
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => denied(),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    denied()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound | OciErrorCode::BlobUnknown))
                {
                    Error::Registry(not_found.to_string())
                } else {
                    let messages: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}: {}", e.code, e.message)).collect();
                    Error::Registry(format!("registry {location} refused {action}: {}", one_line_str(&messages.join("; "))))
                }
            }
            E::ServerError { code: 404, .. } => Error::Registry(not_found.to_string()),
            E::ServerError { code: 401 | 403, .. } => denied(),
            E::ServerError { code, message, .. } => {
                let detail = one_line_str(&message);
                let detail = if detail.is_empty() { String::new() } else { format!(": {}", truncate(&detail, 200)) };
                Error::Registry(format!("registry {location} answered HTTP {code} while {action}{detail}"))
            }
            E::RequestError(e) if e.is_timeout() => Error::Registry(format!("registry {location} timed out while {action}")),
            E::RequestError(e) if e.is_connect() => Error::Registry(format!("registry {location} is unreachable: {}", self.connection_problem(&e))),
            E::RequestError(e) => Error::Registry(format!("registry {location}: {action} failed: {}", innermost(&e))),
            other => Error::Registry(format!("registry {location}: {action} failed: {}", one_line(&other))),
        }
    }

    /// Downloads and verifies the image of `spec` into `staging`, leaving `vmlinux` and
    /// `rootfs.ext4` there.
    pub async fn pull_into(&self, spec: &EnvironmentSpec, staging: &Path, progress: Progress<'_>) -> Result<Pulled> {
        let client = self.client()?;
        let auth = registry_auth();
        let reference = self.oci_reference(spec);
        let shown = self.reference(spec);
        let not_found = format!("environment image {shown} not found in registry");

        let (manifest, digest) = self.fetch_image_manifest(&client, &auth, &reference, &shown, &not_found).await?;
        self.check_config(&client, &reference, &manifest, spec, &shown).await?;

        if manifest.layers.len() != IMAGE_FILES.len() {
            return Err(Error::Registry(format!(
                "environment image {shown} has {} layers; expected {} ({})",
                manifest.layers.len(),
                IMAGE_FILES.len(),
                IMAGE_FILES.join(", ")
            )));
        }
        let unpacked = tempfile::Builder::new().prefix(".layers-").tempdir_in(staging).ctx("create a directory in", staging)?;
        let mut extracted: BTreeMap<String, ExtractedFile> = BTreeMap::new();
        let count = manifest.layers.len();
        for (index, layer) in manifest.layers.iter().enumerate() {
            let gzip = layer_is_gzip(&layer.media_type)
                .ok_or_else(|| Error::Registry(format!("environment image {shown}: layer {} has unsupported media type {}", index + 1, layer.media_type)))?;
            let expected = parse_sha256_digest(&layer.digest)
                .ok_or_else(|| Error::Registry(format!("environment image {shown}: layer {} has unsupported digest '{}'", index + 1, layer.digest)))?;
            let blob = tempfile::Builder::new().prefix(".layer-").tempfile_in(staging).ctx("create a temp file in", staging)?;
            let file = tokio::fs::File::from_std(blob.as_file().try_clone().ctx("open", blob.path())?);
            let mut sink = HashingWriter::new(file);
            let action = format!("downloading layer {} of {shown}", index + 1);
            let blob_missing = format!("registry {} is missing blob {} of {shown}", self.location, layer.digest);
            client.pull_blob(&reference, layer, &mut sink).await.map_err(|e| self.error(&action, &blob_missing, e))?;
            let (actual, size) = sink.finish();
            if actual != expected {
                return Err(Error::Registry(format!("OCI blob digest mismatch for {}; got sha256:{actual}", layer.digest)));
            }
            if layer.size >= 0 && size != layer.size as u64 {
                return Err(Error::Registry(format!("OCI blob size mismatch for {}: the manifest says {} bytes, got {size}", layer.digest, layer.size)));
            }
            progress(&Event::PullLayer { index: index + 1, count, bytes: size });

            let dir = unpacked.path().to_path_buf();
            let blob_path = blob.path().to_path_buf();
            let file = tokio::task::spawn_blocking(move || extract_layer_file(&blob_path, gzip, &dir))
                .await
                .map_err(|e| Error::Registry(format!("layer extraction failed: {e}")))?
                .map_err(|e| match e {
                    Error::Registry(message) => Error::Registry(format!("environment image {shown}: layer {}: {message}", index + 1)),
                    other => other,
                })?;
            drop(blob);
            if !IMAGE_FILES.contains(&file.name.as_str()) {
                return Err(Error::Registry(format!(
                    "environment image {shown}: layer {} holds unexpected file '{}'; expected one of {}",
                    index + 1,
                    file.name,
                    IMAGE_FILES.join(", ")
                )));
            }
            extracted.insert(file.name.clone(), file);
        }
        for name in IMAGE_FILES {
            if !extracted.contains_key(name) {
                return Err(Error::Registry(format!("environment image {shown} has no layer holding {name}")));
            }
        }

        let metadata = read_metadata(&unpacked.path().join(METADATA_FILE), &shown)?;
        if metadata.name != spec.name || metadata.version != spec.version {
            return Err(Error::Registry(format!(
                "environment image {shown} holds {} {}, expected {} {}",
                metadata.name, metadata.version, spec.name, spec.version
            )));
        }
        for name in [KERNEL_FILE, ROOTFS_FILE] {
            let recorded = metadata
                .artifacts
                .get(name)
                .ok_or_else(|| Error::Registry(format!("environment image {shown}: {METADATA_FILE} records no sha256 for {name}")))?;
            let got = &extracted[name];
            if !recorded.sha256.eq_ignore_ascii_case(&got.sha256) {
                return Err(Error::Registry(format!(
                    "pulled {name} of {shown} does not match the sha256 in its {METADATA_FILE}: expected {}, got {}",
                    recorded.sha256, got.sha256
                )));
            }
        }
        for name in [KERNEL_FILE, ROOTFS_FILE] {
            let (from, to) = (unpacked.path().join(name), staging.join(name));
            std::fs::rename(&from, &to).ctx("move into place", &to)?;
        }
        Ok(Pulled { source: format!("oci://{}/{}@{digest}", self.host, self.repository(spec)), digest })
    }

    /// Fetches the image manifest (resolving an index to its linux/amd64 entry) and
    /// verifies its sha256.
    async fn fetch_image_manifest(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        reference: &Reference,
        shown: &str,
        not_found: &str,
    ) -> Result<(OciImageManifest, String)> {
        const ACCEPT: [&str; 4] = [OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE];
        let action = format!("fetching the manifest of {shown}");
        let (body, digest) = client.pull_manifest_raw(reference, auth, &ACCEPT).await.map_err(|e| self.error(&action, not_found, e))?;
        let digest = verify_manifest_digest(&body, &digest, None)?;
        let manifest = parse_manifest(&body, shown)?;
        let index = match manifest {
            OciManifest::Image(image) => return Ok((image, digest)),
            OciManifest::ImageIndex(index) => index,
        };
        let entry =
            linux_amd64_resolver(&index.manifests).ok_or_else(|| Error::Registry(format!("OCI index of {shown} did not contain a linux/amd64 manifest")))?;
        let by_digest = reference.clone_with_digest(entry.clone());
        let (body, digest) = client.pull_manifest_raw(&by_digest, auth, &ACCEPT).await.map_err(|e| self.error(&action, not_found, e))?;
        let digest = verify_manifest_digest(&body, &digest, Some(entry.as_str()))?;
        match parse_manifest(&body, shown)? {
            OciManifest::Image(image) => Ok((image, digest)),
            OciManifest::ImageIndex(_) => Err(Error::Registry(format!("OCI index of {shown} points at another index instead of an image manifest"))),
        }
    }

    /// Checks the image config says linux/amd64 and, when labelled, this environment.
    async fn check_config(&self, client: &Client, reference: &Reference, manifest: &OciImageManifest, spec: &EnvironmentSpec, shown: &str) -> Result<()> {
        let descriptor = &manifest.config;
        if descriptor.size < 0 || descriptor.size as u64 > MAX_SMALL_DOCUMENT {
            return Err(Error::Registry(format!("environment image {shown} has an implausible config size of {} bytes", descriptor.size)));
        }
        let mut config = Vec::new();
        let missing = format!("registry {} is missing the config blob {} of {shown}", self.location, descriptor.digest);
        client.pull_blob(reference, descriptor, &mut config).await.map_err(|e| self.error(&format!("downloading the config of {shown}"), &missing, e))?;
        let config: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| Error::Registry(format!("environment image {shown} has an unreadable config: {e}")))?;
        let os = config.get("os").and_then(|v| v.as_str()).unwrap_or("");
        let arch = config.get("architecture").and_then(|v| v.as_str()).unwrap_or("");
        if os != "linux" || arch != "amd64" {
            return Err(Error::Registry(format!("environment image {shown} is for {os}/{arch}, not linux/amd64")));
        }
        let label = |key: &str| config.pointer(&format!("/config/Labels/{}", key.replace('/', "~1"))).and_then(|v| v.as_str());
        if let Some(name) = label("io.pyro.environment") {
            if name != spec.name {
                return Err(Error::Registry(format!("environment image {shown} is labelled as environment '{name}', expected '{}'", spec.name)));
            }
        }
        Ok(())
    }

    /// Pushes the install in `install_dir`.
    pub async fn publish(&self, spec: &EnvironmentSpec, install_dir: &Path, progress: Progress<'_>) -> Result<Published> {
        let install = InstallManifest::load(&install_dir.join(MANIFEST_FILE))?;
        let recorded = |name: &str| {
            install.artifacts.get(name).cloned().ok_or_else(|| {
                Error::NotInstalled(format!("install record of '{}' has no digest for {name}; run `pyro env pull {} --force`", spec.name, spec.name))
            })
        };
        let (kernel, rootfs) = (recorded(KERNEL_FILE)?, recorded(ROOTFS_FILE)?);
        let metadata = ImageMetadata {
            name: spec.name.into(),
            version: spec.version.into(),
            platform: PLATFORM.into(),
            distribution: spec.distribution.into(),
            distribution_version: spec.distribution_version.into(),
            description: spec.description.into(),
            default_packages: spec.default_packages.iter().map(|p| p.to_string()).collect(),
            catalog_version: CATALOG_VERSION.into(),
            agent_sha256: install.agent_sha256.clone(),
            artifacts: BTreeMap::from([
                (KERNEL_FILE.to_string(), ImageArtifact { sha256: kernel.sha256.clone(), size_bytes: kernel.size_bytes }),
                (ROOTFS_FILE.to_string(), ImageArtifact { sha256: rootfs.sha256.clone(), size_bytes: rootfs.size_bytes }),
            ]),
        };
        let metadata_json = serde_json::to_vec_pretty(&metadata).expect("metadata serialises");

        let client = self.client()?;
        let reference = self.oci_reference(spec);
        let shown = self.reference(spec);
        client.store_auth_if_needed(reference.resolve_registry(), &registry_auth()).await;

        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for name in IMAGE_FILES {
            let source = match name {
                METADATA_FILE => LayerSource::Bytes(metadata_json.clone()),
                _ => LayerSource::File(install_dir.join(name)),
            };
            let pushed = self.push_layer(&client, &reference, &shown, name, source).await?;
            let expected = match name {
                KERNEL_FILE => Some(&kernel.sha256),
                ROOTFS_FILE => Some(&rootfs.sha256),
                _ => None,
            };
            if let Some(expected) = expected {
                if *expected != pushed.content_sha256 {
                    return Err(Error::DigestMismatch {
                        environment: spec.name.into(),
                        artifact: name.into(),
                        expected: expected.clone(),
                        actual: pushed.content_sha256,
                    });
                }
            }
            progress(&Event::PublishLayer { name: name.to_string(), bytes: u64::try_from(pushed.descriptor.size).unwrap_or(0) });
            layers.push(pushed.descriptor);
            diff_ids.push(format!("sha256:{}", pushed.tar_sha256));
        }

        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Labels": {
                    "io.pyro.environment": spec.name,
                    "io.pyro.environment.version": spec.version,
                    "org.opencontainers.image.title": spec.name,
                    "org.opencontainers.image.version": spec.version,
                }
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = serde_json::to_vec(&config).expect("config serialises");
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        let config_size = config.len() as i64;
        client
            .push_blob(&reference, config, &config_digest)
            .await
            .map_err(|e| self.error(&format!("pushing the config of {shown}"), "registry has no such repository", e))?;

        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
            config: OciDescriptor { media_type: IMAGE_CONFIG_MEDIA_TYPE.to_string(), digest: config_digest, size: config_size, ..Default::default() },
            layers,
            ..Default::default()
        };
        let body = serde_json::to_vec(&manifest).expect("manifest serialises");
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        client
            .push_manifest_raw(&reference, body, reqwest::header::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE))
            .await
            .map_err(|e| self.error(&format!("pushing the manifest of {shown}"), "registry has no such repository", e))?;
        progress(&Event::PublishManifest { reference: shown.clone(), digest: digest.clone() });
        Ok(Published { reference: shown, digest })
    }

    /// Compresses `source` into a one-file tar+gzip layer while uploading it.
    async fn push_layer(&self, client: &Client, reference: &Reference, shown: &str, name: &'static str, source: LayerSource) -> Result<PushedLayer> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, OciDistributionError>>(2);
        let producer = {
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = write_layer(name, source, ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(UPLOAD_CHUNK) });
                if let Err(e) = &result {
                    // Make the upload fail rather than complete a truncated blob.
                    let _ = tx.blocking_send(Err(OciDistributionError::IoError(std::io::Error::new(e.kind(), e.to_string()))));
                }
                result
            })
        };
        drop(tx);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let pushed = client.push_blob_stream_chunked(reference, stream).await;
        let produced = producer.await.map_err(|e| Error::Registry(format!("building layer {name} failed: {e}")))?;
        let pushed = pushed.map_err(|e| self.error(&format!("pushing layer {name} of {shown}"), "registry has no such repository", e))?;
        let (content_sha256, tar_sha256) = produced.map_err(|e| Error::Registry(format!("building layer {name} failed: {e}")))?;
        Ok(PushedLayer {
            descriptor: OciDescriptor {
                media_type: LAYER_MEDIA_TYPE.to_string(),
                digest: pushed.blob_digest,
                size: pushed.size as i64,
                annotations: Some(BTreeMap::from([("org.opencontainers.image.title".to_string(), name.to_string())])),
                ..Default::default()
            },
            content_sha256,
            tar_sha256,
        })
    }
}

/// Credentials from [`env_vars::ENV_REGISTRY_USERNAME`] / [`env_vars::ENV_REGISTRY_PASSWORD`], else anonymous.
fn registry_auth() -> RegistryAuth {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var(env_vars::ENV_REGISTRY_USERNAME), var(env_vars::ENV_REGISTRY_PASSWORD)) {
        (Some(user), Some(password)) => RegistryAuth::Basic(user, password),
        (None, Some(token)) => RegistryAuth::Bearer(token),
        _ => RegistryAuth::Anonymous,
    }
}

/// Validates `host[:port]` (DNS name, IPv4 or bracketed IPv6).
fn validate_host(host: &str) -> std::result::Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or("unterminated '[' in host")?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        match after {
            "" => return Ok(()),
            _ => (None, Some(after.strip_prefix(':').ok_or("expected ':' after ']'")?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let label_ok =
            |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("'{name}' is not a valid host name"));
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => {}
            _ => return Err(format!("'{port}' is not a valid port")),
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the OCI repository path component grammar.
fn is_repository_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `sha256:<64 hex>` → lowercase hex.
fn parse_sha256_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

/// Whether a layer media type is gzip-compressed; `None` for unsupported types.
fn layer_is_gzip(media_type: &str) -> Option<bool> {
    match media_type {
        IMAGE_LAYER_GZIP_MEDIA_TYPE | IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE => Some(true),
        IMAGE_LAYER_MEDIA_TYPE | IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE => Some(false),
        _ => None,
    }
}

/// Checks `body` hashes to `claimed` (and to `requested`, when fetched by digest).
fn verify_manifest_digest(body: &[u8], claimed: &str, requested: Option<&str>) -> Result<String> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(body)));
    for expected in std::iter::once(claimed).chain(requested) {
        if expected != actual {
            return Err(Error::Registry(format!("OCI manifest digest mismatch for {expected}; got {actual}")));
        }
    }
    Ok(actual)
}

fn parse_manifest(body: &[u8], shown: &str) -> Result<OciManifest> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::Registry(format!("manifest of {shown} is not valid JSON: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(Error::Registry(format!("manifest of {shown} is not a schema 2 manifest")));
    }
    if value.get("manifests").is_some() {
        return serde_json::from_value(value).map(OciManifest::ImageIndex).map_err(|e| Error::Registry(format!("OCI index of {shown} is malformed: {e}")));
    }
    let manifest: OciImageManifest = serde_json::from_value(value).map_err(|e| Error::Registry(format!("manifest of {shown} is malformed: {e}")))?;
    if let Some(media_type) = &manifest.media_type {
        if media_type != OCI_IMAGE_MEDIA_TYPE && media_type != IMAGE_MANIFEST_MEDIA_TYPE {
            return Err(Error::Registry(format!("manifest of {shown} has unsupported media type {media_type}")));
        }
    }
    if manifest.layers.is_empty() {
        return Err(Error::Registry(format!("OCI manifest of {shown} did not contain any layers")));
    }
    Ok(OciManifest::Image(manifest))
}

fn read_metadata(path: &Path, shown: &str) -> Result<ImageMetadata> {
    let size = std::fs::metadata(path).ctx("stat", path)?.len();
    if size > MAX_SMALL_DOCUMENT {
        return Err(Error::Registry(format!("environment image {shown}: {METADATA_FILE} is implausibly large ({size} bytes)")));
    }
    let text = std::fs::read(path).ctx("read", path)?;
    serde_json::from_slice(&text).map_err(|e| Error::Registry(format!("environment image {shown}: {METADATA_FILE} is malformed: {e}")))
}

/// A file taken out of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExtractedFile {
    /// Its plain file name.
    name: String,
    /// Hex sha256 of its content.
    sha256: String,
    /// Size in bytes.
    size: u64,
}

/// Extracts the single regular file of the layer tar at `blob` into `dir`. Anything else
/// (no file, several entries, directories, links, devices, paths with `/` or `..`) is
/// rejected with [`Error::Registry`]. All-zero blocks become holes.
fn extract_layer_file(blob: &Path, gzip: bool, dir: &Path) -> Result<ExtractedFile> {
    let file = std::fs::File::open(blob).ctx("open", blob)?;
    let reader = std::io::BufReader::with_capacity(CHUNK, file);
    if gzip {
        extract_single_file(flate2::read::MultiGzDecoder::new(reader), dir)
    } else {
        extract_single_file(reader, dir)
    }
}

fn extract_single_file(reader: impl Read, dir: &Path) -> Result<ExtractedFile> {
    let bad = |message: String| Error::Registry(message);
    let unreadable = |e: std::io::Error| Error::Registry(format!("layer is not a readable tar archive: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(unreadable)?;
    let mut entry = match entries.next() {
        None => return Err(bad("layer is empty; expected exactly one file".into())),
        Some(entry) => entry.map_err(unreadable)?,
    };
    let raw_name = entry.path_bytes().into_owned();
    let name = String::from_utf8(raw_name).map_err(|e| bad(format!("layer entry name {:?} is not UTF-8", String::from_utf8_lossy(e.as_bytes()))))?;
    let kind = entry.header().entry_type();
    if kind != tar::EntryType::Regular {
        return Err(bad(format!("layer entry '{name}' is a {}, not a regular file", entry_kind(kind))));
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(bad(format!("layer entry '{name}' is not a plain file name")));
    }
    let size = entry.size();
    let path = dir.join(&name);
    let mut out = std::fs::File::options().write(true).create_new(true).open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bad(format!("more than one layer holds '{name}'"))
        } else {
            Error::io("create", &path, e)
        }
    })?;
    let (sha256, written) = copy_sparse(&mut entry, &mut out).map_err(|e| bad(format!("cannot extract '{name}': {e}")))?;
    if written != size {
        return Err(bad(format!("layer entry '{name}' is truncated: {written} of {size} bytes")));
    }
    drop(entry);
    match entries.next() {
        None => {}
        Some(Ok(next)) => {
            let other = String::from_utf8_lossy(&next.path_bytes()).into_owned();
            return Err(bad(format!("layer holds more than one entry ('{name}', '{other}', …); expected exactly one file")));
        }
        Some(Err(e)) => return Err(unreadable(e)),
    }
    out.sync_all().ctx("sync", &path)?;
    Ok(ExtractedFile { name, sha256, size })
}

fn entry_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::XGlobalHeader => "global extended header",
        _ => "non-regular entry",
    }
}

/// Copies `reader` to `out`, hashing it and seeking over all-zero blocks; returns the hex
/// sha256 and the byte count.
fn copy_sparse(reader: &mut impl Read, out: &mut std::fs::File) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut pending_hole = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let data = &buf[..filled];
        hasher.update(data);
        for block in data.chunks(SPARSE_BLOCK) {
            if block.iter().all(|&b| b == 0) {
                pending_hole += block.len() as u64;
            } else {
                if pending_hole > 0 {
                    out.seek(SeekFrom::Current(pending_hole as i64))?;
                    pending_hole = 0;
                }
                out.write_all(block)?;
            }
        }
        total += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    if pending_hole > 0 {
        out.set_len(total)?;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// What a layer is made from.
enum LayerSource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

struct PushedLayer {
    descriptor: OciDescriptor,
    /// sha256 of the file inside the layer.
    content_sha256: String,
    /// sha256 of the uncompressed tar (the OCI diff ID).
    tar_sha256: String,
}

/// Writes a one-file tar+gzip layer holding `source` as `name` to `out`; returns the hex
/// sha256 of the file content and of the uncompressed tar.
fn write_layer(name: &str, source: LayerSource, out: impl Write) -> std::io::Result<(String, String)> {
    let gz = GzEncoder::new(out, Compression::new(6));
    let mut builder = tar::Builder::new(HashingSyncWriter { inner: gz, hasher: Sha256::new() });
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let content_sha256 = match source {
        LayerSource::Bytes(bytes) => {
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            builder.append(&header, bytes.as_slice())?;
            hex::encode(Sha256::digest(&bytes))
        }
        LayerSource::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
            let size = file.metadata()?.len();
            header.set_size(size);
            header.set_cksum();
            let mut reader = HashingReader { inner: std::io::BufReader::with_capacity(CHUNK, file).take(size), hasher: Sha256::new(), count: 0 };
            builder.append(&header, &mut reader)?;
            if reader.count != size {
                return Err(std::io::Error::other(format!("{} shrank while being read", path.display())));
            }
            hex::encode(reader.hasher.finalize())
        }
    };
    let hashing = builder.into_inner()?;
    let tar_sha256 = hex::encode(hashing.hasher.finalize());
    let mut channel = hashing.inner.finish()?;
    channel.flush()?;
    Ok((content_sha256, tar_sha256))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

struct HashingSyncWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingSyncWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A blocking writer feeding an async upload stream in [`UPLOAD_CHUNK`]-sized pieces.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::result::Result<Bytes, OciDistributionError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(UPLOAD_CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other("upload aborted"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(UPLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// An async writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Hex sha256 and byte count.
    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.count += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The innermost cause of an error, which usually says what actually happened
/// ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    one_line(current)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    one_line_str(&e.to_string())
}

fn one_line_str(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn parse_locations() {
        let r = Registry::parse("http://127.0.0.1:5000/pyro").unwrap();
        assert!(r.is_insecure());
        assert_eq!((r.host(), r.namespace()), ("127.0.0.1:5000", "pyro"));
        let spec = catalog::lookup("debian:12-base").unwrap();
        assert_eq!(r.reference(spec), "127.0.0.1:5000/pyro/pyro-environment-debian-12-base:1.0.0");

        let r = Registry::parse("registry.example.com/team/images/").unwrap();
        assert!(!r.is_insecure());
        assert_eq!((r.host(), r.namespace()), ("registry.example.com", "team/images"));
        assert_eq!(r.repository(spec), "team/images/pyro-environment-debian-12-base");

        let r = Registry::parse("  HTTPS://Localhost:443 ").unwrap();
        assert!(!r.is_insecure());
        assert_eq!((r.host(), r.namespace()), ("localhost:443", ""));
        assert_eq!(r.reference(spec), "localhost:443/pyro-environment-debian-12-base:1.0.0");

        let r = Registry::parse("http://[::1]:5000").unwrap();
        assert_eq!(r.host(), "[::1]:5000");
        assert!(Registry::parse("http://[::1]").is_ok());
    }

    #[test]
    fn parse_rejects_bad_locations() {
        for (location, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("ftp://host", "unsupported scheme 'ftp://'"),
            ("http://", "no host"),
            ("http:///pyro", "no host"),
            ("user:pw@host", "unexpected '@'"),
            ("host:99999", "not a valid port"),
            ("host:0", "not a valid port"),
            ("host:", "not a valid port"),
            ("host:+5", "not a valid port"),
            ("bad_host", "not a valid host name"),
            ("-host", "not a valid host name"),
            ("host/Team", "namespace component 'Team'"),
            ("host/a//b", "namespace component ''"),
            ("host/a?x=1", "query strings"),
            ("[::1", "unterminated"),
            ("[zz]:5000", "not an IPv6 address"),
        ] {
            let err = Registry::parse(location).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{location}: {err:?}");
            let message = err.to_string();
            assert!(message.contains(needle), "{location}: {message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn repository_components() {
        for ok in ["a", "pyro", "a.b", "a_b", "a__b", "a---b", "0x1"] {
            assert!(is_repository_component(ok), "{ok}");
        }
        for bad in ["", "A", "a.", ".a", "a..b", "a___b", "a-_b", "a b"] {
            assert!(!is_repository_component(bad), "{bad}");
        }
    }

    /// A tar of raw entries: (path, type, content).
    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, content) in entries {
            let mut header = tar::Header::new_gnu();
            // Bypass `set_path`'s own checks so hostile names can be written.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.set_link_name("vmlinux").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn extract(bytes: &[u8]) -> (tempfile::TempDir, Result<ExtractedFile>) {
        let dir = tempfile::tempdir().unwrap();
        let result = extract_single_file(bytes, dir.path());
        (dir, result)
    }

    #[test]
    fn single_file_layers_extract() {
        let mut content = vec![0u8; 3 * SPARSE_BLOCK];
        content.extend_from_slice(b"kernel");
        content.extend(vec![0u8; 2 * SPARSE_BLOCK + 7]);
        let (dir, result) = extract(&tar_of(&[("vmlinux", tar::EntryType::Regular, &content)]));
        let file = result.unwrap();
        assert_eq!(file.name, "vmlinux");
        assert_eq!(file.size, content.len() as u64);
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(std::fs::read(dir.path().join("vmlinux")).unwrap(), content);
    }

    #[test]
    fn hostile_layers_are_rejected() {
        let regular = tar::EntryType::Regular;
        for (entries, needle) in [
            (vec![("../x", regular, &b"x"[..])], "not a plain file name"),
            (vec![("a/vmlinux", regular, &b"x"[..])], "not a plain file name"),
            (vec![("/vmlinux", regular, &b"x"[..])], "not a plain file name"),
            (vec![("..", regular, &b""[..])], "not a plain file name"),
            (vec![("vmlinux", regular, &b"x"[..]), ("rootfs.ext4", regular, &b"y"[..])], "more than one entry"),
            (vec![("vmlinux", tar::EntryType::Symlink, &b""[..])], "symbolic link"),
            (vec![("vmlinux", tar::EntryType::Link, &b""[..])], "hard link"),
            (vec![("vmlinux", tar::EntryType::Char, &b""[..])], "character device"),
            (vec![("dir", tar::EntryType::Directory, &b""[..])], "directory"),
            (vec![], "layer is empty"),
        ] {
            let (dir, result) = extract(&tar_of(&entries));
            let err = result.expect_err(needle);
            assert!(matches!(err, Error::Registry(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
            // Nothing escaped the extraction directory.
            assert!(!dir.path().parent().unwrap().join("x").exists());
        }
        let (_dir, result) = extract(b"this is not a tar archive at all, just some text padding it out to a block");
        assert!(result.is_err());
    }

    #[test]
    fn published_layers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("rootfs.ext4");
        let mut content = vec![0u8; 5 * CHUNK + 123];
        content[CHUNK + 5] = 42;
        std::fs::write(&source, &content).unwrap();

        let mut layer = Vec::new();
        let (content_sha, tar_sha) = write_layer("rootfs.ext4", LayerSource::File(source), &mut layer).unwrap();
        assert_eq!(content_sha, hex::encode(Sha256::digest(&content)));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.as_slice()).read_to_end(&mut tar).unwrap();
        assert_eq!(tar_sha, hex::encode(Sha256::digest(&tar)));

        let mut archive = tar::Archive::new(tar.as_slice());
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        let header = entry.header();
        assert_eq!((header.mtime().unwrap(), header.uid().unwrap(), header.gid().unwrap()), (0, 0, 0));
        assert_eq!(header.mode().unwrap(), 0o644);
        drop(entry);

        let blob = dir.path().join("blob");
        std::fs::write(&blob, &layer).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let file = extract_layer_file(&blob, true, &out).unwrap();
        assert_eq!((file.name.as_str(), file.sha256.as_str()), ("rootfs.ext4", content_sha.as_str()));
        assert_eq!(std::fs::read(out.join("rootfs.ext4")).unwrap(), content);

        // The same content always makes the same layer (so re-publishing dedupes).
        let mut again = Vec::new();
        write_layer("rootfs.ext4", LayerSource::Bytes(content), &mut again).unwrap();
        assert_eq!(again, layer);
    }

    #[test]
    fn digests_are_checked() {
        assert_eq!(parse_sha256_digest(&format!("sha256:{}", "A".repeat(64))), Some("a".repeat(64)));
        assert_eq!(parse_sha256_digest("sha512:abc"), None);
        assert_eq!(parse_sha256_digest("sha256:abc"), None);
        let body = b"{}";
        let good = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        assert_eq!(verify_manifest_digest(body, &good, Some(&good)).unwrap(), good);
        let err = verify_manifest_digest(body, &good, Some("sha256:00")).unwrap_err().to_string();
        assert!(err.starts_with("OCI manifest digest mismatch for sha256:00; got sha256:"), "{err}");
    }
}
