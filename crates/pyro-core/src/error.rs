//! The error type every core operation returns; its `Display` is the one-line message
//! users see (CLI `[error] …`, `{"ok": false, "error": …}`, MCP tool errors).

use std::path::PathBuf;

/// Result alias for core operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller named an environment that is not in the catalog.
    #[error("unknown environment '{name}'; expected one of: {expected}")]
    UnknownEnvironment {
        /// What was asked for.
        name: String,
        /// Comma-separated catalog names.
        expected: String,
    },
    /// An argument failed validation.
    #[error("{0}")]
    InvalidArgument(String),
    /// The environment is not installed (or its install is unusable).
    #[error("{0}")]
    NotInstalled(String),
    /// An install exists but cannot be used (digest mismatch, missing artifact); it is
    /// never repaired silently.
    #[error("{0}")]
    Unusable(String),
    /// A cached artifact no longer matches its recorded digest.
    #[error("cached {artifact} of environment '{environment}' is corrupt: expected sha256 {expected}, found {actual}")]
    DigestMismatch {
        /// Environment name.
        environment: String,
        /// File name of the artifact.
        artifact: String,
        /// Recorded digest.
        expected: String,
        /// Digest found now.
        actual: String,
    },
    /// Building a kernel or rootfs locally failed.
    #[error("{0}")]
    Build(String),
    /// Talking to an OCI registry failed.
    #[error("{0}")]
    Registry(String),
    /// Launching or talking to a VMM failed.
    #[error("{0}")]
    Vmm(String),
    /// Guest output broke a size limit (archive bytes, members, header sizes); the
    /// transfer was cancelled.
    #[error("{0}")]
    LimitExceeded(String),
    /// A capability that a later release delivers.
    #[error("{0}")]
    NotYetAvailable(String),
    /// A capability missing on this host, backend or guest agent.
    #[error("{0}")]
    Unavailable(String),
    /// Filesystem or process I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done to which path.
    pub fn io(action: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context: format!("{action} {}", path.into().display()), source }
    }
}

/// Adds path context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::Io`] describing `action` on `path`.
    fn ctx(self, action: &str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
