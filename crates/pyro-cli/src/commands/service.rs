//! `pyro workspace service …`: named long-running services in a started workspace, with
//! human output per the reference (summary lines on stderr, raw logs on their streams)
//! and `--json` for the records themselves.

use pyro_core::workspace::services::{ServiceRecord, StartServiceOptions};
use pyro_core::{Pyro, Result};
use serde::Serialize;

use super::run::shell_join;
use crate::cli::ServiceCommand;
use crate::output::{print_json, raw_stderr, raw_stdout, say, tell};
use crate::settings;

/// Prints `value` as JSON, or runs `human` to print it for people.
fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) {
    if json {
        print_json(value);
    } else {
        human(value);
    }
}

/// `127.0.0.1:18080->8080/tcp,…`.
fn published(record: &ServiceRecord) -> String {
    record.published_ports.iter().map(|p| format!("{}:{}->{}/{}", p.host, p.host_port, p.guest_port, p.protocol)).collect::<Vec<_>>().join(",")
}

/// `[workspace-service-<action>] workspace_id=… service_name=… state=… cwd=… execution_mode=…`.
fn summary(action: &str, r: &ServiceRecord) {
    let ports = published(r);
    let ports = if ports.is_empty() { String::new() } else { format!(" published_ports={ports}") };
    tell!(
        "[workspace-service-{action}] workspace_id={} service_name={} state={} cwd={} execution_mode={}{ports}",
        r.workspace_id,
        r.service_name,
        r.state,
        r.cwd,
        r.execution_mode
    );
}

/// Runs one `workspace service` subcommand.
pub async fn run(pyro: &Pyro, command: ServiceCommand, json: bool) -> Result<i32> {
    match command {
        ServiceCommand::Start(a) => {
            let (readiness, published_ports) = settings::service_options(&a)?;
            let options = StartServiceOptions {
                cwd: a.cwd.clone(),
                readiness,
                ready_timeout_seconds: a.ready_timeout_seconds,
                ready_interval_ms: a.ready_interval_ms,
                secret_env: settings::secret_env(&a.secret_env)?,
                published_ports,
                ..StartServiceOptions::new(shell_join(&a.command)?)
            };
            let record = pyro.start_service(&a.name.id.workspace_id, &a.name.service_name, &options).await?;
            emit(json, &record, |r| summary("start", r));
        }
        ServiceCommand::List(id) => emit(json, &pyro.list_services(&id.workspace_id).await?, |list| {
            if list.services.is_empty() {
                say!("No workspace services found.");
            }
            for s in &list.services {
                let ports = published(s);
                let ports = if ports.is_empty() { String::new() } else { format!(" published={ports}") };
                say!("{} [{}] cwd={}{ports}", s.service_name, s.state, s.cwd);
            }
        }),
        ServiceCommand::Status(a) => emit(json, &pyro.status_service(&a.id.workspace_id, &a.service_name).await?, |r| summary("status", r)),
        ServiceCommand::Logs { name, tail_lines, all } => {
            emit(json, &pyro.logs_service(&name.id.workspace_id, &name.service_name, tail_lines, all).await?, |l| {
                raw_stdout(l.stdout.as_bytes());
                raw_stderr(l.stderr.as_bytes());
                summary("logs", &l.service);
            })
        }
        ServiceCommand::Stop(a) => emit(json, &pyro.stop_service(&a.id.workspace_id, &a.service_name).await?, |r| summary("stop", r)),
    }
    Ok(0)
}
