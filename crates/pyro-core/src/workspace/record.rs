//! The persisted workspace record (`workspace.json`) and its metadata rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// File name of the record inside a workspace directory.
pub const RECORD_FILE: &str = "workspace.json";

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceState {
    /// `create` is still booting or seeding it (its creator is recorded).
    Creating,
    /// A guest is running.
    Started,
    /// No guest is running; the disk is kept.
    Stopped,
}

impl WorkspaceState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Started => "started",
            Self::Stopped => "stopped",
        }
    }
}

/// How `/workspace` was initialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSeed {
    /// `empty`, `directory` or `tar_archive`.
    pub mode: String,
    /// The host path the user named, if any.
    pub seed_path: Option<PathBuf>,
    /// Always `/workspace`.
    pub destination: String,
    /// Archive members imported.
    pub entry_count: u64,
    /// Regular-file bytes imported.
    pub bytes_written: u64,
}

/// The latest command, for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSummary {
    /// History sequence number.
    pub sequence: u64,
    /// Command line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Exit code.
    pub exit_code: i32,
    /// Guest wall time.
    pub duration_ms: u64,
}

/// `workspace.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// 12 lowercase hex characters.
    pub workspace_id: String,
    /// Optional human name.
    pub name: Option<String>,
    /// Discovery labels.
    pub labels: BTreeMap<String, String>,
    /// Catalog environment.
    pub environment: String,
    /// Its version.
    pub environment_version: String,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Optional lifetime; none means the workspace lives until deleted.
    pub ttl_seconds: Option<u64>,
    /// Unix seconds.
    pub created_at: f64,
    /// `created_at + ttl_seconds`, when a TTL was set.
    pub expires_at: Option<f64>,
    /// Last time the workspace was used.
    pub last_activity_at: f64,
    /// Recorded state (reconciled with the supervisor on load).
    pub state: WorkspaceState,
    /// Guest networking policy.
    pub network_policy: crate::options::NetworkPolicy,
    /// The egress allow-list (`--allow-host`), canonical; empty means every public
    /// destination.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Host execution was opted into.
    pub allow_host_compat: bool,
    /// How `/workspace` was seeded.
    pub workspace_seed: WorkspaceSeed,
    /// Commands run so far (since the last reset).
    pub command_count: u64,
    /// The latest command.
    pub last_command: Option<CommandSummary>,
    /// Resets so far.
    pub reset_count: u64,
    /// Unix seconds of the last reset.
    pub last_reset_at: Option<f64>,
    /// Why the workspace last stopped unexpectedly.
    pub last_error: Option<String>,
    /// Services recorded under `services/` (kept current by every service call and by
    /// stop, reset and crash detection, so status and list never ask the guest).
    #[serde(default)]
    pub service_count: u64,
    /// Of those, the ones last known to be running.
    #[serde(default)]
    pub running_service_count: u64,
    /// Names and source kinds of the workspace's secrets (values live in `secrets/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretInfo>,
    /// The process creating it, while [`WorkspaceState::Creating`]: when it is gone, the
    /// creation was interrupted and the workspace is removed on next sight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<crate::host_process::ProcessIdentity>,
}

impl WorkspaceRecord {
    /// The guest's network under this record's policy (`None` for `off`).
    pub fn network_settings(&self) -> Option<crate::network::NetworkSettings> {
        crate::network::NetworkSettings::under(self.network_policy, &self.allow_hosts)
    }

    /// A creation that was cut short (its creator no longer runs).
    pub fn creation_abandoned(&self) -> bool {
        self.state == WorkspaceState::Creating && !self.creator.is_some_and(|c| c.is_alive())
    }

    /// Loads the record of `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("workspace record {} is corrupt: {e}", path.display())))
    }

    /// Saves atomically into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(RECORD_FILE), &serde_json::to_vec_pretty(self).expect("records serialise"))
    }
}

/// Validates a workspace name (trimmed, 1–120 characters).
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::InvalidArgument("name must not be empty".into()));
    }
    if name.chars().count() > 120 {
        return Err(Error::InvalidArgument("name must be at most 120 characters".into()));
    }
    Ok(name.to_string())
}

/// The pattern label keys, snapshot names and service names follow.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// True when `key` matches [`NAME_PATTERN`].
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty() && bytes.len() <= 64 && bytes[0].is_ascii_alphanumeric() && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// Validates a label key.
pub fn validate_label_key(key: &str) -> Result<String> {
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::InvalidArgument("label key must not be empty".into()));
    }
    if !is_valid_key(key) {
        return Err(Error::InvalidArgument(format!("label key must match {NAME_PATTERN}")));
    }
    Ok(key.to_string())
}

/// Validates labels (keys by [`validate_label_key`], values trimmed, 1–120 chars, one line).
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|(key, value)| {
            let key = validate_label_key(key)?;
            let value = value.trim();
            if value.is_empty() {
                return Err(Error::InvalidArgument(format!("label '{key}' must not be empty")));
            }
            if value.chars().count() > 120 {
                return Err(Error::InvalidArgument(format!("label '{key}' must be at most 120 characters")));
            }
            if value.contains(['\r', '\n']) {
                return Err(Error::InvalidArgument(format!("label '{key}' must not contain newlines")));
            }
            Ok((key, value.to_string()))
        })
        .collect()
}

/// What results show of a secret: its name and where it came from, never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Name.
    pub name: String,
    /// `literal` (given as a value) or `file` (read from a host file).
    pub source_kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_rules() {
        assert_eq!(validate_name("  alpha ").unwrap(), "alpha");
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"x".repeat(121)).is_err());
        assert!(is_valid_key("branch.v1-x_y"));
        for bad in ["", "-x", ".x", "a b", &"k".repeat(65)] {
            assert!(!is_valid_key(bad), "{bad}");
        }
        let mut labels = BTreeMap::new();
        labels.insert("owner".to_string(), "a\nb".to_string());
        assert_eq!(validate_labels(&labels).unwrap_err().to_string(), "label 'owner' must not contain newlines");
    }
}
