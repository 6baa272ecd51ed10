//! [`Pyro`]: the one facade every face (CLI, MCP, SDK) calls. Method names mirror the
//! SDK's.

use crate::doctor::DoctorReport;
use crate::environments::{oci::Published, EnvironmentCatalog, EnvironmentInfo, EnvironmentStore, PruneReport, PullOptions, PullReport};
use crate::error::Result;
use crate::events::{Event, OutputSink, Progress};
use crate::paths::Dirs;
use crate::vm::{CreateVmOptions, DeleteReport, ExecReport, NetworkInfo, ReapReport, VmManager, VmStatus};
use crate::workspace::changes::{ResetResult, SnapshotList, SnapshotResult, WorkspaceDiff};
use crate::workspace::disk::{DiskExported, DiskList, DiskRead};
use crate::workspace::files::{Exported, FileList, FileRead, FileWrite, PatchApplied, Synced};
use crate::workspace::history::WorkspaceLogs;
use crate::workspace::services::{ServiceList, ServiceLogs, ServiceRecord, StartServiceOptions};
use crate::workspace::shells::{OpenShellOptions, ReadShellOptions, ShellClosed, ShellRead, ShellSignalled, ShellStatus, ShellWritten};
use crate::workspace::{
    CreateWorkspaceOptions, NetworkLogReport, UpdateWorkspace, WorkspaceDeleted, WorkspaceExec, WorkspaceList, WorkspaceManager, WorkspaceStatus,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The pyro core facade.
#[derive(Debug, Clone)]
pub struct Pyro {
    dirs: Dirs,
    environments: EnvironmentStore,
    vms: VmManager,
    workspaces: WorkspaceManager,
}

impl Pyro {
    /// A facade using the directories from the environment (see [`Dirs::from_env`]).
    /// The cache and state roots are made private first ([`Dirs::secure`]).
    pub fn from_env() -> Result<Self> {
        let dirs = Dirs::from_env()?;
        dirs.secure()?;
        Ok(Self::with_dirs(dirs))
    }

    /// A facade over explicit directories.
    pub fn with_dirs(dirs: Dirs) -> Self {
        let environments = EnvironmentStore::new(dirs.clone());
        let vms = VmManager::new(dirs.clone(), environments.clone());
        Self { workspaces: WorkspaceManager::new(dirs.clone(), vms.clone()), vms, environments, dirs }
    }

    /// The directories in use.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// All catalog environments with their install state.
    pub fn list_environments(&self) -> EnvironmentCatalog {
        EnvironmentCatalog { catalog_version: crate::catalog::CATALOG_VERSION, environments: self.environments.list() }
    }

    /// Installs an environment unless a valid install exists.
    pub async fn pull_environment(&self, name: &str, options: &PullOptions, progress: Progress<'_>) -> Result<PullReport> {
        self.environments.pull(name, options, progress).await
    }

    /// Describes one environment, re-hashing its artifacts when `verify` is set.
    pub fn inspect_environment(&self, name: &str, verify: bool) -> Result<EnvironmentInfo> {
        self.environments.inspect(name, verify)
    }

    /// Removes interrupted, outdated and unusable installs, and the warm templates of
    /// environments that are gone or were rebuilt.
    pub fn prune_environments(&self) -> Result<PruneReport> {
        let mut report = self.environments.prune()?;
        report.deleted_templates = crate::template::TemplateStore::new(self.dirs.clone()).prune(&self.environments)?;
        Ok(report)
    }

    /// Publishes an installed environment to an OCI registry (maintainers).
    pub async fn publish_environment(&self, name: &str, location: &str, progress: Progress<'_>) -> Result<Published> {
        self.environments.publish(name, location, progress).await
    }

    /// Creates a VM (not started).
    pub async fn create_vm(&self, options: &CreateVmOptions, progress: Progress<'_>) -> Result<VmStatus> {
        self.vms.create_vm(options, progress).await
    }

    /// Boots a VM and waits for its agent.
    pub async fn start_vm(&self, vm_id: &str) -> Result<VmStatus> {
        self.vms.start_vm(vm_id).await
    }

    /// Runs one command in a started VM and deletes the VM afterwards.
    pub async fn exec_vm(&self, vm_id: &str, command: &str, timeout_seconds: u64, output: OutputSink<'_>) -> Result<ExecReport> {
        self.vms.exec_vm(vm_id, command, timeout_seconds, output).await
    }

    /// A low-level client of a started VM's agent (benchmarks, later faces).
    pub async fn guest(&self, vm_id: &str) -> Result<crate::guest::GuestClient> {
        self.vms.guest(vm_id).await
    }

    /// Stops a VM.
    pub async fn stop_vm(&self, vm_id: &str) -> Result<VmStatus> {
        self.vms.stop_vm(vm_id).await
    }

    /// Deletes a VM.
    pub async fn delete_vm(&self, vm_id: &str) -> Result<DeleteReport> {
        self.vms.delete_vm(vm_id, "explicit_delete").await
    }

    /// State of a VM.
    pub fn status_vm(&self, vm_id: &str) -> Result<VmStatus> {
        self.vms.status_vm(vm_id)
    }

    /// Network details of a VM.
    pub fn network_info_vm(&self, vm_id: &str) -> Result<NetworkInfo> {
        self.vms.network_info_vm(vm_id)
    }

    /// Deletes expired and orphaned VMs.
    pub async fn reap_expired(&self) -> Result<ReapReport> {
        self.vms.reap_expired().await
    }

    /// Create → start → exec (auto-clean); on failure the VM is deleted too.
    pub async fn run_in_vm(
        &self,
        options: &CreateVmOptions,
        command: &str,
        timeout_seconds: u64,
        progress: Progress<'_>,
        output: OutputSink<'_>,
    ) -> Result<ExecReport> {
        if timeout_seconds == 0 {
            return Err(crate::error::Error::InvalidArgument("timeout_seconds must be positive".into()));
        }
        options.validate()?;
        progress(&Event::RunCreate { environment: options.environment.clone() });
        let vm = self.create_vm(options, progress).await?;
        let outcome = async {
            progress(&Event::RunStart { vm_id: vm.vm_id.clone(), backend: vm.backend, isolation: vm.isolation });
            let started = self.start_vm(&vm.vm_id).await?;
            progress(&Event::RunExecute { vm_id: vm.vm_id.clone(), start_mode: started.start_mode.unwrap_or_default(), boot_ms: started.boot_ms });
            self.exec_vm(&vm.vm_id, command, timeout_seconds, output).await
        }
        .await;
        if outcome.is_err() {
            let _ = self.vms.delete_vm(&vm.vm_id, "run_vm_error_cleanup").await;
        }
        outcome
    }

    /// Host diagnosis and backend choice.
    pub async fn doctor(&self) -> DoctorReport {
        crate::doctor::report(&self.dirs, &self.environments).await
    }

    /// Creates, boots and seeds a persistent workspace.
    pub async fn create_workspace(&self, options: &CreateWorkspaceOptions, progress: Progress<'_>) -> Result<WorkspaceStatus> {
        self.workspaces.create(options, progress).await
    }

    /// Workspaces, most recently active first.
    pub async fn list_workspaces(&self) -> Result<WorkspaceList> {
        self.workspaces.list().await
    }

    /// Imports host content into a started workspace.
    pub async fn push_workspace_sync(&self, workspace_id: &str, source_path: &Path, dest: &str) -> Result<Synced> {
        self.workspaces.sync_push(workspace_id, source_path, dest).await
    }

    /// Stops a workspace, keeping its disk.
    pub async fn stop_workspace(&self, workspace_id: &str) -> Result<WorkspaceStatus> {
        self.workspaces.stop(workspace_id).await
    }

    /// Boots a stopped workspace.
    pub async fn start_workspace(&self, workspace_id: &str) -> Result<WorkspaceStatus> {
        self.workspaces.start(workspace_id).await
    }

    /// Lists a live path under `/workspace`.
    pub async fn list_workspace_files(&self, workspace_id: &str, path: &str, recursive: bool) -> Result<FileList> {
        self.workspaces.list_files(workspace_id, path, recursive).await
    }

    /// Reads a live text file.
    pub async fn read_workspace_file(&self, workspace_id: &str, path: &str, max_bytes: u64) -> Result<FileRead> {
        self.workspaces.read_file(workspace_id, path, max_bytes).await
    }

    /// Creates or replaces a live text file.
    pub async fn write_workspace_file(&self, workspace_id: &str, path: &str, text: &str) -> Result<FileWrite> {
        self.workspaces.write_file(workspace_id, path, text).await
    }

    /// Exports a path from `/workspace` to the host.
    pub async fn export_workspace(&self, workspace_id: &str, path: &str, output_path: &Path) -> Result<Exported> {
        self.workspaces.export(workspace_id, path, output_path).await
    }

    /// Applies a unified diff, all or nothing.
    pub async fn apply_workspace_patch(&self, workspace_id: &str, patch: &str) -> Result<PatchApplied> {
        self.workspaces.apply_patch(workspace_id, patch).await
    }

    /// Copies a stopped workspace's disk as raw ext4.
    pub async fn export_workspace_disk(&self, workspace_id: &str, output_path: &Path) -> Result<DiskExported> {
        self.workspaces.export_disk(workspace_id, output_path).await
    }

    /// Lists a path of a stopped workspace's disk offline.
    pub async fn list_workspace_disk(&self, workspace_id: &str, path: &str, recursive: bool) -> Result<DiskList> {
        self.workspaces.list_disk(workspace_id, path, recursive).await
    }

    /// Reads a file of a stopped workspace's disk offline.
    pub async fn read_workspace_disk(&self, workspace_id: &str, path: &str, max_bytes: u64) -> Result<DiskRead> {
        self.workspaces.read_disk(workspace_id, path, max_bytes).await
    }

    /// Compares `/workspace` with its baseline.
    pub async fn diff_workspace(&self, workspace_id: &str) -> Result<WorkspaceDiff> {
        self.workspaces.diff(workspace_id).await
    }

    /// Captures a named snapshot.
    pub async fn create_snapshot(&self, workspace_id: &str, snapshot_name: &str) -> Result<SnapshotResult> {
        self.workspaces.create_snapshot(workspace_id, snapshot_name).await
    }

    /// Lists snapshots.
    pub async fn list_snapshots(&self, workspace_id: &str) -> Result<SnapshotList> {
        self.workspaces.list_snapshots(workspace_id).await
    }

    /// Deletes a named snapshot.
    pub async fn delete_snapshot(&self, workspace_id: &str, snapshot_name: &str) -> Result<SnapshotResult> {
        self.workspaces.delete_snapshot(workspace_id, snapshot_name).await
    }

    /// Recreates the sandbox and restores `/workspace` from a snapshot.
    pub async fn reset_workspace(&self, workspace_id: &str, snapshot: &str) -> Result<ResetResult> {
        self.workspaces.reset(workspace_id, snapshot).await
    }

    /// Runs one command in `/workspace`; `secret_env` maps workspace secrets (by name) to
    /// environment variables of that command only; `output` (when given) sees the output
    /// as it arrives.
    pub async fn exec_workspace(
        &self,
        workspace_id: &str,
        command: &str,
        timeout_seconds: u64,
        secret_env: &BTreeMap<String, String>,
        output: OutputSink<'_>,
    ) -> Result<WorkspaceExec> {
        self.workspaces.exec(workspace_id, command, timeout_seconds, secret_env, output).await
    }

    /// Deletes a workspace.
    pub async fn delete_workspace(&self, workspace_id: &str) -> Result<WorkspaceDeleted> {
        self.workspaces.delete(workspace_id).await
    }

    /// One workspace's status.
    pub async fn status_workspace(&self, workspace_id: &str) -> Result<WorkspaceStatus> {
        self.workspaces.status(workspace_id).await
    }

    /// A workspace's network log: flow counts and the latest refused flows.
    pub async fn network_log_workspace(&self, workspace_id: &str) -> Result<NetworkLogReport> {
        self.workspaces.network_log(workspace_id).await
    }

    /// Changes name and labels.
    pub async fn update_workspace(&self, workspace_id: &str, change: &UpdateWorkspace) -> Result<WorkspaceStatus> {
        self.workspaces.update(workspace_id, change).await
    }

    /// Command history.
    pub async fn logs_workspace(&self, workspace_id: &str) -> Result<WorkspaceLogs> {
        self.workspaces.logs(workspace_id).await
    }

    /// Opens a persistent PTY shell in a started workspace (defaults: `cwd="/workspace"`,
    /// `cols=120`, `rows=30`, no `secret_env`; see [`OpenShellOptions::default`]).
    pub async fn open_shell(&self, workspace_id: &str, options: &OpenShellOptions) -> Result<ShellStatus> {
        self.workspaces.open_shell(workspace_id, options).await
    }

    /// Reads a shell's output by cursor (defaults: `cursor=0`, `max_chars=65536`,
    /// `plain=false`, no `wait_for_idle_ms`; see [`ReadShellOptions::default`]).
    pub async fn read_shell(&self, workspace_id: &str, shell_id: &str, options: &ReadShellOptions) -> Result<ShellRead> {
        self.workspaces.read_shell(workspace_id, shell_id, options).await
    }

    /// Types `input` into a shell, followed by a newline when `append_newline` (the
    /// contract's default is true).
    pub async fn write_shell(&self, workspace_id: &str, shell_id: &str, input: &str, append_newline: bool) -> Result<ShellWritten> {
        self.workspaces.write_shell(workspace_id, shell_id, input, append_newline).await
    }

    /// Signals a shell's foreground process group: `signal_name` is `HUP`, `INT` (the
    /// contract's default), `TERM` or `KILL`, in any case.
    pub async fn signal_shell(&self, workspace_id: &str, shell_id: &str, signal_name: &str) -> Result<ShellSignalled> {
        self.workspaces.signal_shell(workspace_id, shell_id, signal_name).await
    }

    /// Ends a shell and frees its buffer.
    pub async fn close_shell(&self, workspace_id: &str, shell_id: &str) -> Result<ShellClosed> {
        self.workspaces.close_shell(workspace_id, shell_id).await
    }

    /// Starts the named service in a started workspace and waits for its readiness
    /// (see [`StartServiceOptions`] for the command, cwd, probe, timings, secrets and
    /// published ports). A service that exits or never gets ready is returned `failed`,
    /// not as an error.
    pub async fn start_service(&self, workspace_id: &str, service_name: &str, options: &StartServiceOptions) -> Result<ServiceRecord> {
        self.workspaces.start_service(workspace_id, service_name, options).await
    }

    /// The workspace's services with `count` and `running_count`.
    pub async fn list_services(&self, workspace_id: &str) -> Result<ServiceList> {
        self.workspaces.list_services(workspace_id).await
    }

    /// One service's record.
    pub async fn status_service(&self, workspace_id: &str, service_name: &str) -> Result<ServiceRecord> {
        self.workspaces.status_service(workspace_id, service_name).await
    }

    /// A service's `stdout` and `stderr`: the last `tail_lines` (default 200) lines of
    /// each, or everything kept with `all`; `truncated` says whether anything was left out.
    pub async fn logs_service(&self, workspace_id: &str, service_name: &str, tail_lines: u64, all: bool) -> Result<ServiceLogs> {
        self.workspaces.logs_service(workspace_id, service_name, tail_lines, all).await
    }

    /// Stops a service (SIGTERM to its process group, then SIGKILL after 5 s).
    pub async fn stop_service(&self, workspace_id: &str, service_name: &str) -> Result<ServiceRecord> {
        self.workspaces.stop_service(workspace_id, service_name).await
    }
}
