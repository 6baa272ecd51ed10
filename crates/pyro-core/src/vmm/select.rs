//! Backend choice. An explicit override (`--backend`, `$PYRO_BACKEND`) wins; otherwise
//! Firecracker when installed and KVM really boots a guest, else QEMU with KVM, else QEMU
//! with TCG. "KVM really boots" is learned by booting our kernel once under QEMU/KVM and
//! cached per host kernel, guest kernel and QEMU version — `/dev/kvm` existing proves
//! nothing (nested hypervisors expose it without being able to run a guest).

use crate::env_vars;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{firecracker, qemu, BackendKind};
use crate::error::{Error, Result};

/// Access to `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvmAccess {
    /// The device node exists.
    pub exists: bool,
    /// We may read it.
    pub readable: bool,
    /// We may write it.
    pub writable: bool,
}

impl KvmAccess {
    /// Probes `/dev/kvm`.
    pub fn probe() -> Self {
        let path = c"/dev/kvm";
        // SAFETY: `access` only reads the NUL-terminated path.
        let ok = |mode| unsafe { libc::access(path.as_ptr(), mode) == 0 };
        Self { exists: Path::new("/dev/kvm").exists(), readable: ok(libc::R_OK), writable: ok(libc::W_OK) }
    }

    /// Readable and writable.
    pub fn usable(&self) -> bool {
        self.exists && self.readable && self.writable
    }
}

/// The cached outcome of booting our kernel under QEMU/KVM on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvmBootCheck {
    /// `uname -r` of the host.
    pub host_kernel: String,
    /// sha256 of the guest kernel booted.
    pub guest_kernel_sha256: String,
    /// QEMU version used.
    pub qemu_version: String,
    /// The guest agent answered.
    pub boots: bool,
    /// What happened.
    pub detail: String,
    /// The boot neither answered nor failed within the deadline (a slow or loaded host
    /// looks the same as a broken KVM): not a verdict, so it is redone after
    /// [`INCONCLUSIVE_RECHECK_SECONDS`].
    #[serde(default)]
    pub inconclusive: bool,
    /// Unix seconds when the check ran.
    #[serde(default)]
    pub checked_at: f64,
}

/// How long a timed-out (inconclusive) KVM check is trusted before it is redone.
pub const INCONCLUSIVE_RECHECK_SECONDS: f64 = 24.0 * 3600.0;

/// Where VMM versions are remembered, beside the KVM check in the cache.
const VERSIONS_FILE: &str = "vmm-versions.json";

/// The `--version` line of the binary at `path`, asked once per (path, size, mtime) and
/// remembered in the file `versions`: running a VMM to ask costs ~20 ms on every start.
fn cached_version(versions: &Path, path: &Path, ask: impl FnOnce() -> Result<String>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let stamp = format!("{}:{}.{}", meta.len(), meta.mtime(), meta.mtime_nsec());
    let key = path.display().to_string();
    let mut known: std::collections::BTreeMap<String, (String, String)> =
        std::fs::read(versions).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    if let Some((seen, version)) = known.get(&key) {
        if *seen == stamp {
            return Some(version.clone());
        }
    }
    let version = ask().ok()?;
    known.insert(key, (stamp, version.clone()));
    if let Ok(json) = serde_json::to_vec(&known) {
        let _ = crate::fsutil::write_atomic(versions, &json);
    }
    Some(version)
}

/// A located VMM binary and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binary {
    /// Path of the executable.
    pub path: PathBuf,
    /// Version line it reports.
    pub version: String,
}

/// What the host offers.
#[derive(Debug, Clone, Serialize)]
pub struct HostProbe {
    /// `/dev/kvm` access.
    pub kvm: KvmAccess,
    /// Firecracker, if found.
    pub firecracker: Option<Binary>,
    /// QEMU, if found.
    pub qemu: Option<Binary>,
    /// Cached KVM boot check, if one has run for this host and kernel.
    pub kvm_boot: Option<KvmBootCheck>,
}

/// The backend chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Chosen backend.
    pub backend: BackendKind,
    /// One-line reason.
    pub reason: String,
}

impl HostProbe {
    /// Probes binaries and KVM; `kvm_boot` comes from the cache file for `guest_kernel`.
    pub fn probe(cache_file: &Path, guest_kernel_sha256: Option<&str>) -> Self {
        let versions = cache_file.with_file_name(VERSIONS_FILE);
        let firecracker = firecracker::locate().and_then(|path| {
            let version = cached_version(&versions, &path, || firecracker::Firecracker::new(path.clone()).version())?;
            Some(Binary { path, version })
        });
        let qemu = qemu::locate().and_then(|path| {
            let version = cached_version(&versions, &path, || qemu::Qemu::new(path.clone(), qemu::Accel::Tcg).version())?;
            Some(Binary { path, version })
        });
        let kvm_boot = guest_kernel_sha256.and_then(|sha| {
            let check: KvmBootCheck = serde_json::from_slice(&std::fs::read(cache_file).ok()?).ok()?;
            let current = qemu.as_ref().map(|q| q.version.as_str()).unwrap_or("");
            let fresh = !check.inconclusive || crate::fsutil::unix_now() - check.checked_at < INCONCLUSIVE_RECHECK_SECONDS;
            (check.host_kernel == host_kernel_release() && check.guest_kernel_sha256 == sha && check.qemu_version == current && fresh).then_some(check)
        });
        Self { kvm: KvmAccess::probe(), firecracker, qemu, kvm_boot }
    }

    /// True when a KVM boot check ran here and the guest answered.
    pub fn kvm_boots(&self) -> bool {
        self.kvm.usable() && self.kvm_boot.as_ref().map(|c| c.boots).unwrap_or(false)
    }

    /// Whether a KVM boot check is still needed before choosing.
    pub fn needs_kvm_check(&self) -> bool {
        self.kvm.usable() && self.qemu.is_some() && self.kvm_boot.is_none()
    }

    /// Chooses a backend. `requested` is the explicit override, if any.
    pub fn choose(&self, requested: Option<BackendKind>) -> Result<Selection> {
        if let Some(kind) = requested {
            let available = match kind {
                BackendKind::Firecracker => self.firecracker.is_some() && self.kvm.usable(),
                BackendKind::QemuKvm => self.qemu.is_some() && self.kvm.usable(),
                BackendKind::QemuTcg => self.qemu.is_some(),
                BackendKind::HostCompat => true,
            };
            if !available {
                return Err(Error::Unavailable(format!("backend {} was requested but is not available on this host (see `pyro doctor`)", kind.name())));
            }
            return Ok(Selection { backend: kind, reason: format!("requested explicitly ({backend_var} or --backend)", backend_var = env_vars::BACKEND) });
        }
        let kvm_detail = match (&self.kvm_boot, self.kvm.usable()) {
            (_, false) => "/dev/kvm is not usable".to_string(),
            (Some(check), true) => check.detail.clone(),
            (None, true) => "KVM boot not verified yet".to_string(),
        };
        if self.kvm_boots() {
            if self.firecracker.is_some() {
                return Ok(Selection { backend: BackendKind::Firecracker, reason: "Firecracker is installed and KVM boots guests".into() });
            }
            if self.qemu.is_some() {
                return Ok(Selection { backend: BackendKind::QemuKvm, reason: "KVM boots guests; Firecracker is not installed".into() });
            }
        }
        if self.qemu.is_some() {
            return Ok(Selection {
                backend: BackendKind::QemuTcg,
                reason: format!("KVM cannot be used ({kvm_detail}); QEMU software emulation (TCG) still runs a real guest kernel"),
            });
        }
        Err(Error::Unavailable("no VM backend available: install qemu-system-x86 (scripts/setup.sh does) or Firecracker on a host with working KVM".into()))
    }
}

/// Parses the override from `$PYRO_BACKEND`, if set.
pub fn backend_from_env() -> Result<Option<BackendKind>> {
    match std::env::var(env_vars::BACKEND) {
        Ok(name) if !name.trim().is_empty() => name.trim().parse().map(Some),
        _ => Ok(None),
    }
}

/// `uname -r` of the host.
pub fn host_kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kvm: bool, fc: bool, qemu: bool, boots: Option<bool>) -> HostProbe {
        let bin = |p: &str| Binary { path: p.into(), version: "v".into() };
        HostProbe {
            kvm: KvmAccess { exists: kvm, readable: kvm, writable: kvm },
            firecracker: fc.then(|| bin("/fc")),
            qemu: qemu.then(|| bin("/q")),
            kvm_boot: boots.map(|b| KvmBootCheck {
                host_kernel: "h".into(),
                guest_kernel_sha256: "k".into(),
                qemu_version: "v".into(),
                boots: b,
                detail: if b { "ok".into() } else { "guest never answered under KVM".into() },
                inconclusive: false,
                checked_at: 0.0,
            }),
        }
    }

    #[test]
    fn dev_kvm_alone_is_not_enough() {
        let s = probe(true, true, true, Some(false)).choose(None).unwrap();
        assert_eq!(s.backend, BackendKind::QemuTcg);
        assert!(s.reason.contains("guest never answered"), "{}", s.reason);
        assert_eq!(probe(true, true, true, None).choose(None).unwrap().backend, BackendKind::QemuTcg);
    }

    #[test]
    fn firecracker_first_when_kvm_boots() {
        assert_eq!(probe(true, true, true, Some(true)).choose(None).unwrap().backend, BackendKind::Firecracker);
        assert_eq!(probe(true, false, true, Some(true)).choose(None).unwrap().backend, BackendKind::QemuKvm);
    }

    #[test]
    fn override_must_be_available() {
        assert!(probe(false, true, true, None).choose(Some(BackendKind::Firecracker)).is_err());
        assert_eq!(probe(false, false, true, None).choose(Some(BackendKind::QemuTcg)).unwrap().backend, BackendKind::QemuTcg);
        assert!(probe(false, false, false, None).choose(None).is_err());
        assert!("vmware".parse::<BackendKind>().unwrap_err().to_string().contains("expected one of"));
    }
}
