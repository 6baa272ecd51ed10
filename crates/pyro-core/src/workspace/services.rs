//! Workspace services on the host: validation with the contract's messages, the calls to
//! the guest agent (which owns the processes, their exit status and their logs), and the
//! host-side records `services/<name>.json` that outlive the guest.
//!
//! Every service call refreshes the records from one `service_list` answer and stores the
//! counts in `workspace.json`, so workspace `status` and `list` show `service_count` and
//! `running_service_count` without asking the guest. Stopping, resetting or deleting a
//! workspace stops its services first; a guest that died under them (VMM killed) is
//! noticed when the workspace is opened. Either way the records end `stopped` with stop
//! reason `workspace_stopped`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::paths::normalize_destination;
use super::record::{is_valid_key, WorkspaceState, NAME_PATTERN};
use super::{guest_error, secrets, Workspace, WorkspaceManager};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};
use crate::guest::{GuestClient, ServiceInfo, ServiceStartRequest, ServiceState};
use crate::options::{NetworkPolicy, PortMapping, ReadinessProbe};
use crate::vm;

const SERVICES_DIR: &str = "services";
/// What a service stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// What the operation is called in "must be in 'started' state before …".
const OP: &str = "service operations";
/// Stop reason of services ended by a workspace stop, reset, delete or guest crash.
pub const WORKSPACE_STOPPED: &str = "workspace_stopped";
/// Stop reason of a service whose ports could not be published.
pub const PUBLISHED_PORT_FAILED: &str = "published_port_failed";

/// `start_service` parameters beyond the workspace and the service name, with the
/// contract's defaults ([`StartServiceOptions::new`]).
#[derive(Debug, Clone)]
pub struct StartServiceOptions {
    /// The command line, run by `/bin/sh -lc`.
    pub command: String,
    /// Working directory in `/workspace` (default `/workspace`).
    pub cwd: String,
    /// What makes the service ready (none: ready once started).
    pub readiness: Option<ReadinessProbe>,
    /// How long readiness may take (default 30 s).
    pub ready_timeout_seconds: u64,
    /// How often readiness is checked (default 500 ms).
    pub ready_interval_ms: u64,
    /// Workspace secrets to put in its environment for this start: secret name → variable.
    pub secret_env: BTreeMap<String, String>,
    /// Guest ports to publish on the host (needs policy `egress+published-ports`).
    pub published_ports: Vec<PortMapping>,
}

impl StartServiceOptions {
    /// `command` with every other parameter at its default.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            cwd: super::WORKSPACE_ROOT.into(),
            readiness: None,
            ready_timeout_seconds: 30,
            ready_interval_ms: 500,
            secret_env: BTreeMap::new(),
            published_ports: Vec::new(),
        }
    }
}

pub use crate::network::publish::PublishedPort;

/// A service record: the result of start, status and stop, one row of list, and the
/// content of `services/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Workspace id.
    pub workspace_id: String,
    /// Service name.
    pub service_name: String,
    /// `running`, `exited`, `stopped` or `failed`.
    pub state: String,
    /// Command line (secret values redacted).
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds, once ended.
    pub ended_at: Option<f64>,
    /// Exit code, once ended (128+N for signal N).
    pub exit_code: Option<i32>,
    /// Guest PID of the service's shell.
    pub pid: Option<u32>,
    /// `guest_vsock`.
    pub execution_mode: String,
    /// The readiness probe, if any.
    pub readiness: Option<ReadinessProbe>,
    /// When the service became ready.
    pub ready_at: Option<f64>,
    /// `sigterm`, `sigkill`, `workspace_stopped`, `process_exited_before_ready` or
    /// `readiness_timeout`.
    pub stop_reason: Option<String>,
    /// Published ports.
    pub published_ports: Vec<PublishedPort>,
}

impl ServiceRecord {
    fn is_running(&self) -> bool {
        self.state == ServiceState::Running.name()
    }

    /// Takes over what the agent reports.
    fn apply(&mut self, info: &ServiceInfo) {
        let secs = |ms: u64| ms as f64 / 1000.0;
        // The agent saw a plain stop; the host knows why it stopped the service.
        let port_failure = self.stop_reason.as_deref() == Some(PUBLISHED_PORT_FAILED);
        self.state = if port_failure { ServiceState::Failed.name().into() } else { info.state.name().into() };
        self.pid = info.pid;
        self.started_at = secs(info.started_at_ms);
        self.ready_at = info.ready_at_ms.map(secs);
        self.ended_at = info.ended_at_ms.map(secs);
        self.exit_code = info.exit_code;
        if !port_failure {
            self.stop_reason = info.stop_reason.clone();
        }
        if !self.is_running() {
            // Its supervisor closes the listeners of a service that ended.
            self.published_ports.clear();
        }
    }

    /// Marks a running record as ended with its workspace.
    fn mark_workspace_stopped(&mut self) -> bool {
        if !self.is_running() {
            return false;
        }
        self.state = ServiceState::Stopped.name().into();
        self.stop_reason = Some(WORKSPACE_STOPPED.into());
        self.ended_at.get_or_insert_with(unix_now);
        self.published_ports.clear();
        true
    }
}

/// Result of `service list`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceList {
    /// Workspace id.
    pub workspace_id: String,
    /// Services.
    pub count: usize,
    /// Of those, running.
    pub running_count: usize,
    /// Sorted by name.
    pub services: Vec<ServiceRecord>,
}

/// Result of `service logs`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceLogs {
    /// The service.
    #[serde(flatten)]
    pub service: ServiceRecord,
    /// Standard output (redacted in the guest; invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error (redacted in the guest; invalid UTF-8 replaced).
    pub stderr: String,
    /// Lines asked for per stream; `None` for `all`.
    pub tail_lines: Option<u64>,
    /// Either stream held more than was returned (more lines, or bytes dropped by the
    /// guest's per-stream cap).
    pub truncated: bool,
}

fn services_dir(dir: &Path) -> PathBuf {
    dir.join(SERVICES_DIR)
}

fn record_path(dir: &Path, name: &str) -> PathBuf {
    services_dir(dir).join(format!("{name}.json"))
}

/// Every readable record, sorted by name.
fn load_all(dir: &Path) -> Vec<ServiceRecord> {
    let mut records: Vec<ServiceRecord> = std::fs::read_dir(services_dir(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by(|a: &ServiceRecord, b| a.service_name.cmp(&b.service_name));
    records
}

fn save(dir: &Path, record: &ServiceRecord) -> Result<()> {
    let services = services_dir(dir);
    std::fs::create_dir_all(&services).ctx("create", &services)?;
    write_atomic(&record_path(dir, &record.service_name), &serde_json::to_vec_pretty(record).expect("service records serialise"))
}

fn counts(records: &[ServiceRecord]) -> (u64, u64) {
    (records.len() as u64, records.iter().filter(|r| r.is_running()).count() as u64)
}

/// Marks every running record of the workspace in `dir` `stopped`/`workspace_stopped`
/// (its guest is gone); returns the new (service, running service) counts.
fn mark_workspace_stopped(dir: &Path) -> Result<(u64, u64)> {
    let mut records = load_all(dir);
    for record in &mut records {
        if record.mark_workspace_stopped() {
            save(dir, record)?;
        }
    }
    Ok(counts(&records))
}

impl WorkspaceManager {
    /// [`mark_workspace_stopped`] for the workspace loader, which finds a guest gone.
    pub(crate) fn mark_services_stopped(&self, dir: &Path) -> Result<(u64, u64)> {
        mark_workspace_stopped(dir)
    }
}

/// Validates a service name (trimmed) with the contract's messages.
pub fn validate_service_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::InvalidArgument("service_name must not be empty".into()));
    }
    if !is_valid_key(name) {
        return Err(Error::InvalidArgument(format!("service_name must match {NAME_PATTERN}")));
    }
    Ok(name.to_string())
}

/// The probe as the guest gets it: a file path confined to `/workspace` and absolute.
fn wire_probe(probe: &ReadinessProbe) -> Result<(ReadinessProbe, pyro_protocol::ReadinessProbe)> {
    let probe = probe.clone().validate()?;
    Ok(match probe {
        ReadinessProbe::File { path } => {
            let path = normalize_destination(&path)?;
            (ReadinessProbe::File { path: path.clone() }, pyro_protocol::ReadinessProbe::File { path })
        }
        ReadinessProbe::Tcp { address } => (ReadinessProbe::Tcp { address: address.clone() }, pyro_protocol::ReadinessProbe::Tcp { address }),
        ReadinessProbe::Http { url } => (ReadinessProbe::Http { url: url.clone() }, pyro_protocol::ReadinessProbe::Http { url }),
        ReadinessProbe::Command { command } => (ReadinessProbe::Command { command: command.clone() }, pyro_protocol::ReadinessProbe::Command { command }),
    })
}

fn unknown_service(id: &str, name: &str) -> Error {
    Error::not_found_because("service", name, format!("service '{name}' does not exist in workspace '{id}'"))
}

/// Everything `start_service` is asked to do, checked.
struct StartPlan {
    name: String,
    cwd: String,
    readiness: Option<(ReadinessProbe, pyro_protocol::ReadinessProbe)>,
}

fn plan_start(name: &str, command: &str, cwd: &str, readiness: Option<&ReadinessProbe>, ports: &[PortMapping]) -> Result<StartPlan> {
    let name = validate_service_name(name)?;
    if command.trim().is_empty() {
        return Err(Error::InvalidArgument("command must not be empty".into()));
    }
    let cwd = normalize_destination(cwd)?;
    let readiness = readiness.map(wire_probe).transpose()?;
    PortMapping::validate_all(ports)?;
    Ok(StartPlan { name, cwd, readiness })
}

impl WorkspaceManager {
    /// Refreshes every record of a started workspace from one `service_list` answer (a
    /// running record the guest no longer knows ended with its guest), saves what changed
    /// and the counts; returns the records sorted by name.
    async fn refresh_services(&self, ws: &Workspace, client: &GuestClient) -> Result<Vec<ServiceRecord>> {
        let mut records = load_all(&ws.dir);
        if records.is_empty() {
            return Ok(records);
        }
        let live: BTreeMap<String, ServiceInfo> = client.service_list().await.map_err(guest_error)?.into_iter().map(|s| (s.name.clone(), s)).collect();
        for record in &mut records {
            let before = record.clone();
            match live.get(&record.service_name) {
                Some(info) => record.apply(info),
                None => {
                    record.mark_workspace_stopped();
                }
            }
            if *record != before {
                save(&ws.dir, record)?;
            }
        }
        self.store_counts(&ws.record.workspace_id, &records)?;
        Ok(records)
    }

    fn store_counts(&self, id: &str, records: &[ServiceRecord]) -> Result<()> {
        let (total, running) = counts(records);
        self.update_record(id, |r| {
            (r.service_count, r.running_service_count) = (total, running);
            Ok(())
        })?;
        Ok(())
    }

    /// The records, refreshed from the guest when the workspace is started (a stopped
    /// workspace's records were settled when it stopped).
    async fn current_services(&self, ws: &Workspace) -> Result<Vec<ServiceRecord>> {
        if ws.record.state != WorkspaceState::Started {
            return Ok(load_all(&ws.dir));
        }
        let client = self.guest(ws, OP).await?;
        self.refresh_services(ws, &client).await
    }

    /// Stops every running service of `ws` in its guest (best effort: the guest may be
    /// gone) and records them `stopped`/`workspace_stopped`. Called by stop, reset and
    /// delete before the guest goes down.
    pub(crate) async fn stop_all_services(&self, ws: &Workspace) -> Result<()> {
        let records = load_all(&ws.dir);
        if !records.iter().any(ServiceRecord::is_running) {
            return Ok(());
        }
        if ws.record.state == WorkspaceState::Started {
            if let Ok((client, _)) = vm::connect(&ws.vm_dir()).await {
                for record in records.iter().filter(|r| r.is_running()) {
                    if let Err(e) = client.service_stop(&record.service_name, STOP_GRACE).await {
                        tracing::debug!("stopping service {} of {}: {e}", record.service_name, ws.record.workspace_id);
                    }
                }
            }
        }
        let (total, running) = mark_workspace_stopped(&ws.dir)?;
        self.update_record(&ws.record.workspace_id, |r| {
            (r.service_count, r.running_service_count) = (total, running);
            Ok(())
        })?;
        Ok(())
    }

    /// Stops the workspace's services and deletes their records: a reset clears the
    /// service history (the contract's `reset_workspace`).
    pub(crate) async fn forget_services(&self, ws: &Workspace) -> Result<()> {
        self.stop_all_services(ws).await?;
        let dir = services_dir(&ws.dir);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", &dir, e)),
            _ => {}
        }
        self.update_record(&ws.record.workspace_id, |r| {
            (r.service_count, r.running_service_count) = (0, 0);
            Ok(())
        })?;
        Ok(())
    }

    /// Starts a named service in a started workspace and waits for its readiness. A
    /// service that exits or never gets ready comes back `failed` (not as an error).
    pub async fn start_service(&self, id: &str, name: &str, options: &StartServiceOptions) -> Result<ServiceRecord> {
        let StartServiceOptions { command, cwd, readiness, ready_timeout_seconds, ready_interval_ms, secret_env, published_ports } = options;
        let (ready_timeout_seconds, ready_interval_ms) = (*ready_timeout_seconds, *ready_interval_ms);
        let plan = plan_start(name, command, cwd, readiness.as_ref(), published_ports)?;
        let ws = self.open(id).await?;
        let secret_env = self.secret_env(&ws, secret_env)?;
        if !published_ports.is_empty() && ws.record.network_policy != NetworkPolicy::EgressPublishedPorts {
            return Err(Error::InvalidArgument("published ports require workspace network_policy 'egress+published-ports'".into()));
        }
        if ready_timeout_seconds == 0 {
            return Err(Error::InvalidArgument("ready_timeout_seconds must be positive".into()));
        }
        if ready_interval_ms == 0 {
            return Err(Error::InvalidArgument("ready_interval_ms must be positive".into()));
        }
        let client = self.guest(&ws, OP).await?;
        let existing = self.refresh_services(&ws, &client).await?;
        if existing.iter().any(|r| r.service_name == plan.name && r.is_running()) {
            return Err(Error::Conflict(format!("service '{}' is already running in workspace '{id}'", plan.name)));
        }
        let (probe, wire) = plan.readiness.unzip();
        let request = ServiceStartRequest {
            name: plan.name.clone(),
            command: command.clone(),
            cwd: plan.cwd.clone(),
            env: BTreeMap::new(),
            secret_env,
            readiness: wire,
            ready_timeout_ms: ready_timeout_seconds.saturating_mul(1000),
            ready_interval_ms,
        };
        let info = client.service_start(request).await.map_err(guest_error)?;
        let mut record = ServiceRecord {
            workspace_id: id.into(),
            service_name: plan.name,
            state: String::new(),
            command: secrets::redact(&ws.dir, &ws.record.secrets, command),
            cwd: plan.cwd,
            started_at: 0.0,
            ended_at: None,
            exit_code: None,
            pid: None,
            execution_mode: "guest_vsock".into(),
            readiness: probe,
            ready_at: None,
            stop_reason: None,
            published_ports: Vec::new(),
        };
        record.apply(&info);
        let published =
            if record.is_running() && !published_ports.is_empty() { self.publish_ports(&ws, &client, &mut record, published_ports).await } else { Ok(()) };
        save(&ws.dir, &record)?;
        let mut all = load_all(&ws.dir);
        all.retain(|r| r.service_name != record.service_name);
        all.push(record.clone());
        self.store_counts(id, &all)?;
        self.touch(id)?;
        published.map(|()| record)
    }

    /// Publishes `ports` for a service that just started; when one cannot be (its host
    /// port is taken), none is, the service is stopped and marked `failed` /
    /// `published_port_failed`, and the start fails with the reason.
    async fn publish_ports(&self, ws: &Workspace, client: &GuestClient, record: &mut ServiceRecord, ports: &[PortMapping]) -> Result<()> {
        let error = match crate::network::publish::publish(&ws.vm_dir(), &record.service_name, ports).await {
            Ok(published) => {
                record.published_ports = published;
                return Ok(());
            }
            Err(e) => e,
        };
        match client.service_stop(&record.service_name, STOP_GRACE).await {
            Ok(info) => record.apply(&info),
            Err(e) => tracing::warn!("stopping service {} after its ports failed: {e}", record.service_name),
        }
        record.state = ServiceState::Failed.name().into();
        record.stop_reason = Some(PUBLISHED_PORT_FAILED.into());
        Err(Error::Conflict(format!("{error}; service '{}' was stopped ({PUBLISHED_PORT_FAILED})", record.service_name)))
    }

    /// Every service of the workspace, refreshed from the guest when it runs.
    pub async fn list_services(&self, id: &str) -> Result<ServiceList> {
        let ws = self.open(id).await?;
        let services = self.current_services(&ws).await?;
        let running_count = services.iter().filter(|s| s.is_running()).count();
        Ok(ServiceList { workspace_id: id.into(), count: services.len(), running_count, services })
    }

    /// One service, refreshed from the guest when the workspace runs.
    pub async fn status_service(&self, id: &str, name: &str) -> Result<ServiceRecord> {
        let name = validate_service_name(name)?;
        let ws = self.open(id).await?;
        if !record_path(&ws.dir, &name).exists() {
            return Err(unknown_service(id, &name));
        }
        let services = self.current_services(&ws).await?;
        services.into_iter().find(|s| s.service_name == name).ok_or_else(|| unknown_service(id, &name))
    }

    /// A service's output: the last `tail_lines` lines of each stream, or everything the
    /// guest holds with `all`. The logs live in the guest, so the workspace must run.
    pub async fn logs_service(&self, id: &str, name: &str, tail_lines: u64, all: bool) -> Result<ServiceLogs> {
        let name = validate_service_name(name)?;
        if !all && tail_lines == 0 {
            return Err(Error::InvalidArgument("tail_lines must be positive".into()));
        }
        let ws = self.open(id).await?;
        if !record_path(&ws.dir, &name).exists() {
            return Err(unknown_service(id, &name));
        }
        let client = self.guest(&ws, OP).await?;
        let services = self.refresh_services(&ws, &client).await?;
        let service = services.into_iter().find(|s| s.service_name == name).ok_or_else(|| unknown_service(id, &name))?;
        let tail = (!all).then_some(tail_lines);
        let out = client.service_logs(&name, tail).await.map_err(guest_error)?;
        self.touch(id)?;
        Ok(ServiceLogs {
            service,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            tail_lines: tail,
            truncated: out.result.stdout_truncated || out.result.stderr_truncated,
        })
    }

    /// Stops a running service (SIGTERM to its process group, 5 s, SIGKILL); a service
    /// that already ended is returned unchanged.
    pub async fn stop_service(&self, id: &str, name: &str) -> Result<ServiceRecord> {
        let name = validate_service_name(name)?;
        let ws = self.open(id).await?;
        if !record_path(&ws.dir, &name).exists() {
            return Err(unknown_service(id, &name));
        }
        if ws.record.state != WorkspaceState::Started {
            return load_all(&ws.dir).into_iter().find(|s| s.service_name == name).ok_or_else(|| unknown_service(id, &name));
        }
        let client = self.guest(&ws, OP).await?;
        let mut services = self.refresh_services(&ws, &client).await?;
        let Some(index) = services.iter().position(|s| s.service_name == name) else {
            return Err(unknown_service(id, &name));
        };
        if services[index].is_running() {
            let info = client.service_stop(&name, STOP_GRACE).await.map_err(guest_error)?;
            if !services[index].published_ports.is_empty() {
                crate::network::publish::unpublish(&ws.vm_dir(), &name).await?;
            }
            services[index].apply(&info);
            save(&ws.dir, &services[index])?;
            self.store_counts(id, &services)?;
        }
        Ok(services.swap_remove(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn start_arguments_are_checked_with_the_contract_messages() {
        let plan = |name: &str, command: &str, cwd: &str, probe: Option<ReadinessProbe>| plan_start(name, command, cwd, probe.as_ref(), &[]).map(|p| p.name);
        assert_eq!(message(plan(" ", "x", "/workspace", None).unwrap_err()), "service_name must not be empty");
        assert_eq!(message(plan("-x", "x", "/workspace", None).unwrap_err()), "service_name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
        assert_eq!(message(plan("app", " ", "/workspace", None).unwrap_err()), "command must not be empty");
        assert_eq!(message(plan("app", "x", "/etc", None).unwrap_err()), "workspace destination must stay inside /workspace");
        let file = ReadinessProbe::File { path: "../x".into() };
        assert_eq!(message(plan("app", "x", "/workspace", Some(file)).unwrap_err()), "workspace destination must stay inside /workspace");
        let tcp = ReadinessProbe::Tcp { address: "h:0".into() };
        assert_eq!(message(plan("app", "x", "/workspace", Some(tcp)).unwrap_err()), "readiness.address port must be between 1 and 65535");
        assert_eq!(plan(" app ", "x", "sub", None).unwrap(), "app");
        let twice: Vec<PortMapping> = vec!["8080".parse().unwrap(), "8080".parse().unwrap()];
        assert_eq!(
            message(plan_start("app", "x", "/workspace", None, &twice).err().unwrap()),
            "published ports must not repeat the same host/guest port mapping"
        );
        let (probe, wire) = wire_probe(&ReadinessProbe::File { path: ".app-ready".into() }).unwrap();
        assert_eq!(probe, ReadinessProbe::File { path: "/workspace/.app-ready".into() });
        assert_eq!(wire, pyro_protocol::ReadinessProbe::File { path: "/workspace/.app-ready".into() });
    }

    #[test]
    fn records_follow_the_agent_and_end_with_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = ServiceRecord {
            workspace_id: "w".into(),
            service_name: "app".into(),
            state: "running".into(),
            command: "sleep 9".into(),
            cwd: "/workspace".into(),
            started_at: 1.0,
            ended_at: None,
            exit_code: None,
            pid: Some(7),
            execution_mode: "guest_vsock".into(),
            readiness: None,
            ready_at: Some(1.0),
            stop_reason: None,
            published_ports: Vec::new(),
        };
        save(dir.path(), &record).unwrap();
        save(dir.path(), &ServiceRecord { service_name: "done".into(), state: "exited".into(), exit_code: Some(0), ..record.clone() }).unwrap();
        assert_eq!(counts(&load_all(dir.path())), (2, 1));
        assert_eq!(mark_workspace_stopped(dir.path()).unwrap(), (2, 0));
        let after = load_all(dir.path());
        assert_eq!((after[0].state.as_str(), after[0].stop_reason.as_deref()), ("stopped", Some(WORKSPACE_STOPPED)));
        assert!(after[0].ended_at.is_some());
        assert_eq!((after[1].state.as_str(), after[1].stop_reason.as_deref()), ("exited", None));

        let info = ServiceInfo {
            name: "app".into(),
            state: ServiceState::Failed,
            pid: Some(9),
            started_at_ms: 2_000,
            ready_at_ms: None,
            ended_at_ms: Some(2_500),
            exit_code: Some(127),
            stop_reason: Some("process_exited_before_ready".into()),
            stdout_bytes: 0,
            stderr_bytes: 20,
        };
        record.apply(&info);
        assert_eq!((record.state.as_str(), record.started_at, record.ended_at, record.exit_code), ("failed", 2.0, Some(2.5), Some(127)));
    }
}
