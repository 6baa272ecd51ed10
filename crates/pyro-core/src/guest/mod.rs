//! Host-side client of the guest agent (`pyro-agent`).
//!
//! One framed, multiplexed connection per VM ([`pyro_protocol`]): virtio-serial (QEMU),
//! Firecracker hybrid vsock ([`connect_firecracker_vsock`]) or a unix socket
//! (`host_compat`). [`GuestClient::connect`] performs the Hello handshake; the returned
//! handle runs any number of concurrent calls.

mod client;
mod error;
mod vsock;

pub use client::{ExecOutput, GuestClient, OutputChunk, ReadOutput};
pub use error::GuestError;
pub use pyro_protocol::{
    DirEntry, EntryKind, ExecRequest, ExecResult, Hello, ListResult, TarExportResult, TarImportResult, WriteResult,
    AGENT_PORT, PROTOCOL_VERSION,
};
pub use vsock::connect_firecracker_vsock;
