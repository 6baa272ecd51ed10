//! Resolves parsed command-line flags, once, into the core's option types
//! ([`CreateVmOptions`], [`CreateWorkspaceOptions`], [`ReadinessProbe`], [`PortMapping`]).
//! Values are parsed by the core types themselves, so a bad value fails with the same
//! one-line message (and `error_kind`) the MCP server and the SDK give.

use std::collections::BTreeMap;

use pyro_core::options::{NetworkPolicy, PortMapping, ReadinessProbe};
use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::secrets::SecretInput;
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
        options.cold = self.cold;
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
        allow_hosts: args.allow_hosts.clone(),
        seed_path: args.seed_path.clone(),
        name: args.name.clone(),
        labels: labels(&args.labels)?,
        secrets: secrets(&args.secrets, &args.secret_files)?,
    })
}

/// The readiness probe and published ports of `pyro workspace service start`.
pub fn service_options(args: &ServiceStartArgs) -> Result<(Option<ReadinessProbe>, Vec<PortMapping>)> {
    let probe = ReadinessProbe::from_flags(args.ready_file.clone(), args.ready_tcp.clone(), args.ready_http.clone(), args.ready_command.clone())?;
    let ports = args.publish.iter().map(|p| p.parse()).collect::<Result<Vec<PortMapping>>>()?;
    PortMapping::validate_all(&ports)?;
    Ok((probe, ports))
}

/// The `--secret NAME=VALUE` and `--secret-file NAME=PATH` flags of `workspace create`.
pub fn secrets(values: &[String], files: &[String]) -> Result<Vec<SecretInput>> {
    let split = |pair: &String, message: &str| match pair.split_once('=') {
        Some((name, rest)) if !name.trim().is_empty() => Ok((name.trim().to_string(), rest.to_string())),
        _ => Err(Error::InvalidArgument(message.into())),
    };
    let mut out = Vec::new();
    for pair in values {
        let (name, value) = split(pair, "workspace secrets must use NAME=VALUE")?;
        out.push(SecretInput { name, value: Some(value), file_path: None });
    }
    for pair in files {
        let (name, path) = split(pair, "workspace secret files must use NAME=PATH")?;
        out.push(SecretInput { name, value: None, file_path: Some(path.into()) });
    }
    Ok(out)
}

/// The `--secret-env SECRET[=ENV_VAR]` flags: secret name → variable name (the secret's
/// own name when no variable is given).
pub fn secret_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut mapping = BTreeMap::new();
    for pair in pairs {
        let (secret, var) = match pair.split_once('=') {
            Some((secret, var)) => (secret.trim(), var.trim()),
            None => (pair.trim(), pair.trim()),
        };
        if secret.is_empty() {
            return Err(Error::InvalidArgument("workspace secret env mappings must name a secret".into()));
        }
        if var.is_empty() {
            return Err(Error::InvalidArgument("workspace secret env mappings must name an environment variable".into()));
        }
        if mapping.insert(secret.to_string(), var.to_string()).is_some() {
            return Err(Error::InvalidArgument(format!("workspace secret env mapping references '{secret}' more than once")));
        }
    }
    Ok(mapping)
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
