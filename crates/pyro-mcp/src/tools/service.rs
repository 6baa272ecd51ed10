//! The service tools: start a named long-running process in a started workspace (with a
//! readiness probe, secrets and published ports), list, inspect, read its logs and stop
//! it. Each is a thin call of the [`Pyro`] method `pyro workspace service …` uses; logs go
//! through the inline-output cap like command output.

use std::collections::BTreeMap;
use std::sync::Arc;

use pyro_core::options::{PortMapping, ReadinessProbe};
use pyro_core::workspace::services::{ServiceRecord, StartServiceOptions};
use pyro_core::{Error, Pyro, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use super::def::{default_workspace_path, tool, Call, Effect, Spec, ToolDef};

/// The service tools, in any order (profiles order them).
pub(crate) fn tools() -> Vec<ToolDef> {
    let spec = |name, title, description, effect, idempotent| Spec { name, title, description, effect, idempotent };
    vec![
        tool(spec("service_start", "Start a service", "Start a named long-running service inside a workspace.", Effect::Additive, false), start),
        tool(
            spec("service_list", "List a workspace's services", "List named services in one workspace.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: WorkspaceId, _: Call| async move { pyro.list_services(&a.workspace_id).await },
        ),
        tool(
            spec("service_status", "Show a service's status", "Inspect one named workspace service.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: ServiceName, _: Call| async move { pyro.status_service(&a.workspace_id, &a.service_name).await },
        ),
        tool(
            spec("service_logs", "Read a service's logs", "Read persisted stdout/stderr for one workspace service.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: Logs, _: Call| async move { pyro.logs_service(&a.workspace_id, &a.service_name, a.tail_lines, a.all).await },
        ),
        tool(
            spec("service_stop", "Stop a service", "Stop one running service in a workspace.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: ServiceName, _: Call| async move { pyro.stop_service(&a.workspace_id, &a.service_name).await },
        ),
    ]
}

fn default_ready_timeout_seconds() -> u64 {
    30
}

fn default_ready_interval_ms() -> u64 {
    500
}

fn default_tail_lines() -> u64 {
    200
}

/// Arguments of `service_start`. The readiness probe is flattened into four fields, of
/// which at most one may be given (the reference silently took the first; naming the
/// mistake is kinder to a model).
#[derive(Debug, Deserialize, JsonSchema)]
struct Start {
    /// The workspace's id (the workspace must be started).
    workspace_id: String,
    /// Service name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
    service_name: String,
    /// Shell command line, run by `/bin/sh -lc`; it should keep running.
    command: String,
    /// Working directory, under `/workspace`.
    #[serde(default = "default_workspace_path")]
    cwd: String,
    /// Ready when this path exists (relative paths are under `/workspace`).
    #[serde(default)]
    ready_file: Option<String>,
    /// Ready when this `HOST:PORT` accepts a TCP connection in the guest.
    #[serde(default)]
    ready_tcp: Option<String>,
    /// Ready when a GET of this URL in the guest ends in status 200–399.
    #[serde(default)]
    ready_http: Option<String>,
    /// Ready when this shell command exits 0.
    #[serde(default)]
    ready_command: Option<String>,
    /// Seconds to wait for readiness before the service is stopped and marked `failed`.
    #[serde(default = "default_ready_timeout_seconds")]
    ready_timeout_seconds: u64,
    /// Milliseconds between readiness checks.
    #[serde(default = "default_ready_interval_ms")]
    ready_interval_ms: u64,
    /// Workspace secrets to expose to the service: secret name → environment variable.
    #[serde(default)]
    secret_env: Option<BTreeMap<String, String>>,
    /// Guest TCP ports to publish on the host's 127.0.0.1 (needs network policy `egress+published-ports`).
    #[serde(default)]
    published_ports: Option<Vec<Port>>,
}

/// One published port.
#[derive(Debug, Deserialize, JsonSchema)]
struct Port {
    /// Port inside the guest (1–65535).
    guest_port: u16,
    /// Port on the host's 127.0.0.1 (1025–65535); null picks a free one.
    #[serde(default)]
    host_port: Option<u16>,
}

async fn start(pyro: Arc<Pyro>, a: Start, _: Call) -> Result<ServiceRecord> {
    let given = [&a.ready_file, &a.ready_tcp, &a.ready_http, &a.ready_command].iter().filter(|f| f.is_some()).count();
    if given > 1 {
        return Err(Error::InvalidArgument("choose at most one of ready_file, ready_tcp, ready_http, or ready_command".into()));
    }
    let readiness = ReadinessProbe::from_flags(a.ready_file, a.ready_tcp, a.ready_http, a.ready_command)?;
    let options = StartServiceOptions {
        cwd: a.cwd,
        readiness,
        ready_timeout_seconds: a.ready_timeout_seconds,
        ready_interval_ms: a.ready_interval_ms,
        secret_env: a.secret_env.unwrap_or_default(),
        published_ports: a.published_ports.unwrap_or_default().into_iter().map(|p| PortMapping { host_port: p.host_port, guest_port: p.guest_port }).collect(),
        ..StartServiceOptions::new(a.command)
    };
    pyro.start_service(&a.workspace_id, &a.service_name, &options).await
}

/// Arguments of `service_list`.
#[derive(Debug, Deserialize, JsonSchema)]
struct WorkspaceId {
    /// The workspace's id.
    workspace_id: String,
}

/// Arguments of `service_status` and `service_stop`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ServiceName {
    /// The workspace's id.
    workspace_id: String,
    /// The service's name.
    service_name: String,
}

/// Arguments of `service_logs`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Logs {
    /// The workspace's id.
    workspace_id: String,
    /// The service's name.
    service_name: String,
    /// Return the last this many lines of each stream.
    #[serde(default = "default_tail_lines")]
    tail_lines: u64,
    /// Return everything kept instead of the last `tail_lines` lines.
    #[serde(default)]
    all: bool,
}
