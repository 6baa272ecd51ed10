//! JSON messages carried in [`crate::Frame`] payloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes incompatibly; the host refuses a mismatched agent.
pub const PROTOCOL_VERSION: u32 = 1;

/// vsock port the agent listens on (Firecracker hybrid vsock: `CONNECT 5005\n`).
pub const AGENT_PORT: u32 = 5005;

/// Sub-channel of a [`crate::FrameKind::Data`] frame (its first payload byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChannel {
    /// Bytes the host uploads (file content, tar archive).
    Upload = 0,
    /// Standard output of a command.
    Stdout = 1,
    /// Standard error of a command.
    Stderr = 2,
    /// Bytes the agent sends back (file content, tar archive).
    Download = 3,
}

impl DataChannel {
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Upload,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Download,
            _ => return None,
        })
    }
}

/// Sent once by the agent when the guest is ready to serve requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] the agent speaks.
    pub protocol_version: u32,
    /// Version of the `pyro-agent` binary.
    pub agent_version: String,
    /// `uname -r` of the guest kernel (or of the host in `host_compat`).
    pub kernel_release: String,
    /// Milliseconds since the guest kernel booted, when known.
    pub uptime_ms: Option<u64>,
}

/// A command to run with `/bin/sh -lc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Shell command line.
    pub command: String,
    /// Extra environment variables for this call.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (created if missing); the agent's default when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command's process group after this many milliseconds (exit code 124).
    pub timeout_ms: u64,
    /// Per-stream cap on forwarded output; the rest is drained and counted as truncated.
    pub max_output_bytes: u64,
}

/// Everything the host can ask of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check.
    Ping,
    /// Run a command; output streams back as [`DataChannel::Stdout`]/[`DataChannel::Stderr`].
    Exec(ExecRequest),
    /// Read up to `max_bytes` of a regular file as [`DataChannel::Download`] data.
    ReadFile {
        /// Absolute guest path.
        path: String,
        /// Byte limit.
        max_bytes: u64,
    },
    /// Replace a regular file with the uploaded bytes (atomic rename in the guest).
    WriteFile {
        /// Absolute guest path.
        path: String,
        /// Mode for a new file; an existing file keeps its mode.
        mode: Option<u32>,
        /// Create missing parent directories.
        create_parents: bool,
    },
    /// Describe a path (and its children, optionally recursively). Never follows symlinks.
    List {
        /// Absolute guest path.
        path: String,
        /// Descend into subdirectories.
        recursive: bool,
    },
    /// Extract the uploaded tar archive under `destination`.
    TarImport {
        /// Absolute guest directory.
        destination: String,
    },
    /// Stream a tar archive of `path` back as [`DataChannel::Download`] data.
    TarExport {
        /// Absolute guest path (file, symlink or directory).
        path: String,
    },
    /// Flush filesystems and power the guest off.
    Shutdown,
}

/// Result of an [`Request::Exec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code; 124 on timeout; 128+N when killed by signal N.
    pub exit_code: i32,
    /// Wall time measured in the guest.
    pub duration_ms: u64,
    /// The command hit its timeout.
    pub timed_out: bool,
    /// Total stdout bytes produced (including any not forwarded).
    pub stdout_bytes: u64,
    /// Total stderr bytes produced (including any not forwarded).
    pub stderr_bytes: u64,
    /// Stdout exceeded the cap.
    pub stdout_truncated: bool,
    /// Stderr exceeded the cap.
    pub stderr_truncated: bool,
}

/// Kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Symbolic link (never followed).
    Symlink,
    /// Fifo, socket or device.
    Other,
}

/// One entry of a [`Request::List`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Absolute guest path.
    pub path: String,
    /// Entry kind.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories, target length for symlinks).
    pub size_bytes: u64,
    /// Permission bits.
    pub mode: u32,
    /// Symlink target.
    pub link_target: Option<String>,
}

/// Result of a [`Request::List`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    /// The listed path itself.
    pub root: DirEntry,
    /// Children in depth-first, name-sorted order (empty for non-directories).
    pub entries: Vec<DirEntry>,
}

/// Result of a [`Request::ReadFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResult {
    /// Full size of the file.
    pub size_bytes: u64,
    /// Fewer bytes than the file holds were sent.
    pub truncated: bool,
}

/// Result of a [`Request::WriteFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Bytes written.
    pub bytes_written: u64,
    /// Mode the file has now.
    pub mode: u32,
}

/// Result of a [`Request::TarImport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarImportResult {
    /// Archive members extracted.
    pub entry_count: u64,
    /// Regular-file bytes written.
    pub bytes_written: u64,
}

/// Result of a [`Request::TarExport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarExportResult {
    /// Kind of the exported path.
    pub kind: EntryKind,
    /// Archive members sent.
    pub entry_count: u64,
    /// Regular-file bytes sent.
    pub bytes_written: u64,
}

/// Closes a stream: the outcome of its [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Success without a payload (ping, shutdown).
    Ok,
    /// The request failed; `message` is user-facing.
    Error {
        /// One-line reason.
        message: String,
    },
    /// See [`ExecResult`].
    Exec(ExecResult),
    /// See [`ReadResult`].
    Read(ReadResult),
    /// See [`WriteResult`].
    Write(WriteResult),
    /// See [`ListResult`].
    List(ListResult),
    /// See [`TarImportResult`].
    TarImport(TarImportResult),
    /// See [`TarExportResult`].
    TarExport(TarExportResult),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op() {
        let json = serde_json::to_value(Request::ReadFile { path: "/a".into(), max_bytes: 4 }).unwrap();
        assert_eq!(json["op"], "read_file");
        let back: Request = serde_json::from_value(json).unwrap();
        assert_eq!(back, Request::ReadFile { path: "/a".into(), max_bytes: 4 });
    }

    #[test]
    fn unknown_op_is_rejected() {
        let err = serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#);
        assert!(err.is_err());
    }

    #[test]
    fn error_response_roundtrips() {
        let r = Response::Error { message: "no such file".into() };
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
