//! Firecracker backend (KVM only).
//!
//! One `firecracker` process per VM, launched with a JSON config file so the guest starts
//! without API calls. The API socket stays enabled for inspection (`GET /`) and later
//! features (snapshots). The agent channel is Firecracker's hybrid vsock: a unix socket on
//! the host where a client writes `CONNECT <port>\n` and gets `OK <host port>\n` back
//! once the guest accepted the connection.
//!
//! The per-VM disk is a private raw copy of the base rootfs (a reflink where the
//! filesystem supports it, otherwise a sparse copy).

use crate::env_vars;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::time::Instant;

use super::spawn::spawn_confined;
use super::{kernel_cmdline, remove_stale, LaunchSpec, Launched, RebootMethod};
use crate::error::{Error, IoContext, Result};
use crate::guest::connect_firecracker_vsock;

/// File name of the launch config in the VM directory.
pub const CONFIG_FILE: &str = "firecracker-config.json";
/// File name of the API socket in the VM directory.
pub const API_SOCKET: &str = "firecracker.sock";
/// File name of Firecracker's logger output in the VM directory.
pub const LOG_FILE: &str = "firecracker.log";
/// File name of the per-VM root disk in the VM directory.
pub const DISK_FILE: &str = "rootfs.ext4";
/// Guest CID of the vsock device (each VM has its own hybrid-vsock socket, so the CID
/// need not be unique across VMs).
pub const GUEST_CID: u32 = 3;
/// Guest vsock port the agent listens on.
pub const AGENT_PORT: u32 = 5005;

/// How long `launch` waits for the API socket to answer.
const API_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one API request may take.
const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Finds the `firecracker` binary: `$PYRO_FIRECRACKER`, then `<cache>/bin/firecracker`
/// (where `scripts/fetch-firecracker.sh` installs it), then `firecracker` on `PATH`.
/// Only executable regular files qualify.
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_vars::FIRECRACKER).filter(|p| !p.is_empty()).map(PathBuf::from) {
        if is_executable(&path) {
            return Some(path);
        }
        tracing::warn!("{firecracker_var}={} is not an executable file; looking elsewhere", path.display(), firecracker_var = env_vars::FIRECRACKER);
    }
    if let Ok(dirs) = crate::paths::Dirs::from_env() {
        let cached = dirs.cache.join("bin").join("firecracker");
        if is_executable(&cached) {
            return Some(cached);
        }
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join("firecracker")).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The API socket of the VM described by `spec`.
pub fn api_socket(spec: &LaunchSpec) -> PathBuf {
    spec.vm_dir.join(API_SOCKET)
}

/// Firecracker's logger output of the VM described by `spec`.
pub fn log_file(spec: &LaunchSpec) -> PathBuf {
    spec.vm_dir.join(LOG_FILE)
}

/// Makes the VM's private, writable copy of `base_rootfs` as `<vm_dir>/rootfs.ext4`
/// (reflink if possible, else a sparse copy), replacing an earlier copy. `base_rootfs`
/// is never modified.
pub fn prepare_disk(base_rootfs: &Path, vm_dir: &Path) -> Result<PathBuf> {
    let disk = vm_dir.join(DISK_FILE);
    copy_disk(base_rootfs, &disk)?;
    Ok(disk)
}

/// A Firecracker binary.
#[derive(Debug, Clone)]
pub struct Firecracker {
    binary: PathBuf,
}

/// Why a Firecracker guest cannot have a network in this build: its NIC would be a TAP
/// device that only the supervisor reads, which is not wired up (no Firecracker guest
/// boots on the hosts this was built on, so it could not be tested).
pub fn network_unsupported() -> Error {
    Error::Unavailable("guest networking needs the QEMU backend in this build (Firecracker's TAP link is not wired up); use PYRO_BACKEND=qemu".into())
}

impl Firecracker {
    /// A backend using `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self { binary: binary.into() }
    }

    /// The binary this backend runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The `Firecracker vX.Y.Z` first line of `firecracker --version` (Firecracker also
    /// prints a log line on exit; it is not included).
    pub fn version(&self) -> Result<String> {
        let out = std::process::Command::new(&self.binary).arg("--version").stdin(Stdio::null()).output().ctx("run", &self.binary)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match parse_version(&stdout) {
            Some(version) if out.status.success() => Ok(version),
            _ => Err(Error::Vmm(format!(
                "{} --version failed ({}): {}",
                self.binary.display(),
                out.status,
                crate::console_log::last_line(&String::from_utf8_lossy(&out.stderr))
            ))),
        }
    }

    /// The launch config for `spec` (Firecracker 1.12 schema; it rejects unknown fields).
    /// No network interfaces: guest networking runs on QEMU only in this build.
    pub fn config(&self, spec: &LaunchSpec) -> Value {
        let mut boot_args = kernel_cmdline("ttyS0", spec.debug_console, RebootMethod::Keyboard);
        if !spec.debug_console {
            // Firecracker's boot-time gate: no UART probing unless we want the console.
            boot_args.push_str(" 8250.nr_uarts=0");
        }
        json!({
            "boot-source": {
                "kernel_image_path": spec.kernel,
                "boot_args": boot_args,
            },
            "drives": [{
                "drive_id": "rootfs",
                "path_on_host": spec.disk,
                "is_root_device": true,
                "is_read_only": false,
            }],
            "machine-config": {
                "vcpu_count": spec.vcpu_count,
                "mem_size_mib": spec.mem_mib,
                "smt": false,
            },
            "vsock": {
                "guest_cid": GUEST_CID,
                "uds_path": spec.channel_socket(),
            },
            "logger": {
                "log_path": log_file(spec),
                "level": "Info",
            },
        })
    }

    /// Writes [`Firecracker::config`] as pretty JSON to `<vm_dir>/firecracker-config.json`
    /// and creates (empties) the logger file, which Firecracker requires to exist.
    pub fn write_config(&self, spec: &LaunchSpec) -> Result<PathBuf> {
        let path = spec.vm_dir.join(CONFIG_FILE);
        let mut text = serde_json::to_string_pretty(&self.config(spec)).expect("JSON values serialise");
        text.push('\n');
        std::fs::write(&path, text).ctx("write", &path)?;
        let log = log_file(spec);
        std::fs::File::create(&log).ctx("create", &log)?;
        Ok(path)
    }

    /// Writes the config and starts Firecracker for `spec`: stale sockets removed, stdout
    /// (the guest console) to the capped serial log and stderr to the capped VMM log,
    /// confined and tied to this process (see `spawn`), its own process group, killed
    /// when the returned child is dropped. Returns once the API socket answers; fails with
    /// the end of the logs if Firecracker exits first (e.g. it rejected the config).
    pub async fn launch(&self, spec: &LaunchSpec) -> Result<Child> {
        let config = self.write_config(spec)?;
        let api = api_socket(spec);
        remove_stale(&api);
        remove_stale(&spec.channel_socket());
        let args = vec!["--api-sock".into(), api.display().to_string(), "--config-file".into(), config.display().to_string()];
        let mut child = spawn_confined(&self.binary, args, false, &spec.serial_log(), &spec.vmm_log())?;
        let deadline = Instant::now() + API_READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().ctx("wait for", &self.binary)? {
                return Err(Error::Vmm(format!("firecracker exited during startup ({status}): {}", startup_failure(spec))));
            }
            if instance_info(&api).await.is_ok() {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = stop(&mut child, spec).await;
                return Err(Error::Vmm(format!(
                    "firecracker did not answer on its API socket within {}s: {}",
                    API_READY_TIMEOUT.as_secs(),
                    startup_failure(spec)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Firecracker::launch`] followed by [`connect_agent`]; stops the VM again if the
    /// agent does not answer within `connect_timeout`.
    pub async fn launch_connected(&self, spec: &LaunchSpec, connect_timeout: Duration) -> Result<Launched> {
        if spec.network {
            return Err(network_unsupported());
        }
        let mut child = self.launch(spec).await?;
        match connect_agent(spec, connect_timeout).await {
            Ok(channel) => {
                // The API could re-point a drive at any host file; once the guest runs,
                // nobody needs it, so its socket path goes away.
                remove_stale(&api_socket(spec));
                let vmm_pid = child.id();
                Ok(Launched { child, vmm_pid, channel })
            }
            Err(e) => {
                let _ = stop(&mut child, spec).await;
                Err(e)
            }
        }
    }
}

/// Parses `Firecracker vX.Y.Z` from `--version` output.
fn parse_version(stdout: &str) -> Option<String> {
    let first = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    first.starts_with("Firecracker v").then(|| first.to_string())
}

/// The most telling line of the VM's logs after a failed start: Firecracker prints
/// config errors to stderr (the VMM log) or, once its logger is set up, to the log file.
fn startup_failure(spec: &LaunchSpec) -> String {
    let mut serial = crate::console_log::tail(&spec.serial_log());
    serial.push_str(&crate::console_log::tail(&spec.vmm_log()));
    let log = crate::console_log::tail(&log_file(spec));
    let interesting =
        |text: &str| text.lines().rev().map(str::trim).find(|l| l.contains("Error") || l.contains("error") || l.contains("failed")).map(strip_log_prefix);
    interesting(&serial)
        .or_else(|| interesting(&log))
        .unwrap_or_else(|| strip_log_prefix(crate::console_log::last_line(if serial.trim().is_empty() { &log } else { &serial })))
}

/// Drops Firecracker's `<timestamp> [<id>:<thread>] ` log prefix.
fn strip_log_prefix(line: &str) -> String {
    match (line.find(" ["), line.find("] ")) {
        (Some(open), Some(close)) if open < close && line[..open].starts_with(|c: char| c.is_ascii_digit()) => line[close + 2..].trim().to_string(),
        _ => line.trim().to_string(),
    }
}

/// Stops a Firecracker we launched: SIGTERM, up to 5 s grace, then SIGKILL; reaps it and
/// removes its sockets. Stopping an already exited process only cleans up.
pub async fn stop(child: &mut Child, spec: &LaunchSpec) -> Result<()> {
    if child.try_wait().ctx("wait for", "firecracker")?.is_none() {
        if let Some(pid) = child.id() {
            // SAFETY: plain syscall; `pid` is our unreaped child, so it cannot be reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
            let _ = child.start_kill();
            child.wait().await.ctx("wait for", "firecracker")?;
        }
    }
    remove_stale(&api_socket(spec));
    remove_stale(&spec.channel_socket());
    Ok(())
}

/// A response of the Firecracker API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
}

/// `GET /` on the API socket: `{"id", "state", "vmm_version", "app_name"}`. `state` is
/// `Running` once a config-file boot started (even if the guest kernel is stuck).
pub async fn instance_info(api_sock: &Path) -> Result<Value> {
    let response = api_request(api_sock, "GET", "/", None).await?;
    response.body.ok_or_else(|| Error::Vmm("firecracker API returned no instance info".into()))
}

/// One HTTP/1.1 request to the Firecracker API over its unix socket. Non-2xx answers are
/// errors carrying Firecracker's `fault_message`.
pub async fn api_request(api_sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<ApiResponse> {
    let exchange = async {
        let mut stream = UnixStream::connect(api_sock).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if !body.is_empty() {
            request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).await?;
        read_response(&mut stream).await
    };
    let (status, body) = match tokio::time::timeout(API_REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(Error::Vmm(format!("firecracker API {method} {path} at {} failed: {e}", api_sock.display()))),
        Err(_) => return Err(Error::Vmm(format!("firecracker API {method} {path} at {} timed out", api_sock.display()))),
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice::<Value>(&body).map_err(|e| Error::Vmm(format!("firecracker API {method} {path} returned invalid JSON: {e}")))?)
    };
    if !(200..300).contains(&status) {
        let fault = body.as_ref().and_then(|b| b.get("fault_message")).and_then(Value::as_str).unwrap_or("no details");
        return Err(Error::Vmm(format!("firecracker API {method} {path} failed with HTTP {status}: {fault}")));
    }
    Ok(ApiResponse { status, body })
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length` body).
async fn read_response(stream: &mut UnixStream) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |what: &str| std::io::Error::new(ErrorKind::InvalidData, format!("malformed HTTP response: {what}"));
    let mut buf = Vec::with_capacity(1024);
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return Err(invalid("headers too long"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed before the headers ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| invalid("headers are not UTF-8"))?;
    let (status, content_length) = parse_head(head).ok_or_else(|| invalid(head.lines().next().unwrap_or("")))?;
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = vec![0u8; content_length - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed inside the body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    Ok((status, body))
}

/// Status code and `Content-Length` (0 if absent) of a response head.
fn parse_head(head: &str) -> Option<(u16, usize)> {
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let mut length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    Some((status, length))
}

/// Connects to the guest agent through the hybrid-vsock socket of `spec`
/// (`CONNECT 5005` handshake), retrying until `timeout` (the guest may still be booting).
pub async fn connect_agent(spec: &LaunchSpec, timeout: Duration) -> Result<UnixStream> {
    let socket = spec.channel_socket();
    let deadline = Instant::now() + timeout;
    loop {
        // Firecracker drops an unanswered connection request after a while; do not wait
        // past our own deadline for that.
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let last_error = match tokio::time::timeout(remaining, connect_firecracker_vsock(&socket, AGENT_PORT)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer from the guest".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Vmm(format!("guest agent did not answer on vsock port {AGENT_PORT} within {:.1}s: {last_error}", timeout.as_secs_f32())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies `src` to `dst`: a reflink (`FICLONE`) if the filesystem can, else a sparse
/// copy that skips holes and all-zero blocks.
fn copy_disk(src: &Path, dst: &Path) -> Result<()> {
    let input = std::fs::File::open(src).ctx("open", src)?;
    let len = input.metadata().ctx("stat", src)?.len();
    let _ = std::fs::remove_file(dst);
    let output = std::fs::File::options().write(true).create_new(true).open(dst).ctx("create", dst)?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    if unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) } == 0 {
        return Ok(());
    }
    sparse_copy(&input, &output, len).ctx("copy to", dst)?;
    output.set_len(len).ctx("resize", dst)?;
    Ok(())
}

fn sparse_copy(input: &std::fs::File, output: &std::fs::File, len: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        // Jump over holes where the filesystem reports them (ENXIO: no data after offset).
        let (data, hole) = match seek(input, offset, libc::SEEK_DATA) {
            Ok(data) if data >= len => break,
            Ok(data) => (data, seek(input, data, libc::SEEK_HOLE).unwrap_or(len).min(len)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => (offset, len),
        };
        let mut pos = data;
        while pos < hole {
            let want = ((hole - pos) as usize).min(CHUNK);
            let n = input.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n].iter().any(|b| *b != 0) {
                output.write_all_at(&buf[..n], pos)?;
            }
            pos += n as u64;
        }
        offset = hole;
    }
    Ok(())
}

/// `lseek(SEEK_DATA|SEEK_HOLE)`.
fn seek(file: &std::fs::File, offset: u64, whence: libc::c_int) -> std::io::Result<u64> {
    // SAFETY: lseek on an open fd; the file position is not used by positional I/O.
    let pos = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if pos < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(pos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_first_line_only() {
        let out = "Firecracker v1.12.1\n\n2026-01-01T00:00:00 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0";
        assert_eq!(parse_version(out).as_deref(), Some("Firecracker v1.12.1"));
        assert_eq!(parse_version("qemu 8\n"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn response_heads() {
        let head = "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 93";
        assert_eq!(parse_head(head), Some((200, 93)));
        assert_eq!(parse_head("HTTP/1.1 204 \r\nServer: Firecracker API"), Some((204, 0)));
        assert_eq!(parse_head("garbage"), None);
    }

    #[test]
    fn log_prefix_is_dropped() {
        assert_eq!(strip_log_prefix("2026-11-26T23:36:25.641550102 [anonymous-instance:main] Running Firecracker v1.12.1"), "Running Firecracker v1.12.1");
        assert_eq!(strip_log_prefix("Error: [x] y"), "Error: [x] y");
    }

    #[test]
    fn sparse_copy_preserves_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let file = std::fs::File::create(&src).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(b"superblock", 1024).unwrap();
        file.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(file);
        let disk = prepare_disk(&src, dir.path()).unwrap();
        assert_eq!(disk, dir.path().join(DISK_FILE));
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&disk).unwrap());
        // Preparing again replaces the previous copy.
        prepare_disk(&src, dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
        // Whether reflinked or sparse-copied, the copy does not allocate the zeros.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&disk).unwrap().blocks() * 512 < 8 << 20);
    }
}
