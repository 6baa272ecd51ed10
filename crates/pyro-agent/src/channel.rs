//! Where sessions come from: QEMU virtio-serial port, Firecracker (hybrid) vsock, or a
//! unix socket in `host_compat` mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::request::Ctx;
use crate::session::{self, SessionEnd};

/// Name QEMU gives our virtio-serial port (`-device virtserialport,name=pyro.0`).
pub const VIRTIO_PORT_NAME: &str = "pyro.0";

/// The `/dev/vportNpM` node whose sysfs name contains [`VIRTIO_PORT_NAME`].
fn find_virtio_port() -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.contains(VIRTIO_PORT_NAME) {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

fn any_virtio_port() -> bool {
    fs::read_dir("/sys/class/virtio-ports").map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// Finds the guest channel and serves on it; returns only after a `Shutdown`.
pub async fn serve_guest(ctx: Arc<Ctx>) {
    let started = Instant::now();
    let mut warned = false;
    loop {
        if let Some(port) = find_virtio_port() {
            eprintln!("pyro-agent: serving on virtio-serial port {}", port.display());
            match serve_virtio(&port, ctx.clone()).await {
                Ok(()) => return,
                Err(e) => eprintln!("pyro-agent: cannot use {}: {e}", port.display()),
            }
        } else if !any_virtio_port() || started.elapsed() > Duration::from_secs(3) {
            // Ports exist but not (yet) ours: their names arrive asynchronously, so wait a
            // little before settling for vsock.
            match vsock_listener(pyro_protocol::AGENT_PORT) {
                Ok(listener) => {
                    eprintln!("pyro-agent: listening on vsock port {}", pyro_protocol::AGENT_PORT);
                    match serve_vsock(listener, ctx.clone()).await {
                        Ok(()) => return,
                        Err(e) => eprintln!("pyro-agent: vsock listener failed: {e}"),
                    }
                }
                Err(e) if !warned => {
                    eprintln!("pyro-agent: no virtio-serial port named {VIRTIO_PORT_NAME} and no vsock ({e}); waiting");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves sessions over a virtio-serial port until a shutdown. Reads return 0 while the
/// host side is not connected, so end-of-file is not the end of the session.
async fn serve_virtio(port: &Path, ctx: Arc<Ctx>) -> io::Result<()> {
    let device = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY).open(port)?;
    let mut reader: File = device.try_clone()?;
    let mut writer: File = device;
    let (agent_side, bridge) = tokio::io::duplex(1 << 20);
    let (mut bridge_read, mut bridge_write) = tokio::io::split(bridge);
    let handle = tokio::runtime::Handle::current();

    let h = handle.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(10)), // host not connected
                Ok(n) => {
                    if h.block_on(bridge_write.write_all(&buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("pyro-agent: reading the virtio port failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match handle.block_on(bridge_read.read(&mut buf)) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Err(e) = writer.write_all(&buf[..n]) {
                // The host went away; what it missed is lost, it knocks again on reconnect.
                eprintln!("pyro-agent: writing the virtio port failed: {e}");
            }
        }
        let _ = written_tx.send(());
    });

    let (mut read_half, mut write_half) = tokio::io::split(agent_side);
    loop {
        // One byte stream for the VM's life: a session that breaks (garbage on the line)
        // is restarted on the same stream with a fresh Hello.
        match session::serve(&mut read_half, &mut write_half, ctx.clone()).await {
            SessionEnd::Shutdown => break,
            SessionEnd::Eof | SessionEnd::Broken(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // Closing our end lets the writer thread drain the last frames (the Shutdown
    // response) to the port before the VM goes down.
    drop((read_half, write_half));
    let _ = tokio::time::timeout(Duration::from_secs(2), written_rx).await;
    Ok(())
}

/// A listening `AF_VSOCK` stream socket on `port` (any CID), non-blocking.
fn vsock_listener(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket syscalls on a freshly created descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        let len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), &addr as *const libc::sockaddr_vm as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd.as_raw_fd(), 16) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Accepts vsock connections, one session each, until one of them asks for a shutdown.
async fn serve_vsock(listener: OwnedFd, ctx: Arc<Ctx>) -> io::Result<()> {
    // SAFETY: `listener` owns a valid descriptor and keeps returning it from as_raw_fd.
    let listener = unsafe { AsyncFd::register(listener) }.map_err(|e| e.into_parts().1)?;
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown_rx.recv() => return Ok(()),
            guard = listener.readable() => {
                let mut guard = guard?;
                guard.try_io(|fd| {
                    // SAFETY: accept4 on our listening socket; no peer address wanted.
                    let rc = unsafe {
                        libc::accept4(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    };
                    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
                })
            }
        };
        let fd = match accepted {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                eprintln!("pyro-agent: vsock accept failed: {e}");
                continue;
            }
            Err(_would_block) => continue,
        };
        // A connected stream socket: tokio's UnixStream only needs read/write/poll.
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        let mut stream = tokio::net::UnixStream::from_std(std_stream)?;
        let ctx = ctx.clone();
        let shutdown_tx = shutdown_tx.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            if let SessionEnd::Shutdown = session::serve(&mut r, &mut w, ctx).await {
                let _ = shutdown_tx.send(()).await;
            }
        });
    }
}

/// `host_compat`: accepts connections on a unix socket, one session each, forever.
/// A `Shutdown` ends only its own session.
pub async fn serve_unix(path: &Path, ctx: Arc<Ctx>) -> io::Result<()> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            fs::remove_file(path)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("pyro-agent: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            session::serve(&mut r, &mut w, ctx).await;
        });
    }
}
