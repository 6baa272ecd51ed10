//! The six catalog tools the model may call, and the repairs small models need: arguments
//! sent as a JSON string, the legacy `profile` key, and placeholder VM ids. Tool bodies
//! are the catalog's ([`pyro_mcp::ToolBox`]), which also converts strings to numbers and
//! booleans where the schema wants them.

use std::sync::Arc;

use pyro_core::{Error, Pyro, Result};
use pyro_mcp::{Call, ToolBox};
use serde_json::{json, Map, Value};

use crate::output::{say, tell};

/// The tools offered to the model, in this order.
pub const TOOL_NAMES: [&str; 6] = ["vm_run", "vm_list_environments", "vm_create", "vm_start", "vm_exec", "vm_status"];

/// The tools and what the conversation has created so far.
pub struct DemoTools {
    toolbox: ToolBox,
    /// Every VM `vm_create` made, newest last: placeholders resolve to the last one, and
    /// the demo deletes those still around when it ends.
    created: Vec<String>,
}

impl DemoTools {
    /// The tools over `pyro`.
    pub fn new(pyro: Arc<Pyro>) -> Self {
        Self { toolbox: ToolBox::new(pyro), created: Vec::new() }
    }

    /// The OpenAI `tools` array: `{"type": "function", "function": {name, description, parameters}}`.
    pub fn specs(&self) -> Vec<Value> {
        TOOL_NAMES
            .iter()
            .filter_map(|name| self.toolbox.info(name))
            .map(|info| json!({"type": "function", "function": {"name": info.name, "description": info.description, "parameters": info.input_schema}}))
            .collect()
    }

    /// Repairs `raw` (the model's `function.arguments`) for `name`: see [`normalize`].
    /// Logs `[tool] resolved vm_id placeholder` when a placeholder was replaced.
    pub fn arguments(&self, raw: &Value) -> Result<Map<String, Value>> {
        let (arguments, resolved) = normalize(raw, self.created.last().map(String::as_str))?;
        if resolved {
            say!("[tool] resolved vm_id placeholder");
        }
        Ok(arguments)
    }

    /// Calls `name` with already-normalised `arguments`. `vm_exec` first starts a VM that
    /// `vm_status` reports `created` or `stopped`, as a model often forgets `vm_start`.
    pub async fn call(&mut self, name: &str, arguments: Map<String, Value>) -> Result<Value> {
        if !TOOL_NAMES.contains(&name) {
            return Err(Error::NotFound {
                what: "tool",
                id: name.into(),
                message: format!("unknown tool '{name}'; expected one of: {}", TOOL_NAMES.join(", ")),
            });
        }
        if name == "vm_exec" {
            if let Some(vm_id) = arguments.get("vm_id").cloned() {
                let status = self.toolbox.call("vm_status", json!({"vm_id": vm_id}), Call::default()).await?;
                if matches!(status["state"].as_str(), Some("created" | "stopped")) {
                    self.toolbox.call("vm_start", json!({"vm_id": vm_id}), Call::default()).await?;
                }
            }
        }
        let result = self.toolbox.call(name, Value::Object(arguments), Call::default()).await?;
        if name == "vm_create" {
            if let Some(vm_id) = result["vm_id"].as_str() {
                self.created.push(vm_id.to_owned());
            }
        }
        Ok(result)
    }

    /// Deletes the VMs `vm_create` made that still exist (`vm_exec` deletes its own).
    pub async fn cleanup(&self) {
        for vm_id in &self.created {
            if let Err(error) = self.toolbox.pyro().delete_vm(vm_id).await {
                if error.kind() != "not_found" {
                    tell!("[cleanup] could not delete vm {vm_id}: {error}");
                }
            }
        }
    }
}

/// Whether `vm_id` is a stand-in a model wrote instead of a real id: anything in angle
/// brackets, such as `<vm_id_returned_by_vm_create>`.
fn is_placeholder(vm_id: &str) -> bool {
    let vm_id = vm_id.trim();
    vm_id.len() >= 2 && vm_id.starts_with('<') && vm_id.ends_with('>')
}

/// The arguments object of a tool call: `raw` is an object or a JSON string of one (as
/// OpenAI sends them); `null` or an empty string is no arguments. The legacy `profile`
/// key becomes `environment` (unless that is given too), and a placeholder `vm_id`
/// becomes `last_vm_id` when there is one. Also says whether a placeholder was replaced.
pub fn normalize(raw: &Value, last_vm_id: Option<&str>) -> Result<(Map<String, Value>, bool)> {
    let parsed;
    let value = match raw {
        Value::String(text) if text.trim().is_empty() => return Ok((Map::new(), false)),
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|e| Error::InvalidArgument(format!("the tool arguments are not JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    let mut arguments = match value {
        Value::Object(object) => object.clone(),
        Value::Null => Map::new(),
        other => return Err(Error::InvalidArgument(format!("the tool arguments must be an object, not {other}"))),
    };
    if let Some(profile) = arguments.remove("profile") {
        arguments.entry("environment").or_insert(profile);
    }
    let mut resolved = false;
    if let (Some(Value::String(vm_id)), Some(last)) = (arguments.get_mut("vm_id"), last_vm_id) {
        if is_placeholder(vm_id) {
            *vm_id = last.to_owned();
            resolved = true;
        }
    }
    Ok((arguments, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_arguments_are_parsed_and_profile_becomes_environment() {
        let raw = json!(r#"{"profile":"debian:12","command":"git --version","timeout_seconds":"60"}"#);
        let (arguments, resolved) = normalize(&raw, None).unwrap();
        assert!(!resolved);
        assert_eq!(Value::Object(arguments), json!({"environment": "debian:12", "command": "git --version", "timeout_seconds": "60"}));
    }

    #[test]
    fn an_explicit_environment_wins_over_profile() {
        let (arguments, _) = normalize(&json!({"profile": "a", "environment": "b"}), None).unwrap();
        assert_eq!(Value::Object(arguments), json!({"environment": "b"}));
    }

    #[test]
    fn placeholders_resolve_to_the_last_created_vm() {
        for placeholder in ["<vm_id_returned_by_vm_create>", "<vm_id>", " <id> "] {
            let (arguments, resolved) = normalize(&json!({"vm_id": placeholder, "command": "true"}), Some("0123456789ab")).unwrap();
            assert!(resolved, "{placeholder}");
            assert_eq!(arguments["vm_id"], "0123456789ab");
        }
    }

    #[test]
    fn real_ids_and_placeholders_without_a_vm_are_kept() {
        let (arguments, resolved) = normalize(&json!({"vm_id": "0123456789ab"}), Some("ffffffffffff")).unwrap();
        assert!(!resolved);
        assert_eq!(arguments["vm_id"], "0123456789ab");
        let (arguments, resolved) = normalize(&json!({"vm_id": "<vm_id>"}), None).unwrap();
        assert!(!resolved);
        assert_eq!(arguments["vm_id"], "<vm_id>");
        for bare in ["<", ">", "vm<1>"] {
            assert!(!is_placeholder(bare), "{bare}");
        }
    }

    #[test]
    fn empty_and_malformed_arguments() {
        assert!(normalize(&json!(""), None).unwrap().0.is_empty());
        assert!(normalize(&Value::Null, None).unwrap().0.is_empty());
        assert_eq!(normalize(&json!("{not json"), None).unwrap_err().kind(), "invalid_argument");
        assert_eq!(normalize(&json!([1]), None).unwrap_err().kind(), "invalid_argument");
    }
}
