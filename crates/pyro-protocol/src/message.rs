//! JSON messages carried in [`crate::Frame`] payloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::service::{ServiceInfo, ServiceListResult, ServiceLogsResult, ServiceStartRequest};
use crate::shell::{ShellInfo, ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignalRequest, ShellWriteRequest};

/// The protocol version this build speaks. Bumped whenever the wire surface grows (a
/// request, response, field or capability is added); see `VERSIONING.md`.
///
/// * 1: the first release (no `capabilities` in the Hello).
/// * 2: `Hello::capabilities`, [`Response::Unsupported`].
/// * 3: `shell_*` requests ([`Capability::Shell`]).
/// * 4: services ([`Request::ServiceStart`] and friends, capability `service`).
/// * 5: the host's Hello (a knock) may carry a [`GuestIdentity`] ([`HostHello`]).
/// * 6: [`HostHello::network`] ([`GuestNetwork`]) and [`Request::PortConnect`]
///   (capability `port_forward`).
pub const PROTOCOL_VERSION: u32 = 6;

/// The oldest agent protocol version the host still talks to. Agents between this and
/// [`PROTOCOL_VERSION`] (and newer ones) are accepted; what each can do is decided by
/// its capabilities, never by the version number. Raised only when support for an old
/// agent is dropped on purpose.
pub const MIN_SUPPORTED_PROTOCOL_VERSION: u32 = 1;

/// True when the host talks to an agent announcing `version`.
pub fn is_supported_version(version: u32) -> bool {
    version >= MIN_SUPPORTED_PROTOCOL_VERSION
}

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

/// What the host sends in its Hello frames (knocks). Agents before protocol 5 ignore the
/// payload; later ones adopt [`HostHello::identity`] before they answer, so every request
/// that follows the knock on the stream sees it applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHello {
    /// The identity the guest takes on (fresh per start, so that VMs restored from one
    /// saved state do not share random state, clock or machine id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<GuestIdentity>,
    /// How the guest configures its NIC (`eth0`) and resolver; absent for a guest
    /// without a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<GuestNetwork>,
}

/// The guest's network configuration, chosen by the host per start (a restored guest
/// gets a fresh MAC this way). The agent applies it before it answers the knock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// The NIC's MAC address, `xx:xx:xx:xx:xx:xx` (locally administered, unicast).
    pub mac: String,
    /// The guest's IPv4 address.
    pub address: std::net::Ipv4Addr,
    /// Prefix length of the guest's subnet.
    pub prefix_len: u8,
    /// The default gateway.
    pub gateway: std::net::Ipv4Addr,
    /// Name servers written to `/etc/resolv.conf`.
    pub dns: Vec<std::net::Ipv4Addr>,
}

impl GuestNetwork {
    /// The MAC's six bytes, when [`GuestNetwork::mac`] is well formed.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        let mut bytes = [0u8; 6];
        let mut parts = self.mac.split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(bytes)
    }
}

/// Per-start guest identity, chosen by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestIdentity {
    /// Host entropy mixed into (and credited to) the guest kernel's random pool, which is
    /// then reseeded: [`GuestIdentity::ENTROPY_BYTES`] bytes, hex.
    pub entropy_hex: String,
    /// The host's wall clock when it sent this, nanoseconds since the Unix epoch.
    pub unix_time_ns: u64,
    /// A fresh machine id: 32 lowercase hex characters.
    pub machine_id: String,
}

impl GuestIdentity {
    /// Bytes of entropy a host sends.
    pub const ENTROPY_BYTES: usize = 64;

    /// The entropy bytes, when the hex is well formed and exactly
    /// [`GuestIdentity::ENTROPY_BYTES`] long.
    pub fn entropy(&self) -> Option<Vec<u8>> {
        let hex = self.entropy_hex.as_bytes();
        if hex.len() != Self::ENTROPY_BYTES * 2 {
            return None;
        }
        hex.chunks(2).map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
    }

    /// True when [`GuestIdentity::machine_id`] is 32 lowercase hex characters.
    pub fn machine_id_is_valid(&self) -> bool {
        self.machine_id.len() == 32 && self.machine_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    /// [`Capability`] names the agent serves (since protocol 2). Absent in a protocol 1
    /// Hello, which has [`Capability::PROTOCOL_1`]; names this build does not know are
    /// kept and ignored. Use [`Hello::supports`] rather than reading it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

impl Hello {
    /// True when the agent announced (or, for a Hello without the field, implies)
    /// `capability`.
    pub fn supports(&self, capability: Capability) -> bool {
        match &self.capabilities {
            Some(names) => names.iter().any(|n| n == capability.name()),
            None => Capability::PROTOCOL_1.contains(&capability),
        }
    }

    /// The known capabilities the agent has, in [`Capability::ALL`] order.
    pub fn known_capabilities(&self) -> Vec<Capability> {
        Capability::ALL.into_iter().filter(|c| self.supports(*c)).collect()
    }
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
    /// Installed secrets to put in the command's environment: secret name → variable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
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
    /// Replace the secrets the agent holds in memory (never on disk): they are what
    /// `secret_env` mappings resolve against and what captured output is redacted of.
    InstallSecrets {
        /// The workspace's secrets.
        secrets: Vec<SecretValue>,
    },
    /// Start a persistent PTY shell; answered [`Response::Shell`].
    ShellOpen(ShellOpenRequest),
    /// Read a shell's output from a cursor; answered [`Response::ShellRead`].
    ShellRead(ShellReadRequest),
    /// Type into a shell; answered [`Response::Shell`].
    ShellWrite(ShellWriteRequest),
    /// Signal a shell's foreground process group; answered [`Response::Shell`].
    ShellSignal(ShellSignalRequest),
    /// End a shell and free its scrollback; answered [`Response::Shell`] (its last state).
    ShellClose {
        /// Shell id.
        shell_id: String,
    },
    /// Start a named service in its own session and wait for its readiness; answered
    /// with [`Response::Service`] (a failed readiness is a `failed` service, not an error).
    ServiceStart(ServiceStartRequest),
    /// Describe every service the agent holds; answered with [`Response::ServiceList`].
    ServiceList,
    /// A service's captured output, as [`DataChannel::Stdout`]/[`DataChannel::Stderr`]
    /// data, then [`Response::ServiceLogs`].
    ServiceLogs {
        /// Service name.
        name: String,
        /// Only the last this many lines of each stream; everything held when absent.
        #[serde(default)]
        tail_lines: Option<u64>,
    },
    /// TERM the service's process group, wait up to `grace_ms`, then KILL it; answered
    /// with [`Response::Service`]. A service that already ended is returned unchanged.
    ServiceStop {
        /// Service name.
        name: String,
        /// How long to wait after SIGTERM before SIGKILL.
        grace_ms: u64,
    },
    /// Connect to `127.0.0.1:port` inside the guest and carry bytes both ways: host
    /// [`DataChannel::Upload`] data goes to the socket ([`crate::FrameKind::DataEnd`]
    /// half-closes it), what the socket sends comes back as [`DataChannel::Download`]
    /// data then a `DataEnd`; answered [`Response::Ok`] when both directions ended, or
    /// [`Response::Error`] when the connection could not be made.
    PortConnect {
        /// Guest TCP port on the loopback address.
        port: u16,
    },
}

/// One secret as delivered to the agent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue {
    /// Name (`^[A-Za-z_][A-Za-z0-9_]{0,63}$`).
    pub name: String,
    /// The value (UTF-8, at most 64 KiB).
    pub value: String,
}

impl std::fmt::Debug for SecretValue {
    /// Never prints the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue").field("name", &self.name).field("value", &"[REDACTED]").finish()
    }
}

impl Request {
    /// Every `op` tag, one per variant (kept complete by [`Request::op`]'s exhaustive match
    /// and the golden wire test).
    pub const OPS: [&'static str; 19] = [
        "ping",
        "exec",
        "read_file",
        "write_file",
        "list",
        "tar_import",
        "tar_export",
        "shutdown",
        "install_secrets",
        "shell_open",
        "shell_read",
        "shell_write",
        "shell_signal",
        "shell_close",
        "service_start",
        "service_list",
        "service_logs",
        "service_stop",
        "port_connect",
    ];

    /// The wire tag (`op`) of this request.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Exec(_) => "exec",
            Request::ReadFile { .. } => "read_file",
            Request::WriteFile { .. } => "write_file",
            Request::List { .. } => "list",
            Request::TarImport { .. } => "tar_import",
            Request::TarExport { .. } => "tar_export",
            Request::Shutdown => "shutdown",
            Request::InstallSecrets { .. } => "install_secrets",
            Request::ShellOpen(_) => "shell_open",
            Request::ShellRead(_) => "shell_read",
            Request::ShellWrite(_) => "shell_write",
            Request::ShellSignal(_) => "shell_signal",
            Request::ShellClose { .. } => "shell_close",
            Request::ServiceStart(_) => "service_start",
            Request::ServiceList => "service_list",
            Request::ServiceLogs { .. } => "service_logs",
            Request::ServiceStop { .. } => "service_stop",
            Request::PortConnect { .. } => "port_connect",
        }
    }

    /// The capability the agent must announce for this request; `None` for
    /// [`Request::Ping`], which every agent serves (it is part of the base protocol).
    pub fn capability(&self) -> Option<Capability> {
        Some(match self {
            Request::Ping => return None,
            Request::Exec(exec) if !exec.secret_env.is_empty() => Capability::Secrets,
            Request::Exec(_) => Capability::Exec,
            Request::ReadFile { .. } => Capability::FsRead,
            Request::WriteFile { .. } => Capability::FsWrite,
            Request::List { .. } => Capability::FsList,
            Request::TarImport { .. } => Capability::TarImport,
            Request::TarExport { .. } => Capability::TarExport,
            Request::Shutdown => Capability::Shutdown,
            Request::InstallSecrets { .. } => Capability::Secrets,
            // A shell with secrets needs both; `shell` is the one only shell-capable
            // agents announce (every such agent also has `secrets`).
            Request::ShellOpen(_) | Request::ShellRead(_) | Request::ShellWrite(_) | Request::ShellSignal(_) | Request::ShellClose { .. } => Capability::Shell,
            Request::ServiceStart(_) | Request::ServiceList | Request::ServiceLogs { .. } | Request::ServiceStop { .. } => Capability::Service,
            Request::PortConnect { .. } => Capability::PortForward,
        })
    }
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
    /// The agent does not serve this request: its `op` is unknown to it (the host is
    /// newer) or outside its capabilities. Since protocol 2; sent only in answer to a
    /// request a protocol 1 host could not have sent.
    Unsupported {
        /// The request's `op` tag as received (may be empty when it had none).
        op: String,
        /// One-line reason.
        message: String,
    },
    /// A shell's state: the answer to open, write, signal and close. See [`ShellInfo`].
    Shell(ShellInfo),
    /// See [`ShellReadResult`] (boxed: it is the largest response).
    ShellRead(Box<ShellReadResult>),
    /// One service, answering [`Request::ServiceStart`] and [`Request::ServiceStop`].
    Service(Box<ServiceInfo>),
    /// See [`ServiceListResult`].
    ServiceList(ServiceListResult),
    /// See [`ServiceLogsResult`].
    ServiceLogs(Box<ServiceLogsResult>),
}

impl Response {
    /// Every `result` tag, one per variant (kept complete by [`Response::tag`]'s
    /// exhaustive match and the golden wire test).
    pub const TAGS: [&'static str; 14] = [
        "ok",
        "error",
        "exec",
        "read",
        "write",
        "list",
        "tar_import",
        "tar_export",
        "unsupported",
        "shell",
        "shell_read",
        "service",
        "service_list",
        "service_logs",
    ];

    /// The wire tag (`result`) of this response.
    pub fn tag(&self) -> &'static str {
        match self {
            Response::Ok => "ok",
            Response::Error { .. } => "error",
            Response::Exec(_) => "exec",
            Response::Read(_) => "read",
            Response::Write(_) => "write",
            Response::List(_) => "list",
            Response::TarImport(_) => "tar_import",
            Response::TarExport(_) => "tar_export",
            Response::Unsupported { .. } => "unsupported",
            Response::Shell(_) => "shell",
            Response::ShellRead(_) => "shell_read",
            Response::Service(_) => "service",
            Response::ServiceList(_) => "service_list",
            Response::ServiceLogs(_) => "service_logs",
        }
    }
}

/// Why a [`Request`] or [`Response`] payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Well-formed JSON whose tag this build does not know: sent by a newer peer.
    #[error("unknown {field} {tag:?} (the peer speaks a newer protocol)")]
    UnknownTag {
        /// The tag field (`op` or `result`).
        field: &'static str,
        /// Its value.
        tag: String,
    },
    /// Anything else: not JSON, no tag, a known tag with bad fields.
    #[error("{0}")]
    Malformed(String),
}

/// Decodes a request payload, telling an unknown `op` (newer host) apart from garbage.
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    decode(payload, "op", &Request::OPS)
}

/// Decodes a response payload, telling an unknown `result` (newer agent) apart from
/// garbage.
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    decode(payload, "result", &Response::TAGS)
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], field: &'static str, known: &[&str]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| {
        let tag = serde_json::from_slice::<serde_json::Value>(payload).ok().and_then(|v| v.get(field).and_then(|t| t.as_str()).map(str::to_owned));
        match tag {
            Some(tag) if !known.contains(&tag.as_str()) => DecodeError::UnknownTag { field, tag },
            _ => DecodeError::Malformed(e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_checked_before_use() {
        let mut identity = GuestIdentity { entropy_hex: "0f".repeat(GuestIdentity::ENTROPY_BYTES), unix_time_ns: 1, machine_id: "a".repeat(32) };
        assert_eq!(identity.entropy().unwrap(), vec![0x0f; GuestIdentity::ENTROPY_BYTES]);
        assert!(identity.machine_id_is_valid());
        for bad in ["0f".repeat(GuestIdentity::ENTROPY_BYTES - 1), "zz".repeat(GuestIdentity::ENTROPY_BYTES), format!("{}é", "0".repeat(126))] {
            identity.entropy_hex = bad;
            assert_eq!(identity.entropy(), None, "{}", identity.entropy_hex);
        }
        for bad in ["A".repeat(32), "a".repeat(31), "../../etc/passwd0000000000000000".into(), format!("{}\n", "a".repeat(31))] {
            identity.machine_id = bad;
            assert!(!identity.machine_id_is_valid(), "{}", identity.machine_id);
        }
    }

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
    fn unknown_tags_are_told_apart_from_garbage() {
        assert_eq!(decode_request(br#"{"op":"format_disk","disk":"/dev/vda"}"#), Err(DecodeError::UnknownTag { field: "op", tag: "format_disk".into() }));
        assert_eq!(decode_response(br#"{"result":"teleported","where":"mars"}"#), Err(DecodeError::UnknownTag { field: "result", tag: "teleported".into() }));
        assert!(matches!(decode_request(br#"{"op":"read_file"}"#), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_request(b"{\"op\":"), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_response(br#"{"no_tag":1}"#), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_response(b"\xff\x00"), Err(DecodeError::Malformed(_))));
        assert_eq!(decode_request(br#"{"op":"ping"}"#), Ok(Request::Ping));
    }

    #[test]
    fn hello_without_capabilities_is_protocol_1() {
        let old: Hello = serde_json::from_str(r#"{"protocol_version":1,"agent_version":"3.0.0","kernel_release":"6.1","uptime_ms":null}"#).unwrap();
        assert_eq!(old.capabilities, None);
        assert_eq!(old.known_capabilities(), Capability::PROTOCOL_1.to_vec());
        let newer: Hello = serde_json::from_str(
            r#"{"protocol_version":9,"agent_version":"9","kernel_release":"x","uptime_ms":1,"capabilities":["exec","warp_drive"],"future_field":true}"#,
        )
        .unwrap();
        assert!(newer.supports(Capability::Exec));
        assert!(!newer.supports(Capability::FsRead));
        assert_eq!(newer.known_capabilities(), vec![Capability::Exec]);
        assert!(is_supported_version(newer.protocol_version));
        assert!(!is_supported_version(0));
    }

    #[test]
    fn error_response_roundtrips() {
        let r = Response::Error { message: "no such file".into() };
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
