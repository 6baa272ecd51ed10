//! `pyro-agent`: the guest agent of pyro.
//!
//! * As PID 1 in a guest (`init=/opt/pyro/bin/pyro-agent`): sets the guest up, forks the
//!   server (virtio-serial port `pyro.0`, else vsock port 5005), reaps orphans and powers
//!   off when the server exits.
//! * `--listen-unix PATH [--cwd-root DIR]`: `host_compat`, a plain host process serving
//!   each unix-socket connection as a session.
//! * Without arguments and not PID 1: the guest server alone (under another init).

// Layers, each importing only from those below it:
//   main → channel → session (frame loop) → dispatch (one request → one response)
//   → handlers: exec, fsops, service, shell (PTY shells, a VM-lifetime table), tar_import, tar_export
//   → announce, blocking, fsinfo, identity, paths, probe, secrets → launch (how a command becomes a process)
//   → login_env, request (shared request context types).
mod announce;
mod blocking;
mod channel;
mod dispatch;
mod exec;
mod fsinfo;
mod fsops;
mod identity;
mod init;
mod launch;
mod login_env;
mod network;
mod paths;
mod port_forward;
mod probe;
mod request;
mod secrets;
mod service;
mod session;
mod shell;
mod tar_export;
mod tar_import;

use std::path::PathBuf;
use std::sync::Arc;

use request::Ctx;

const USAGE: &str = "usage: pyro-agent [--listen-unix PATH [--cwd-root DIR]] | --version";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cannot start the async runtime")
}

/// The guest server; its exit code becomes the server process's.
fn guest_server() -> i32 {
    identity::enable();
    let ctx = Arc::new(Ctx { default_cwd: PathBuf::from("/"), durable: true });
    runtime().block_on(channel::serve_guest(ctx));
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::process::id() == 1 {
        init::run_as_pid1(guest_server);
    }
    let mut listen: Option<PathBuf> = None;
    let mut cwd_root: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // Hidden: how the agent reads the environment a login shell leaves.
            login_env::PRINT_ENV_FLAG => {
                login_env::print_env();
                return;
            }
            "--version" | "-V" => {
                println!("pyro-agent {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "--listen-unix" | "--cwd-root" => {
                let Some(value) = it.next() else {
                    eprintln!("pyro-agent: {arg} needs a value\n{USAGE}");
                    std::process::exit(2);
                };
                let slot = if arg == "--listen-unix" { &mut listen } else { &mut cwd_root };
                *slot = Some(PathBuf::from(value));
            }
            other => {
                eprintln!("pyro-agent: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    match listen {
        Some(path) => {
            let default_cwd = match cwd_root {
                Some(dir) => dir,
                None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            };
            let ctx = Arc::new(Ctx { default_cwd, durable: false });
            // Test-only: pretend to be an older agent (host-compat mode only, never in a guest).
            match announce::init_test_override() {
                Ok(Some(a)) => eprintln!("pyro-agent: test override: announcing protocol {} with capabilities {:?}", a.protocol_version, a.capabilities),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("pyro-agent: {e}");
                    std::process::exit(2);
                }
            }
            if let Err(e) = runtime().block_on(channel::serve_unix(&path, ctx)) {
                eprintln!("pyro-agent: cannot listen on {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        None if cwd_root.is_some() => {
            eprintln!("pyro-agent: --cwd-root needs --listen-unix\n{USAGE}");
            std::process::exit(2);
        }
        None => std::process::exit(guest_server()),
    }
}
