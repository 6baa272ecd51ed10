//! `pyro`: microVM sandboxes for coding agents (CLI face of `pyro-core`).

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
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
        Command::Workspace(workspace) => commands::workspace::run(&pyro, workspace).await,
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
        Command::Workspace(w) => w.json(),
        Command::Mcp(_) | Command::Demo(_) | Command::Supervise { .. } => false,
    }
}
