//! [`Pyro`]: the one facade every face (CLI, MCP, SDK) calls. Method names mirror the
//! SDK's.

use crate::doctor::DoctorReport;
use crate::environments::{oci::Published, EnvironmentInfo, EnvironmentStore, Progress, PruneReport, PullOptions, PullReport};
use crate::error::Result;
use crate::guest::OutputChunk;
use crate::paths::Dirs;
use crate::vm::{CreateVmOptions, DeleteReport, ExecReport, NetworkInfo, ReapReport, VmManager, VmStatus};

/// Receives live command output (stdout/stderr chunks) while a command runs.
pub type OutputSink<'a> = Option<&'a (dyn Fn(OutputChunk<'_>) + Send + Sync)>;

/// The pyro core facade.
#[derive(Debug, Clone)]
pub struct Pyro {
    dirs: Dirs,
    environments: EnvironmentStore,
    vms: VmManager,
}

impl Pyro {
    /// A facade using the directories from the environment (see [`Dirs::from_env`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_dirs(Dirs::from_env()?))
    }

    /// A facade over explicit directories.
    pub fn with_dirs(dirs: Dirs) -> Self {
        let environments = EnvironmentStore::new(dirs.clone());
        Self { vms: VmManager::new(dirs.clone(), environments.clone()), environments, dirs }
    }

    /// The directories in use.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// All catalog environments with their install state.
    pub fn list_environments(&self) -> Vec<EnvironmentInfo> {
        self.environments.list()
    }

    /// Installs an environment unless a valid install exists.
    pub async fn pull_environment(&self, name: &str, options: &PullOptions, progress: Progress<'_>) -> Result<PullReport> {
        self.environments.pull(name, options, progress).await
    }

    /// Describes one environment, re-hashing its artifacts when `verify` is set.
    pub fn inspect_environment(&self, name: &str, verify: bool) -> Result<EnvironmentInfo> {
        self.environments.inspect(name, verify)
    }

    /// Removes interrupted, outdated and unusable installs.
    pub fn prune_environments(&self) -> Result<PruneReport> {
        self.environments.prune()
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
    pub async fn run_in_vm(&self, options: &CreateVmOptions, command: &str, timeout_seconds: u64, progress: Progress<'_>, output: OutputSink<'_>) -> Result<ExecReport> {
        if timeout_seconds == 0 {
            return Err(crate::Error::InvalidArgument("timeout_seconds must be positive".into()));
        }
        options.validate()?;
        progress(&format!("[run] phase=create environment={}", options.environment));
        let vm = self.create_vm(options, progress).await?;
        let outcome = async {
            progress(&format!("[run] phase=start vm_id={} backend={}", vm.vm_id, vm.backend));
            self.start_vm(&vm.vm_id).await?;
            progress(&format!("[run] phase=execute vm_id={}", vm.vm_id));
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
}
