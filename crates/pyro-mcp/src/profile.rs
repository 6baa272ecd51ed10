//! The three MCP profiles of the contract and the tools each exposes, in the reference's
//! order (registration order = `tools/list` order). A profile narrows what a model sees;
//! it never changes what a tool does. `workspace-core` also narrows two tools' arguments.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Which tools `pyro mcp serve` exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Only `vm_run`.
    VmRun,
    /// `vm_run` plus the sixteen-tool persistent-workspace loop.
    WorkspaceCore,
    /// The complete stable surface (the default).
    #[default]
    WorkspaceFull,
}

/// The names of the tools of `workspace-full`, in order.
const FULL: &[&str] = &[
    "vm_run",
    "vm_list_environments",
    "vm_create",
    "vm_start",
    "vm_exec",
    "vm_stop",
    "vm_delete",
    "vm_status",
    "vm_network_info",
    "vm_reap_expired",
    "workspace_create",
    "workspace_list",
    "workspace_update",
    "workspace_exec",
    "workspace_sync_push",
    "workspace_status",
    "workspace_stop",
    "workspace_start",
    "workspace_logs",
    "workspace_network_log",
    "workspace_export",
    "workspace_diff",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_patch_apply",
    "workspace_disk_export",
    "workspace_disk_list",
    "workspace_disk_read",
    "snapshot_create",
    "snapshot_list",
    "snapshot_delete",
    "workspace_reset",
    "shell_open",
    "shell_read",
    "shell_write",
    "shell_signal",
    "shell_close",
    "service_start",
    "service_list",
    "service_status",
    "service_logs",
    "service_stop",
    "workspace_delete",
];

/// The names of the tools of `workspace-core`, in order.
const CORE: &[&str] = &[
    "vm_run",
    "workspace_create",
    "workspace_list",
    "workspace_update",
    "workspace_exec",
    "workspace_sync_push",
    "workspace_status",
    "workspace_logs",
    "workspace_export",
    "workspace_diff",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_patch_apply",
    "workspace_reset",
    "workspace_delete",
];

/// Arguments `workspace-core` hides: its workspaces have no network and no secrets.
const CORE_OMITS: &[(&str, &[&str])] = &[("workspace_create", &["network_policy", "allow_hosts", "secrets"]), ("workspace_exec", &["secret_env"])];

impl Profile {
    /// Every profile name, in the order the contract lists them.
    pub const NAMES: [&'static str; 3] = ["vm-run", "workspace-core", "workspace-full"];

    /// The profile's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::VmRun => "vm-run",
            Profile::WorkspaceCore => "workspace-core",
            Profile::WorkspaceFull => "workspace-full",
        }
    }

    /// The names of this profile's tools, in `tools/list` order.
    pub fn tool_names(self) -> &'static [&'static str] {
        match self {
            Profile::VmRun => &FULL[..1],
            Profile::WorkspaceCore => CORE,
            Profile::WorkspaceFull => FULL,
        }
    }

    /// The arguments this profile removes from `tool` (its schema loses them and calls
    /// ignore them, so their defaults apply).
    pub fn omitted_arguments(self, tool: &str) -> &'static [&'static str] {
        match self {
            Profile::WorkspaceCore => CORE_OMITS.iter().find(|(name, _)| *name == tool).map_or(&[], |(_, omit)| omit),
            Profile::VmRun | Profile::WorkspaceFull => &[],
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// Exact names only; anything else fails with the reference's message.
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "vm-run" => Ok(Profile::VmRun),
            "workspace-core" => Ok(Profile::WorkspaceCore),
            "workspace-full" => Ok(Profile::WorkspaceFull),
            other => Err(Error::UnknownProfile(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        for name in Profile::NAMES {
            assert_eq!(name.parse::<Profile>().unwrap().name(), name);
        }
        assert_eq!(Profile::default(), Profile::WorkspaceFull);
        assert_eq!("full".parse::<Profile>().unwrap_err().to_string(), "unknown MCP profile 'full'; expected one of: vm-run, workspace-core, workspace-full");
    }

    #[test]
    fn profiles_have_the_reference_counts_and_core_is_a_subsequence_of_full() {
        assert_eq!(Profile::VmRun.tool_names(), ["vm_run"]);
        assert_eq!(Profile::WorkspaceCore.tool_names().len(), 16);
        // The reference's 43, plus `workspace_network_log`.
        assert_eq!(Profile::WorkspaceFull.tool_names().len(), 44);
        let mut full = FULL.iter();
        for name in CORE {
            assert!(full.any(|f| f == name), "{name} is out of order or missing in FULL");
        }
        for (tool, _) in CORE_OMITS {
            assert!(CORE.contains(tool));
        }
    }
}
