//! On-disk VM records: `<state>/vms/<id>/vm.json`, written atomically, one directory per
//! VM so any process can see every VM.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::environments::InstalledEnvironment;
use crate::error::{Error, Result};
use crate::fsutil::unix_now;
use crate::network::NetworkSettings;
use crate::vmm::select::Selection;
use crate::vmm::{BackendKind, LaunchSpec};

/// Lifecycle state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Record and disk exist; never started.
    Created,
    /// A supervisor owns a running guest.
    Started,
    /// The guest is not running.
    Stopped,
}

impl VmState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Started => "started",
            Self::Stopped => "stopped",
        }
    }
}

/// The persisted VM record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    /// 12 lowercase hex characters.
    pub vm_id: String,
    /// Catalog name.
    pub environment: String,
    /// Catalog version of the environment.
    pub environment_version: String,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Lifetime in seconds.
    pub ttl_seconds: u64,
    /// Unix seconds.
    pub created_at: f64,
    /// `created_at + ttl_seconds`.
    pub expires_at: f64,
    /// Lifecycle state as last recorded.
    pub state: VmState,
    /// Backend running it.
    pub backend: BackendKind,
    /// Why that backend.
    pub backend_reason: String,
    /// Host execution was opted into.
    pub allow_host_compat: bool,
    /// Launch parameters.
    pub launch: LaunchSpec,
    /// Delete the VM when this host process exits (the CLI of `pyro run`).
    pub owner_pid: Option<u32>,
    /// PID of the supervisor while started.
    pub supervisor_pid: Option<u32>,
    /// Boot time of the last start, milliseconds until the agent's hello.
    pub boot_ms: Option<u64>,
    /// Guest kernel release reported by the agent.
    pub guest_kernel: Option<String>,
    /// Why the VM last stopped unexpectedly.
    pub last_error: Option<String>,
    /// Stop the VM after this long without any request (workspaces).
    #[serde(default)]
    pub idle_stop_seconds: Option<u64>,
    /// How the guest came up on its last start: `restored` or `booted`.
    #[serde(default)]
    pub start_mode: Option<String>,
    /// The guest's network, if it has one.
    #[serde(default)]
    pub network: Option<NetworkSettings>,
}

/// Validates a VM id before it touches a path.
pub fn validate_id(vm_id: &str) -> Result<()> {
    if vm_id.len() == 12 && vm_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::not_found("vm", vm_id))
    }
}

/// A fresh random id (first 12 hex characters of a v4 UUID).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The directory holding all VMs.
pub fn vms_root(state_dir: &Path) -> PathBuf {
    state_dir.join("vms")
}

impl VmRecord {
    /// A record of a VM not started yet, with sizing taken from `launch`.
    pub fn new(vm_id: String, installed: &InstalledEnvironment, launch: LaunchSpec, ttl_seconds: u64, selection: Selection, allow_host_compat: bool) -> Self {
        let now = unix_now();
        Self {
            vm_id,
            environment: installed.spec.name.into(),
            environment_version: installed.spec.version.into(),
            vcpu_count: launch.vcpu_count,
            mem_mib: launch.mem_mib,
            ttl_seconds,
            created_at: now,
            expires_at: now + ttl_seconds as f64,
            state: VmState::Created,
            backend: selection.backend,
            backend_reason: selection.reason,
            allow_host_compat,
            launch,
            owner_pid: None,
            supervisor_pid: None,
            boot_ms: None,
            guest_kernel: None,
            last_error: None,
            idle_stop_seconds: None,
            start_mode: None,
            network: None,
        }
    }

    /// Path of the record inside a VM directory.
    pub fn path(vm_dir: &Path) -> PathBuf {
        vm_dir.join("vm.json")
    }

    /// Loads the record of `vm_dir`.
    pub fn load(vm_dir: &Path) -> Result<Self> {
        let path = Self::path(vm_dir);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("VM record {} is corrupt: {e}", path.display())))
    }

    /// Saves atomically.
    pub fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("records serialise");
        crate::fsutil::write_atomic(&Self::path(&self.launch.vm_dir), &json)
    }

    /// The VM's directory.
    pub fn dir(&self) -> &Path {
        &self.launch.vm_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_before_use() {
        assert!(validate_id(&new_id()).is_ok());
        for bad in ["", "../../etc/x", "ABCDEF123456", "abc", "0123456789abc", "01234567/9ab"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
