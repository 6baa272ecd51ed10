//! pyro's agent-facing faces: the [`pyro_core::Pyro`] facade's operations as one tool
//! catalog, served as MCP tools over stdio (`pyro mcp serve`, filtered by [`Profile`]),
//! as the Python SDK's newline-delimited JSON bridge (`pyro __sdk`, [`bridge`]), and
//! callable by name ([`ToolBox`], used by `pyro demo ollama`). Every tool is a thin call
//! of the facade method the CLI uses, so the CLI, MCP and the SDK never disagree.
//!
//! Layout: `profile.rs` (which tools, in which order), `tools/` (the catalog, one file per
//! area), `schema.rs` (input/output schemas and argument coercion), `reply.rs` (result and
//! error shapes, output caps), `progress.rs` (core events as progress notifications),
//! `server.rs` (the rmcp handler), `toolbox.rs` (tools by name), `bridge.rs` (the SDK's
//! channel).

pub mod bridge;
mod error;
mod profile;
mod progress;
mod reply;
mod schema;
mod server;
mod toolbox;
mod tools;

pub use error::Error;
pub use profile::Profile;
pub use reply::INLINE_OUTPUT_LIMIT;
pub use server::PyroServer;
pub use toolbox::{ToolBox, ToolInfo};
pub use tools::{Call, OutputHook, ProgressHook};

use rmcp::ServiceExt;

/// Serves MCP on stdin/stdout until the client closes the stream. Both lifecycles are
/// accepted: the `initialize` handshake (2025-11-25 and older) and the stateless
/// 2026-07-28 revision (per-request `_meta`, `server/discover`). Only the MCP stream is
/// written to stdout; logs go to stderr. A client that closes the stream before its first
/// request is a normal end.
pub async fn serve_stdio(pyro: pyro_core::Pyro, profile: Profile) -> Result<(), Error> {
    let server = PyroServer::new(pyro, profile);
    tracing::info!(profile = %profile, tools = server.tools().len(), "serving MCP over stdio");
    let running = match server.serve(rmcp::transport::stdio_pipes()).await {
        Ok(running) => running,
        // A client that leaves before its first request ends the session, not an error.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(e) => return Err(Error::Serve(e.to_string())),
    };
    running.waiting().await.map_err(|e| Error::Serve(e.to_string()))?;
    Ok(())
}
