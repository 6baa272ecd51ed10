//! What every tool is made of: its [`Spec`] (name, title, description, effect), the
//! per-call [`Call`] context, and [`tool`], which turns a typed async body into a
//! type-erased [`ToolDef`]. The area files (`vm.rs`, `workspace.rs`, …) build on this.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use pyro_core::events::{Event, OutputChunk, OutputSink};
use pyro_core::{Error, Pyro};
use rmcp::model::{JsonObject, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// What a tool does to the world, for its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Only reads (`readOnlyHint`): list, status, read, logs, diff, inspect.
    ReadOnly,
    /// Creates or changes things without destroying any (`destructiveHint: false`).
    Additive,
    /// Deletes, resets or stops things (`destructiveHint: true`).
    Destructive,
}

/// The fixed description of one tool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// The MCP tool name.
    pub name: &'static str,
    /// A human title (`title` and `annotations.title`).
    pub title: &'static str,
    /// What the tool does, for the model.
    pub description: &'static str,
    /// Read-only, additive or destructive.
    pub effect: Effect,
    /// Calling it again with the same arguments changes nothing more.
    pub idempotent: bool,
}

impl Spec {
    /// The MCP annotations these facts imply.
    pub fn annotations(&self) -> ToolAnnotations {
        let annotations = ToolAnnotations::with_title(self.title).read_only(self.effect == Effect::ReadOnly).idempotent(self.idempotent);
        match self.effect {
            Effect::ReadOnly => annotations,
            Effect::Additive => annotations.destructive(false),
            Effect::Destructive => annotations.destructive(true),
        }
    }
}

/// Where a call's core events go.
pub type ProgressHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// Where a call's live guest output goes.
pub type OutputHook = Arc<dyn Fn(OutputChunk<'_>) + Send + Sync>;

/// Per-call context a tool may use: where its progress and its live output go.
#[derive(Clone, Default)]
pub struct Call {
    progress: Option<ProgressHook>,
    output: Option<OutputHook>,
}

impl Call {
    /// A call whose core events go to `progress` and whose guest output (from the tools
    /// that run commands) goes to `output` as it arrives.
    pub fn new(progress: Option<ProgressHook>, output: Option<OutputHook>) -> Self {
        Self { progress, output }
    }

    /// The core's progress callback for this call.
    pub(crate) fn progress(&self) -> impl Fn(&Event) + Send + Sync + '_ {
        move |event: &Event| {
            if let Some(progress) = &self.progress {
                progress(event);
            }
        }
    }

    /// The core's live-output sink for this call.
    pub(crate) fn output(&self) -> OutputSink<'_> {
        self.output.as_deref()
    }
}

/// A type-erased tool body: arguments in, the result object (or the core's error) out.
type Body = Arc<dyn Fn(Arc<Pyro>, Value, Call) -> BoxFuture<'static, Result<Value, Error>> + Send + Sync>;

/// One tool of the catalog.
pub(crate) struct ToolDef {
    /// Name, title, description and annotations.
    pub spec: Spec,
    /// The JSON Schema of its arguments.
    pub input_schema: JsonObject,
    /// The call.
    pub body: Body,
}

/// Makes a [`ToolDef`] from a typed body: `A` is deserialised from the call's arguments
/// (a failure is an `invalid_argument` error naming what is wrong) and its schema is
/// the tool's input schema; the body's result is serialised as the result object.
pub(crate) fn tool<A, R, F, Fut>(spec: Spec, body: F) -> ToolDef
where
    A: DeserializeOwned + JsonSchema + 'static,
    R: Serialize,
    F: Fn(Arc<Pyro>, A, Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = pyro_core::Result<R>> + Send + 'static,
{
    let body = Arc::new(body);
    ToolDef {
        spec,
        input_schema: crate::schema::input_schema::<A>(),
        body: Arc::new(move |pyro, arguments, call| {
            let body = body.clone();
            Box::pin(async move {
                let arguments: A = serde_json::from_value(arguments).map_err(|e| Error::InvalidArgument(format!("invalid arguments: {e}")))?;
                let result = body(pyro, arguments, call).await?;
                serde_json::to_value(result).map_err(|e| Error::InvalidArgument(format!("the result could not be encoded: {e}")))
            })
        }),
    }
}

/// Arguments of tools that take none.
#[derive(Debug, serde::Deserialize, JsonSchema)]
pub(crate) struct NoArguments {}

/// The argument every workspace tool takes.
pub(crate) fn default_workspace_path() -> String {
    "/workspace".into()
}
