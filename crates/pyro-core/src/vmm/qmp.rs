//! A minimal QMP (QEMU Machine Protocol) client: enough to pause a guest and migrate its
//! state out when a warm template is saved. QMP is line-delimited JSON on a unix socket.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// Longest QMP line accepted (QEMU's own answers are small; this bounds a misbehaving one).
const MAX_LINE: usize = 1 << 20;

/// A connected QMP session, past the capabilities handshake.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn qmp_error(message: impl std::fmt::Display) -> Error {
    Error::Vmm(format!("QEMU monitor: {message}"))
}

impl Qmp {
    /// Connects to the QMP socket at `path` (waiting up to `timeout` for it to appear) and
    /// enters command mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(qmp_error(format!("cannot connect to {}: {e}", path.display()))),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let (read, writer) = stream.into_split();
        let mut qmp = Self { reader: BufReader::new(read), writer };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error("no greeting"));
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        let read = (&mut self.reader).take(MAX_LINE as u64).read_until(b'\n', &mut line).await.map_err(qmp_error)?;
        if read == 0 {
            return Err(qmp_error("the connection closed"));
        }
        serde_json::from_slice(&line).map_err(|e| qmp_error(format!("unreadable answer: {e}")))
    }

    /// Runs `command` with `arguments` and returns its `return` value; events that arrive
    /// meanwhile are skipped.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = command_line(command, arguments);
        self.writer.write_all(&request).await.map_err(qmp_error)?;
        self.answer(command).await
    }

    /// Hands `fd` to QEMU under `name` (`getfd`, the descriptor riding along the command
    /// as `SCM_RIGHTS`), for commands that take `fd:<name>`. QEMU keeps its own copy.
    pub async fn pass_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<()> {
        let request = command_line("getfd", json!({ "fdname": name }));
        let socket = self.writer.as_ref();
        loop {
            socket.writable().await.map_err(qmp_error)?;
            match socket.try_io(tokio::io::Interest::WRITABLE, || send_with_fd(socket.as_raw_fd(), &request, fd.as_raw_fd())) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(qmp_error(format!("cannot pass a descriptor: {e}"))),
            }
        }
        self.answer("getfd").await.map(|_| ())
    }

    async fn answer(&mut self, command: &str) -> Result<Value> {
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let description = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(qmp_error(format!("{command} failed: {description}")));
            }
        }
    }
}

fn command_line(command: &str, arguments: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments })).expect("QMP command serialises");
    line.push(b'\n');
    line
}

/// One `sendmsg` of all of `bytes` with `fd` attached; a short write is an error (QMP
/// commands are far smaller than a socket buffer).
fn send_with_fd(socket: RawFd, bytes: &[u8], fd: RawFd) -> std::io::Result<()> {
    // SAFETY: the iovec and the control buffer outlive the call; the control buffer is
    // sized by CMSG_SPACE for one descriptor and the header is filled through CMSG_*.
    unsafe {
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        let space = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        let sent = libc::sendmsg(socket, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if sent as usize != bytes.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short write on the QEMU monitor"));
        }
    }
    Ok(())
}
