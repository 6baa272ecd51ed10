//! What a template is wanted for: the vocabulary the key, the build and the store
//! share (a leaf, so none of them imports its parent).

use serde::{Deserialize, Serialize};

use crate::environments::InstalledEnvironment;
use crate::vmm::BackendKind;

/// The saved state's file name inside a template.
pub(crate) const STATE_FILE: &str = "state.bin";
/// Which disk layout a template is saved on; its users get a copy of that disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// A qcow2 overlay on the environment's rootfs (`run`, `vm create`).
    Ephemeral,
    /// A workspace's own grown raw ext4.
    Workspace,
}

impl TemplateKind {
    /// The disk's file name inside the template (its extension picks the disk format).
    pub fn disk_file(self) -> &'static str {
        match self {
            Self::Ephemeral => "disk.qcow2",
            Self::Workspace => "disk.ext4",
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ephemeral => "ephemeral",
            Self::Workspace => "workspace",
        }
    }
}

/// What a template is wanted for.
#[derive(Debug, Clone, Copy)]
pub struct TemplateFor<'a> {
    /// The environment.
    pub installed: &'a InstalledEnvironment,
    /// The backend that will run it.
    pub backend: BackendKind,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Disk layout.
    pub kind: TemplateKind,
    /// The guest has a NIC (a different machine, so a different template).
    pub network: bool,
}
