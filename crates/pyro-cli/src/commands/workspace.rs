//! `pyro workspace …`: persistent workspaces.

use std::collections::BTreeMap;
use std::path::Path;

use pyro_core::workspace::{NetworkLogReport, UpdateWorkspace, WorkspaceStatus};
use pyro_core::{Error, Pyro, Result};
use serde::Serialize;

use super::run::shell_join;
use crate::cli::{DiskCommand, FileCommand, NetworkCommand, PatchCommand, SnapshotCommand, SyncCommand, WorkspaceCommand};
use crate::output::{has_terminal_controls, part, print_json, progress, raw_stderr, raw_stdout, say, tell};
use crate::settings;

/// Prints `value` as JSON, or runs `human` to print it for people.
fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) {
    if json {
        print_json(value);
    } else {
        human(value);
    }
}

/// Runs one `workspace` subcommand.
pub async fn run(pyro: &Pyro, command: WorkspaceCommand, json: bool) -> Result<i32> {
    use WorkspaceCommand as W;
    match command {
        W::Create(args) => {
            let options = settings::workspace_options(&args)?;
            let status = pyro.create_workspace(&options, &progress(json || args.id_only)).await?;
            if args.id_only {
                say!("{}", status.workspace_id);
            } else {
                emit(json, &status, |s| print_status("Workspace", s));
            }
        }
        W::List => emit(json, &pyro.list_workspaces().await?, |list| {
            if list.workspaces.is_empty() {
                say!("No workspaces.");
            }
            for w in &list.workspaces {
                let name = w.name.as_ref().map(|n| format!(" name='{n}'")).unwrap_or_default();
                let labels = if w.labels.is_empty() { String::new() } else { format!(" labels={}", join_labels(&w.labels, ",")) };
                let error = w.error.as_ref().map(|e| format!(" error={e}")).unwrap_or_default();
                say!(
                    "[workspace] workspace_id={}{name} state={} environment={}{labels} last_activity_at={} commands={} services={}/{}{error}",
                    w.workspace_id,
                    w.state,
                    w.environment,
                    w.last_activity_at,
                    w.command_count,
                    w.running_service_count,
                    w.service_count
                );
            }
        }),
        W::Sync(SyncCommand::Push { id, source_path, dest }) => emit(json, &pyro.push_workspace_sync(&id.workspace_id, &source_path, &dest).await?, |r| {
            let s = &r.workspace_sync;
            say!(
                "[workspace-sync] workspace_id={} mode={} source={} destination={} entry_count={} bytes_written={}",
                r.workspace_id,
                s.mode,
                s.source_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                s.destination,
                s.entry_count,
                s.bytes_written
            );
        }),
        W::Stop(a) => emit(json, &pyro.stop_workspace(&a.workspace_id).await?, |s| print_status("Stopped workspace", s)),
        W::Start(a) => emit(json, &pyro.start_workspace(&a.workspace_id).await?, |s| print_status("Started workspace", s)),
        W::Exec(args) => {
            let command = shell_join(&args.command)?;
            let secret_env = settings::secret_env(&args.secret_env)?;
            let result = pyro.exec_workspace(&args.id.workspace_id, &command, args.timeout_seconds, &secret_env, None).await?;
            let code = result.output.exit_code;
            emit(json, &result, |r| {
                raw_stdout(&r.output.stdout);
                raw_stderr(&r.output.stderr);
                tell!(
                    "[workspace-exec] workspace_id={} sequence={} cwd={} execution_mode={} exit_code={} duration_ms={}",
                    r.workspace_id,
                    r.sequence,
                    r.cwd,
                    r.execution_mode,
                    r.output.exit_code,
                    r.output.duration_ms
                );
            });
            return Ok(code);
        }
        W::File(FileCommand::List(a)) => emit(json, &pyro.list_workspace_files(&a.id.workspace_id, &a.path, a.recursive).await?, |l| {
            say!("Workspace path: {} (recursive={})", l.path, if l.recursive { "yes" } else { "no" });
            if l.entries.is_empty() {
                say!("No workspace entries found.");
            }
            for e in &l.entries {
                let target = e.link_target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
                say!("{} [{}] size={} mode={}{target}", e.path, e.artifact_type, e.size_bytes, e.mode);
            }
        }),
        W::File(FileCommand::Read(a)) => {
            let r = pyro.read_workspace_file(&a.id.workspace_id, &a.path, a.max_bytes).await?;
            emit(json, &r, |r| {
                raw_stdout(r.content.as_bytes());
                if !a.content_only {
                    if !r.content.ends_with('\n') {
                        say!();
                    }
                    tell!(
                        "[workspace-file-read] workspace_id={} path={} size_bytes={} truncated={}",
                        r.workspace_id,
                        r.path,
                        r.size_bytes,
                        if r.truncated { "yes" } else { "no" }
                    );
                }
            })
        }
        W::File(FileCommand::Write { id, path, text, text_file }) => {
            let text = match (text, text_file) {
                (Some(text), _) => text,
                (None, Some(file)) => read_text_file("--text-file", &file)?,
                (None, None) => return Err(Error::InvalidArgument("one of --text or --text-file is required".into())),
            };
            emit(json, &pyro.write_workspace_file(&id.workspace_id, &path, &text).await?, |r| {
                say!(
                    "[workspace-file-write] workspace_id={} path={} bytes_written={} mode={} execution_mode={}",
                    r.workspace_id,
                    r.path,
                    r.bytes_written,
                    r.mode,
                    r.execution_mode
                )
            })
        }
        W::Export(a) => emit(json, &pyro.export_workspace(&a.id.workspace_id, &a.path, &a.output).await?, |r| {
            say!(
                "[workspace-export] workspace_id={} workspace_path={} output_path={} artifact_type={} entry_count={} bytes_written={}",
                r.workspace_id,
                r.workspace_path,
                r.output_path.display(),
                r.artifact_type,
                r.summary.entry_count,
                r.summary.bytes_written
            )
        }),
        W::Patch(PatchCommand::Apply { id, patch, patch_file }) => {
            let patch = match (patch, patch_file) {
                (Some(patch), _) => patch,
                (None, Some(file)) => read_text_file("--patch-file", &file)?,
                (None, None) => return Err(Error::InvalidArgument("one of --patch or --patch-file is required".into())),
            };
            emit(json, &pyro.apply_workspace_patch(&id.workspace_id, &patch).await?, |r| {
                let s = &r.summary;
                say!("[workspace-patch] workspace_id={} total={} added={} modified={} deleted={}", r.workspace_id, s.total, s.added, s.modified, s.deleted)
            })
        }
        W::Disk(DiskCommand::Export { id, output }) => emit(json, &pyro.export_workspace_disk(&id.workspace_id, &output).await?, |r| {
            say!(
                "[workspace-disk-export] workspace_id={} output_path={} disk_format={} size_bytes={}",
                r.workspace_id,
                r.output_path.display(),
                r.disk_format,
                r.size_bytes
            );
            tell!("[workspace-disk-export] note: the guest wrote this filesystem; mounting it hands guest-crafted metadata to the host kernel's ext4 driver (prefer `pyro workspace disk list/read`, or debugfs)");
        }),
        W::Disk(DiskCommand::List(a)) => emit(json, &pyro.list_workspace_disk(&a.id.workspace_id, &a.path, a.recursive).await?, |l| {
            say!("Disk path: {} (recursive={})", l.path, if l.recursive { "yes" } else { "no" });
            for e in &l.entries {
                let target = e.link_target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
                say!("{} [{}] size={} mode={}{target}", e.path, e.artifact_type, e.size_bytes, e.mode);
            }
        }),
        W::Disk(DiskCommand::Read(a)) => {
            let r = pyro.read_workspace_disk(&a.id.workspace_id, &a.path, a.max_bytes).await?;
            emit(json, &r, |r| {
                raw_stdout(r.content.as_bytes());
                if !a.content_only {
                    if !r.content.ends_with('\n') {
                        say!();
                    }
                    tell!(
                        "[workspace-disk-read] workspace_id={} path={} size_bytes={} truncated={}",
                        r.workspace_id,
                        r.path,
                        r.size_bytes,
                        if r.truncated { "yes" } else { "no" }
                    );
                }
            })
        }
        W::Diff(a) => emit(json, &pyro.diff_workspace(&a.workspace_id).await?, |d| {
            let s = &d.diff.summary;
            if !d.diff.changed {
                say!("No workspace changes.");
                return;
            }
            say!(
                "[workspace-diff] workspace_id={} total={} added={} modified={} deleted={} type_changed={} text_patched={} non_text={}",
                d.workspace_id,
                s.total,
                s.added,
                s.modified,
                s.deleted,
                s.type_changed,
                s.text_patched,
                s.non_text
            );
            // Patch bodies are guest file content a person reviews: controls are shown, not run.
            part(&d.diff.patch);
            if has_terminal_controls(&d.diff.patch) {
                tell!("[workspace-diff] note: the patch contains terminal control characters, shown escaped (\\x1b, \\u{{9b}}, ...); --json carries the exact text");
            }
        }),
        W::Snapshot(SnapshotCommand::Create(a)) => emit(json, &pyro.create_snapshot(&a.id.workspace_id, &a.snapshot_name).await?, |r| {
            say!("[workspace-snapshot-create] workspace_id={} snapshot_name={} size_bytes={}", r.workspace_id, r.snapshot.snapshot_name, r.snapshot.size_bytes)
        }),
        W::Snapshot(SnapshotCommand::List(a)) => emit(json, &pyro.list_snapshots(&a.workspace_id).await?, |l| {
            for s in &l.snapshots {
                say!("{} [{}] created_at={} size_bytes={}", s.snapshot_name, s.kind, s.created_at, s.size_bytes);
            }
        }),
        W::Snapshot(SnapshotCommand::Delete(a)) => emit(json, &pyro.delete_snapshot(&a.id.workspace_id, &a.snapshot_name).await?, |r| {
            say!("[workspace-snapshot-delete] workspace_id={} snapshot_name={} deleted=yes", r.workspace_id, r.snapshot.snapshot_name)
        }),
        W::Reset(a) => emit(json, &pyro.reset_workspace(&a.id.workspace_id, &a.snapshot).await?, |r| {
            print_status("Reset workspace", &r.status);
            say!("Restored snapshot: {}", r.workspace_reset.snapshot_name);
        }),
        W::Service(command) => return super::service::run(pyro, command, json).await,
        W::Shell(command) => return super::shell::run(pyro, command, json).await,
        W::Status(a) => emit(json, &pyro.status_workspace(&a.workspace_id).await?, |s| print_status("Workspace", s)),
        W::Network(NetworkCommand::Log(a)) => emit(json, &pyro.network_log_workspace(&a.workspace_id).await?, print_network_log),
        W::Update(a) => {
            let change = UpdateWorkspace { name: a.name, clear_name: a.clear_name, labels: settings::labels(&a.labels)?, clear_labels: a.clear_labels };
            emit(json, &pyro.update_workspace(&a.id.workspace_id, &change).await?, |s| print_status("Workspace", s))
        }
        W::Logs(a) => emit(json, &pyro.logs_workspace(&a.workspace_id).await?, |logs| {
            if logs.entries.is_empty() {
                say!("No workspace logs found.");
            }
            for e in &logs.entries {
                say!("#{} exit_code={} duration_ms={} cwd={}", e.summary.sequence, e.summary.exit_code, e.summary.duration_ms, e.summary.cwd);
                say!("$ {}", e.summary.command);
                raw_stdout(&e.stdout);
                if !e.stdout.is_empty() && !e.stdout.ends_with(b"\n") {
                    say!();
                }
                raw_stderr(&e.stderr);
            }
        }),
        W::Delete(a) => emit(json, &pyro.delete_workspace(&a.workspace_id).await?, |r| say!("Deleted workspace: {}", r.workspace_id)),
    }
    Ok(0)
}

fn print_network_log(report: &NetworkLogReport) {
    let log = &report.log;
    say!(
        "[workspace-network-log] workspace_id={} network_policy={} allowed_flows={} denied_flows={} dropped_events={}",
        report.workspace_id,
        report.network_policy,
        log.allowed_flows,
        log.denied_flows,
        log.dropped_events
    );
    if log.entries.is_empty() {
        say!("No refused flows.");
    }
    for e in &log.entries {
        let target = match (&e.destination, e.port) {
            (Some(destination), Some(port)) if destination.contains(':') => format!(" [{destination}]:{port}"),
            (Some(destination), Some(port)) => format!(" {destination}:{port}"),
            _ => String::new(),
        };
        let protocol = e.protocol.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
        let name = e.name.as_deref().map(|n| format!(" name={n}")).unwrap_or_default();
        let count = e.count.map(|c| format!(" count={c}")).unwrap_or_default();
        say!("{:.3} {}{protocol}{target}{name} rule={}{count}", e.time, e.kind, e.rule);
    }
}

/// Reads a host text file named by `flag`, with one-line errors.
fn read_text_file(flag: &str, path: &Path) -> Result<String> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument(format!("{flag} must not be empty")));
    }
    if path.is_dir() {
        return Err(Error::InvalidArgument(format!("{flag} must point to a file, not a directory: {}", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|_| Error::InvalidArgument(format!("{flag} file not found: {}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidArgument(format!("{flag} must contain UTF-8 text: {}", path.display())))
}

fn join_labels(labels: &BTreeMap<String, String>, sep: &str) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(sep)
}

fn print_status(action: &str, s: &WorkspaceStatus) {
    say!("{action} ID: {}", s.workspace_id);
    if let Some(name) = &s.name {
        say!("Name: {name}");
    }
    if !s.labels.is_empty() {
        say!("Labels: {}", join_labels(&s.labels, ", "));
    }
    say!("Environment: {}", s.environment);
    say!("State: {}", s.state);
    say!("Workspace: {}", s.workspace_path);
    say!("Last activity at: {}", s.last_activity_at);
    say!("Network policy: {}", s.network_policy);
    if let Some(n) = &s.network {
        let allow = if n.details.allow_hosts.is_empty() { "public destinations".to_string() } else { n.details.allow_hosts.join(", ") };
        say!(
            "Network: guest {}/{} gateway {} dns {} egress to {allow}",
            n.details.guest_ip,
            n.details.prefix_len,
            n.details.gateway_ip,
            n.details.dns_servers.join(",")
        );
        say!(
            "Network flows: {} allowed, {} denied, {} dropped (pyro workspace network log {})",
            n.allowed_flows,
            n.denied_flows,
            n.dropped_events,
            s.workspace_id
        );
    }
    match &s.workspace_seed.seed_path {
        Some(path) => say!("Workspace seed: {} from {}", s.workspace_seed.mode, path.display()),
        None => say!("Workspace seed: {}", s.workspace_seed.mode),
    }
    if !s.secrets.is_empty() {
        say!("Secrets: {}", s.secrets.iter().map(|x| format!("{} ({})", x.name, x.source_kind)).collect::<Vec<_>>().join(", "));
    }
    say!("Execution mode: {} ({})", s.execution_mode, s.backend);
    say!("Resources: {} vCPU / {} MiB", s.vcpu_count, s.mem_mib);
    say!("Command count: {}", s.command_count);
    say!("Reset count: {}", s.reset_count);
    if let Some(at) = s.last_reset_at {
        say!("Last reset at: {at}");
    }
    say!("Services: {}/{} running", s.running_service_count, s.service_count);
    if let Some(last) = &s.last_command {
        say!("Last command: {} (exit_code={})", last.command, last.exit_code);
    }
    if let Some(error) = &s.last_error {
        say!("Last error: {error}");
    }
    if let Some(notice) = &s.guest_agent_notice {
        say!("Guest agent: {notice}");
    }
}
