//! The persistent-workspace tools: create/list/update/status/stop/start/delete, exec and
//! history, live files, patches, export, offline disk tools, diff, snapshots and reset.
//! Each is a thin call of the [`Pyro`] method the CLI's `pyro workspace …` uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use pyro_core::options::NetworkPolicy;
use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::secrets::SecretInput;
use pyro_core::workspace::{CreateWorkspaceOptions, UpdateWorkspace};
use pyro_core::{Pyro, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use super::def::{default_workspace_path, tool, Call, Effect, NoArguments, Spec, ToolDef};

/// The workspace tools, in any order (profiles order them).
pub(crate) fn tools() -> Vec<ToolDef> {
    let spec = |name, title, description, effect, idempotent| Spec { name, title, description, effect, idempotent };
    vec![
        tool(spec("workspace_create", "Create a workspace", "Create and start a persistent workspace.", Effect::Additive, false), create),
        tool(
            spec("workspace_list", "List workspaces", "List persisted workspaces with summary metadata.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, _: NoArguments, _: Call| async move { pyro.list_workspaces().await },
        ),
        tool(spec("workspace_update", "Rename or relabel a workspace", "Update optional workspace name and labels.", Effect::Additive, true), update),
        tool(
            spec("workspace_exec", "Run a command in a workspace", "Run one command inside an existing persistent workspace.", Effect::Additive, false),
            |pyro: Arc<Pyro>, a: Exec, call: Call| async move {
                pyro.exec_workspace(&a.workspace_id, &a.command, a.timeout_seconds, &a.secret_env.unwrap_or_default(), call.output()).await
            },
        ),
        tool(
            spec(
                "workspace_sync_push",
                "Push host files into a workspace",
                "Push host content into the persistent `/workspace` of a started workspace.",
                Effect::Additive,
                false,
            ),
            |pyro: Arc<Pyro>, a: SyncPush, _: Call| async move { pyro.push_workspace_sync(&a.workspace_id, &a.source_path, &a.dest).await },
        ),
        tool(
            spec("workspace_status", "Show a workspace's status", "Inspect workspace state and latest command metadata.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.status_workspace(&a.workspace_id).await },
        ),
        tool(
            spec("workspace_stop", "Stop a workspace", "Stop one persistent workspace without resetting `/workspace`.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.stop_workspace(&a.workspace_id).await },
        ),
        tool(
            spec("workspace_start", "Start a workspace", "Start one stopped persistent workspace without resetting `/workspace`.", Effect::Additive, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.start_workspace(&a.workspace_id).await },
        ),
        tool(
            spec("workspace_logs", "Show a workspace's command history", "Return persisted command history for one workspace.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.logs_workspace(&a.workspace_id).await },
        ),
        tool(
            spec(
                "workspace_network_log",
                "Show a workspace's refused connections",
                "Return the guest network's flow counts and its latest refused flows (time, destination, DNS name, rule), to see why a connection failed.",
                Effect::ReadOnly,
                true,
            ),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.network_log_workspace(&a.workspace_id).await },
        ),
        tool(
            spec("workspace_export", "Export from a workspace", "Export one file or directory from `/workspace` back to the host.", Effect::Additive, false),
            |pyro: Arc<Pyro>, a: Export, _: Call| async move { pyro.export_workspace(&a.workspace_id, &a.path, &a.output_path).await },
        ),
        tool(
            spec(
                "workspace_diff",
                "Diff a workspace against its baseline",
                "Compare `/workspace` to the immutable create-time baseline.",
                Effect::ReadOnly,
                true,
            ),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.diff_workspace(&a.workspace_id).await },
        ),
        tool(
            spec(
                "workspace_file_list",
                "List workspace files",
                "List metadata for files and directories under one live workspace path.",
                Effect::ReadOnly,
                true,
            ),
            |pyro: Arc<Pyro>, a: ListPath, _: Call| async move { pyro.list_workspace_files(&a.workspace_id, &a.path, a.recursive).await },
        ),
        tool(
            spec("workspace_file_read", "Read a workspace file", "Read one regular text file from a live workspace path.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: ReadPath, _: Call| async move { pyro.read_workspace_file(&a.workspace_id, &a.path, a.max_bytes).await },
        ),
        tool(
            spec("workspace_file_write", "Write a workspace file", "Create or replace one regular text file under `/workspace`.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: FileWrite, _: Call| async move { pyro.write_workspace_file(&a.workspace_id, &a.path, &a.text).await },
        ),
        tool(
            spec("workspace_patch_apply", "Apply a patch in a workspace", "Apply a unified text patch inside one live workspace.", Effect::Destructive, false),
            |pyro: Arc<Pyro>, a: PatchApply, _: Call| async move { pyro.apply_workspace_patch(&a.workspace_id, &a.patch).await },
        ),
        tool(
            spec(
                "workspace_disk_export",
                "Export a stopped workspace's disk",
                "Export the raw stopped workspace rootfs image to one host path.",
                Effect::Additive,
                false,
            ),
            |pyro: Arc<Pyro>, a: DiskExport, _: Call| async move { pyro.export_workspace_disk(&a.workspace_id, &a.output_path).await },
        ),
        tool(
            spec(
                "workspace_disk_list",
                "List a stopped workspace's disk",
                "Inspect one stopped workspace rootfs path without booting the guest.",
                Effect::ReadOnly,
                true,
            ),
            |pyro: Arc<Pyro>, a: ListPath, _: Call| async move { pyro.list_workspace_disk(&a.workspace_id, &a.path, a.recursive).await },
        ),
        tool(
            spec(
                "workspace_disk_read",
                "Read a stopped workspace's file",
                "Read one regular file from a stopped workspace rootfs offline.",
                Effect::ReadOnly,
                true,
            ),
            |pyro: Arc<Pyro>, a: ReadPath, _: Call| async move { pyro.read_workspace_disk(&a.workspace_id, &a.path, a.max_bytes).await },
        ),
        tool(
            spec("snapshot_create", "Snapshot a workspace", "Create one named workspace snapshot from the current `/workspace` tree.", Effect::Additive, false),
            |pyro: Arc<Pyro>, a: SnapshotName, _: Call| async move { pyro.create_snapshot(&a.workspace_id, &a.snapshot_name).await },
        ),
        tool(
            spec("snapshot_list", "List a workspace's snapshots", "List the baseline plus named snapshots for one workspace.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.list_snapshots(&a.workspace_id).await },
        ),
        tool(
            spec("snapshot_delete", "Delete a snapshot", "Delete one named snapshot from a workspace.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: SnapshotName, _: Call| async move { pyro.delete_snapshot(&a.workspace_id, &a.snapshot_name).await },
        ),
        tool(
            spec("workspace_reset", "Reset a workspace", "Recreate a workspace and restore `/workspace` from one snapshot.", Effect::Destructive, false),
            |pyro: Arc<Pyro>, a: Reset, _: Call| async move { pyro.reset_workspace(&a.workspace_id, &a.snapshot).await },
        ),
        tool(
            spec("workspace_delete", "Delete a workspace", "Delete a persistent workspace and its backing sandbox.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.delete_workspace(&a.workspace_id).await },
        ),
    ]
}

fn default_vcpu_count() -> u32 {
    1
}

fn default_mem_mib() -> u32 {
    1024
}

fn default_timeout_seconds() -> u64 {
    30
}

fn default_network_policy() -> String {
    "off".into()
}

fn default_max_bytes() -> u64 {
    65536
}

fn default_snapshot() -> String {
    "baseline".into()
}

/// Arguments of `workspace_create` (`workspace-core` hides `network_policy` and
/// `secrets`: its workspaces have neither).
#[derive(Deserialize, JsonSchema)]
struct Create {
    /// Catalog environment name, e.g. `debian:12`.
    environment: String,
    /// Virtual CPUs (1–8).
    #[serde(default = "default_vcpu_count")]
    vcpu_count: u32,
    /// Guest memory in MiB (256–32768).
    #[serde(default = "default_mem_mib")]
    mem_mib: u32,
    /// Seconds until the workspace expires and is deleted; null (the default) keeps it until `workspace_delete`.
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Guest networking: `off`, `egress`, or `egress+published-ports`.
    #[serde(default = "default_network_policy")]
    network_policy: String,
    /// Narrow egress to these host names or CIDRs (needs a network policy); refused flows are in `workspace_network_log`.
    #[serde(default)]
    allow_hosts: Option<Vec<String>>,
    /// Allow running on the host without isolation when no guest backend works.
    #[serde(default)]
    allow_host_compat: bool,
    /// Host directory or `.tar`/`.tar.gz`/`.tgz` archive to seed `/workspace` from.
    #[serde(default)]
    seed_path: Option<PathBuf>,
    /// Guest-only secrets, each `{"name", "value"}` or `{"name", "file_path"}`; never shown again.
    #[serde(default)]
    secrets: Option<Vec<Secret>>,
    /// Human-readable name.
    #[serde(default)]
    name: Option<String>,
    /// Discovery labels (key → value).
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// One secret as a caller declares it (exactly one of `value` and `file_path`).
// No `Debug`: it holds the value.
#[derive(Deserialize, JsonSchema)]
struct Secret {
    /// Secret name (`^[A-Za-z_][A-Za-z0-9_]{0,63}$`).
    name: String,
    /// The value itself.
    #[serde(default)]
    value: Option<String>,
    /// A host file holding the value, read once at create time.
    #[serde(default)]
    file_path: Option<PathBuf>,
}

impl From<Secret> for SecretInput {
    fn from(secret: Secret) -> Self {
        SecretInput { name: secret.name, value: secret.value, file_path: secret.file_path }
    }
}

async fn create(pyro: Arc<Pyro>, a: Create, call: Call) -> Result<pyro_core::workspace::WorkspaceStatus> {
    let mut vm = CreateVmOptions::new(a.environment);
    vm.vcpu_count = a.vcpu_count;
    vm.mem_mib = a.mem_mib;
    vm.allow_host_compat = a.allow_host_compat;
    let options = CreateWorkspaceOptions {
        vm,
        ttl_seconds: a.ttl_seconds,
        network_policy: a.network_policy.parse::<NetworkPolicy>()?,
        allow_hosts: a.allow_hosts.unwrap_or_default(),
        seed_path: a.seed_path,
        name: a.name,
        labels: a.labels.unwrap_or_default(),
        secrets: a.secrets.unwrap_or_default().into_iter().map(SecretInput::from).collect(),
    };
    pyro.create_workspace(&options, &call.progress()).await
}

/// Arguments of `workspace_update`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Update {
    /// The workspace's id.
    workspace_id: String,
    /// New name.
    #[serde(default)]
    name: Option<String>,
    /// Remove the name.
    #[serde(default)]
    clear_name: bool,
    /// Labels to set (key → value); other labels are kept.
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    /// Label keys to remove.
    #[serde(default)]
    clear_labels: Option<Vec<String>>,
}

async fn update(pyro: Arc<Pyro>, a: Update, _: Call) -> Result<pyro_core::workspace::WorkspaceStatus> {
    let change =
        UpdateWorkspace { name: a.name, clear_name: a.clear_name, labels: a.labels.unwrap_or_default(), clear_labels: a.clear_labels.unwrap_or_default() };
    pyro.update_workspace(&a.workspace_id, &change).await
}

/// Arguments of the tools that name one workspace.
#[derive(Debug, Deserialize, JsonSchema)]
struct WorkspaceId {
    /// The workspace's id (from `workspace_create` or `workspace_list`).
    workspace_id: String,
}

/// Arguments of `workspace_exec` (`workspace-core` hides `secret_env`).
#[derive(Debug, Deserialize, JsonSchema)]
struct Exec {
    /// The workspace's id.
    workspace_id: String,
    /// Shell command line, run by `/bin/sh -lc` in `/workspace`.
    command: String,
    /// Seconds the command may run before it is killed (exit code 124).
    #[serde(default = "default_timeout_seconds")]
    timeout_seconds: u64,
    /// Workspace secrets to expose to this command only: secret name → environment variable.
    #[serde(default)]
    secret_env: Option<BTreeMap<String, String>>,
}

/// Arguments of `workspace_sync_push`.
#[derive(Debug, Deserialize, JsonSchema)]
struct SyncPush {
    /// The workspace's id.
    workspace_id: String,
    /// Host directory or `.tar`/`.tar.gz`/`.tgz` archive to import.
    source_path: PathBuf,
    /// Destination directory under `/workspace`.
    #[serde(default = "default_workspace_path")]
    dest: String,
}

/// Arguments of `workspace_export`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Export {
    /// The workspace's id.
    workspace_id: String,
    /// File or directory under `/workspace` (relative paths are under `/workspace`).
    path: String,
    /// Host path to write; it must not exist yet.
    output_path: PathBuf,
}

/// Arguments of the listing tools (live files and offline disk).
#[derive(Debug, Deserialize, JsonSchema)]
struct ListPath {
    /// The workspace's id.
    workspace_id: String,
    /// Directory to list.
    #[serde(default = "default_workspace_path")]
    path: String,
    /// Descend into subdirectories.
    #[serde(default)]
    recursive: bool,
}

/// Arguments of the reading tools (live files and offline disk).
#[derive(Debug, Deserialize, JsonSchema)]
struct ReadPath {
    /// The workspace's id.
    workspace_id: String,
    /// File to read (relative paths are under `/workspace`).
    path: String,
    /// Read at most this many bytes (`truncated` says when the file holds more).
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
}

/// Arguments of `workspace_file_write`.
#[derive(Debug, Deserialize, JsonSchema)]
struct FileWrite {
    /// The workspace's id.
    workspace_id: String,
    /// File to create or replace under `/workspace`.
    path: String,
    /// The file's complete new UTF-8 content.
    text: String,
}

/// Arguments of `workspace_patch_apply`.
#[derive(Debug, Deserialize, JsonSchema)]
struct PatchApply {
    /// The workspace's id.
    workspace_id: String,
    /// A unified diff (add/modify/delete of text files under `/workspace`), applied all or nothing.
    patch: String,
}

/// Arguments of `workspace_disk_export`.
#[derive(Debug, Deserialize, JsonSchema)]
struct DiskExport {
    /// The workspace's id (the workspace must be stopped).
    workspace_id: String,
    /// Host path for the raw ext4 image; it must not exist yet.
    output_path: PathBuf,
}

/// Arguments of `snapshot_create` and `snapshot_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
struct SnapshotName {
    /// The workspace's id.
    workspace_id: String,
    /// The snapshot's name.
    snapshot_name: String,
}

/// Arguments of `workspace_reset`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Reset {
    /// The workspace's id.
    workspace_id: String,
    /// Snapshot to restore `/workspace` from: `baseline` or a named snapshot.
    #[serde(default = "default_snapshot")]
    snapshot: String,
}
