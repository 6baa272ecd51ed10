//! Firecracker's hybrid vsock: the host side is a unix socket; a connection asks for a
//! guest port with `CONNECT <port>\n` and gets `OK <host port>\n` back.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::error::GuestError;

/// Longest acknowledgement line accepted from the bridge.
const MAX_LINE: usize = 256;

/// Connects to guest `port` through Firecracker's vsock unix socket `uds`. On success the
/// returned stream talks to the guest directly (nothing past the `OK` line is consumed).
pub async fn connect_firecracker_vsock(uds: &Path, port: u32) -> Result<UnixStream, GuestError> {
    let connect_error = |source| GuestError::Connect { path: uds.to_path_buf(), source };
    let mut stream = UnixStream::connect(uds).await.map_err(connect_error)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes()).await.map_err(connect_error)?;
    // Byte by byte, so no guest data after the line is swallowed.
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(connect_error)?;
        if n == 0 {
            let line = if line.is_empty() { "connection closed".to_string() } else { String::from_utf8_lossy(&line).into_owned() };
            return Err(GuestError::VsockRejected { port, line });
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_LINE {
            break;
        }
    }
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    if !line.starts_with("OK ") {
        return Err(GuestError::VsockRejected { port, line });
    }
    Ok(stream)
}
