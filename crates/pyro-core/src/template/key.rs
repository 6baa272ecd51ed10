//! What shapes a warm template: everything that, changed, makes a saved guest state
//! wrong for a new VM. Two keys are equal exactly when one template serves both.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::spec::{TemplateFor, TemplateKind};
use crate::environments::{KERNEL_FILE, ROOTFS_FILE};
use crate::error::{Error, Result};
use crate::vmm::qemu::{Accel, Qemu};
use crate::vmm::{BackendKind, LaunchSpec};

/// The inputs of a template, recorded in it and compared whole before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateKey {
    /// Environment name and version.
    pub environment: String,
    /// Environment version.
    pub environment_version: String,
    /// Digest of the guest kernel.
    pub kernel_sha256: String,
    /// Digest of the base rootfs (which holds the guest agent).
    pub rootfs_sha256: String,
    /// Digest of the guest agent baked into it.
    pub agent_sha256: String,
    /// Backend (VMM and acceleration).
    pub backend: BackendKind,
    /// Which disk layout the template was saved on.
    pub kind: TemplateKind,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// The VMM binary: path, size and modification time (a reinstalled or upgraded VMM
    /// makes a new template).
    pub vmm_binary: String,
    /// Digest of the host CPU's model and feature flags.
    pub host_cpu: String,
    /// The pyro build (the host side of the saved agent channel).
    pub pyro_version: String,
    /// The VMM's full argument list for a VM in a canonical directory: machine options,
    /// devices, kernel command line.
    pub vmm_args: Vec<String>,
}

/// The canonical VM directory the key's argument list is computed for.
const CANONICAL_DIR: &str = "/pyro-template";

impl TemplateKey {
    /// The key of `spec` on this host; fails when the backend has no warm templates or
    /// its VMM is missing.
    pub fn for_spec(spec: &TemplateFor<'_>) -> Result<Self> {
        let qemu = qemu_for(spec.backend)?;
        let digest = |file: &str| spec.installed.manifest.artifacts.get(file).map(|a| a.sha256.clone()).unwrap_or_default();
        let vm_dir = PathBuf::from(CANONICAL_DIR);
        let launch = LaunchSpec {
            disk: vm_dir.join(spec.kind.disk_file()),
            vm_dir,
            kernel: spec.installed.kernel.clone(),
            vcpu_count: spec.vcpu_count,
            mem_mib: spec.mem_mib,
            debug_console: false,
            restore: None,
            network: spec.network,
        };
        let binary = qemu.binary();
        let meta = std::fs::metadata(binary).map_err(|e| Error::io("inspect", binary, e))?;
        Ok(Self {
            environment: spec.installed.spec.name.into(),
            environment_version: spec.installed.spec.version.into(),
            kernel_sha256: digest(KERNEL_FILE),
            rootfs_sha256: digest(ROOTFS_FILE),
            agent_sha256: spec.installed.manifest.agent_sha256.clone(),
            backend: spec.backend,
            kind: spec.kind,
            vcpu_count: spec.vcpu_count,
            mem_mib: spec.mem_mib,
            vmm_binary: format!("{}:{}:{}", binary.display(), meta.len(), meta.mtime_nsec() + meta.mtime() * 1_000_000_000),
            host_cpu: host_cpu_digest(),
            pyro_version: env!("CARGO_PKG_VERSION").into(),
            vmm_args: qemu.args(&launch),
        })
    }

    /// A short stable name for the key (the template's directory name).
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("key serialises");
        hex::encode(&Sha256::digest(&json)[..8])
    }
}

/// The QEMU of a backend that has warm templates.
pub(crate) fn qemu_for(backend: BackendKind) -> Result<Qemu> {
    let accel = match backend {
        BackendKind::QemuTcg => Accel::Tcg,
        BackendKind::QemuKvm => Accel::Kvm,
        other => return Err(Error::Unavailable(format!("warm templates are not built for the {} backend", other.name()))),
    };
    let binary = crate::vmm::qemu::locate().ok_or_else(|| Error::Vmm("qemu-system-x86_64 is not installed".into()))?;
    Ok(Qemu::new(binary, accel))
}

/// The model name and feature flags of the host CPU, digested: a state saved on one CPU
/// is not restored on another.
fn host_cpu_digest() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let wanted = |l: &&str| l.starts_with("model name") || l.starts_with("flags") || l.starts_with("vendor_id");
    let first_cpu: Vec<&str> = cpuinfo.split("\n\n").next().unwrap_or("").lines().filter(wanted).collect();
    hex::encode(&Sha256::digest(first_cpu.join("\n").as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TemplateKey {
        TemplateKey {
            environment: "debian:12-base".into(),
            environment_version: "1.0.0".into(),
            kernel_sha256: "k".into(),
            rootfs_sha256: "r".into(),
            agent_sha256: "a".into(),
            backend: BackendKind::QemuTcg,
            kind: TemplateKind::Ephemeral,
            vcpu_count: 1,
            mem_mib: 1024,
            vmm_binary: "/usr/bin/qemu-system-x86_64:1:2".into(),
            host_cpu: "c".into(),
            pyro_version: "3.11.0".into(),
            vmm_args: vec!["-m".into(), "1024M".into()],
        }
    }

    #[test]
    fn every_input_changes_the_digest() {
        let base = key();
        assert_eq!(base.digest(), key().digest(), "stable");
        assert_eq!(base.digest().len(), 16);
        let changes: [fn(&mut TemplateKey); 10] = [
            |k| k.rootfs_sha256 = "r2".into(),
            |k| k.kernel_sha256 = "k2".into(),
            |k| k.agent_sha256 = "a2".into(),
            |k| k.backend = BackendKind::QemuKvm,
            |k| k.kind = TemplateKind::Workspace,
            |k| k.vcpu_count = 2,
            |k| k.mem_mib = 512,
            |k| k.vmm_binary = "/usr/bin/qemu-system-x86_64:1:3".into(),
            |k| k.host_cpu = "c2".into(),
            |k| k.vmm_args.push("-no-reboot".into()),
        ];
        for change in changes {
            let mut other = key();
            change(&mut other);
            assert_ne!(other.digest(), base.digest(), "{other:?}");
        }
    }

    #[test]
    fn only_qemu_backends_have_templates() {
        for backend in [BackendKind::Firecracker, BackendKind::HostCompat] {
            assert_eq!(qemu_for(backend).unwrap_err().kind(), "unavailable");
        }
    }
}
