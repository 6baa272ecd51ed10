//! Resolves parsed command-line flags, once, into the core's option types
//! ([`CreateVmOptions`], [`CreateWorkspaceOptions`], [`ReadinessProbe`], [`PortMapping`]).
//! Values are parsed by the core types themselves, so a bad value fails with the same
//! one-line message (and `error_kind`) the MCP server and the SDK give.

use std::collections::BTreeMap;

use pyro_core::options::{NetworkPolicy, PortMapping, ReadinessProbe};
use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::CreateWorkspaceOptions;
use pyro_core::{Error, Result};

use crate::cli::{RunArgs, ServiceStartArgs, VmSizing, WorkspaceCreateArgs};

impl VmSizing {
    /// The VM options these flags describe for `environment` (other fields default).
    pub fn vm_options(&self, environment: &str) -> Result<CreateVmOptions> {
        let mut options = CreateVmOptions::new(environment);
        options.vcpu_count = self.vcpu_count;
        options.mem_mib = self.mem_mib;
        options.allow_host_compat = self.allow_host_compat;
        options.backend = self.backend.as_deref().map(str::parse).transpose()?;
        options.debug_console = self.debug_console;
        Ok(options)
    }
}

/// `pyro run`: the VM belongs to this process (it is deleted if we die).
pub fn run_options(args: &RunArgs) -> Result<CreateVmOptions> {
    let mut options = args.sizing.vm_options(&args.environment)?;
    options.ttl_seconds = args.ttl_seconds;
    options.network = args.network;
    options.owner_pid = Some(std::process::id());
    Ok(options)
}

/// `pyro workspace create`.
pub fn workspace_options(args: &WorkspaceCreateArgs) -> Result<CreateWorkspaceOptions> {
    Ok(CreateWorkspaceOptions {
        vm: args.sizing.vm_options(&args.environment)?,
        ttl_seconds: args.ttl_seconds,
        network_policy: args.network_policy.parse::<NetworkPolicy>()?,
        seed_path: args.seed_path.clone(),
        name: args.name.clone(),
        labels: labels(&args.labels)?,
    })
}

/// The readiness probe and published ports of `pyro workspace service start`.
pub fn service_options(args: &ServiceStartArgs) -> Result<(Option<ReadinessProbe>, Vec<PortMapping>)> {
    let probe = ReadinessProbe::from_flags(args.ready_file.clone(), args.ready_tcp.clone(), args.ready_http.clone(), args.ready_command.clone())?;
    let ports = args.publish.iter().map(|p| p.parse()).collect::<Result<Vec<PortMapping>>>()?;
    PortMapping::validate_all(&ports)?;
    Ok((probe, ports))
}

/// Parses repeated `KEY=VALUE` labels (later duplicates win).
pub fn labels(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(Error::InvalidArgument("workspace labels must use KEY=VALUE".into())),
        })
        .collect()
}
