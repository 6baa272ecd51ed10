//! `pyro demo`: create → start → exec → delete in a real guest, printing the JSON result;
//! `pyro demo ollama` drives the same tools from a local model ([`ollama`]).

mod chat;
mod ollama;
mod tools;

use std::sync::Arc;

use pyro_core::vm::CreateVmOptions;
use pyro_core::{Pyro, Result};

use crate::cli::{DemoArgs, DemoVariant};
use crate::output::{print_json, progress};

/// `--network`: resolve Debian's mirror through the gateway's DNS and read the status
/// line of an HTTP answer from it (bash's `/dev/tcp`: the image has no HTTP client).
const NETWORK_PROBE: &str = "getent hosts deb.debian.org && bash -c 'exec 3<>/dev/tcp/deb.debian.org/80 && printf \"HEAD /debian/ HTTP/1.1\\r\\nHost: deb.debian.org\\r\\nConnection: close\\r\\n\\r\\n\" >&3 && head -n 1 <&3'";

/// Runs the demo; exits 0 whatever the guest command returned (the JSON says). The
/// Ollama variant exits 0 only when the model's tool calls proved the guest works.
pub async fn run(pyro: Pyro, args: DemoArgs) -> Result<i32> {
    if let Some(DemoVariant::Ollama { base_url, model, verbose }) = args.variant {
        return ollama::run(Arc::new(pyro), &base_url, &model, verbose).await;
    }
    let mut options = CreateVmOptions::new("debian:12");
    options.owner_pid = Some(std::process::id());
    options.network = args.network;
    let command = if args.network { NETWORK_PROBE } else { "git --version && uname -r" };
    // Progress goes to stderr even though the result is JSON: the demo is for people.
    let report = pyro.run_in_vm(&options, command, 30, &progress(false), None).await?;
    print_json(&report);
    Ok(0)
}
