//! Host-side client of the guest agent (`pyro-agent`).
//!
//! One framed, multiplexed connection per VM ([`pyro_protocol`]): virtio-serial (QEMU),
//! Firecracker hybrid vsock ([`connect_firecracker_vsock`]) or a unix socket
//! (`host_compat`). [`GuestClient::connect`] performs the Hello handshake; the returned
//! handle runs any number of concurrent calls.

mod client;
mod error;
mod vsock;

pub use client::{ClientLimits, ExecOutput, GuestClient, OutputChunk, ReadOutput, ServiceLogsOutput, MAX_SERVICE_LOG_BYTES};
pub use error::{GuestError, UPDATE_HINT};
pub use pyro_protocol::{
    Capability, DirEntry, EntryKind, ExecRequest, ExecResult, Hello, ListResult, SecretValue, ServiceInfo, ServiceStartRequest, ServiceState, ShellInfo,
    ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignal, ShellSignalRequest, ShellState, ShellWriteRequest, TarExportResult, TarImportResult,
    WriteResult, AGENT_PORT, MIN_SUPPORTED_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
pub use vsock::connect_firecracker_vsock;

/// Quotes one word for the guest's `/bin/sh` (commands run as `/bin/sh -lc`): words of
/// plain characters stay as they are, anything else is single-quoted.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r#"'"'"'"#))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/workspace/a.txt"), "/workspace/a.txt");
        assert_eq!(shell_quote("it's"), r#"'it'"'"'s'"#);
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
    }
}
