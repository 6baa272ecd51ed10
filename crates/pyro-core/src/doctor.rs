//! `pyro doctor`: what this host offers and which backend pyro will use, and why.

use std::path::PathBuf;

use serde::Serialize;

use crate::catalog::PLATFORM;
use crate::env_vars;
use crate::environments::EnvironmentStore;
use crate::paths::{self, Dirs};
use crate::template::{self, TemplateInfo, TemplateStore};
use crate::vmm::qemu::find_in_path;
use crate::vmm::select::{backend_from_env, Binary, HostProbe, KvmAccess};
use crate::vmm::BackendKind;

/// `/dev/kvm` access plus the outcome of the boot check.
#[derive(Debug, Clone, Serialize)]
pub struct KvmReport {
    /// Access bits.
    #[serde(flatten)]
    pub access: KvmAccess,
    /// Whether our kernel boots under KVM (null until checked).
    pub boots_guest: Option<bool>,
    /// What the boot check saw.
    pub boot_check: Option<String>,
}

/// Backend binaries found.
#[derive(Debug, Clone, Serialize)]
pub struct BackendsReport {
    /// Firecracker.
    pub firecracker: Option<Binary>,
    /// QEMU.
    pub qemu: Option<Binary>,
}

/// The backend pyro will use.
#[derive(Debug, Clone, Serialize)]
pub struct SelectedReport {
    /// Backend name, or null when none works.
    pub backend: Option<&'static str>,
    /// Why.
    pub reason: String,
    /// What isolates guests on that backend (`kvm`, `tcg` or `none`).
    pub isolation: Option<&'static str>,
    /// The same in plain words.
    pub isolation_detail: Option<&'static str>,
}

/// What the chosen backend can do.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// A real guest kernel boots.
    pub vm_boot: bool,
    /// Commands run inside the guest.
    pub guest_exec: bool,
    /// Guest networking is available.
    pub guest_network: bool,
}

/// Guest networking: how each VMM's NIC reaches the supervisor's user-space gateway
/// (no host routes, NAT or firewall rules are ever needed).
#[derive(Debug, Clone, Serialize)]
pub struct NetworkingReport {
    /// QEMU: `-netdev stream` over a unix socket.
    pub qemu: NetworkBackendReport,
    /// Firecracker: a TAP device only the supervisor reads.
    pub firecracker: NetworkBackendReport,
    /// `/dev/net/tun` exists (what a TAP link needs).
    pub tun_available: bool,
}

/// One VMM's network link.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkBackendReport {
    /// How guest frames reach the gateway.
    pub link: &'static str,
    /// Guests on this VMM can have a network here.
    pub available: bool,
    /// What is missing, one line each.
    pub missing: Vec<String>,
}

/// Warm starts: whether starts restore saved templates, and which exist.
#[derive(Debug, Clone, Serialize)]
pub struct WarmStartReport {
    /// Starts restore templates (not `PYRO_WARM_START=0`, and the backend has them).
    pub enabled: bool,
    /// What the next start will use, and why.
    pub next_start: String,
    /// Templates in the cache.
    pub templates: Vec<TemplateInfo>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// Platform checked.
    pub platform: &'static str,
    /// True when a real guest can run here.
    pub runtime_ok: bool,
    /// Problems found, one line each.
    pub issues: Vec<String>,
    /// KVM.
    pub kvm: KvmReport,
    /// Backend binaries.
    pub backends: BackendsReport,
    /// The backend that will be used.
    pub selected: SelectedReport,
    /// Capabilities of that backend.
    pub capabilities: Capabilities,
    /// Static guest agent used for image builds.
    pub agent_binary: Option<PathBuf>,
    /// Cache root.
    pub cache_dir: PathBuf,
    /// State root.
    pub state_dir: PathBuf,
    /// Installed environments.
    pub installed_environments: Vec<String>,
    /// Networking prerequisites.
    pub networking: NetworkingReport,
    /// Warm starts.
    pub warm_start: WarmStartReport,
}

/// Builds the report; runs the one-time KVM boot check when an environment is installed
/// and the check has not run for this host yet.
pub async fn report(dirs: &Dirs, store: &EnvironmentStore) -> DoctorReport {
    let mut issues = Vec::new();
    let installed: Vec<_> = store.list().into_iter().filter(|e| e.installed).collect();
    let kernel_sha = installed.first().and_then(|e| e.kernel.as_ref()).map(|k| k.sha256.clone());
    let cache_file = dirs.cache.join("kvm-boot-check.json");
    let mut probe = HostProbe::probe(&cache_file, kernel_sha.as_deref());
    if probe.needs_kvm_check() {
        if let Some(env) = installed.first().and_then(|e| store.installed(e.spec.name).ok()) {
            crate::vm::run_kvm_check(dirs, &env, &cache_file).await;
            probe = HostProbe::probe(&cache_file, kernel_sha.as_deref());
        }
    }
    if installed.is_empty() {
        issues.push("no environment is installed yet: run `pyro env pull debian:12`".into());
    }
    if !probe.kvm.exists {
        issues.push("/dev/kvm is not available on this host".into());
    }
    let requested = match backend_from_env() {
        Ok(r) => r,
        Err(e) => {
            issues.push(e.to_string());
            None
        }
    };
    let selected = match probe.choose(requested) {
        Ok(selection) => SelectedReport {
            backend: Some(selection.backend.name()),
            reason: selection.reason,
            isolation: Some(selection.backend.isolation()),
            isolation_detail: Some(selection.backend.isolation_detail()),
        },
        Err(e) => {
            issues.push(e.to_string());
            SelectedReport { backend: None, reason: e.to_string(), isolation: None, isolation_detail: None }
        }
    };
    for tool in missing_host_tools(probe.qemu.as_ref().map(|q| q.path.as_path())) {
        issues.push(format!("{tool} is not installed (scripts/setup.sh installs it)"));
    }
    let guest = matches!(selected.backend, Some(name) if name != BackendKind::HostCompat.name());
    let networking = networking_report(&probe);
    let network_for_selected = match selected.backend.and_then(BackendKind::parse) {
        Some(BackendKind::QemuTcg | BackendKind::QemuKvm) => networking.qemu.available,
        Some(BackendKind::Firecracker) => networking.firecracker.available,
        Some(BackendKind::HostCompat) | None => false,
    };
    let warm_start = warm_start_report(dirs, selected.backend.and_then(BackendKind::parse));
    let agent_binary = match paths::agent_binary() {
        Ok(path) => Some(path),
        Err(e) => {
            issues.push(e.to_string());
            None
        }
    };
    DoctorReport {
        platform: PLATFORM,
        runtime_ok: guest && !installed.is_empty(),
        issues,
        kvm: KvmReport {
            access: probe.kvm,
            boots_guest: probe.kvm_boot.as_ref().map(|c| c.boots),
            boot_check: probe.kvm_boot.as_ref().map(|c| c.detail.clone()),
        },
        backends: BackendsReport { firecracker: probe.firecracker.clone(), qemu: probe.qemu.clone() },
        selected,
        capabilities: Capabilities { vm_boot: guest, guest_exec: guest, guest_network: network_for_selected },
        agent_binary,
        cache_dir: dirs.cache.clone(),
        state_dir: dirs.state.clone(),
        installed_environments: installed.iter().map(|e| e.spec.name.to_string()).collect(),
        networking,
        warm_start,
    }
}

/// The network link of each VMM and what it lacks here.
fn networking_report(probe: &HostProbe) -> NetworkingReport {
    let tun_available = std::path::Path::new("/dev/net/tun").exists();
    let mut qemu_missing = Vec::new();
    match &probe.qemu {
        None => qemu_missing.push("qemu-system-x86_64 is not installed".to_string()),
        Some(qemu) if !supports_netdev_stream(&qemu.version) => {
            qemu_missing.push(format!("QEMU 7.2 or newer is needed for -netdev stream (found: {})", qemu.version))
        }
        Some(_) => {}
    }
    let mut firecracker_missing = vec!["not wired up in this build, networked guests run on QEMU".to_string()];
    if !tun_available {
        firecracker_missing.push("no /dev/net/tun on this host".into());
    }
    NetworkingReport {
        qemu: NetworkBackendReport { link: "netdev-stream", available: qemu_missing.is_empty(), missing: qemu_missing },
        firecracker: NetworkBackendReport { link: "tap", available: false, missing: firecracker_missing },
        tun_available,
    }
}

/// Whether a `qemu-system-* --version` line names 7.2 or newer.
fn supports_netdev_stream(version: &str) -> bool {
    let Some(number) = version.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit())) else { return false };
    let mut parts = number.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 2)
}

/// Whether starts on `backend` restore templates, and what the next one will do.
fn warm_start_report(dirs: &Dirs, backend: Option<BackendKind>) -> WarmStartReport {
    let templates = TemplateStore::new(dirs.clone()).list();
    let usable: Vec<&TemplateInfo> = templates.iter().filter(|t| Some(t.backend) == backend.map(BackendKind::name)).collect();
    let (enabled, next_start) = match backend {
        _ if !template::warm_start_enabled() => (false, format!("cold boot: warm starts are off ({}=0)", env_vars::WARM_START)),
        Some(kind) if !template::backend_supports(kind) => (false, format!("cold boot: the {} backend has no warm templates in this build", kind.name())),
        None => (false, "no start is possible: no backend works".into()),
        Some(_) if usable.is_empty() => {
            (true, "warm: the first start of each environment and size builds its template (a boot plus a save), later starts restore it".into())
        }
        Some(_) => {
            let names: Vec<String> = usable.iter().map(|t| format!("{} {} ({} vCPU, {} MiB)", t.environment, t.kind, t.vcpu_count, t.mem_mib)).collect();
            (true, format!("warm: starts matching a template restore it instead of booting: {}", names.join(", ")))
        }
    };
    WarmStartReport { enabled, next_start, templates }
}

/// Host commands pyro runs that are missing: `qemu-img` (QEMU disks), and the e2fsprogs
/// tools and `cp` that workspace disks are made with.
fn missing_host_tools(qemu: Option<&std::path::Path>) -> Vec<&'static str> {
    let beside_qemu = |name: &str| qemu.and_then(|q| Some(q.with_file_name(name)).filter(|p| p.is_file()));
    let mut missing = Vec::new();
    if qemu.is_some() && beside_qemu("qemu-img").or_else(|| find_in_path("qemu-img")).is_none() {
        missing.push("qemu-img");
    }
    for tool in ["cp", "e2fsck", "resize2fs"] {
        if find_in_path(tool).is_none() && !std::path::Path::new("/sbin").join(tool).is_file() {
            missing.push(tool);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netdev_stream_needs_qemu_7_2() {
        assert!(supports_netdev_stream("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"));
        assert!(supports_netdev_stream("QEMU emulator version 10.0.2"));
        assert!(!supports_netdev_stream("QEMU emulator version 7.1.0"));
        assert!(!supports_netdev_stream("garbage"));
    }
}
