//! `pyro`: microVM sandboxes for coding agents (CLI face of `pyro-core`).

mod cli;
mod commands;
mod output;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, McpCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::VmmGuard { argv } = &cli.command {
        // Synchronous and tiny: no runtime, no logging setup.
        pyro_core::vmm::guard::run(argv);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env(pyro_core::env_vars::LOG).unwrap_or_else(|_| "warn".into()))
        .init();
    // Everything pyro creates (state, cache, disks, sockets, logs) is the user's alone.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    let json = cli.json;
    // The supervisor runs on one thread: the VMM's death signal follows the thread that
    // started it, which must live as long as the supervisor.
    let builder = match cli.command {
        Command::Supervise { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            output::print_error(&format!("cannot start the async runtime: {e}"), "io", json);
            return ExitCode::FAILURE;
        }
    };
    let supervise = matches!(cli.command, Command::Supervise { .. });
    let outcome = runtime.block_on(async {
        if supervise {
            return dispatch(cli.command, json).await;
        }
        // Ctrl-C (or SIGTERM) drops the command's future, whose guards undo what it had
        // half-made (e.g. a workspace being created), then exits 130.
        tokio::select! {
            outcome = dispatch(cli.command, json) => outcome,
            _ = interrupted() => Ok(130),
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            output::print_error(&e.to_string(), e.kind(), json);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, json: bool) -> pyro_core::Result<i32> {
    let pyro = pyro_core::Pyro::from_env()?;
    match command {
        Command::Env(env) => commands::env::run(&pyro, env, json).await,
        Command::Mcp(McpCommand::Serve { profile }) => {
            let profile = profile.parse::<pyro_mcp::Profile>().map_err(pyro_core::Error::from)?;
            pyro_mcp::serve_stdio(pyro, profile).await?;
            Ok(0)
        }
        Command::Sdk => {
            let serving = pyro_mcp::bridge::serve_stdio(pyro).await;
            serving.map_err(|source| pyro_core::Error::Io { context: "serving the SDK bridge on stdio".into(), source })?;
            Ok(0)
        }
        Command::Run(args) => commands::run::run(&pyro, args, json).await,
        Command::Doctor(args) => commands::doctor::run(&pyro, args, json).await,
        Command::Demo(args) => commands::demo::run(pyro, args).await,
        Command::Supervise { vm_dir } => pyro_core::vm::supervisor::run(vm_dir).await.map(|()| 0),
        // Handled before the runtime starts (its signal mask must cover every thread).
        Command::VmmGuard { argv } => pyro_core::vmm::guard::run(&argv),
        Command::Workspace(workspace) => commands::workspace::run(&pyro, workspace, json).await,
    }
}

/// Resolves on SIGINT or SIGTERM (never if the handlers cannot be installed).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
