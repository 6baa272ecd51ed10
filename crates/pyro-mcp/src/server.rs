//! [`PyroServer`]: the rmcp `ServerHandler`. It lists the profile's tools and runs each
//! call as its own task (rmcp spawns one per request, so a slow `vm_run` never holds up
//! a `workspace_status`); a call that the client cancels — or that is still running when
//! the client goes away — is dropped, which cancels its guest work.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use pyro_core::events::Event;
use pyro_core::Pyro;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use crate::profile::Profile;
use crate::progress::ProgressSender;
use crate::tools::{Call, ProgressHook, ToolDef};
use crate::{reply, schema};

/// One tool as this server exposes it.
struct Exposed {
    def: ToolDef,
    /// What `tools/list` shows (the profile's narrowed schema).
    listing: Tool,
    /// Arguments the profile hides; calls drop them so their defaults apply.
    omitted: &'static [&'static str],
}

/// The MCP server over one [`Pyro`] facade and one [`Profile`].
#[derive(Clone)]
pub struct PyroServer {
    pyro: Arc<Pyro>,
    profile: Profile,
    tools: Arc<Vec<Exposed>>,
    index: Arc<HashMap<&'static str, usize>>,
}

impl PyroServer {
    /// A server exposing `profile`'s tools, in the reference's order.
    pub fn new(pyro: Pyro, profile: Profile) -> Self {
        let mut catalog = crate::tools::catalog();
        let tools: Vec<Exposed> = profile
            .tool_names()
            .iter()
            .filter_map(|name| catalog.remove(name))
            .map(|def| {
                let omitted = profile.omitted_arguments(def.spec.name);
                let listing = listing(&def, schema::without(def.input_schema.clone(), omitted));
                Exposed { def, listing, omitted }
            })
            .collect();
        let index = tools.iter().enumerate().map(|(i, t)| (t.def.spec.name, i)).collect();
        Self { pyro: Arc::new(pyro), profile, tools: Arc::new(tools), index: Arc::new(index) }
    }

    /// The profile this server serves.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The `tools/list` entries, in order.
    pub fn tools(&self) -> Vec<Tool> {
        self.tools.iter().map(|t| t.listing.clone()).collect()
    }
}

/// The `tools/list` entry of `def` with `input_schema`.
fn listing(def: &ToolDef, input_schema: JsonObject) -> Tool {
    Tool::new(def.spec.name, def.spec.description, Arc::new(input_schema))
        .with_title(def.spec.title)
        .with_raw_output_schema(Arc::new(schema::output_schema()))
        .with_annotations(def.spec.annotations())
}

impl ServerHandler for PyroServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(Implementation::new("pyro_mcp", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(&self, _request: Option<PaginatedRequestParams>, _context: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.index.get(name).map(|&i| self.tools[i].listing.clone())
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let name: Cow<'_, str> = request.name;
        let Some(exposed) = self.index.get(name.as_ref()).map(|&i| &self.tools[i]) else {
            return Ok(reply::unknown_tool(&name).into());
        };
        let mut arguments = request.arguments.unwrap_or_default();
        arguments.retain(|key, _| !exposed.omitted.contains(&key.as_str()));
        schema::coerce(&mut arguments, &exposed.def.input_schema);
        let progress = context.meta.get_progress_token().map(|token| {
            let sender = ProgressSender::start(context.peer.clone(), token);
            Arc::new(move |event: &Event| sender.send(event)) as ProgressHook
        });
        let call = (exposed.def.body)(self.pyro.clone(), Value::Object(arguments), Call::new(progress, None));
        let outcome = tokio::select! {
            outcome = call => outcome,
            // Dropping the call cancels its guest work. No answer reaches the client: rmcp
            // drops responses to cancelled requests.
            () = context.ct.cancelled() => {
                tracing::info!(tool = %name, "call cancelled");
                return Err(ErrorData::internal_error("the call was cancelled", None));
            }
        };
        Ok(match outcome {
            Ok(value) => reply::success(value),
            Err(error) => reply::failure(&name, &error.to_string(), error.kind()),
        }
        .into())
    }
}
