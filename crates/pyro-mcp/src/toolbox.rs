//! [`ToolBox`]: the catalog's tools called by name outside an MCP session. The SDK bridge
//! (`bridge.rs`) and `pyro demo ollama` run the very bodies the MCP server runs, with the
//! same argument checks and defaults, so the three never disagree.

use std::collections::HashMap;
use std::sync::Arc;

use pyro_core::{Error, Pyro};
use rmcp::model::JsonObject;
use serde_json::Value;

use crate::schema;
use crate::tools::{Call, ToolDef};

/// Every catalog tool, callable by name.
pub struct ToolBox {
    pyro: Arc<Pyro>,
    catalog: HashMap<&'static str, ToolDef>,
}

/// What a model (or a person) is told about one tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolInfo<'a> {
    /// The tool's name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The JSON Schema of its arguments.
    pub input_schema: &'a JsonObject,
}

impl ToolBox {
    /// The tools over `pyro`.
    pub fn new(pyro: Arc<Pyro>) -> Self {
        Self { pyro, catalog: crate::tools::catalog() }
    }

    /// The facade the tools call.
    pub fn pyro(&self) -> &Arc<Pyro> {
        &self.pyro
    }

    /// The description and schema of `name`, if the catalog has it.
    pub fn info(&self, name: &str) -> Option<ToolInfo<'_>> {
        self.catalog.get(name).map(|def| ToolInfo { name: def.spec.name, description: def.spec.description, input_schema: &def.input_schema })
    }

    /// Calls `name` with `arguments` (an object; strings where the schema wants numbers
    /// or booleans are converted, as MCP clients need). An unknown name, arguments that
    /// do not fit, and every failure of the call itself are the core's typed errors.
    pub async fn call(&self, name: &str, arguments: Value, call: Call) -> Result<Value, Error> {
        let Some(def) = self.catalog.get(name) else {
            return Err(Error::NotFound { what: "tool", id: name.into(), message: format!("unknown tool '{name}'") });
        };
        let mut arguments = match arguments {
            Value::Object(object) => object,
            Value::Null => JsonObject::new(),
            other => return Err(Error::InvalidArgument(format!("the arguments of {name} must be an object, not {other}"))),
        };
        schema::coerce(&mut arguments, &def.input_schema);
        (def.body)(self.pyro.clone(), Value::Object(arguments), call).await
    }
}
