//! The `vm_*` tools: one-shot `vm_run` and the advanced ephemeral-VM lifecycle. Each is
//! a thin call of the [`Pyro`] method the CLI's `pyro run` / lifecycle commands use.

use std::sync::{Arc, Mutex};

use pyro_core::events::Event;
use pyro_core::vm::CreateVmOptions;
use pyro_core::{Pyro, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use super::def::{tool, Call, Effect, NoArguments, Spec, ToolDef};

/// The VM tools, in any order (profiles order them).
pub(crate) fn tools() -> Vec<ToolDef> {
    let spec = |name, title, description, effect, idempotent| Spec { name, title, description, effect, idempotent };
    vec![
        tool(spec("vm_run", "Run a command in a fresh VM", "Create, start, execute, and clean up an ephemeral VM.", Effect::Additive, false), vm_run),
        tool(
            spec("vm_list_environments", "List environments", "List curated Linux environments and installation status.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, _: NoArguments, _: Call| async move { Ok(pyro.list_environments()) },
        ),
        tool(spec("vm_create", "Create a VM", "Create an ephemeral VM record with environment and resource sizing.", Effect::Additive, false), vm_create),
        tool(
            spec("vm_start", "Start a VM", "Start a created VM and transition it into a command-ready state.", Effect::Additive, true),
            |pyro: Arc<Pyro>, a: VmId, _: Call| async move { pyro.start_vm(&a.vm_id).await },
        ),
        tool(
            spec("vm_exec", "Run a command in a VM", "Run one non-interactive command and auto-clean the VM.", Effect::Destructive, false),
            |pyro: Arc<Pyro>, a: VmExec, call: Call| async move { pyro.exec_vm(&a.vm_id, &a.command, a.timeout_seconds, call.output()).await },
        ),
        tool(spec("vm_stop", "Stop a VM", "Stop a running VM.", Effect::Destructive, true), |pyro: Arc<Pyro>, a: VmId, _: Call| async move {
            pyro.stop_vm(&a.vm_id).await
        }),
        tool(
            spec("vm_delete", "Delete a VM", "Delete a VM and its runtime artifacts.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: VmId, _: Call| async move { pyro.delete_vm(&a.vm_id).await },
        ),
        tool(
            spec("vm_status", "Show a VM's status", "Get the current state and metadata for a VM.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: VmId, _: Call| async move { pyro.status_vm(&a.vm_id) },
        ),
        tool(
            spec("vm_network_info", "Show a VM's network", "Get the current network configuration assigned to a VM.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: VmId, _: Call| async move { pyro.network_info_vm(&a.vm_id) },
        ),
        tool(
            spec("vm_reap_expired", "Delete expired VMs", "Delete VMs whose TTL has expired.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, _: NoArguments, _: Call| async move { pyro.reap_expired().await },
        ),
    ]
}

fn default_vcpu_count() -> u32 {
    1
}

fn default_mem_mib() -> u32 {
    1024
}

fn default_timeout_seconds() -> u64 {
    30
}

fn default_ttl_seconds() -> u64 {
    600
}

/// Sizing and lifetime shared by `vm_run` and `vm_create`.
#[derive(Debug, Deserialize, JsonSchema)]
struct VmSizing {
    /// Catalog environment name, e.g. `debian:12` (see `vm_list_environments`).
    environment: String,
    /// Virtual CPUs (1–8).
    #[serde(default = "default_vcpu_count")]
    vcpu_count: u32,
    /// Guest memory in MiB (256–32768).
    #[serde(default = "default_mem_mib")]
    mem_mib: u32,
    /// Seconds until the VM expires and is deleted (60–86400).
    #[serde(default = "default_ttl_seconds")]
    ttl_seconds: u64,
    /// Give the guest outbound networking.
    #[serde(default)]
    network: bool,
    /// Allow running on the host without isolation when no guest backend works.
    #[serde(default)]
    allow_host_compat: bool,
}

impl VmSizing {
    fn options(self) -> CreateVmOptions {
        let mut options = CreateVmOptions::new(self.environment);
        options.vcpu_count = self.vcpu_count;
        options.mem_mib = self.mem_mib;
        options.ttl_seconds = self.ttl_seconds;
        options.network = self.network;
        options.allow_host_compat = self.allow_host_compat;
        options
    }
}

/// Arguments of `vm_run`.
#[derive(Debug, Deserialize, JsonSchema)]
struct VmRun {
    #[serde(flatten)]
    sizing: VmSizing,
    /// Shell command line, run by `/bin/sh -lc` in the guest.
    command: String,
    /// Seconds the command may run before it is killed (exit code 124).
    #[serde(default = "default_timeout_seconds")]
    timeout_seconds: u64,
}

/// Arguments of `vm_create`.
#[derive(Debug, Deserialize, JsonSchema)]
struct VmCreate {
    #[serde(flatten)]
    sizing: VmSizing,
}

/// Arguments of the tools that name one VM.
#[derive(Debug, Deserialize, JsonSchema)]
struct VmId {
    /// The VM's id (from `vm_create`).
    vm_id: String,
}

/// Arguments of `vm_exec`.
#[derive(Debug, Deserialize, JsonSchema)]
struct VmExec {
    /// The VM's id (from `vm_create`, started with `vm_start`).
    vm_id: String,
    /// Shell command line, run by `/bin/sh -lc` in the guest.
    command: String,
    /// Seconds the command may run before it is killed (exit code 124).
    #[serde(default = "default_timeout_seconds")]
    timeout_seconds: u64,
}

async fn vm_run(pyro: Arc<Pyro>, args: VmRun, call: Call) -> Result<pyro_core::vm::ExecReport> {
    let mut options = args.sizing.options();
    // The VM belongs to this server: if the server dies, its supervisor deletes it.
    options.owner_pid = Some(std::process::id());
    let mut guard = RunGuard { pyro: pyro.clone(), vm_id: Mutex::new(None), finished: false };
    let forward = call.progress();
    let progress = |event: &Event| {
        if let Event::RunStart { vm_id, .. } = event {
            if let Ok(mut slot) = guard.vm_id.lock() {
                *slot = Some(vm_id.clone());
            }
        }
        forward(event);
    };
    let report = pyro.run_in_vm(&options, &args.command, args.timeout_seconds, &progress, call.output()).await;
    guard.finished = true;
    report
}

async fn vm_create(pyro: Arc<Pyro>, args: VmCreate, call: Call) -> Result<pyro_core::vm::VmStatus> {
    // No owner: VMs made here outlive the server, until deleted or reaped.
    pyro.create_vm(&args.sizing.options(), &call.progress()).await
}

/// Deletes the VM of a `vm_run` whose call was dropped (cancelled, or the client went
/// away) before `run_in_vm` finished and cleaned up itself.
struct RunGuard {
    pyro: Arc<Pyro>,
    vm_id: Mutex<Option<String>>,
    finished: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let vm_id = self.vm_id.lock().ok().and_then(|mut slot| slot.take());
        let (false, Some(vm_id), Ok(runtime)) = (self.finished, vm_id, tokio::runtime::Handle::try_current()) else { return };
        let pyro = self.pyro.clone();
        runtime.spawn(async move {
            if let Err(error) = pyro.delete_vm(&vm_id).await {
                tracing::warn!(%vm_id, %error, "could not delete the VM of a cancelled vm_run");
            }
        });
    }
}
