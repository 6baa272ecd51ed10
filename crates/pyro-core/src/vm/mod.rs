//! Ephemeral VMs: create, start, exec (auto-cleans), stop, delete, status, reap, run.
//!
//! Every VM is a directory under `<state>/vms/<id>/` holding its record, disk, logs and
//! sockets, so VMs created by one process are visible to every other. A started VM is
//! owned by its [`supervisor`] process; CLI processes talk to the guest through it.

pub mod record;
mod relay;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyro_protocol::{ExecRequest, Hello};
use serde::Serialize;
use tokio::net::UnixStream;

use self::record::{new_id, validate_id, vms_root, VmRecord, VmState};
use self::supervisor::{Phase, SupervisorStatus, CONTROL_SOCKET};
use crate::environments::{EnvironmentStore, InstalledEnvironment, PullOptions};
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, OutputChunk, Progress};
use crate::fsutil::{lock_file, unix_now};
use crate::guest::{ExecOutput, GuestClient};
use crate::network::{NetworkDetails, NetworkSettings};
use crate::options::NetworkPolicy;
use crate::paths::Dirs;
use crate::template::{TemplateFor, TemplateKind, TemplateStore};
use crate::vmm::select::{backend_from_env, HostProbe, Selection};
use crate::vmm::{self, BackendKind, LaunchSpec};

/// How long a supervisor whose guest is ready may take to greet a new client.
const READY_HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Default exec output cap per stream (bytes); more is drained and flagged truncated.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Validated sizing and options of a new VM.
#[derive(Debug, Clone)]
pub struct CreateVmOptions {
    /// Catalog environment name.
    pub environment: String,
    /// Virtual CPUs (1–8).
    pub vcpu_count: u32,
    /// Memory in MiB (256–32768).
    pub mem_mib: u32,
    /// Lifetime in seconds (60–86400).
    pub ttl_seconds: u64,
    /// Guest networking.
    pub network: bool,
    /// Permit running on the host without isolation when no guest backend works.
    pub allow_host_compat: bool,
    /// Explicit backend (else `$PYRO_BACKEND`, else automatic).
    pub backend: Option<BackendKind>,
    /// Delete the VM when this process exits.
    pub owner_pid: Option<u32>,
    /// Full guest console in the serial log.
    pub debug_console: bool,
    /// Boot a kernel even where a warm template could be restored.
    pub cold: bool,
}

impl CreateVmOptions {
    /// Defaults of the contract: 1 vCPU, 1024 MiB, 600 s TTL, no network, no host compat.
    pub fn new(environment: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            vcpu_count: 1,
            mem_mib: 1024,
            ttl_seconds: 600,
            network: false,
            allow_host_compat: false,
            backend: None,
            owner_pid: None,
            debug_console: false,
            cold: false,
        }
    }

    /// Checks limits and the environment name.
    pub fn validate(&self) -> Result<()> {
        crate::catalog::lookup(&self.environment)?;
        let invalid = |m: &str| Err(Error::InvalidArgument(m.into()));
        if !(1..=8).contains(&self.vcpu_count) {
            return invalid("vcpu_count must be between 1 and 8");
        }
        if !(256..=32768).contains(&self.mem_mib) {
            return invalid("mem_mib must be between 256 and 32768");
        }
        if !(60..=86400).contains(&self.ttl_seconds) {
            return invalid("ttl_seconds must be between 60 and 86400");
        }
        if self.backend == Some(BackendKind::HostCompat) && !self.allow_host_compat {
            return Err(host_compat_needs_opt_in());
        }
        Ok(())
    }
}

/// Guest networking needs a guest on QEMU (see [`crate::network`]).
pub(crate) fn check_network_backend(backend: BackendKind) -> Result<()> {
    match backend {
        BackendKind::QemuTcg | BackendKind::QemuKvm => Ok(()),
        BackendKind::Firecracker => Err(vmm::firecracker::network_unsupported()),
        BackendKind::HostCompat => {
            Err(Error::Unavailable("guest networking needs a guest: host_compat runs commands on the host, with the host's own network".into()))
        }
    }
}

fn host_compat_needs_opt_in() -> Error {
    Error::InvalidArgument("the host_compat backend runs commands on the host without isolation; it needs --allow-host-compat".into())
}

/// What `status_vm` and the lifecycle calls return.
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    /// VM id.
    pub vm_id: String,
    /// Environment name.
    pub environment: String,
    /// Environment version.
    pub environment_version: String,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Lifetime.
    pub ttl_seconds: u64,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds.
    pub expires_at: f64,
    /// `created`, `started` or `stopped`.
    pub state: &'static str,
    /// The guest has a network (`--network`).
    pub network_enabled: bool,
    /// Host execution was opted into.
    pub allow_host_compat: bool,
    /// Guest IP, when it has a network.
    pub guest_ip: Option<String>,
    /// Always `None`: the NIC is a socket of the supervisor, not a host TAP device.
    pub tap_name: Option<String>,
    /// `guest_vsock` (a real guest through the agent channel) or `host_compat`.
    pub execution_mode: &'static str,
    /// Backend running the VM.
    pub backend: &'static str,
    /// What isolates it: `kvm`, `tcg` (software emulation) or `none`.
    pub isolation: &'static str,
    /// Why that backend.
    pub backend_reason: String,
    /// Milliseconds from launch to the agent's hello on the last start.
    pub boot_ms: Option<u64>,
    /// How the guest came up on the last start: `restored` (a warm template) or `booted`.
    pub start_mode: Option<String>,
    /// `uname -r` inside the guest.
    pub guest_kernel: Option<String>,
    /// Why the VM stopped unexpectedly.
    pub last_error: Option<String>,
}

/// The result of one command.
#[derive(Debug, Clone, Serialize)]
pub struct ExecReport {
    /// VM id.
    pub vm_id: String,
    /// Environment name.
    pub environment: String,
    /// Environment version.
    pub environment_version: String,
    /// The command as run by `/bin/sh -lc`.
    pub command: String,
    /// What the command produced.
    #[serde(flatten)]
    pub output: CommandOutput,
    /// `guest_vsock` or `host_compat`.
    pub execution_mode: &'static str,
    /// Backend that ran it.
    pub backend: &'static str,
    /// What happened to the VM afterwards.
    pub cleanup: Cleanup,
}

/// Serialises bytes as (lossy) UTF-8 text for JSON results.
pub(crate) fn lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// What one command produced; shared by `pyro run` and workspace exec results.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOutput {
    /// Standard output (lossy UTF-8 in JSON; raw bytes on the CLI's stdout).
    #[serde(serialize_with = "lossy")]
    pub stdout: Vec<u8>,
    /// Standard error.
    #[serde(serialize_with = "lossy")]
    pub stderr: Vec<u8>,
    /// Exit code (124 on timeout, 128+N for signal N).
    pub exit_code: i32,
    /// Wall time measured in the guest.
    pub duration_ms: u64,
    /// The command hit its timeout.
    pub timed_out: bool,
    /// Stdout exceeded the output cap.
    pub stdout_truncated: bool,
    /// Stderr exceeded the output cap.
    pub stderr_truncated: bool,
}

impl From<ExecOutput> for CommandOutput {
    fn from(out: ExecOutput) -> Self {
        let r = out.result;
        Self {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            timed_out: r.timed_out,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
        }
    }
}

/// The auto-clean after an exec.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// VM id.
    pub vm_id: String,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Why.
    pub reason: &'static str,
}

/// Result of [`VmManager::delete_vm`].
#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    /// VM id.
    pub vm_id: String,
    /// Always true.
    pub deleted: bool,
    /// Why.
    pub reason: String,
}

/// Result of [`VmManager::reap_expired`].
#[derive(Debug, Clone, Serialize)]
pub struct ReapReport {
    /// Deleted VM ids.
    pub deleted_vm_ids: Vec<String>,
    /// How many.
    pub count: usize,
}

/// Network details of a VM.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkInfo {
    /// VM id.
    pub vm_id: String,
    /// Whether the VM has a network.
    pub network_enabled: bool,
    /// Whether outbound traffic should work.
    pub outbound_connectivity_expected: bool,
    /// Why there is none.
    pub reason: Option<String>,
    /// `off`, `egress` (public destinations only) or `egress+published-ports`.
    pub policy: NetworkPolicy,
    /// Addresses, resolver and allow-list, when there is a network.
    #[serde(flatten)]
    pub details: Option<NetworkDetails>,
    /// Refused and allowed flow counts so far.
    pub denied_flows: u64,
    /// Flows the policy let through so far.
    pub allowed_flows: u64,
}

impl NetworkInfo {
    /// The network of the VM `record` describes.
    pub fn of(record: &VmRecord) -> Self {
        match &record.network {
            Some(settings) => {
                let log = crate::network::log::NetworkLog::load(record.dir());
                Self {
                    vm_id: record.vm_id.clone(),
                    network_enabled: true,
                    outbound_connectivity_expected: true,
                    reason: None,
                    policy: settings.network_policy(),
                    details: Some(NetworkDetails::of(settings)),
                    denied_flows: log.denied_flows,
                    allowed_flows: log.allowed_flows,
                }
            }
            None => Self {
                vm_id: record.vm_id.clone(),
                network_enabled: false,
                outbound_connectivity_expected: false,
                reason: Some("this VM was created without a network (--network)".into()),
                policy: NetworkPolicy::Off,
                details: None,
                denied_flows: 0,
                allowed_flows: 0,
            },
        }
    }
}

/// The VM lifecycle over the state directory.
#[derive(Debug, Clone)]
pub struct VmManager {
    dirs: Dirs,
    environments: EnvironmentStore,
    templates: TemplateStore,
}

impl VmManager {
    /// A manager over `dirs`.
    pub fn new(dirs: Dirs, environments: EnvironmentStore) -> Self {
        Self { templates: TemplateStore::new(dirs.clone()), dirs, environments }
    }

    /// The warm templates this manager restores.
    pub(crate) fn templates(&self) -> &TemplateStore {
        &self.templates
    }

    fn vm_dir(&self, vm_id: &str) -> Result<PathBuf> {
        validate_id(vm_id)?;
        let dir = vms_root(&self.dirs.state).join(vm_id);
        if !VmRecord::path(&dir).exists() {
            return Err(Error::not_found("vm", vm_id));
        }
        Ok(dir)
    }

    /// Creates a VM record and its private disk (installing the environment if needed).
    pub async fn create_vm(&self, options: &CreateVmOptions, progress: Progress<'_>) -> Result<VmStatus> {
        options.validate()?;
        let installed = self.ensure_installed(&options.environment, progress).await?;
        let selection = self.select_backend(options, &installed, progress).await?;
        if options.network {
            check_network_backend(selection.backend)?;
        }
        let vm_id = new_id();
        let root = vms_root(&self.dirs.state);
        std::fs::create_dir_all(&root).ctx("create", &root)?;
        let vm_dir = root.join(&vm_id);
        std::fs::create_dir(&vm_dir).ctx("create", &vm_dir)?;
        let wanted = TemplateFor {
            installed: &installed,
            backend: selection.backend,
            vcpu_count: options.vcpu_count,
            mem_mib: options.mem_mib,
            kind: TemplateKind::Ephemeral,
            network: options.network,
        };
        let template = self.templates.warm(&wanted, options.cold || options.debug_console, progress).await;
        let prepared = match &template {
            Some(template) => {
                let disk = vm_dir.join(TemplateKind::Ephemeral.disk_file());
                crate::guest_disk::copy(&template.disk(), &disk).map(|()| disk)
            }
            None => self.prepare_disk(selection.backend, &installed, &vm_dir),
        };
        let disk = match prepared {
            Ok(disk) => disk,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&vm_dir);
                return Err(e);
            }
        };
        let launch = LaunchSpec {
            vm_dir: vm_dir.clone(),
            kernel: installed.kernel.clone(),
            disk,
            vcpu_count: options.vcpu_count,
            mem_mib: options.mem_mib,
            debug_console: options.debug_console,
            restore: template.map(|t| t.restore_from(Some(&installed.rootfs))),
            network: options.network,
        };
        let mut record = VmRecord::new(vm_id, &installed, launch, options.ttl_seconds, selection, options.allow_host_compat);
        record.owner_pid = options.owner_pid;
        record.network = options.network.then(NetworkSettings::default);
        if let Err(e) = record.save() {
            let _ = std::fs::remove_dir_all(&vm_dir);
            return Err(e);
        }
        Ok(status_of(&record))
    }

    pub(crate) async fn ensure_installed(&self, name: &str, progress: Progress<'_>) -> Result<InstalledEnvironment> {
        crate::catalog::lookup(name)?;
        match self.environments.installed(name) {
            Ok(installed) => Ok(installed),
            Err(Error::NotInstalled(_)) => {
                self.environments.pull(name, &PullOptions::default(), progress).await?;
                self.environments.installed(name)
            }
            Err(e) => Err(e),
        }
    }

    /// Picks the backend, running (and caching) the KVM boot check when it is due.
    pub(crate) async fn select_backend(&self, options: &CreateVmOptions, installed: &InstalledEnvironment, progress: Progress<'_>) -> Result<Selection> {
        let requested = match options.backend {
            Some(kind) => Some(kind),
            None => backend_from_env()?,
        };
        if requested == Some(BackendKind::HostCompat) && !options.allow_host_compat {
            return Err(host_compat_needs_opt_in());
        }
        let kernel_sha = installed.manifest.artifacts.get(crate::environments::KERNEL_FILE).map(|a| a.sha256.clone());
        let cache_file = self.dirs.cache.join("kvm-boot-check.json");
        let mut probe = HostProbe::probe(&cache_file, kernel_sha.as_deref());
        if requested.is_none() && probe.needs_kvm_check() {
            progress(&Event::KvmCheck);
            kvm_check::run(&self.dirs, installed, &cache_file).await;
            probe = HostProbe::probe(&cache_file, kernel_sha.as_deref());
        }
        match probe.choose(requested) {
            Ok(selection) => Ok(selection),
            Err(reason) if options.allow_host_compat => Ok(Selection { backend: BackendKind::HostCompat, reason: format!("no guest backend ({reason}); host compatibility mode was opted into") }),
            Err(reason) => Err(Error::Vmm(format!(
                "guest boot is unavailable and host compatibility mode is disabled: {reason}. Set allow_host_compat=True (CLI: --allow-host-compat) to opt into host execution."
            ))),
        }
    }

    fn prepare_disk(&self, backend: BackendKind, installed: &InstalledEnvironment, vm_dir: &Path) -> Result<PathBuf> {
        match backend {
            BackendKind::QemuKvm | BackendKind::QemuTcg => {
                let binary = vmm::qemu::locate().ok_or_else(|| Error::Vmm("qemu-system-x86_64 is not installed".into()))?;
                vmm::qemu::Qemu::new(binary, vmm::qemu::Accel::Tcg).prepare_disk(&installed.rootfs, vm_dir)
            }
            BackendKind::Firecracker => vmm::firecracker::prepare_disk(&installed.rootfs, vm_dir),
            BackendKind::HostCompat => Ok(installed.rootfs.clone()),
        }
    }

    /// Boots a created or stopped VM and waits for its agent.
    pub async fn start_vm(&self, vm_id: &str) -> Result<VmStatus> {
        let dir = self.vm_dir(vm_id)?;
        let _lock = lock_file(&dir.join("vm.lock"))?;
        let record = refreshed(&dir)?;
        if record.state == VmState::Started {
            return Err(Error::wrong_state("stopped", "started", format!("vm {vm_id} cannot be started from state 'started'")));
        }
        Ok(status_of(&boot_dir(record).await?))
    }

    /// Runs one command in a started VM, then deletes the VM whatever the exit code.
    pub async fn exec_vm(
        &self,
        vm_id: &str,
        command: &str,
        timeout_seconds: u64,
        output: Option<&(dyn Fn(OutputChunk<'_>) + Send + Sync)>,
    ) -> Result<ExecReport> {
        if timeout_seconds == 0 {
            return Err(Error::InvalidArgument("timeout_seconds must be positive".into()));
        }
        let dir = self.vm_dir(vm_id)?;
        let record = refreshed(&dir)?;
        if record.state != VmState::Started {
            return Err(Error::wrong_state("started", record.state.name(), format!("vm {vm_id} must be in 'started' state before execution")));
        }
        let (client, _) = connect(&dir).await?;
        let request = ExecRequest {
            command: command.to_string(),
            env: Default::default(),
            cwd: None,
            timeout_ms: timeout_seconds.saturating_mul(1000),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            secret_env: Default::default(),
        };
        let output = client.exec_streaming(request, output).await.map_err(|e| guest_failure(&dir, e))?;
        drop(client);
        self.delete_vm(vm_id, "post_exec_cleanup").await?;
        Ok(ExecReport {
            vm_id: vm_id.into(),
            environment: record.environment.clone(),
            environment_version: record.environment_version.clone(),
            command: command.into(),
            output: output.into(),
            execution_mode: record.backend.execution_mode(),
            backend: record.backend.name(),
            cleanup: Cleanup { vm_id: vm_id.into(), deleted: true, reason: "post_exec_cleanup" },
        })
    }

    /// A client of the agent of a started VM (through its supervisor).
    pub async fn guest(&self, vm_id: &str) -> Result<GuestClient> {
        let dir = self.vm_dir(vm_id)?;
        let state = refreshed(&dir)?.state;
        if state != VmState::Started {
            return Err(Error::wrong_state("started", state.name(), format!("vm {vm_id} must be in 'started' state before execution")));
        }
        Ok(connect(&dir).await?.0)
    }

    /// Stops a VM (agent shutdown, then the supervisor forces the VMM down).
    pub async fn stop_vm(&self, vm_id: &str) -> Result<VmStatus> {
        let dir = self.vm_dir(vm_id)?;
        let _lock = lock_file(&dir.join("vm.lock"))?;
        let mut record = refreshed(&dir)?;
        stop_supervisor(&record, Teardown::Graceful).await;
        record.state = if record.state == VmState::Created { VmState::Created } else { VmState::Stopped };
        record.supervisor_pid = None;
        record.save()?;
        Ok(status_of(&record))
    }

    /// Stops (if needed) and removes a VM.
    pub async fn delete_vm(&self, vm_id: &str, reason: &str) -> Result<DeleteReport> {
        let dir = self.vm_dir(vm_id)?;
        let record = VmRecord::load(&dir)?;
        // Never remove a directory under a live guest: its disk would vanish beneath it.
        if !stop_supervisor(&record, Teardown::Discard).await {
            return Err(Error::Vmm(format!("vm {vm_id} would not stop; it was not deleted")));
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", &dir, e)),
            _ => {}
        }
        Ok(DeleteReport { vm_id: vm_id.into(), deleted: true, reason: reason.into() })
    }

    /// Current state of a VM.
    pub fn status_vm(&self, vm_id: &str) -> Result<VmStatus> {
        let dir = self.vm_dir(vm_id)?;
        Ok(status_of(&refreshed(&dir)?))
    }

    /// Network configuration of a VM: its addresses, resolver and policy.
    pub fn network_info_vm(&self, vm_id: &str) -> Result<NetworkInfo> {
        let dir = self.vm_dir(vm_id)?;
        let record = VmRecord::load(&dir)?;
        Ok(NetworkInfo::of(&record))
    }

    /// Deletes expired VMs and ephemeral VMs whose owner and supervisor are both gone.
    pub async fn reap_expired(&self) -> Result<ReapReport> {
        let root = vms_root(&self.dirs.state);
        let mut deleted = Vec::new();
        let Ok(entries) = std::fs::read_dir(&root) else { return Ok(ReapReport { deleted_vm_ids: vec![], count: 0 }) };
        let now = unix_now();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if validate_id(&id).is_err() {
                continue;
            }
            let dir = entry.path();
            let reap = match VmRecord::load(&dir) {
                Ok(record) => {
                    let supervised = record.supervisor_pid.map(|p| supervisor::is_alive(p, &dir)).unwrap_or(false);
                    let owner_gone = record.owner_pid.map(|p| !process_exists(p)).unwrap_or(false);
                    record.expires_at <= now || (owner_gone && !supervised)
                }
                // A directory without a readable record is a VM whose creation was cut
                // short — or one `create_vm` is still filling: only old ones are reaped.
                Err(_) => !dir.join(CONTROL_SOCKET).exists() && older_than(&dir, UNRECORDED_VM_GRACE),
            };
            let removed = reap && (self.delete_vm(&id, "expired").await.is_ok() || (VmRecord::load(&dir).is_err() && std::fs::remove_dir_all(&dir).is_ok()));
            if removed {
                deleted.push(id);
            }
        }
        deleted.sort();
        Ok(ReapReport { count: deleted.len(), deleted_vm_ids: deleted })
    }
}

/// How a VM is brought down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Teardown {
    /// The agent syncs and powers off; the disk is kept (stop).
    Graceful,
    /// The VMM is killed at once: the disk is about to be removed or replaced, so
    /// nothing on it needs to be flushed (delete, reset).
    Discard,
}

/// Stops the supervisor of `record`, if any: gracefully, the agent is asked to power
/// off first, then the supervisor forces the VMM down; to discard, the VMM is killed at
/// once. A VMM that outlived its supervisor is killed too. Returns whether both are gone
/// (false: something would not die, so the VM's directory must stay).
pub(crate) async fn stop_supervisor(record: &VmRecord, teardown: Teardown) -> bool {
    let dir = record.dir();
    if let Some(pid) = record.supervisor_pid.filter(|pid| supervisor::is_alive(*pid, dir)) {
        let signal = match teardown {
            Teardown::Graceful => libc::SIGTERM,
            Teardown::Discard => supervisor::DISCARD_SIGNAL,
        };
        // SAFETY: plain signal delivery to a process we verified is our supervisor.
        unsafe { libc::kill(pid as i32, signal) };
        if !supervisor_exits(pid, dir, Duration::from_secs(10)).await {
            // SAFETY: as above; the supervisor ignored the signal for 10 s.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            if !supervisor_exits(pid, dir, Duration::from_secs(2)).await {
                return false;
            }
        }
    }
    kill_stray_vmm(dir).await
}

/// Waits up to `limit` for the supervisor `pid` of `dir` to be gone.
async fn supervisor_exits(pid: u32, dir: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while supervisor::is_alive(pid, dir) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Kills the VMM recorded in `dir` if it still runs without a supervisor (by pid *and*
/// start time, never a reused pid), and forgets it. False if it would not die.
pub(crate) async fn kill_stray_vmm(dir: &Path) -> bool {
    let path = dir.join(supervisor::VMM_IDENTITY_FILE);
    let Some(vmm) = crate::host_process::ProcessIdentity::load(&path) else { return true };
    if vmm.is_alive() {
        tracing::warn!("stopping a VMM (pid {}) left running without its supervisor", vmm.pid);
        if !vmm.kill_and_wait(Duration::from_secs(10)).await {
            tracing::warn!("the stray VMM (pid {}) did not exit after SIGKILL", vmm.pid);
            return false;
        }
    }
    let _ = std::fs::remove_file(&path);
    true
}

/// How long a VM directory without a record is left alone by `reap_expired`.
const UNRECORDED_VM_GRACE: Duration = Duration::from_secs(600);

/// Whether `path` was last modified more than `age` ago.
fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|elapsed| elapsed > age)
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Connects to the supervisor of a started VM and waits for the agent's hello.
pub(crate) async fn connect(dir: &Path) -> Result<(GuestClient, Hello)> {
    let socket = dir.join(CONTROL_SOCKET);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let stream = loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => break stream,
            Err(e) => {
                if let Some(status) = SupervisorStatus::load(dir).filter(|s| s.phase == Phase::Failed || s.phase == Phase::Exited) {
                    return Err(Error::Vmm(status.error.unwrap_or_else(|| "the VM is not running".into())));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Vmm(format!("cannot reach the VM supervisor: {e}")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A ready supervisor answers at once; only a booting one may take the boot timeout.
    let ready = SupervisorStatus::load(dir).is_some_and(|s| s.phase == Phase::Ready);
    let timeout = if ready { READY_HELLO_DEADLINE } else { supervisor::boot_timeout() + Duration::from_secs(15) };
    match GuestClient::connect(stream, timeout).await {
        Ok(connected) => Ok(connected),
        Err(crate::guest::GuestError::HelloTimeout(_)) if ready => Err(Error::Vmm(format!(
            "the VM supervisor did not answer within {}s (is it stopped or hung? `pyro workspace stop` and `start` recover)",
            READY_HELLO_DEADLINE.as_secs()
        ))),
        Err(e) => Err(guest_failure(dir, e)),
    }
}

/// Explains a guest channel failure, preferring what the supervisor recorded.
fn guest_failure(dir: &Path, error: crate::guest::GuestError) -> Error {
    use crate::guest::GuestError;
    // A deadline the host enforced says more than whatever the supervisor last recorded.
    if matches!(error, GuestError::Timeout { .. } | GuestError::Stalled { .. } | GuestError::SlowConsumer { .. }) {
        return Error::Guest(error);
    }
    match SupervisorStatus::load(dir).and_then(|s| s.error) {
        Some(recorded) => Error::Vmm(recorded),
        None => Error::Guest(error),
    }
}

fn status_of(record: &VmRecord) -> VmStatus {
    VmStatus {
        vm_id: record.vm_id.clone(),
        environment: record.environment.clone(),
        environment_version: record.environment_version.clone(),
        vcpu_count: record.vcpu_count,
        mem_mib: record.mem_mib,
        ttl_seconds: record.ttl_seconds,
        created_at: record.created_at,
        expires_at: record.expires_at,
        state: record.state.name(),
        network_enabled: record.network.is_some(),
        allow_host_compat: record.allow_host_compat,
        guest_ip: record.network.as_ref().map(|_| crate::network::addresses().guest_ip.to_string()),
        tap_name: None,
        execution_mode: if record.state == VmState::Created { "pending" } else { record.backend.execution_mode() },
        backend: record.backend.name(),
        isolation: record.backend.isolation(),
        backend_reason: record.backend_reason.clone(),
        boot_ms: record.boot_ms,
        start_mode: record.start_mode.clone(),
        guest_kernel: record.guest_kernel.clone(),
        last_error: record.last_error.clone(),
    }
}

mod kvm_check;

pub use kvm_check::run as run_kvm_check;

/// Loads a record and reconciles its state with its supervisor: a started VM whose
/// supervisor is gone is stopped, with the reason the supervisor recorded.
pub(crate) fn refreshed(dir: &Path) -> Result<VmRecord> {
    let mut record = VmRecord::load(dir)?;
    if record.state == VmState::Started && !record.supervisor_pid.map(|p| supervisor::is_alive(p, dir)).unwrap_or(false) {
        record.state = VmState::Stopped;
        record.supervisor_pid = None;
        record.last_error = SupervisorStatus::load(dir).and_then(|s| s.error).or(Some("the VM is no longer running".into()));
        record.save()?;
    }
    Ok(record)
}

/// [`refreshed`], also stopping a VMM that outlived its supervisor, so "stopped" is true.
pub(crate) async fn refreshed_and_reaped(dir: &Path) -> Result<VmRecord> {
    let record = refreshed(dir)?;
    if record.state != VmState::Started && !kill_stray_vmm(dir).await {
        return Err(Error::Vmm("the VM's VMM outlived its supervisor and would not exit".into()));
    }
    Ok(record)
}

/// The first clause of a long failure (up to the serial log), at most 300 characters.
fn first_line(reason: &str) -> String {
    reason.split("; serial log: ").next().unwrap_or(reason).chars().take(300).collect()
}

/// Starts the supervisor of a VM directory and waits for the agent's hello; the record
/// says started (with boot time and guest kernel) or stopped (with the failure).
pub(crate) async fn boot_dir(mut record: VmRecord) -> Result<VmRecord> {
    let dir = record.dir().to_path_buf();
    if !kill_stray_vmm(&dir).await {
        return Err(Error::Vmm("a previous VMM of this VM would not exit; not booting a second one on its disk".into()));
    }
    let _ = std::fs::remove_file(dir.join(supervisor::STATUS_FILE));
    record.supervisor_pid = Some(supervisor::spawn(&dir)?);
    record.state = VmState::Started;
    record.save()?;
    let connected = connect(&dir).await;
    // A saved state matches the disk only before the first start.
    record.launch.restore = None;
    match connected {
        Ok((_client, hello)) => {
            let status = SupervisorStatus::load(&dir);
            if let Some(reason) = status.as_ref().and_then(|s| s.warm_fallback.as_deref()) {
                tracing::warn!("warm start failed, booted cold instead (the template was discarded): {}", first_line(reason));
            }
            record.boot_ms = status.as_ref().and_then(|s| s.boot_ms);
            record.start_mode = status.and_then(|s| s.start_mode);
            record.guest_kernel = Some(hello.kernel_release);
            record.last_error = None;
            record.save()?;
            Ok(record)
        }
        Err(e) => {
            stop_supervisor(&record, Teardown::Graceful).await;
            record.state = VmState::Stopped;
            record.supervisor_pid = None;
            record.last_error = Some(e.to_string());
            record.save()?;
            Err(e)
        }
    }
}
