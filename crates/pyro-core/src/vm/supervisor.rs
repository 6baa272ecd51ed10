//! The per-VM supervisor: a detached process (like a container shim) that owns the VMM
//! process and the guest channel for the VM's whole life.
//!
//! It binds `control.sock` in the VM directory before launching, waits for the agent's
//! hello within the boot timeout (reporting a kernel panic or early VMM exit with the
//! serial log tail), then relays the framed protocol between any number of CLI clients
//! and the guest, remapping stream ids so clients never see each other. It stops the VM
//! when the TTL passes, when the owning CLI process dies (`pyro run`), or on SIGTERM, and
//! records what happened in `supervisor.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyro_protocol::{read_frame, write_frame, Frame, FrameKind, Hello, Request, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::record::VmRecord;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};
use crate::vmm::{self, BackendKind, Launched};

/// Control socket file name inside the VM directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Status file name inside the VM directory.
pub const STATUS_FILE: &str = "supervisor.json";
/// Environment variable overriding the boot timeout (seconds).
pub const BOOT_TIMEOUT_ENV: &str = "PYRO_BOOT_TIMEOUT_SECONDS";
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Supervisor phase, as recorded in `supervisor.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Launching the VMM and waiting for the agent.
    Booting,
    /// The agent answered; requests are relayed.
    Ready,
    /// The VM ended (normally or not).
    Exited,
    /// The VM never became ready.
    Failed,
}

/// Contents of `supervisor.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// Supervisor process id.
    pub pid: u32,
    /// Phase.
    pub phase: Phase,
    /// Milliseconds from launch to the agent's hello.
    pub boot_ms: Option<u64>,
    /// The agent's hello.
    pub hello: Option<Hello>,
    /// Why the VM failed or stopped, if not on request.
    pub error: Option<String>,
    /// Unix seconds of the last update.
    pub updated_at: f64,
}

impl SupervisorStatus {
    /// Reads the status of the VM in `vm_dir`, if any.
    pub fn load(vm_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(vm_dir.join(STATUS_FILE)).ok()?).ok()
    }

    fn store(&self, vm_dir: &Path) {
        let json = serde_json::to_vec_pretty(self).expect("status serialises");
        if let Err(e) = write_atomic(&vm_dir.join(STATUS_FILE), &json) {
            tracing::warn!("cannot record supervisor status: {e}");
        }
    }
}

/// The configured boot timeout.
pub fn boot_timeout() -> Duration {
    std::env::var(BOOT_TIMEOUT_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|s| *s > 0).map(Duration::from_secs).unwrap_or(DEFAULT_BOOT_TIMEOUT)
}

/// Spawns the supervisor of `vm_dir` as a detached process (own session, no terminal)
/// running `<pyro> __supervise <vm_dir>`; returns its pid.
pub fn spawn(vm_dir: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = crate::paths::pyro_binary()?;
    let log = std::fs::File::create(vm_dir.join("supervisor.log")).ctx("create", vm_dir.join("supervisor.log"))?;
    let mut command = std::process::Command::new(exe);
    command.arg("__supervise").arg(vm_dir).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| Error::Vmm(format!("cannot start the VM supervisor: {e}")))?;
    Ok(child.id())
}

/// Whether `pid` is a live supervisor of `vm_dir` (guards against PID reuse).
pub fn is_alive(pid: u32, vm_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // A zombie (state Z) has exited already.
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    state != "Z" && args.contains(&b"__supervise".as_slice()) && args.contains(&vm_dir.as_os_str().as_encoded_bytes())
}

/// Entry point of the supervisor process.
pub async fn run(vm_dir: PathBuf) -> Result<()> {
    let record = VmRecord::load(&vm_dir)?;
    let pid = std::process::id();
    let mut status = SupervisorStatus { pid, phase: Phase::Booting, boot_ms: None, hello: None, error: None, updated_at: unix_now() };
    status.store(&vm_dir);

    let control_path = vm_dir.join(CONTROL_SOCKET);
    vmm::remove_stale(&control_path);
    let listener = UnixListener::bind(&control_path).ctx("bind", &control_path)?;
    let (ready_tx, ready_rx) = watch::channel::<Option<Result<Hello, String>>>(None);
    let relay = Relay::new();
    tokio::spawn(accept_clients(listener, relay.clone(), ready_rx));

    let started = Instant::now();
    let outcome = boot(&record, boot_timeout()).await;
    let (mut child, hello, channel) = match outcome {
        Ok(parts) => parts,
        Err(message) => {
            status.phase = Phase::Failed;
            status.error = Some(message.clone());
            status.updated_at = unix_now();
            status.store(&vm_dir);
            let _ = ready_tx.send(Some(Err(message)));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = std::fs::remove_file(&control_path);
            return Ok(());
        }
    };
    status.phase = Phase::Ready;
    status.boot_ms = Some(started.elapsed().as_millis() as u64);
    status.hello = Some(hello.clone());
    status.updated_at = unix_now();
    status.store(&vm_dir);

    let (guest_read, guest_write) = channel.into_split();
    let guest_tx = spawn_guest_writer(guest_write);
    relay.attach_guest(guest_tx.clone());
    let _ = ready_tx.send(Some(Ok(hello)));
    let mut guest_reader = tokio::spawn(pump_guest(guest_read, relay.clone()));

    let vmm_exit = |exit: std::io::Result<std::process::ExitStatus>| match exit {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("the VMM exited unexpectedly ({s}); serial log: {}", serial_tail(&record))),
        Err(e) => Some(format!("lost the VMM process: {e}")),
    };
    let reason = tokio::select! {
        exit = child.wait() => Some(vmm_exit(exit)),
        _ = &mut guest_reader => Some(match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            // The channel usually closes because the VMM died; report that.
            Ok(exit) => vmm_exit(exit),
            Err(_) => Some(format!("the guest channel closed; serial log: {}", serial_tail(&record))),
        }),
        _ = ttl_expired(&record) => { status.error = Some("ttl expired".into()); None },
        _ = owner_gone(record.owner_pid) => { status.error = Some("owning process exited".into()); None },
        idle = idle_for(&relay, record.idle_stop_seconds) => { status.error = Some(format!("stopped after {idle}s without activity")); None },
        _ = termination_signal() => None,
    };
    // Ephemeral VMs whose TTL passed or whose owner died leave nothing behind; a VM
    // stopped on request (SIGTERM from `stop`/`delete`) or for idleness is left as is.
    let remove_vm = matches!(status.error.as_deref(), Some("ttl expired" | "owning process exited")) && reason.is_none();
    let (exited_already, error) = match reason {
        Some(error) => (true, error),
        None => (false, status.error.clone()),
    };
    if !exited_already {
        // Ask the agent to sync and power off; force the VMM down if it does not.
        let _ = guest_tx.send(Frame::json(relay.next_stream(), FrameKind::Request, &Request::Shutdown)).await;
        if tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    relay.close_all();
    status.phase = Phase::Exited;
    status.error = error;
    status.updated_at = unix_now();
    status.store(&vm_dir);
    let _ = std::fs::remove_file(&control_path);
    let _ = std::fs::remove_file(record.launch.channel_socket());
    if remove_vm {
        let _ = std::fs::remove_dir_all(&vm_dir);
    }
    Ok(())
}

/// Launches the VMM and waits for the agent's hello; errors are user-facing one-liners.
pub(crate) async fn boot(record: &VmRecord, timeout: Duration) -> Result<(tokio::process::Child, Hello, UnixStream), String> {
    let spec = &record.launch;
    let launched = match record.backend {
        BackendKind::QemuTcg | BackendKind::QemuKvm => {
            let accel = if record.backend == BackendKind::QemuKvm { vmm::qemu::Accel::Kvm } else { vmm::qemu::Accel::Tcg };
            let binary = vmm::qemu::locate().ok_or("qemu-system-x86_64 is not installed")?;
            vmm::qemu::Qemu::new(binary, accel).launch(spec, Duration::from_secs(10)).await
        }
        BackendKind::Firecracker => {
            let binary = vmm::firecracker::locate().ok_or("firecracker is not installed")?;
            vmm::firecracker::Firecracker::new(binary).launch_connected(spec, timeout).await
        }
        BackendKind::HostCompat => {
            let agent = crate::paths::agent_binary().map_err(|e| e.to_string())?;
            vmm::host_compat::launch(&agent, spec, Duration::from_secs(10)).await
        }
    };
    let Launched { mut child, channel } = launched.map_err(|e| e.to_string())?;
    let (mut read, mut write) = channel.into_split();
    let knock = async {
        loop {
            let frame = Frame::json(0, FrameKind::Hello, &serde_json::json!({}));
            if write_frame(&mut write, &frame).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let hello = async {
        loop {
            match read_frame(&mut read).await {
                Ok(Some(frame)) if frame.kind == FrameKind::Hello => return frame.parse_json::<Hello>().map_err(|e| e.to_string()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the guest channel closed before the agent said hello".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let outcome = tokio::select! {
        hello = hello => hello,
        _ = knock => Err("the guest channel closed".into()),
        exit = child.wait() => Err(format!("the VMM exited during boot ({})", exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
        _ = tokio::time::sleep(timeout) => Err(format!("the guest agent did not answer within {}s (boot timeout; raise {BOOT_TIMEOUT_ENV})", timeout.as_secs())),
    };
    match outcome {
        Ok(hello) if hello.protocol_version == PROTOCOL_VERSION => {
            let channel = read.reunite(write).map_err(|e| e.to_string())?;
            Ok((child, hello, channel))
        }
        Ok(hello) => {
            let _ = child.start_kill();
            Err(format!("guest agent speaks protocol {} but this pyro speaks {PROTOCOL_VERSION}; re-pull the environment", hello.protocol_version))
        }
        Err(reason) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(format!("guest boot failed: {reason}; serial log: {}", serial_tail(record)))
        }
    }
}

/// The last lines of the guest console, folded into one line.
pub fn serial_tail(record: &VmRecord) -> String {
    let mut text = std::fs::read(record.launch.serial_log()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    if let Ok(vmm_log) = std::fs::read_to_string(record.dir().join("vmm.log")) {
        text.push_str(&vmm_log);
    }
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

async fn ttl_expired(record: &VmRecord) {
    let remaining = (record.expires_at - unix_now()).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(remaining)).await;
}

/// Resolves when `pid` exits (never when there is no owner).
async fn owner_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    loop {
        // SAFETY: kill with signal 0 only checks for existence.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resolves once no request has been open or started for `seconds` (never without a limit).
async fn idle_for(relay: &Relay, seconds: Option<u64>) -> u64 {
    let Some(seconds) = seconds else { return std::future::pending().await };
    let limit = Duration::from_secs(seconds);
    loop {
        let idle = relay.idle_time();
        if idle >= limit {
            return seconds;
        }
        tokio::time::sleep((limit - idle).max(Duration::from_secs(1))).await;
    }
}

async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

fn spawn_guest_writer(mut write: tokio::net::unix::OwnedWriteHalf) -> mpsc::Sender<Frame> {
    let (tx, mut rx) = mpsc::channel::<Frame>(256);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut write, &frame).await.is_err() {
                break;
            }
        }
    });
    tx
}

/// Routes frames between clients and the guest.
#[derive(Clone)]
struct Relay {
    inner: Arc<Mutex<RelayState>>,
    next_stream: Arc<AtomicU32>,
}

struct RelayState {
    /// Last time a client sent a frame or a request was open.
    last_activity: Instant,
    guest: Option<mpsc::Sender<Frame>>,
    clients: HashMap<u64, mpsc::UnboundedSender<Frame>>,
    /// guest stream → (client, client stream)
    routes: HashMap<u32, (u64, u32)>,
    /// (client, client stream) → guest stream
    reverse: HashMap<(u64, u32), u32>,
    next_client: u64,
}

impl Default for RelayState {
    fn default() -> Self {
        Self { last_activity: Instant::now(), guest: None, clients: HashMap::new(), routes: HashMap::new(), reverse: HashMap::new(), next_client: 0 }
    }
}

impl Relay {
    fn new() -> Self {
        Self { inner: Arc::new(Mutex::new(RelayState::default())), next_stream: Arc::new(AtomicU32::new(1)) }
    }

    fn next_stream(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// How long nothing has happened: zero while any request is open.
    fn idle_time(&self) -> Duration {
        let mut state = self.inner.lock().expect("relay lock");
        if !state.routes.is_empty() {
            state.last_activity = Instant::now();
        }
        state.last_activity.elapsed()
    }

    fn attach_guest(&self, tx: mpsc::Sender<Frame>) {
        self.inner.lock().expect("relay lock").guest = Some(tx);
    }

    fn add_client(&self, tx: mpsc::UnboundedSender<Frame>) -> u64 {
        let mut state = self.inner.lock().expect("relay lock");
        state.next_client += 1;
        let id = state.next_client;
        state.clients.insert(id, tx);
        id
    }

    /// Drops a client and cancels whatever it still had running in the guest.
    fn remove_client(&self, client: u64) -> Vec<Frame> {
        let mut state = self.inner.lock().expect("relay lock");
        state.clients.remove(&client);
        let open: Vec<(u32, u32)> = state.reverse.iter().filter(|((c, _), _)| *c == client).map(|((_, s), g)| (*s, *g)).collect();
        open.into_iter()
            .map(|(client_stream, guest_stream)| {
                state.reverse.remove(&(client, client_stream));
                state.routes.remove(&guest_stream);
                Frame::empty(guest_stream, FrameKind::Cancel)
            })
            .collect()
    }

    /// Rewrites a client frame for the guest.
    fn to_guest(&self, client: u64, mut frame: Frame) -> Option<(mpsc::Sender<Frame>, Frame)> {
        let mut state = self.inner.lock().expect("relay lock");
        state.last_activity = Instant::now();
        let guest = state.guest.clone()?;
        let guest_stream = if frame.kind == FrameKind::Request {
            let id = self.next_stream();
            state.routes.insert(id, (client, frame.stream));
            state.reverse.insert((client, frame.stream), id);
            id
        } else {
            *state.reverse.get(&(client, frame.stream))?
        };
        frame.stream = guest_stream;
        Some((guest, frame))
    }

    /// Delivers a guest frame to the client that owns its stream.
    fn to_client(&self, mut frame: Frame) {
        let mut state = self.inner.lock().expect("relay lock");
        let Some(&(client, client_stream)) = state.routes.get(&frame.stream) else { return };
        if frame.kind == FrameKind::Response {
            state.routes.remove(&frame.stream);
            state.reverse.remove(&(client, client_stream));
        }
        frame.stream = client_stream;
        if let Some(tx) = state.clients.get(&client) {
            let _ = tx.send(frame);
        }
    }

    fn close_all(&self) {
        let mut state = self.inner.lock().expect("relay lock");
        state.clients.clear();
        state.guest = None;
    }
}

async fn pump_guest(mut read: tokio::net::unix::OwnedReadHalf, relay: Relay) {
    while let Ok(Some(frame)) = read_frame(&mut read).await {
        if frame.kind != FrameKind::Hello {
            relay.to_client(frame);
        }
    }
}

async fn accept_clients(listener: UnixListener, relay: Relay, ready: watch::Receiver<Option<Result<Hello, String>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_client(stream, relay.clone(), ready.clone()));
    }
}

async fn serve_client(stream: UnixStream, relay: Relay, mut ready: watch::Receiver<Option<Result<Hello, String>>>) {
    let hello = match ready.wait_for(|state| state.is_some()).await {
        Ok(state) => match state.as_ref() {
            Some(Ok(hello)) => hello.clone(),
            _ => return, // boot failed: closing tells the client to read supervisor.json
        },
        Err(_) => return,
    };
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let _ = tx.send(Frame::json(0, FrameKind::Hello, &hello));
    let client = relay.add_client(tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut write, &frame).await.is_err() {
                break;
            }
        }
    });
    while let Ok(Some(frame)) = read_frame(&mut read).await {
        if frame.kind == FrameKind::Hello {
            let _ = tx.send(Frame::json(0, FrameKind::Hello, &hello));
            continue;
        }
        if let Some((guest, frame)) = relay.to_guest(client, frame) {
            if guest.send(frame).await.is_err() {
                break;
            }
        }
    }
    let cancels = relay.remove_client(client);
    if let Some(guest) = relay.inner.lock().expect("relay lock").guest.clone() {
        for cancel in cancels {
            let _ = guest.try_send(cancel);
        }
    }
    drop(tx);
    writer.abort();
}
