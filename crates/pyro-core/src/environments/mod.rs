//! The environment store: installed guest images (kernel + rootfs) under the cache dir.
//!
//! An install lives in `<cache>/environments/linux-x86_64/<name>-<version>/` and is
//! complete exactly when its `environment.json` parses and every artifact matches the
//! digest recorded there. Installs are staged in a `.partial-*` sibling and renamed into
//! place, so an interrupted pull never leaves something that looks installed.

mod build;
mod digest;
mod manifest;
pub mod oci;

use crate::env_vars;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use build::GUEST_AGENT_PATH;
pub use digest::{sha256_file, ArtifactRecord};
pub use manifest::{InstallManifest, ARTIFACT_FILES, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};

use crate::catalog::{self, EnvironmentSpec, CATALOG, CATALOG_VERSION, PLATFORM};
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, Progress};
use crate::fsutil::{lock_file, try_lock_file, unix_now};
use crate::paths::Dirs;

/// Prefix of staging directories.
const PARTIAL_PREFIX: &str = ".partial-";

/// Whether an environment can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "problem")]
pub enum InstallState {
    /// Complete and matching its digests.
    Installed,
    /// Nothing installed.
    NotInstalled,
    /// Something is there but unusable (missing artifact, digest mismatch, bad record).
    Corrupt(String),
}

/// Where a pull takes an environment from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PullSource {
    /// The configured registry when reachable, else a local build.
    #[default]
    Auto,
    /// The configured registry only.
    Registry,
    /// Build locally from Debian packages.
    Build,
}

/// The catalog as `env list --json` and `vm_list_environments` show it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentCatalog {
    /// Version of the catalog this build carries.
    pub catalog_version: &'static str,
    /// Every environment with its install state, in catalog order.
    pub environments: Vec<EnvironmentInfo>,
}

/// Options of [`EnvironmentStore::pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Reinstall even when a valid install exists.
    pub force: bool,
    /// Source selection.
    pub source: PullSource,
    /// Registry location overriding [`env_vars::ENV_REGISTRY`].
    pub registry: Option<String>,
}

/// Digest and location of one installed artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactInfo {
    /// Absolute path.
    pub path: PathBuf,
    /// Recorded sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Everything `env list` / `env inspect` report about one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvironmentInfo {
    /// Catalog entry.
    #[serde(flatten)]
    pub spec: EnvironmentSpec,
    /// Always [`PLATFORM`].
    pub platform: &'static str,
    /// Catalog version.
    pub catalog_version: &'static str,
    /// True when usable.
    pub installed: bool,
    /// Detailed state.
    #[serde(flatten)]
    pub state: InstallState,
    /// Root of the environment cache.
    pub cache_dir: PathBuf,
    /// Where this environment is (or would be) installed.
    pub install_dir: PathBuf,
    /// OCI repository name used by publish/pull.
    pub oci_repository: String,
    /// OCI tag used by publish/pull.
    pub oci_reference: &'static str,
    /// Install record path, when installed.
    pub install_manifest: Option<PathBuf>,
    /// Where the install came from, when installed.
    pub source: Option<String>,
    /// OCI manifest digest, when pulled from a registry.
    pub source_digest: Option<String>,
    /// Install time (Unix seconds), when installed.
    pub installed_at: Option<f64>,
    /// Kernel artifact, when installed.
    pub kernel: Option<ArtifactInfo>,
    /// Rootfs artifact, when installed.
    pub rootfs: Option<ArtifactInfo>,
}

/// Result of [`EnvironmentStore::pull`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullReport {
    /// The environment after the pull.
    #[serde(flatten)]
    pub info: EnvironmentInfo,
    /// True when a valid install already existed and nothing was done.
    pub already_installed: bool,
    /// Wall time of the pull.
    pub duration_ms: u64,
}

/// Result of [`EnvironmentStore::prune`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Names of deleted entries (directory names), sorted.
    pub deleted_environment_dirs: Vec<String>,
    /// Number of deleted entries.
    pub count: usize,
    /// Warm templates deleted with them (`<environment>/<template>`): those of removed or
    /// rebuilt environments, and interrupted builds.
    pub deleted_templates: Vec<String>,
}

/// An installed, verified environment ready to boot.
#[derive(Debug, Clone)]
pub struct InstalledEnvironment {
    /// Catalog entry.
    pub spec: &'static EnvironmentSpec,
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Base rootfs path (never modified by VMs).
    pub rootfs: PathBuf,
    /// Install record.
    pub manifest: InstallManifest,
}

/// The environment cache.
#[derive(Debug, Clone)]
pub struct EnvironmentStore {
    dirs: Dirs,
}

impl EnvironmentStore {
    /// A store rooted at `dirs.environments()`.
    pub fn new(dirs: Dirs) -> Self {
        Self { dirs }
    }

    fn root(&self) -> PathBuf {
        self.dirs.environments()
    }

    fn install_dir(&self, spec: &EnvironmentSpec) -> PathBuf {
        self.root().join(spec.install_dir_name())
    }

    /// All catalog environments with their install state (cheap check, no hashing of
    /// unchanged files).
    pub fn list(&self) -> Vec<EnvironmentInfo> {
        CATALOG.iter().map(|spec| self.describe(spec, false)).collect()
    }

    /// One environment; `verify` re-hashes every artifact.
    pub fn inspect(&self, name: &str, verify: bool) -> Result<EnvironmentInfo> {
        Ok(self.describe(catalog::lookup(name)?, verify))
    }

    /// The verified install of `name`, for booting.
    pub fn installed(&self, name: &str) -> Result<InstalledEnvironment> {
        let spec = catalog::lookup(name)?;
        let dir = self.install_dir(spec);
        let manifest = match self.check(spec, false) {
            (InstallState::Installed, Some(manifest)) => manifest,
            (InstallState::NotInstalled, _) => return Err(Error::NotInstalled(format!("environment '{name}' is not installed; run `pyro env pull {name}`"))),
            (InstallState::Corrupt(problem), _) => {
                return Err(Error::Corrupt(format!("environment '{name}' is unusable: {problem}; run `pyro env pull {name} --force`")))
            }
            (InstallState::Installed, None) => unreachable!("an installed environment always has a manifest"),
        };
        Ok(InstalledEnvironment { spec, kernel: dir.join(KERNEL_FILE), rootfs: dir.join(ROOTFS_FILE), manifest })
    }

    fn describe(&self, spec: &'static EnvironmentSpec, verify: bool) -> EnvironmentInfo {
        let dir = self.install_dir(spec);
        let (state, manifest) = self.check(spec, verify);
        let installed = state == InstallState::Installed;
        let manifest = manifest.filter(|_| installed);
        let artifact = |file: &str| {
            manifest.as_ref().and_then(|m| m.artifacts.get(file)).map(|rec| ArtifactInfo {
                path: dir.join(file),
                sha256: rec.sha256.clone(),
                size_bytes: rec.size_bytes,
            })
        };
        EnvironmentInfo {
            spec: spec.clone(),
            platform: PLATFORM,
            catalog_version: CATALOG_VERSION,
            installed,
            cache_dir: self.root(),
            install_dir: dir.clone(),
            oci_repository: spec.oci_repository(),
            oci_reference: spec.version,
            install_manifest: manifest.as_ref().map(|_| dir.join(MANIFEST_FILE)),
            source: manifest.as_ref().map(|m| m.source.clone()),
            source_digest: manifest.as_ref().and_then(|m| m.source_digest.clone()),
            installed_at: manifest.as_ref().map(|m| m.installed_at),
            kernel: artifact(KERNEL_FILE),
            rootfs: artifact(ROOTFS_FILE),
            state,
        }
    }

    /// Decides the install state of `spec`; with `deep` every artifact is re-hashed,
    /// otherwise only artifacts whose inode/size/mtime changed.
    fn check(&self, spec: &EnvironmentSpec, deep: bool) -> (InstallState, Option<InstallManifest>) {
        let dir = self.install_dir(spec);
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return if dir.exists() {
                (InstallState::Corrupt("install directory has no environment.json (interrupted install?)".into()), None)
            } else {
                (InstallState::NotInstalled, None)
            };
        }
        let manifest = match InstallManifest::load(&manifest_path) {
            Ok(m) => m,
            Err(e) => return (InstallState::Corrupt(e.to_string()), None),
        };
        if manifest.name != spec.name || manifest.version != spec.version {
            let problem = format!("install record names {} {}, expected {} {}", manifest.name, manifest.version, spec.name, spec.version);
            return (InstallState::Corrupt(problem), Some(manifest));
        }
        for file in ARTIFACT_FILES {
            let path = dir.join(file);
            let Some(record) = manifest.artifacts.get(file) else {
                return (InstallState::Corrupt(format!("install record has no digest for {file}")), Some(manifest));
            };
            if !path.is_file() {
                return (InstallState::Corrupt(format!("{file} is missing")), Some(manifest));
            }
            if !deep && record.unchanged(&path) {
                continue;
            }
            match sha256_file(&path) {
                Ok(actual) if actual == record.sha256 => {}
                Ok(actual) => {
                    let err = Error::DigestMismatch { environment: spec.name.into(), artifact: file.into(), expected: record.sha256.clone(), actual };
                    return (InstallState::Corrupt(err.to_string()), Some(manifest));
                }
                Err(e) => return (InstallState::Corrupt(e.to_string()), Some(manifest)),
            }
        }
        (InstallState::Installed, Some(manifest))
    }

    /// Installs `name` (from a registry or by building locally) unless a valid install
    /// exists. Concurrent pulls of one environment serialise on a lock file.
    pub async fn pull(&self, name: &str, options: &PullOptions, progress: Progress<'_>) -> Result<PullReport> {
        let started = Instant::now();
        let spec = catalog::lookup(name)?;
        let root = self.root();
        std::fs::create_dir_all(&root).ctx("create", &root)?;
        progress(&Event::PullInstall { environment: spec.name.into() });
        let _lock = lock_file(&root.join(format!(".{}.lock", spec.install_dir_name())))?;
        if let (InstallState::Installed, Some(manifest)) = self.check(spec, false) {
            if !options.force && !stale_local_build(&manifest) {
                return Ok(PullReport { info: self.describe(spec, false), already_installed: true, duration_ms: elapsed_ms(started) });
            }
            if !options.force {
                progress(&Event::PullAgentChanged { environment: spec.name.into() });
            }
        }
        let staging = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", spec.install_dir_name()))
            .tempdir_in(&root)
            .ctx("create staging directory in", &root)?;
        let (source, source_digest) = self.fill(spec, options, staging.path(), progress).await?;
        let manifest = InstallManifest {
            catalog_version: CATALOG_VERSION.into(),
            name: spec.name.into(),
            version: spec.version.into(),
            source,
            source_digest,
            installed_at: unix_now(),
            agent_sha256: build::agent_digest_in(staging.path())?,
            artifacts: InstallManifest::record_artifacts(staging.path())?,
        };
        manifest.store(&staging.path().join(MANIFEST_FILE))?;
        replace_dir(&staging.keep(), &self.install_dir(spec))?;
        progress(&Event::PullReady { environment: spec.name.into() });
        Ok(PullReport { info: self.describe(spec, false), already_installed: false, duration_ms: elapsed_ms(started) })
    }

    /// Puts the artifacts of `spec` into `staging`; returns the source label and digest.
    async fn fill(&self, spec: &'static EnvironmentSpec, options: &PullOptions, staging: &Path, progress: Progress<'_>) -> Result<(String, Option<String>)> {
        let location = options.registry.clone().or_else(|| std::env::var(env_vars::ENV_REGISTRY).ok()).filter(|s| !s.trim().is_empty());
        if options.source != PullSource::Build {
            match location {
                Some(location) => {
                    let registry = oci::Registry::parse(&location)?;
                    match registry.probe().await {
                        Ok(()) => {
                            progress(&Event::PullDownload { environment: spec.name.into(), registry: location.clone() });
                            let pulled = registry.pull_into(spec, staging, progress).await?;
                            return Ok((pulled.source, Some(pulled.digest)));
                        }
                        Err(e) if options.source == PullSource::Registry => return Err(e),
                        Err(e) => progress(&Event::PullRegistryUnavailable { reason: e.to_string() }),
                    }
                }
                None if options.source == PullSource::Registry => {
                    return Err(Error::InvalidArgument(format!(
                        "no registry configured; set {env_registry_var} or pass --registry",
                        env_registry_var = env_vars::ENV_REGISTRY
                    )))
                }
                None => {}
            }
        }
        progress(&Event::PullBuild { environment: spec.name.into() });
        build::build_into(&self.dirs, spec, staging, progress).await?;
        Ok((build::LOCAL_BUILD_SOURCE.into(), None))
    }

    /// Deletes interrupted installs, unknown or outdated environment directories and
    /// unusable installs.
    pub fn prune(&self) -> Result<PruneReport> {
        let root = self.root();
        let mut deleted = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PruneReport { deleted_environment_dirs: vec![], count: 0, deleted_templates: vec![] })
            }
            Err(e) => return Err(Error::io("read", &root, e)),
        };
        for entry in entries {
            let entry = entry.ctx("read", &root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !path.is_dir() || name.ends_with(".lock") {
                continue;
            }
            let keep = CATALOG.iter().any(|spec| spec.install_dir_name() == name && self.check(spec, false).0 == InstallState::Installed);
            if keep {
                continue;
            }
            if !name.starts_with(PARTIAL_PREFIX) {
                // An install being replaced right now holds its lock; leave it alone.
                if let Some(spec) = CATALOG.iter().find(|s| s.install_dir_name() == name) {
                    let Ok(Some(_lock)) = try_lock_file(&root.join(format!(".{}.lock", spec.install_dir_name()))) else { continue };
                    if self.check(spec, false).0 == InstallState::Installed {
                        continue;
                    }
                }
            } else if partial_in_use(&root, &name) {
                continue;
            }
            std::fs::remove_dir_all(&path).ctx("remove", &path)?;
            deleted.push(name);
        }
        deleted.sort();
        Ok(PruneReport { count: deleted.len(), deleted_environment_dirs: deleted, deleted_templates: vec![] })
    }

    /// Publishes the installed `name` to the registry at `location`.
    pub async fn publish(&self, name: &str, location: &str, progress: Progress<'_>) -> Result<oci::Published> {
        let installed = self.installed(name)?;
        let registry = oci::Registry::parse(location)?;
        registry.publish(installed.spec, &self.install_dir(installed.spec), progress).await
    }
}

/// A local build whose baked-in agent differs from the agent this pyro would bake now
/// (after an upgrade or a rebuild of `pyro-agent`). Registry installs are left alone: the
/// protocol version check at boot guards those.
fn stale_local_build(manifest: &InstallManifest) -> bool {
    manifest.source == build::LOCAL_BUILD_SOURCE
        && crate::paths::agent_binary().and_then(|agent| sha256_file(&agent)).map(|current| current != manifest.agent_sha256).unwrap_or(false)
}

/// Whether a `.partial-<env>-*` directory belongs to a pull that still holds its lock.
fn partial_in_use(root: &Path, partial_name: &str) -> bool {
    CATALOG
        .iter()
        .find(|s| partial_name.starts_with(&format!("{PARTIAL_PREFIX}{}-", s.install_dir_name())))
        .map(|s| !matches!(try_lock_file(&root.join(format!(".{}.lock", s.install_dir_name()))), Ok(Some(_))))
        .unwrap_or(false)
}

/// Moves `staged` to `target`, replacing whatever is there, with no moment where a
/// half-written directory sits at `target`.
fn replace_dir(staged: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        let trash = target.with_file_name(format!("{PARTIAL_PREFIX}old-{}", std::process::id()));
        std::fs::rename(target, &trash).ctx("move aside", target)?;
        std::fs::rename(staged, target).ctx("install", target)?;
        std::fs::remove_dir_all(&trash).ctx("remove", &trash)?;
    } else {
        std::fs::rename(staged, target).ctx("install", target)?;
    }
    Ok(())
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
