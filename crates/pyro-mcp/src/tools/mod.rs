//! The tool catalog: every tool pyro can expose, each a typed argument struct (its
//! JSON Schema is the tool's `inputSchema`) and a thin async call of the [`pyro_core::Pyro`]
//! facade method the CLI uses for the same operation. One file per area adds its tools
//! ([`vm`], [`workspace`], [`shell`], [`service`], and the SDK-only [`environment`]);
//! profiles pick from the catalog by name (`profile.rs`); `toolbox.rs` calls any of them
//! by name outside an MCP session.

mod def;
mod environment;
mod service;
mod shell;
mod vm;
mod workspace;

use std::collections::HashMap;

pub(crate) use def::ToolDef;
pub use def::{Call, OutputHook, ProgressHook};

/// Every tool this build has, by name.
pub(crate) fn catalog() -> HashMap<&'static str, ToolDef> {
    vm::tools()
        .into_iter()
        .chain(workspace::tools())
        .chain(shell::tools())
        .chain(service::tools())
        .chain(environment::tools())
        .map(|def| (def.spec.name, def))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use serde_json::Value;

    /// The names the full profile lists but this build does not have yet: none since the
    /// shell and service tools landed. A tool area still on its own branch lists its names
    /// here until it merges.
    const PENDING: &[&str] = &[];

    #[test]
    fn the_catalog_is_the_full_profile_minus_the_pending_tools() {
        let catalog = catalog();
        let missing: Vec<_> = Profile::WorkspaceFull.tool_names().iter().filter(|n| !catalog.contains_key(*n)).copied().collect();
        assert_eq!(missing, PENDING);
        for name in catalog.keys() {
            let listed = Profile::WorkspaceFull.tool_names().contains(name) || environment::SDK_ONLY.contains(name);
            assert!(listed, "{name} is in no profile and not SDK-only");
        }
    }

    #[test]
    fn every_argument_has_a_description_and_every_tool_a_title() {
        for def in catalog().values() {
            assert!(!def.spec.title.is_empty() && def.spec.description.ends_with('.'), "{}", def.spec.name);
            let properties = def.input_schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            for (name, property) in properties {
                assert!(property.get("description").is_some(), "{}.{name} has no description", def.spec.name);
            }
        }
    }
}
