//! The library's own failures — an unknown profile, a transport that would not start —
//! as a typed error. Tool failures are not here: they are `isError` tool results built
//! from [`pyro_core::Error`] (see `reply.rs`), never errors of the server.

/// A failure of the MCP server itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile name is not one of [`crate::Profile::NAMES`].
    #[error("unknown MCP profile '{0}'; expected one of: vm-run, workspace-core, workspace-full")]
    UnknownProfile(String),
    /// The stdio transport failed before or while serving.
    #[error("MCP server failed: {0}")]
    Serve(String),
}

impl Error {
    /// The stable class of this error, from the same list as [`pyro_core::Error::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownProfile(_) => "invalid_argument",
            Error::Serve(_) => "io",
        }
    }
}

impl From<Error> for pyro_core::Error {
    /// So the CLI reports server failures like every other command's.
    fn from(error: Error) -> Self {
        match error {
            Error::UnknownProfile(_) => pyro_core::Error::InvalidArgument(error.to_string()),
            Error::Serve(message) => pyro_core::Error::Io { context: "serving MCP over stdio".into(), source: std::io::Error::other(message) },
        }
    }
}
