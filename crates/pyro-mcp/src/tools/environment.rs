//! The environment-store tools the SDK has and no MCP profile lists (`Pyro.pull_environment`,
//! `inspect_environment`, `prune_environments`): installing or deleting images is a
//! host-administration step, not something a model is offered. Listing environments is
//! `vm_list_environments` (`vm.rs`).

use std::sync::Arc;

use pyro_core::environments::PullOptions;
use pyro_core::Pyro;
use schemars::JsonSchema;
use serde::Deserialize;

use super::def::{tool, Call, Effect, NoArguments, Spec, ToolDef};

/// The names of the tools in this file: in the catalog, in no profile.
#[cfg(test)]
pub(crate) const SDK_ONLY: &[&str] = &["environment_pull", "environment_inspect", "environment_prune"];

/// The environment tools.
pub(crate) fn tools() -> Vec<ToolDef> {
    let spec = |name, title, description, effect, idempotent| Spec { name, title, description, effect, idempotent };
    vec![
        tool(
            spec("environment_pull", "Install an environment", "Install one catalog environment into the local cache.", Effect::Additive, true),
            |pyro: Arc<Pyro>, a: Environment, call: Call| async move { pyro.pull_environment(&a.environment, &PullOptions::default(), &call.progress()).await },
        ),
        tool(
            spec("environment_inspect", "Inspect an environment", "Show one catalog environment and its install state.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: Environment, _: Call| async move { pyro.inspect_environment(&a.environment, false) },
        ),
        tool(
            spec("environment_prune", "Prune the environment cache", "Delete cached environments that are no longer usable.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, _: NoArguments, _: Call| async move { pyro.prune_environments() },
        ),
    ]
}

/// Arguments naming one environment.
#[derive(Debug, Deserialize, JsonSchema)]
struct Environment {
    /// Catalog environment name, e.g. `debian:12`.
    environment: String,
}
