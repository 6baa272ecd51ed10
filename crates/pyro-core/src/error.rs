//! The error type every core operation returns. Its `Display` is the one-line message
//! users see (CLI `[error] …`, `{"ok": false, "error": …}`, MCP tool errors), and
//! [`Error::kind`] is the stable, machine-readable class the faces branch on
//! (`error_kind` in JSON, the MCP error's kind, the Python exception class).

use std::path::PathBuf;

use crate::guest::GuestError;

/// Result alias for core operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every value [`Error::kind`] can return, in documentation order. The README lists
/// them and a test pins this list, because the MCP server and the Python SDK map from it.
pub const ERROR_KINDS: &[&str] = &[
    "invalid_argument",
    "not_found",
    "conflict",
    "wrong_state",
    "unavailable",
    "not_installed",
    "corrupt",
    "limit_exceeded",
    "timeout",
    "guest",
    "vmm",
    "build",
    "registry",
    "io",
];

/// A failed core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument failed validation (kind `invalid_argument`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller named an environment that is not in the catalog (kind `not_found`).
    #[error("unknown environment '{name}'; expected one of: {expected}")]
    UnknownEnvironment {
        /// What was asked for.
        name: String,
        /// Comma-separated catalog names.
        expected: String,
    },
    /// A named object (workspace, VM, snapshot, path) does not exist (kind `not_found`).
    #[error("{message}")]
    NotFound {
        /// What sort of object: `workspace`, `vm`, `snapshot`, `path`, ….
        what: &'static str,
        /// The name or id that was asked for.
        id: String,
        /// The user-facing sentence.
        message: String,
    },
    /// The operation would clash with something that already exists or is in progress
    /// (an existing output path or snapshot, a workspace still being created, a VM owned
    /// by another supervisor) (kind `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// The object is in a state the operation does not accept, e.g. exec in a stopped
    /// workspace (kind `wrong_state`).
    #[error("{message}")]
    WrongState {
        /// The state the operation needs (`started`, `stopped`, …).
        expected: &'static str,
        /// The state the object is in.
        actual: String,
        /// The user-facing sentence, saying how to get to `expected` where there is a way.
        message: String,
    },
    /// A capability is missing on this host, backend, guest agent or build (kind
    /// `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// The environment (or a tool pyro needs) is not installed (kind `not_installed`).
    #[error("{0}")]
    NotInstalled(String),
    /// Stored data is damaged and is never repaired silently: an install whose
    /// artifacts are missing, a record that does not parse, a corrupt disk image (kind
    /// `corrupt`).
    #[error("{0}")]
    Corrupt(String),
    /// A cached artifact no longer matches its recorded digest (kind `corrupt`).
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
    /// Guest output broke a size limit (archive bytes, members, header sizes); the
    /// transfer was cancelled (kind `limit_exceeded`).
    #[error("{0}")]
    LimitExceeded(String),
    /// A call to the guest agent failed (kind `timeout` for the deadlines the host
    /// enforces, `unavailable` for an operation the guest agent lacks, else `guest`).
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// Launching, supervising or talking to a VMM failed (kind `vmm`).
    #[error("{0}")]
    Vmm(String),
    /// Building a kernel or rootfs locally failed (kind `build`).
    #[error("{0}")]
    Build(String),
    /// Talking to an OCI registry failed (kind `registry`).
    #[error("{0}")]
    Registry(String),
    /// Filesystem or process I/O on the host failed (kind `io`).
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
    /// The stable class of this error: one of [`ERROR_KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::UnknownEnvironment { .. } | Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::WrongState { .. } => "wrong_state",
            Error::Unavailable(_) => "unavailable",
            Error::NotInstalled(_) => "not_installed",
            Error::Corrupt(_) | Error::DigestMismatch { .. } => "corrupt",
            Error::LimitExceeded(_) => "limit_exceeded",
            Error::Guest(e) => guest_kind(e),
            Error::Vmm(_) => "vmm",
            Error::Build(_) => "build",
            Error::Registry(_) => "registry",
            Error::Io { .. } => "io",
        }
    }

    /// Wraps an I/O error with what was being done to which path.
    pub fn io(action: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context: format!("{action} {}", path.into().display()), source }
    }

    /// `<what> '<id>' does not exist`.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        let id = id.into();
        Error::NotFound { what, message: format!("{what} '{id}' does not exist"), id }
    }

    /// A [`Error::NotFound`] whose sentence is not the standard one.
    pub fn not_found_because(what: &'static str, id: impl Into<String>, message: impl Into<String>) -> Self {
        Error::NotFound { what, id: id.into(), message: message.into() }
    }

    /// A [`Error::WrongState`] with its sentence.
    pub fn wrong_state(expected: &'static str, actual: impl Into<String>, message: impl Into<String>) -> Self {
        Error::WrongState { expected, actual: actual.into(), message: message.into() }
    }
}

fn guest_kind(error: &GuestError) -> &'static str {
    match error {
        GuestError::HelloTimeout(_) | GuestError::Timeout { .. } | GuestError::Stalled { .. } | GuestError::SlowConsumer { .. } => "timeout",
        GuestError::Unavailable { .. } => "unavailable",
        _ => "guest",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant, so a new variant must be added here (the match in
    /// [`Error::kind`] is exhaustive) and its kind must be listed in [`ERROR_KINDS`].
    fn one_of_each() -> Vec<Error> {
        vec![
            Error::InvalidArgument("x".into()),
            Error::UnknownEnvironment { name: "a".into(), expected: "b".into() },
            Error::not_found("workspace", "000000000000"),
            Error::Conflict("x".into()),
            Error::wrong_state("started", "stopped", "x"),
            Error::Unavailable("x".into()),
            Error::NotInstalled("x".into()),
            Error::Corrupt("x".into()),
            Error::DigestMismatch { environment: "e".into(), artifact: "a".into(), expected: "1".into(), actual: "2".into() },
            Error::LimitExceeded("x".into()),
            Error::Guest(GuestError::ChannelClosed),
            Error::Guest(GuestError::Timeout { op: "exec", after: std::time::Duration::from_secs(1) }),
            Error::Vmm("x".into()),
            Error::Build("x".into()),
            Error::Registry("x".into()),
            Error::io("open", "/x", std::io::Error::other("boom")),
        ]
    }

    #[test]
    fn every_kind_is_listed_and_every_listed_kind_is_reachable() {
        let seen: std::collections::BTreeSet<_> = one_of_each().iter().map(Error::kind).collect();
        let listed: std::collections::BTreeSet<_> = ERROR_KINDS.iter().copied().collect();
        assert!(seen.is_subset(&listed), "kinds missing from ERROR_KINDS: {:?}", seen.difference(&listed));
        let unreached: Vec<_> = listed.difference(&seen).collect();
        assert!(unreached.is_empty(), "listed kinds no variant produces: {unreached:?}");
    }

    #[test]
    fn kinds_are_snake_case_and_unique() {
        let mut sorted = ERROR_KINDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ERROR_KINDS.len());
        for kind in ERROR_KINDS {
            assert!(kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{kind}");
        }
    }

    /// The README's error-kind table lists exactly [`ERROR_KINDS`], in order: faces map
    /// from it, so it must not drift.
    #[test]
    fn readme_lists_exactly_these_kinds() {
        assert_eq!(crate::readme::table_keys("error-kinds"), ERROR_KINDS);
    }

    #[test]
    fn not_found_keeps_the_standard_sentence() {
        assert_eq!(Error::not_found("workspace", "abc").to_string(), "workspace 'abc' does not exist");
    }
}
