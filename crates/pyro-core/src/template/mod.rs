//! Warm templates: a guest booted once per (environment, backend, vCPUs, memory, disk
//! layout) to its agent's hello and saved whole, so that `run`, `vm start`, `workspace
//! create` and `reset` restore it (≈0.1 s here) instead of booting a kernel (≈1.3 s).
//!
//! A template lives in the cache at `templates/<platform>/<environment>/<key digest>/`:
//! `state.bin` (the saved state), the disk the state was saved with, and
//! `template.json` (its [`TemplateKey`], the state's digest and size). It is built in a
//! staging directory under a per-key lock and renamed into place, so concurrent first
//! starts build one template and an interrupted build leaves nothing a later start would
//! use. Its files are read-only and never opened by a VMM: pyro copies the disk and
//! streams the state, checking the digest as it goes.

mod build;
mod key;
mod record;
mod spec;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::key::TemplateKey;
pub use self::record::TemplateMeta;
use self::spec::STATE_FILE;
pub use self::spec::{TemplateFor, TemplateKind};
use crate::environments::{EnvironmentStore, InstalledEnvironment};
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, Progress};
use crate::fsutil::{lock_file, try_lock_file};
use crate::paths::Dirs;
use crate::vmm::{BackendKind, RestoreFrom};

const META_FILE: &str = "template.json";
const STAGING_PREFIX: &str = ".build-";

/// Whether starts may restore templates: not when `PYRO_WARM_START=0`.
pub fn warm_start_enabled() -> bool {
    std::env::var(crate::env_vars::WARM_START).map(|v| v.trim() != "0").unwrap_or(true)
}

/// Whether `backend` has warm templates (QEMU; Firecracker's snapshots are not wired up,
/// since no Firecracker guest boots on the hosts this was built on).
pub fn backend_supports(backend: BackendKind) -> bool {
    matches!(backend, BackendKind::QemuTcg | BackendKind::QemuKvm)
}

/// A ready template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its directory.
    pub dir: PathBuf,
    /// Its record.
    pub meta: TemplateMeta,
}

impl Template {
    /// The disk the state was saved with (copy it; never use it in place).
    pub fn disk(&self) -> PathBuf {
        self.dir.join(self.meta.key.kind.disk_file())
    }

    /// How a VM restores this template; `cold_base` is what a cold boot re-creates an
    /// overlay disk on, should the restore fail.
    pub fn restore_from(&self, cold_base: Option<&Path>) -> RestoreFrom {
        RestoreFrom {
            template_dir: self.dir.clone(),
            state: self.dir.join(STATE_FILE),
            state_sha256: self.meta.state_sha256.clone(),
            state_bytes: self.meta.state_bytes,
            cold_base: cold_base.map(Path::to_path_buf),
        }
    }

    /// Loads the template in `dir` if it is complete and built from exactly `key`.
    fn load(dir: &Path, key: &TemplateKey) -> Option<Self> {
        let meta: TemplateMeta = serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()?;
        let state_ok = std::fs::metadata(dir.join(STATE_FILE)).is_ok_and(|m| m.len() == meta.state_bytes);
        let template = Self { dir: dir.to_path_buf(), meta };
        (template.meta.key == *key && state_ok && template.disk().is_file()).then_some(template)
    }
}

/// One template on disk, as `pyro doctor` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateInfo {
    /// Environment name.
    pub environment: String,
    /// Backend name.
    pub backend: &'static str,
    /// Disk layout.
    pub kind: &'static str,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Saved state size.
    pub state_bytes: u64,
    /// Its directory.
    pub path: PathBuf,
}

/// The templates in the cache.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dirs: Dirs,
}

impl TemplateStore {
    /// The store under `dirs.cache`.
    pub fn new(dirs: Dirs) -> Self {
        Self { dirs }
    }

    fn root(&self) -> PathBuf {
        self.dirs.cache.join("templates").join(crate::catalog::PLATFORM)
    }

    fn environment_dir(&self, installed: &InstalledEnvironment) -> PathBuf {
        self.root().join(installed.spec.install_dir_name())
    }

    /// The ready template for `spec`, if one exists (never builds).
    pub fn find(&self, spec: &TemplateFor<'_>) -> Result<Option<Template>> {
        let key = TemplateKey::for_spec(spec)?;
        Ok(Template::load(&self.environment_dir(spec.installed).join(key.digest()), &key))
    }

    /// The template for `spec`, built first if there is none (one build at a time per
    /// key: concurrent callers wait for it and then share it).
    pub async fn ensure(&self, spec: &TemplateFor<'_>, progress: Progress<'_>) -> Result<Template> {
        let key = TemplateKey::for_spec(spec)?;
        let digest = key.digest();
        let parent = self.environment_dir(spec.installed);
        let dir = parent.join(&digest);
        if let Some(template) = Template::load(&dir, &key) {
            return Ok(template);
        }
        std::fs::create_dir_all(&parent).ctx("create", &parent)?;
        let lock_path = parent.join(format!(".{digest}.lock"));
        let _lock = tokio::task::spawn_blocking(move || lock_file(&lock_path)).await.map_err(|e| Error::Vmm(format!("template lock wait failed: {e}")))??;
        if let Some(template) = Template::load(&dir, &key) {
            return Ok(template);
        }
        // Holding the lock: anything else under this key is an unusable leftover.
        remove_leftovers(&parent, &digest);
        let staging = parent.join(format!("{STAGING_PREFIX}{digest}-{}", std::process::id()));
        std::fs::create_dir(&staging).ctx("create", &staging)?;
        progress(&Event::TemplateBuild { environment: key.environment.clone(), vcpu_count: key.vcpu_count, mem_mib: key.mem_mib, kind: key.kind.name() });
        let built = async {
            let meta = build::build(spec, &key, &staging).await?;
            seal(&staging, &meta)?;
            std::fs::rename(&staging, &dir).ctx("install", &dir)?;
            Ok::<_, Error>(meta)
        }
        .await;
        let meta = match built {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        progress(&Event::TemplateReady { environment: key.environment.clone(), build_ms: meta.build_ms, state_bytes: meta.state_bytes });
        remove_outdated(&parent, &key);
        Ok(Template { dir, meta })
    }

    /// The template a start should restore, or `None` for a cold boot: when `cold` is
    /// asked for, warm starts are off ([`warm_start_enabled`]), the backend has no
    /// templates, or the template cannot be built (said in one warning; the boot goes on).
    pub async fn warm(&self, spec: &TemplateFor<'_>, cold: bool, progress: Progress<'_>) -> Option<Template> {
        if cold || !warm_start_enabled() || !backend_supports(spec.backend) {
            return None;
        }
        match self.ensure(spec, progress).await {
            Ok(template) => Some(template),
            Err(e) => {
                tracing::warn!("no warm template ({e}); booting cold");
                None
            }
        }
    }

    /// Every template in the cache.
    pub fn list(&self) -> Vec<TemplateInfo> {
        let mut out = Vec::new();
        for dir in subdirs(&self.root()).into_iter().flat_map(|env| subdirs(&env)) {
            let Some(meta) = read_meta(&dir) else { continue };
            out.push(TemplateInfo {
                environment: meta.key.environment.clone(),
                backend: meta.key.backend.name(),
                kind: meta.key.kind.name(),
                vcpu_count: meta.key.vcpu_count,
                mem_mib: meta.key.mem_mib,
                state_bytes: meta.state_bytes,
                path: dir,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Removes templates whose environment is gone or was rebuilt since, unreadable
    /// ones, and interrupted builds; returns what was removed (`<environment>/<name>`).
    pub fn prune(&self, environments: &EnvironmentStore) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for env_dir in subdirs(&self.root()) {
            let env_name = env_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let installed =
                crate::catalog::CATALOG.iter().find(|spec| spec.install_dir_name() == env_name).and_then(|spec| environments.installed(spec.name).ok());
            for dir in subdirs(&env_dir) {
                let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let keep = if name.starts_with('.') {
                    // An interrupted build or a discarded template: kept only while a
                    // build holds its key's lock.
                    build_in_progress(&env_dir, &name)
                } else {
                    read_meta(&dir).is_some_and(|meta| installed.as_ref().is_some_and(|i| built_from(&meta.key, i)))
                };
                if !keep {
                    std::fs::remove_dir_all(&dir).ctx("remove", &dir)?;
                    removed.push(format!("{env_name}/{name}"));
                }
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// Whether `key` was built from the environment as installed now.
fn built_from(key: &TemplateKey, installed: &InstalledEnvironment) -> bool {
    let digest = |file: &str| installed.manifest.artifacts.get(file).map(|a| a.sha256.as_str()).unwrap_or_default();
    key.kernel_sha256 == digest(crate::environments::KERNEL_FILE)
        && key.rootfs_sha256 == digest(crate::environments::ROOTFS_FILE)
        && key.agent_sha256 == installed.manifest.agent_sha256
}

fn read_meta(dir: &Path) -> Option<TemplateMeta> {
    serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// Whether the staging directory `name` belongs to a build that still holds its lock.
fn build_in_progress(env_dir: &Path, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(STAGING_PREFIX) else { return false };
    let digest = rest.split('-').next().unwrap_or("");
    !matches!(try_lock_file(&env_dir.join(format!(".{digest}.lock"))), Ok(Some(_)))
}

/// Makes the template's files read-only and records it, durably, before it is renamed
/// into place.
fn seal(staging: &Path, meta: &TemplateMeta) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let json = serde_json::to_vec_pretty(meta).expect("template record serialises");
    let record = staging.join(META_FILE);
    std::fs::write(&record, json).ctx("write", &record)?;
    for file in [record.clone(), staging.join(STATE_FILE), staging.join(meta.key.kind.disk_file())] {
        let handle = std::fs::File::open(&file).ctx("open", &file)?;
        handle.sync_all().ctx("sync", &file)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).ctx("set permissions of", &file)?;
    }
    Ok(())
}

/// Removes, under the key's lock, what an earlier build of `digest` left behind.
fn remove_leftovers(parent: &Path, digest: &str) {
    for dir in subdirs(parent) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name == digest || name.starts_with(&format!("{STAGING_PREFIX}{digest}-")) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Removes the templates of this environment built from an older install of it.
fn remove_outdated(parent: &Path, key: &TemplateKey) {
    for dir in subdirs(parent) {
        let Some(meta) = read_meta(&dir) else { continue };
        let same_install =
            meta.key.kernel_sha256 == key.kernel_sha256 && meta.key.rootfs_sha256 == key.rootfs_sha256 && meta.key.agent_sha256 == key.agent_sha256;
        if !same_install {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
