//! `pyro`: microVM sandboxes for coding agents (CLI face of `pyro-core`).

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, WorkspaceCommand};
use commands::pending::not_yet;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PYRO_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let json = wants_json(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            output::print_error(&format!("cannot start the async runtime: {e}"), json);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            output::print_error(&e.to_string(), json);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> pyro_core::Result<i32> {
    let pyro = pyro_core::Pyro::from_env()?;
    match command {
        Command::Env(env) => commands::env::run(&pyro, env).await,
        Command::Mcp(_) => Err(not_yet("mcp serve", "the MCP server issue")),
        Command::Run(args) => commands::run::run(&pyro, args).await,
        Command::Doctor(args) => commands::doctor::run(&pyro, args).await,
        Command::Demo(args) => commands::demo::run(&pyro, args).await,
        Command::Supervise { vm_dir } => pyro_core::vm::supervisor::run(vm_dir).await.map(|()| 0),
        Command::Workspace(workspace) => Err(not_yet(&format!("workspace {}", workspace_verb(&workspace)), "the persistent workspaces issue")),
    }
}

/// Whether the command was asked for JSON output (so errors render as JSON too).
fn wants_json(command: &Command) -> bool {
    use cli::EnvCommand as E;
    match command {
        Command::Env(E::List(f) | E::Prune(f)) => f.json,
        Command::Env(E::Pull(a)) => a.json.json,
        Command::Env(E::Inspect(a)) => a.json.json,
        Command::Env(E::Publish(a)) => a.json.json,
        Command::Run(a) => a.json.json,
        Command::Doctor(a) => a.json.json,
        Command::Mcp(_) | Command::Demo(_) | Command::Workspace(_) | Command::Supervise { .. } => false,
    }
}

fn workspace_verb(command: &WorkspaceCommand) -> &'static str {
    use WorkspaceCommand as W;
    match command {
        W::Create(_) => "create",
        W::List(_) => "list",
        W::Sync(_) => "sync push",
        W::Stop(_) => "stop",
        W::Start(_) => "start",
        W::Exec(_) => "exec",
        W::File(_) => "file",
        W::Export(_) => "export",
        W::Patch(_) => "patch apply",
        W::Disk(_) => "disk",
        W::Diff(_) => "diff",
        W::Snapshot(_) => "snapshot",
        W::Reset(_) => "reset",
        W::Service(_) => "service",
        W::Shell(_) => "shell",
        W::Status(_) => "status",
        W::Update(_) => "update",
        W::Logs(_) => "logs",
        W::Delete(_) => "delete",
    }
}
