//! `pyro demo`: create → start → exec → delete in a real guest, printing the JSON result;
//! `pyro demo ollama` drives the same tools from a local model ([`ollama`]).

mod chat;
mod ollama;
mod tools;

use std::sync::Arc;

use pyro_core::vm::CreateVmOptions;
use pyro_core::{Pyro, Result};

use crate::cli::{DemoArgs, DemoVariant};
use crate::commands::pending::not_yet;
use crate::output::{print_json, progress};

/// Runs the demo; exits 0 whatever the guest command returned (the JSON says). The
/// Ollama variant exits 0 only when the model's tool calls proved the guest works.
pub async fn run(pyro: Pyro, args: DemoArgs) -> Result<i32> {
    if let Some(DemoVariant::Ollama { base_url, model, verbose }) = args.variant {
        return ollama::run(Arc::new(pyro), &base_url, &model, verbose).await;
    }
    if args.network {
        return Err(not_yet("demo --network", "the networking issue"));
    }
    let mut options = CreateVmOptions::new("debian:12");
    options.owner_pid = Some(std::process::id());
    // Progress goes to stderr even though the result is JSON: the demo is for people.
    let report = pyro.run_in_vm(&options, "git --version && uname -r", 30, &progress(false), None).await?;
    print_json(&report);
    Ok(0)
}
