//! `pyro demo`: create → start → exec → delete in a real guest, printing the JSON result.

use pyro_core::vm::CreateVmOptions;
use pyro_core::{Pyro, Result};

use crate::cli::DemoArgs;
use crate::commands::pending::not_yet;
use crate::output::{print_json, progress};

/// Runs the demo; exits 0 whatever the guest command returned (the JSON says).
pub async fn run(pyro: &Pyro, args: DemoArgs) -> Result<i32> {
    if args.variant.is_some() {
        return Err(not_yet("demo ollama", "the MCP server issue"));
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
