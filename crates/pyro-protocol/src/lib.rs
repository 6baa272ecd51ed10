//! Host ↔ guest wire protocol for pyro.
//!
//! One byte stream (virtio-serial, Firecracker hybrid vsock, or a unix socket for
//! `host_compat`) carries length-prefixed [`Frame`]s. Every frame names a *stream*: the
//! host opens a stream with a [`FrameKind::Request`], both sides may exchange
//! [`FrameKind::Data`] frames on it (command output, uploaded or downloaded bytes), and
//! the agent closes it with exactly one [`FrameKind::Response`]. Streams are independent,
//! so a slow request never blocks another one.

#![warn(missing_docs)]

pub mod archive_rules;
mod capability;
mod frame;
pub mod member_path;
mod message;
mod service;
mod shell;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use capability::Capability;
pub use frame::{read_frame, write_frame, Frame, FrameError, FrameKind, MAX_FRAME_PAYLOAD};
pub use message::{
    decode_request, decode_response, is_supported_version, DataChannel, DecodeError, DirEntry, EntryKind, ExecRequest, ExecResult, GuestIdentity, GuestNetwork,
    Hello, HostHello, ListResult, ReadResult, Request, Response, SecretValue, TarExportResult, TarImportResult, WriteResult, AGENT_PORT,
    MIN_SUPPORTED_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
pub use service::{ReadinessProbe, ServiceInfo, ServiceListResult, ServiceLogsResult, ServiceStartRequest, ServiceState};
pub use shell::{ShellInfo, ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignal, ShellSignalRequest, ShellState, ShellWriteRequest};
