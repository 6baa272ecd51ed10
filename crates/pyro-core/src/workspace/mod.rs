//! Persistent workspaces: a guest with its own disk whose `/workspace` outlives any one
//! command, with history, file tools, patches, diffs against the create-time baseline,
//! snapshots, reset and offline disk tools.
//!
//! Each workspace is a directory `<state>/workspaces/<id>/` holding `workspace.json`, its
//! raw ext4 disk, the baseline archive, snapshots, command history and `vm/` — the VM
//! directory its supervisor runs (the same machinery as ephemeral VMs). Record updates
//! happen under a per-workspace file lock, so concurrent CLI, SDK and MCP processes never
//! lose each other's changes.

pub mod archive;
pub mod changes;
pub mod disk;
pub mod files;
pub mod history;
pub mod patch;
pub mod paths;
pub mod record;
pub mod secrets;
pub mod services;
pub mod shells;
pub mod terminal;
pub mod tree;

use crate::env_vars;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use self::record::{validate_labels, validate_name, CommandSummary, WorkspaceRecord, WorkspaceSeed, WorkspaceState};
use crate::environments::InstalledEnvironment;
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, OutputSink, Progress};
use crate::fsutil::{lock_file, unix_now};
use crate::guest::{Capability, ExecRequest, GuestClient, GuestError, Hello, PROTOCOL_VERSION};
use crate::network::log::NetworkLog;
use crate::network::{NetworkDetails, NetworkSettings};
use crate::options::NetworkPolicy;
use crate::paths::Dirs;
use crate::template::{TemplateFor, TemplateKind};
use crate::vm::record::{new_id, validate_id, VmRecord, VmState};
use crate::vm::{self, CommandOutput, CreateVmOptions, VmManager, DEFAULT_MAX_OUTPUT_BYTES};
use crate::vmm::select::Selection;
use crate::vmm::{BackendKind, LaunchSpec, RestoreFrom};

pub use self::history::HistoryEntry;
pub use self::paths::WORKSPACE_ROOT;

/// Default idle period after which a started workspace is stopped (not deleted).
pub const DEFAULT_IDLE_STOP_SECONDS: u64 = 30 * 60;
/// Lifetime given to a workspace's guest (a century): only the workspace's TTL counts.
const GUEST_NEVER_EXPIRES_SECONDS: u64 = 100 * 365 * 86400;

/// Options of [`WorkspaceManager::create`].
#[derive(Debug, Clone)]
pub struct CreateWorkspaceOptions {
    /// Sizing and backend, as for VMs (TTL unused).
    pub vm: CreateVmOptions,
    /// Optional lifetime; none = until deleted.
    pub ttl_seconds: Option<u64>,
    /// Guest networking: `off` (no NIC), `egress`, `egress+published-ports`.
    pub network_policy: NetworkPolicy,
    /// Narrows egress to these host names and CIDRs (`--allow-host`; needs a network).
    pub allow_hosts: Vec<String>,
    /// Host directory or archive to seed `/workspace` from.
    pub seed_path: Option<PathBuf>,
    /// Human name.
    pub name: Option<String>,
    /// Discovery labels.
    pub labels: BTreeMap<String, String>,
    /// Secrets, validated and stored on the host, held in the guest agent's memory.
    pub secrets: Vec<secrets::SecretInput>,
}

/// A workspace's network in its status: addresses, allow-list and what the gateway saw.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceNetwork {
    /// Addresses, resolver, allow-list.
    #[serde(flatten)]
    pub details: NetworkDetails,
    /// Flows the policy let through.
    pub allowed_flows: u64,
    /// Flows the policy refused (see `pyro workspace network log`).
    pub denied_flows: u64,
    /// Packets or queries dropped at a bound.
    pub dropped_events: u64,
}

impl WorkspaceNetwork {
    fn of(settings: &NetworkSettings, log: &NetworkLog) -> Self {
        Self { details: NetworkDetails::of(settings), allowed_flows: log.allowed_flows, denied_flows: log.denied_flows, dropped_events: log.dropped_events }
    }
}

/// What `network_log_workspace` returns: the counts and the latest refusals.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkLogReport {
    /// Workspace id.
    pub workspace_id: String,
    /// The workspace's policy.
    pub network_policy: NetworkPolicy,
    /// Counts and entries, oldest first.
    #[serde(flatten)]
    pub log: NetworkLog,
}

/// The status payload returned by create/status/update/stop/start/reset.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceStatus {
    /// Id.
    pub workspace_id: String,
    /// Name.
    pub name: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Environment.
    pub environment: String,
    /// Environment version.
    pub environment_version: String,
    /// vCPUs.
    pub vcpu_count: u32,
    /// Memory.
    pub mem_mib: u32,
    /// Lifetime, if any.
    pub ttl_seconds: Option<u64>,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds.
    pub last_activity_at: f64,
    /// Unix seconds, if a TTL was set.
    pub expires_at: Option<f64>,
    /// `started` or `stopped`.
    pub state: &'static str,
    /// Network policy.
    pub network_policy: NetworkPolicy,
    /// The guest has a NIC (policy other than `off`).
    pub network_enabled: bool,
    /// Host execution opted into.
    pub allow_host_compat: bool,
    /// Guest IP, when it has a network.
    pub guest_ip: Option<String>,
    /// Always `None`: the NIC is a socket of the supervisor, not a host TAP device.
    pub tap_name: Option<String>,
    /// Addresses, allow-list and flow counts, when the guest has a network.
    pub network: Option<WorkspaceNetwork>,
    /// `guest_vsock` while started.
    pub execution_mode: &'static str,
    /// Backend.
    pub backend: &'static str,
    /// Always `/workspace`.
    pub workspace_path: &'static str,
    /// How `/workspace` was seeded.
    pub workspace_seed: WorkspaceSeed,
    /// Commands since the last reset.
    pub command_count: u64,
    /// Latest command.
    pub last_command: Option<CommandSummary>,
    /// Resets so far.
    pub reset_count: u64,
    /// Last reset.
    pub last_reset_at: Option<f64>,
    /// Services recorded (host-side records, no guest call).
    pub service_count: u64,
    /// Running services.
    pub running_service_count: u64,
    /// Why it last stopped unexpectedly.
    pub last_error: Option<String>,
    /// The workspace's secrets: names and source kinds only, never values.
    pub secrets: Vec<secrets::SecretInfo>,
    /// Set by `start` when the disk's guest agent is older than this pyro (or lacks
    /// capabilities): what it cannot do and how to update it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_agent_notice: Option<String>,
}

/// One row of `workspace list`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceSummary {
    /// Id.
    pub workspace_id: String,
    /// Name.
    pub name: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Environment.
    pub environment: String,
    /// `started`, `stopped`, or `error` for an unreadable record.
    pub state: &'static str,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds.
    pub last_activity_at: f64,
    /// Unix seconds.
    pub expires_at: Option<f64>,
    /// Commands.
    pub command_count: u64,
    /// Services.
    pub service_count: u64,
    /// Running services.
    pub running_service_count: u64,
    /// Why the record could not be read (only for `state: error`).
    pub error: Option<String>,
}

/// Result of `workspace list`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceList {
    /// Rows.
    pub count: usize,
    /// Most recently active first.
    pub workspaces: Vec<WorkspaceSummary>,
}

/// Result of `workspace exec`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceExec {
    /// Id.
    pub workspace_id: String,
    /// Environment.
    pub environment: String,
    /// Environment version.
    pub environment_version: String,
    /// Command line.
    pub command: String,
    /// Always `/workspace`.
    pub cwd: &'static str,
    /// History sequence number.
    pub sequence: u64,
    /// What the command produced.
    #[serde(flatten)]
    pub output: CommandOutput,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// Result of `workspace delete`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceDeleted {
    /// Id.
    pub workspace_id: String,
    /// Always true.
    pub deleted: bool,
    /// Why.
    pub reason: &'static str,
}

/// Metadata changes of `workspace update`.
#[derive(Debug, Clone, Default)]
pub struct UpdateWorkspace {
    /// New name.
    pub name: Option<String>,
    /// Remove the name.
    pub clear_name: bool,
    /// Labels to set.
    pub labels: BTreeMap<String, String>,
    /// Label keys to remove.
    pub clear_labels: Vec<String>,
}

/// An open workspace: its directory and (locked, when mutating) record.
pub(crate) struct Workspace {
    pub dir: PathBuf,
    pub record: WorkspaceRecord,
}

impl Workspace {
    fn vm_dir(&self) -> PathBuf {
        vm_dir_in(&self.dir)
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    fn baseline(&self) -> PathBuf {
        self.dir.join("baseline.tar")
    }
}

/// The workspace lifecycle over the state directory.
#[derive(Debug, Clone)]
pub struct WorkspaceManager {
    dirs: Dirs,
    vms: VmManager,
}

impl WorkspaceManager {
    /// A manager over `dirs`.
    pub fn new(dirs: Dirs, vms: VmManager) -> Self {
        Self { dirs, vms }
    }

    fn root(&self) -> PathBuf {
        self.dirs.state.join("workspaces")
    }

    /// Validates `id` and finds its directory.
    fn dir_of(&self, id: &str) -> Result<PathBuf> {
        validate_id(id).map_err(|_| unknown(id))?;
        let dir = self.root().join(id);
        if !dir.join(record::RECORD_FILE).exists() {
            return Err(unknown(id));
        }
        Ok(dir)
    }

    /// Loads a workspace, reconciling a started record whose guest is gone. A workspace
    /// whose explicit TTL has passed is deleted here (lazily, like the original).
    pub(crate) async fn open(&self, id: &str) -> Result<Workspace> {
        let dir = self.dir_of(id)?;
        let mut record = WorkspaceRecord::load(&dir)?;
        if record.expires_at.is_some_and(|expires| expires <= unix_now()) {
            self.discard(&dir).await?;
            return Err(Error::not_found_because("workspace", id, format!("workspace '{id}' expired and was automatically deleted")));
        }
        if record.creation_abandoned() {
            self.discard(&dir).await?;
            return Err(Error::not_found_because(
                "workspace",
                id,
                format!("workspace '{id}' does not exist (its creation was interrupted and it was removed)"),
            ));
        }
        if record.state == WorkspaceState::Creating {
            return Err(Error::Conflict(format!("workspace '{id}' is still being created")));
        }
        if record.state == WorkspaceState::Started {
            let vm = vm::refreshed_and_reaped(&dir.join("vm")).await?;
            if vm.state != VmState::Started {
                record.state = WorkspaceState::Stopped;
                record.last_error = vm.last_error.or(Some("the guest is no longer running".into()));
                // Its services died with the guest: their records say so.
                (record.service_count, record.running_service_count) = self.mark_services_stopped(&dir)?;
                record.save(&dir)?;
            }
        }
        Ok(Workspace { dir, record })
    }

    /// Runs `change` on the record under the workspace lock and saves it.
    pub(crate) fn update_record<T>(&self, id: &str, change: impl FnOnce(&mut WorkspaceRecord) -> Result<T>) -> Result<(T, WorkspaceRecord)> {
        let dir = self.dir_of(id)?;
        let _lock = lock_file(&dir.join("workspace.lock"))?;
        let mut record = WorkspaceRecord::load(&dir)?;
        let out = change(&mut record)?;
        record.save(&dir)?;
        Ok((out, record))
    }

    /// A client of the started workspace's agent; `op` names the operation for the error.
    pub(crate) async fn guest(&self, ws: &Workspace, op: &str) -> Result<GuestClient> {
        if ws.record.state != WorkspaceState::Started {
            return Err(Error::wrong_state(
                "started",
                ws.record.state.name(),
                format!("workspace {} must be in 'started' state before {op}", ws.record.workspace_id),
            ));
        }
        Ok(vm::connect(&ws.vm_dir()).await?.0)
    }

    /// Serialises start, stop, reset and delete of one workspace (across processes): held
    /// from the state check through the boot or teardown to the record update. Separate
    /// from `workspace.lock`, which guards short record updates made meanwhile.
    pub(crate) async fn lifecycle_lock(&self, id: &str) -> Result<std::fs::File> {
        let path = self.dir_of(id)?.join("lifecycle.lock");
        tokio::task::spawn_blocking(move || lock_file(&path)).await.map_err(|e| Error::Vmm(format!("lifecycle lock wait failed: {e}")))?
    }

    /// Marks activity now.
    pub(crate) fn touch(&self, id: &str) -> Result<WorkspaceRecord> {
        Ok(self
            .update_record(id, |r| {
                r.last_activity_at = unix_now();
                Ok(())
            })?
            .1)
    }

    /// Creates, boots and seeds a workspace. Nothing is left behind on failure.
    pub async fn create(&self, options: &CreateWorkspaceOptions, progress: Progress<'_>) -> Result<WorkspaceStatus> {
        options.vm.validate()?;
        if let Some(ttl) = options.ttl_seconds {
            if ttl < 60 {
                return Err(Error::InvalidArgument("ttl_seconds must be at least 60".into()));
            }
        }
        let allow_hosts = crate::network::canonical_allow_hosts(&options.allow_hosts)?;
        if options.network_policy == NetworkPolicy::Off && !allow_hosts.is_empty() {
            return Err(Error::InvalidArgument("--allow-host needs network_policy 'egress' or 'egress+published-ports'".into()));
        }
        let name = options.name.as_deref().map(validate_name).transpose()?;
        let labels = validate_labels(&options.labels)?;
        let secret_values = secrets::resolve(&options.secrets)?;
        let root = self.root();
        std::fs::create_dir_all(&root).ctx("create", &root)?;
        let seed = archive::prepare_source(options.seed_path.as_deref(), &root)?;
        let installed = self.vms.ensure_installed(&options.vm.environment, progress).await?;
        let selection = self.vms.select_backend(&options.vm, &installed, progress).await?;
        if selection.backend == BackendKind::HostCompat {
            return Err(Error::Unavailable("workspaces need a guest backend; host_compat workspaces are not available in this build".into()));
        }
        if options.network_policy != NetworkPolicy::Off {
            vm::check_network_backend(selection.backend)?;
        }

        let id = new_id();
        let dir = root.join(&id);
        std::fs::create_dir(&dir).ctx("create", &dir)?;
        // From here on the directory is visible (state `creating`, creator recorded), and
        // dropping this future (Ctrl-C) removes it and whatever it started.
        let mut guard = CreateGuard { dir: Some(dir.clone()) };
        let now = unix_now();
        let mut record = WorkspaceRecord {
            workspace_id: id.clone(),
            name,
            labels,
            environment: installed.spec.name.into(),
            environment_version: installed.spec.version.into(),
            vcpu_count: options.vm.vcpu_count,
            mem_mib: options.vm.mem_mib,
            ttl_seconds: options.ttl_seconds,
            created_at: now,
            expires_at: options.ttl_seconds.map(|t| now + t as f64),
            last_activity_at: now,
            state: WorkspaceState::Creating,
            network_policy: options.network_policy,
            allow_hosts,
            allow_host_compat: options.vm.allow_host_compat,
            workspace_seed: WorkspaceSeed {
                mode: seed.mode.name().into(),
                seed_path: seed.source_path.clone(),
                destination: WORKSPACE_ROOT.into(),
                entry_count: 0,
                bytes_written: 0,
            },
            command_count: 0,
            last_command: None,
            reset_count: 0,
            last_reset_at: None,
            last_error: None,
            service_count: 0,
            running_service_count: 0,
            secrets: secret_values.iter().map(|(info, _)| info.clone()).collect(),
            creator: crate::host_process::ProcessIdentity::of(std::process::id()),
        };
        let created = async {
            record.save(&dir)?;
            secrets::store(&dir, &secret_values)?;
            std::fs::copy(&seed.archive, dir.join("baseline.tar")).ctx("store baseline in", &dir)?;
            let ws = Workspace { dir: dir.clone(), record: record.clone() };
            let restore = self.fresh_disk(&ws, &installed, selection.backend, options.vm.cold || options.vm.debug_console, progress).await?;
            self.write_vm_record(&ws, &installed, selection.backend, &selection.reason, options.vm.debug_console, restore)?;
            progress(&Event::WorkspaceBoot { workspace_id: id.clone(), backend: selection.backend.name(), isolation: selection.backend.isolation() });
            let client = self.boot(&ws).await?;
            let imported = client.tar_import(WORKSPACE_ROOT, tokio::fs::File::open(ws.baseline()).await.ctx("open", ws.baseline())?).await?;
            record.workspace_seed.entry_count = imported.entry_count;
            record.workspace_seed.bytes_written = imported.bytes_written;
            record.state = WorkspaceState::Started;
            record.creator = None;
            record.save(&dir)?;
            Ok::<_, Error>(record.clone())
        }
        .await;
        guard.dir = None;
        match created {
            Ok(record) => Ok(status_of(&record, self.backend_of(&dir), &vm_dir_in(&dir))),
            Err(e) => {
                if let Err(cleanup) = self.discard(&dir).await {
                    tracing::warn!("cleanup after a failed create: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Gives the workspace a fresh disk: a copy of a warm template's (and the state to
    /// restore on it) or, for a cold boot, the environment's rootfs grown.
    pub(crate) async fn fresh_disk(
        &self,
        ws: &Workspace,
        installed: &InstalledEnvironment,
        backend: BackendKind,
        cold: bool,
        progress: Progress<'_>,
    ) -> Result<Option<RestoreFrom>> {
        let r = &ws.record;
        let wanted = TemplateFor {
            installed,
            backend,
            vcpu_count: r.vcpu_count,
            mem_mib: r.mem_mib,
            kind: TemplateKind::Workspace,
            network: r.network_policy != NetworkPolicy::Off,
        };
        match self.vms.templates().warm(&wanted, cold, progress).await {
            Some(template) => {
                crate::guest_disk::copy(&template.disk(), &ws.disk())?;
                Ok(Some(template.restore_from(None)))
            }
            None => {
                crate::guest_disk::grown_copy(&installed.rootfs, &ws.disk())?;
                Ok(None)
            }
        }
    }

    fn write_vm_record(
        &self,
        ws: &Workspace,
        installed: &InstalledEnvironment,
        backend: BackendKind,
        reason: &str,
        debug_console: bool,
        restore: Option<RestoreFrom>,
    ) -> Result<()> {
        let vm_dir = ws.vm_dir();
        std::fs::create_dir_all(&vm_dir).ctx("create", &vm_dir)?;
        let idle = std::env::var(env_vars::WORKSPACE_IDLE_STOP_SECONDS).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(DEFAULT_IDLE_STOP_SECONDS);
        let r = &ws.record;
        let network = r.network_settings();
        let launch = LaunchSpec {
            vm_dir,
            kernel: installed.kernel.clone(),
            disk: ws.disk(),
            vcpu_count: r.vcpu_count,
            mem_mib: r.mem_mib,
            debug_console,
            restore,
            network: network.is_some(),
        };
        // The workspace's own TTL is enforced by the manager; its guest never expires.
        let mut record = VmRecord::new(
            r.workspace_id.clone(),
            installed,
            launch,
            GUEST_NEVER_EXPIRES_SECONDS,
            Selection { backend, reason: reason.into() },
            r.allow_host_compat,
        );
        record.idle_stop_seconds = (idle > 0).then_some(idle);
        record.network = network;
        record.save()
    }

    /// Boots the workspace's guest and returns a client.
    async fn boot(&self, ws: &Workspace) -> Result<GuestClient> {
        // Shells died with the previous VM (start and reset both boot through here).
        forget_shells(&ws.dir)?;
        let record = VmRecord::load(&ws.vm_dir())?;
        vm::boot_dir(record).await?;
        let client = vm::connect(&ws.vm_dir()).await?.0;
        self.install_secrets(ws, &client).await?;
        Ok(client)
    }

    fn backend_of(&self, dir: &Path) -> &'static str {
        VmRecord::load(&dir.join("vm")).map(|r| r.backend.name()).unwrap_or("unknown")
    }

    /// Stops whatever runs and removes a workspace directory.
    async fn discard(&self, dir: &Path) -> Result<()> {
        let vm_dir = dir.join("vm");
        let stopped = match VmRecord::load(&vm_dir) {
            Ok(record) => vm::stop_supervisor(&record, vm::Teardown::Discard).await,
            Err(_) => vm::kill_stray_vmm(&vm_dir).await,
        };
        // Never remove a directory under a live guest: its disk would vanish beneath it.
        if !stopped {
            return Err(Error::Vmm(format!("the VMM of {} would not exit; its directory was kept", dir.display())));
        }
        std::fs::remove_dir_all(dir).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }).ctx("remove", dir)
    }

    /// All workspaces, most recently active first; an unreadable record is reported in
    /// its own row and does not break the listing.
    pub async fn list(&self) -> Result<WorkspaceList> {
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(self.root()).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if validate_id(&id).is_err() || !entry.path().join(record::RECORD_FILE).exists() {
                continue;
            }
            if let Ok(record) = WorkspaceRecord::load(&entry.path()) {
                if record.state == WorkspaceState::Creating && !record.creation_abandoned() {
                    rows.push(summary_of(&record));
                    continue;
                }
            }
            rows.push(match self.open(&id).await {
                Ok(ws) => summary_of(&ws.record),
                Err(_) if !entry.path().exists() => continue, // expired or abandoned, removed just now
                Err(e) => WorkspaceSummary {
                    workspace_id: id,
                    name: None,
                    labels: BTreeMap::new(),
                    environment: String::new(),
                    state: "error",
                    created_at: 0.0,
                    last_activity_at: 0.0,
                    expires_at: None,
                    command_count: 0,
                    service_count: 0,
                    running_service_count: 0,
                    error: Some(e.to_string()),
                },
            });
        }
        rows.sort_by(|a, b| {
            b.last_activity_at.total_cmp(&a.last_activity_at).then(b.created_at.total_cmp(&a.created_at)).then(a.workspace_id.cmp(&b.workspace_id))
        });
        Ok(WorkspaceList { count: rows.len(), workspaces: rows })
    }

    /// One workspace's status.
    pub async fn status(&self, id: &str) -> Result<WorkspaceStatus> {
        let ws = self.open(id).await?;
        Ok(status_of(&ws.record, self.backend_of(&ws.dir), &ws.vm_dir()))
    }

    /// The workspace's network log: flow counts and the latest refused flows (why a
    /// connection failed). Fails for a workspace without a network.
    pub async fn network_log(&self, id: &str) -> Result<NetworkLogReport> {
        let ws = self.open(id).await?;
        if ws.record.network_policy == NetworkPolicy::Off {
            return Err(Error::InvalidArgument(format!("workspace '{id}' has no network (network_policy 'off')")));
        }
        Ok(NetworkLogReport { workspace_id: id.into(), network_policy: ws.record.network_policy, log: NetworkLog::load(&ws.vm_dir()) })
    }

    /// Changes name and labels.
    pub async fn update(&self, id: &str, change: &UpdateWorkspace) -> Result<WorkspaceStatus> {
        if change.name.is_some() && change.clear_name {
            return Err(Error::InvalidArgument("name and clear_name cannot be used together".into()));
        }
        let name = change.name.as_deref().map(validate_name).transpose()?;
        let labels = validate_labels(&change.labels)?;
        let clear: Vec<String> = change.clear_labels.iter().map(|k| record::validate_label_key(k)).collect::<Result<_>>()?;
        self.open(id).await?;
        let (_, record) = self.update_record(id, |r| {
            if let Some(name) = name {
                r.name = Some(name);
            }
            if change.clear_name {
                r.name = None;
            }
            r.labels.extend(labels);
            for key in &clear {
                r.labels.remove(key);
            }
            r.last_activity_at = unix_now();
            Ok(())
        })?;
        let dir = self.dir_of(id)?;
        Ok(status_of(&record, self.backend_of(&dir), &vm_dir_in(&dir)))
    }

    /// Stops the guest, keeping the disk, snapshots and history.
    pub async fn stop(&self, id: &str) -> Result<WorkspaceStatus> {
        let _lifecycle = self.lifecycle_lock(id).await?;
        let ws = self.open(id).await?;
        self.stop_all_services(&ws).await?;
        let vm_record = VmRecord::load(&ws.vm_dir())?;
        vm::stop_supervisor(&vm_record, vm::Teardown::Graceful).await;
        vm::refreshed(&ws.vm_dir())?;
        forget_shells(&ws.dir)?;
        let (_, record) = self.update_record(id, |r| {
            r.state = WorkspaceState::Stopped;
            r.last_error = None;
            r.last_activity_at = unix_now();
            Ok(())
        })?;
        Ok(status_of(&record, vm_record.backend.name(), vm_record.dir()))
    }

    /// Boots a stopped workspace with `/workspace` intact.
    pub async fn start(&self, id: &str) -> Result<WorkspaceStatus> {
        // Two racing starts: the second waits here, then finds the workspace started.
        let _lifecycle = self.lifecycle_lock(id).await?;
        let ws = self.open(id).await?;
        let mut notice = None;
        if ws.record.state == WorkspaceState::Stopped {
            match self.boot(&ws).await {
                Ok(client) => notice = agent_notice(id, &ws.record.environment, client.hello()),
                Err(e) => {
                    self.update_record(id, |r| {
                        r.last_error = Some(e.to_string());
                        Ok(())
                    })?;
                    return Err(e);
                }
            }
        }
        if let Some(notice) = &notice {
            tracing::warn!("workspace {id}: {notice}");
        }
        let (_, record) = self.update_record(id, |r| {
            r.state = WorkspaceState::Started;
            r.last_error = None;
            r.last_activity_at = unix_now();
            Ok(())
        })?;
        Ok(WorkspaceStatus { guest_agent_notice: notice, ..status_of(&record, self.backend_of(&ws.dir), &ws.vm_dir()) })
    }

    /// Deletes a workspace and everything it holds.
    pub async fn delete(&self, id: &str) -> Result<WorkspaceDeleted> {
        let _lifecycle = self.lifecycle_lock(id).await?;
        let dir = self.dir_of(id)?;
        if let Ok(record) = WorkspaceRecord::load(&dir) {
            // Best effort: the services get their SIGTERM before the guest goes.
            let _ = self.stop_all_services(&Workspace { dir: dir.clone(), record }).await;
        }
        self.discard(&dir).await?;
        Ok(WorkspaceDeleted { workspace_id: id.into(), deleted: true, reason: "explicit_delete" })
    }

    /// Runs one command in `/workspace` and records it in the history; `output` (when
    /// given) sees each chunk of (redacted) output as it arrives.
    pub async fn exec(
        &self,
        id: &str,
        command: &str,
        timeout_seconds: u64,
        secret_env: &BTreeMap<String, String>,
        output: OutputSink<'_>,
    ) -> Result<WorkspaceExec> {
        if timeout_seconds == 0 {
            return Err(Error::InvalidArgument("timeout_seconds must be positive".into()));
        }
        if command.trim().is_empty() {
            return Err(Error::InvalidArgument("command must not be empty".into()));
        }
        let ws = self.open(id).await?;
        let secret_env = self.secret_env(&ws, secret_env)?;
        let client = self.guest(&ws, "workspace_exec").await?;
        let request = ExecRequest {
            command: command.into(),
            env: Default::default(),
            cwd: Some(WORKSPACE_ROOT.into()),
            timeout_ms: timeout_seconds.saturating_mul(1000),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            secret_env,
        };
        let out = client.exec_streaming(request, output).await?;
        let command = &secrets::redact(&ws.dir, &ws.record.secrets, command);
        let (sequence, record) = self.update_record(id, |r| {
            r.command_count += 1;
            let summary = CommandSummary {
                sequence: r.command_count,
                command: command.into(),
                cwd: WORKSPACE_ROOT.into(),
                exit_code: out.result.exit_code,
                duration_ms: out.result.duration_ms,
            };
            history::append(&ws.dir, &summary, &out.stdout, &out.stderr)?;
            r.last_command = Some(summary);
            r.last_activity_at = unix_now();
            Ok(r.command_count)
        })?;
        Ok(WorkspaceExec {
            workspace_id: id.into(),
            environment: record.environment,
            environment_version: record.environment_version,
            command: command.into(),
            cwd: WORKSPACE_ROOT,
            sequence,
            output: out.into(),
            execution_mode: "guest_vsock",
        })
    }

    /// Command history since the last reset.
    pub async fn logs(&self, id: &str) -> Result<history::WorkspaceLogs> {
        let ws = self.open(id).await?;
        history::read(&ws.dir, id)
    }
}

impl WorkspaceManager {
    /// Puts the workspace's secrets into the memory of its freshly booted agent (nothing
    /// to do for a workspace without secrets).
    pub(crate) async fn install_secrets(&self, ws: &Workspace, client: &GuestClient) -> Result<()> {
        if ws.record.secrets.is_empty() {
            return Ok(());
        }
        if !client.supports(Capability::Secrets) {
            return Err(Error::Unavailable(format!(
                "workspace '{}' has secrets but its guest agent cannot hold them; recreate the workspace",
                ws.record.workspace_id
            )));
        }
        let values = secrets::load(&ws.dir, &ws.record.secrets)?;
        client.install_secrets(values).await.map_err(guest_error)
    }

    /// Validates `mapping` against the secrets of `ws`, for a call that starts a process.
    pub(crate) fn secret_env(&self, ws: &Workspace, mapping: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        secrets::resolve_env(&ws.record.secrets, mapping)
    }
}

/// The core error for a failed guest call of a workspace operation: the agent's own
/// refusal (a bad path, a missing file) is the caller's argument; everything else keeps
/// its guest kind (`timeout`, `unavailable`, `guest`).
pub(crate) fn guest_error(e: GuestError) -> Error {
    match e {
        GuestError::Agent(message) => Error::InvalidArgument(message),
        other => Error::Guest(other),
    }
}

/// Budgets for a tar stream of `/workspace`: what its disk can hold.
pub(crate) fn workspace_limits() -> archive::TarLimits {
    archive::TarLimits::for_disk(crate::guest_disk::WORKSPACE_DISK_BYTES)
}

/// Directory of a workspace's shell records (`shells/<id>.json`, see [`shells`]).
pub(crate) const SHELLS_DIR: &str = "shells";

/// Removes every shell record of the workspace in `dir`: its shells died with the VM.
/// Here rather than in `shells.rs`, so this module does not import its children.
fn forget_shells(dir: &Path) -> Result<()> {
    let shells = dir.join(SHELLS_DIR);
    std::fs::remove_dir_all(&shells).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }).ctx("remove", &shells)
}

fn unknown(id: &str) -> Error {
    Error::not_found("workspace", id)
}

/// The guest's directory inside the workspace directory `dir`.
fn vm_dir_in(dir: &Path) -> PathBuf {
    dir.join("vm")
}

/// The status of the workspace `record` describes, whose guest lives in `vm_dir`.
pub(crate) fn status_of(record: &WorkspaceRecord, backend: &'static str, vm_dir: &Path) -> WorkspaceStatus {
    let network = record.network_settings().map(|settings| WorkspaceNetwork::of(&settings, &NetworkLog::load(vm_dir)));
    WorkspaceStatus {
        workspace_id: record.workspace_id.clone(),
        name: record.name.clone(),
        labels: record.labels.clone(),
        environment: record.environment.clone(),
        environment_version: record.environment_version.clone(),
        vcpu_count: record.vcpu_count,
        mem_mib: record.mem_mib,
        ttl_seconds: record.ttl_seconds,
        created_at: record.created_at,
        last_activity_at: record.last_activity_at,
        expires_at: record.expires_at,
        state: record.state.name(),
        network_policy: record.network_policy,
        network_enabled: network.is_some(),
        allow_host_compat: record.allow_host_compat,
        guest_ip: network.as_ref().map(|n| n.details.guest_ip.clone()),
        tap_name: None,
        network,
        execution_mode: if record.state == WorkspaceState::Started { "guest_vsock" } else { "stopped" },
        backend,
        workspace_path: WORKSPACE_ROOT,
        workspace_seed: record.workspace_seed.clone(),
        command_count: record.command_count,
        last_command: record.last_command.clone(),
        reset_count: record.reset_count,
        last_reset_at: record.last_reset_at,
        service_count: record.service_count,
        running_service_count: record.running_service_count,
        last_error: record.last_error.clone(),
        secrets: record.secrets.clone(),
        guest_agent_notice: None,
    }
}

/// What `start` says about a workspace whose disk carries an older agent (the disk keeps
/// the agent it was created with): `None` when the agent is current.
pub(crate) fn agent_notice(id: &str, env: &str, hello: &Hello) -> Option<String> {
    let missing: Vec<&str> = Capability::ALL.iter().filter(|c| !hello.supports(**c)).map(|c| c.name()).collect();
    if hello.protocol_version >= PROTOCOL_VERSION && missing.is_empty() {
        return None;
    }
    let what = if missing.is_empty() {
        "everything it supports still works".to_string()
    } else {
        format!("it lacks {}, which fail as unavailable until it is updated", missing.join(", "))
    };
    let age = if hello.protocol_version < PROTOCOL_VERSION { "is older than" } else { "announces fewer capabilities than" };
    Some(format!(
        "this workspace's guest agent (pyro-agent {}, protocol {}) {age} this pyro (protocol {PROTOCOL_VERSION}); {what}. \
         The disk keeps the agent it was created with; to move /workspace onto the current agent: \
         `pyro workspace snapshot create {id} agent-update` then `pyro workspace reset {id} --snapshot agent-update` \
         (if environment {env} itself was installed with an older agent, first `pyro env pull {env} --force`)",
        hello.agent_version.chars().take(64).collect::<String>(),
        hello.protocol_version
    ))
}

fn summary_of(record: &WorkspaceRecord) -> WorkspaceSummary {
    WorkspaceSummary {
        workspace_id: record.workspace_id.clone(),
        name: record.name.clone(),
        labels: record.labels.clone(),
        environment: record.environment.clone(),
        state: record.state.name(),
        created_at: record.created_at,
        last_activity_at: record.last_activity_at,
        expires_at: record.expires_at,
        command_count: record.command_count,
        service_count: record.service_count,
        running_service_count: record.running_service_count,
        error: None,
    }
}

/// Removes a workspace whose `create` was dropped midway (Ctrl-C): synchronously, since
/// it runs in `Drop`. The supervisor is killed (its VMM dies with it), then the directory
/// goes.
struct CreateGuard {
    dir: Option<PathBuf>,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let vm_dir = dir.join("vm");
        if let Some(pid) = VmRecord::load(&vm_dir).ok().and_then(|r| r.supervisor_pid) {
            if vm::supervisor::is_alive(pid, &vm_dir) {
                // SAFETY: plain signal delivery to a process verified to be this VM's supervisor.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some(vmm) = crate::host_process::ProcessIdentity::load(&vm_dir.join(vm::supervisor::VMM_IDENTITY_FILE)) {
            vmm.signal(libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_guest_capability_maps_to_unavailable() {
        let missing = || GuestError::Unavailable { op: "tar_export".into(), agent_protocol: 1, agent_version: "3.10.0".into(), reason: "no".into() };
        let mapped = guest_error(missing());
        assert_eq!(mapped.kind(), "unavailable");
        assert!(mapped.to_string().contains("does not support tar_export"), "{mapped:?}");
        assert_eq!(guest_error(GuestError::ChannelClosed).kind(), "guest");
        assert!(matches!(guest_error(GuestError::Agent("x".into())), Error::InvalidArgument(_)));
    }

    fn hello(protocol_version: u32, capabilities: Option<&[&str]>) -> Hello {
        Hello {
            protocol_version,
            agent_version: "3.10.0".into(),
            kernel_release: String::new(),
            uptime_ms: None,
            capabilities: capabilities.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn start_says_how_to_update_an_older_agent() {
        let all: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(agent_notice("w1", "debian:12", &hello(PROTOCOL_VERSION, Some(&all))), None);

        let old = agent_notice("w1", "debian:12", &hello(1, None)).unwrap();
        assert!(old.contains("protocol 1") && old.contains("it lacks secrets, shell, service, port_forward, which fail as unavailable"), "{old}");
        assert!(old.contains("`pyro workspace snapshot create w1 agent-update`"), "{old}");
        assert!(old.contains("`pyro workspace reset w1 --snapshot agent-update`"), "{old}");
        assert!(old.contains("`pyro env pull debian:12 --force`"), "{old}");

        let fewer = agent_notice("w1", "debian:12", &hello(1, Some(&["exec", "fs_read"]))).unwrap();
        assert!(fewer.contains("is older than") && fewer.contains("it lacks fs_write, fs_list, tar_import, tar_export, shutdown"), "{fewer}");
        let newer = agent_notice("w1", "debian:12", &hello(PROTOCOL_VERSION + 1, Some(&["exec"]))).unwrap();
        assert!(newer.contains("announces fewer capabilities than"), "{newer}");
    }
}
