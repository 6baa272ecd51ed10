//! The per-VM supervisor: a detached process (like a container shim) that owns the VMM
//! process and the guest channel for the VM's whole life.
//!
//! It binds `control.sock` in the VM directory before launching, waits for the agent's
//! hello within the boot timeout (reporting a kernel panic or early VMM exit with the
//! serial log tail), then relays the framed protocol between any number of CLI clients
//! and the guest, remapping stream ids so clients never see each other. It stops the VM
//! when the TTL passes, when the owning CLI process dies (`pyro run`), or on SIGTERM, and
//! records what happened in `supervisor.json`.

use crate::env_vars;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyro_protocol::{read_frame, write_frame, Frame, FrameKind, GuestIdentity, Hello, HostHello, Request, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::record::VmRecord;
use super::relay::{accept_clients, pump_guest, Relay};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};
use crate::vmm::{self, BackendKind, Launched};

/// Control socket file name inside the VM directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Status file name inside the VM directory.
pub const STATUS_FILE: &str = "supervisor.json";
/// The running VMM's identity (pid and start time), so a VMM left behind by a killed
/// supervisor can be found and stopped.
pub const VMM_IDENTITY_FILE: &str = "vmm.json";
/// Held (flock) by the supervisor and inherited by its VMM for their whole lives: while
/// either runs, no second supervisor can boot this VM's disk.
pub const RUN_LOCK_FILE: &str = "run.lock";
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// The words a boot-timeout error contains (the KVM check tells timeouts apart by them).
pub(crate) const BOOT_TIMEOUT_MARK: &str = "did not answer within";
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The signal that stops a VM without the agent's shutdown: its disk is being discarded.
pub(crate) const DISCARD_SIGNAL: libc::c_int = libc::SIGUSR1;

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
    /// How the guest came up: `restored` (from a warm template) or `booted`.
    #[serde(default)]
    pub start_mode: Option<String>,
    /// Why a restore was given up for a cold boot.
    #[serde(default)]
    pub warm_fallback: Option<String>,
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
    std::env::var(env_vars::BOOT_TIMEOUT_SECONDS)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT)
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
    let mut child = command.spawn().map_err(|e| Error::Vmm(format!("cannot start the VM supervisor: {e}")))?;
    let pid = child.id();
    // Reap it when it exits, so long-lived hosts (the MCP server, the SDK's child)
    // collect no zombies.
    std::thread::spawn(move || child.wait());
    Ok(pid)
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
    let mut status =
        SupervisorStatus { pid, phase: Phase::Booting, boot_ms: None, hello: None, error: None, updated_at: unix_now(), start_mode: None, warm_fallback: None };
    status.store(&vm_dir);

    // One supervisor per VM: the run lock is held by a live supervisor or by a VMM that
    // outlived one. Wait briefly for a predecessor that is shutting down.
    let run_lock = acquire_run_lock(&vm_dir).await?;
    let control_path = vm_dir.join(CONTROL_SOCKET);
    vmm::remove_stale(&control_path);
    let listener = UnixListener::bind(&control_path).ctx("bind", &control_path)?;
    let (ready_tx, ready_rx) = watch::channel::<Option<Result<Hello, String>>>(None);
    let relay = Relay::new();
    tokio::spawn(accept_clients(listener, relay.clone(), ready_rx));

    let started = Instant::now();
    let mut outcome = boot_holding(&record, boot_timeout(), Some(&run_lock)).await;
    if let (Err(reason), Some(from)) = (&outcome, &record.launch.restore) {
        // Correctness first: a state that would not restore is never tried again, and
        // this start boots cold.
        from.discard_template();
        status.warm_fallback = Some(reason.clone());
        outcome = boot_cold_after(&record, from, &run_lock).await;
    }
    status.start_mode = Some(if record.launch.restore.is_some() && status.warm_fallback.is_none() { "restored" } else { "booted" }.into());
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
    if let Some(settings) = &record.network {
        // Both live as long as this process: the VM's end closes every listener.
        tokio::spawn(crate::network::gateway::serve(vm_dir.clone(), record.launch.network_socket(), settings.clone()));
        if settings.publish_ports {
            tokio::spawn(crate::network::publish::serve(vm_dir.clone(), control_path.clone()));
        }
    }

    let vmm_exit = |exit: std::io::Result<std::process::ExitStatus>| match exit {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("the VMM exited unexpectedly ({s}); serial log: {}", serial_tail(&record))),
        Err(e) => Some(format!("lost the VMM process: {e}")),
    };
    let mut discarded = false;
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
        discard = termination_signal() => { discarded = discard; None },
    };
    // Ephemeral VMs whose TTL passed or whose owner died leave nothing behind; a VM
    // stopped on request (SIGTERM from `stop`/`delete`) or for idleness is left as is.
    let remove_vm = matches!(status.error.as_deref(), Some("ttl expired" | "owning process exited")) && reason.is_none();
    let (exited_already, error) = match reason {
        Some(error) => (true, error),
        None => (false, status.error.clone()),
    };
    if !exited_already && discarded {
        vmm::kill_group(&mut child);
        let _ = child.wait().await;
    } else if !exited_already {
        // Ask the agent to sync and power off; force the VMM down if it does not.
        let _ = guest_tx.send(Frame::json(relay.next_stream(), FrameKind::Request, &Request::Shutdown)).await;
        if tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await.is_err() {
            vmm::kill_group(&mut child);
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
    let _ = std::fs::remove_file(record.launch.network_socket());
    let _ = std::fs::remove_file(vm_dir.join(crate::network::publish::PORTS_SOCKET));
    let _ = std::fs::remove_file(vm_dir.join(VMM_IDENTITY_FILE));
    if remove_vm {
        let _ = std::fs::remove_dir_all(&vm_dir);
    }
    Ok(())
}

/// Takes the VM's run lock, waiting up to a few seconds for a previous holder to exit.
async fn acquire_run_lock(vm_dir: &Path) -> Result<std::fs::File> {
    let path = vm_dir.join(RUN_LOCK_FILE);
    for _ in 0..100 {
        if let Some(lock) = crate::fsutil::try_lock_file(&path)? {
            return Ok(lock);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Conflict("this VM is already running under another supervisor (or its VMM outlived one)".into()))
}

/// The cold boot that replaces a failed restore: an overlay disk copied from the
/// template is re-created on the base image first.
async fn boot_cold_after(record: &VmRecord, from: &vmm::RestoreFrom, run_lock: &std::fs::File) -> Result<(tokio::process::Child, Hello, UnixStream), String> {
    let mut cold = record.clone();
    cold.launch.restore = None;
    if let Some(base) = &from.cold_base {
        let binary = vmm::qemu::locate().ok_or("qemu-system-x86_64 is not installed")?;
        let _ = std::fs::remove_file(&cold.launch.disk);
        vmm::qemu::Qemu::new(binary, vmm::qemu::Accel::Tcg).prepare_disk(base, &cold.launch.vm_dir).map_err(|e| e.to_string())?;
    }
    boot_holding(&cold, boot_timeout(), Some(run_lock)).await
}

/// Launches the VMM and waits for the agent's hello; errors are user-facing one-liners.
pub(crate) async fn boot(record: &VmRecord, timeout: Duration) -> Result<(tokio::process::Child, Hello, UnixStream), String> {
    boot_holding(record, timeout, None).await
}

/// [`boot`], with the VMM inheriting `run_lock` and its identity recorded in the VM
/// directory.
async fn boot_holding(record: &VmRecord, timeout: Duration, run_lock: Option<&std::fs::File>) -> Result<(tokio::process::Child, Hello, UnixStream), String> {
    let spec = &record.launch;
    let began = Instant::now();
    let _inherit = run_lock.map(vmm::InheritedFd::new);
    let launched = match record.backend {
        BackendKind::QemuTcg | BackendKind::QemuKvm => {
            let accel = if record.backend == BackendKind::QemuKvm { vmm::qemu::Accel::Kvm } else { vmm::qemu::Accel::Tcg };
            let binary = vmm::qemu::locate().ok_or("qemu-system-x86_64 is not installed")?;
            let qemu = vmm::qemu::Qemu::new(binary, accel);
            match &spec.restore {
                Some(from) => qemu.launch_restored(spec, from, Duration::from_secs(10)).await,
                None => qemu.launch(spec, Duration::from_secs(10)).await,
            }
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
    let Launched { mut child, vmm_pid, channel } = launched.map_err(|e| e.to_string())?;
    tracing::debug!("VMM launched ({}) in {} ms", if spec.restore.is_some() { "state restored" } else { "booting" }, began.elapsed().as_millis());
    if let Some(identity) = vmm_pid.and_then(crate::host_process::ProcessIdentity::of) {
        if let Err(e) = identity.store(&record.dir().join(VMM_IDENTITY_FILE)) {
            tracing::warn!("cannot record the VMM's identity: {e}");
        }
    }
    let (mut read, mut write) = channel.into_split();
    // A restored guest is up within milliseconds of its state loading, but QEMU may
    // take in a knock only on its next poll of the channel: knock often. A booting
    // guest needs a second or so; knocks pile up unanswered meanwhile, so fewer.
    let knock_every = Duration::from_millis(if spec.restore.is_some() { 10 } else { 200 });
    // One MAC per start: every knock repeats the same configuration.
    let network = record.network.as_ref().map(|_| crate::network::guest_config(crate::network::fresh_mac()));
    let knock = async {
        loop {
            let frame = Frame::json(0, FrameKind::Hello, &HostHello { identity: Some(fresh_identity()), network: network.clone() });
            if write_frame(&mut write, &frame).await.is_err() {
                return;
            }
            tokio::time::sleep(knock_every).await;
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
        _ = tokio::time::sleep(timeout) => Err(format!("the guest agent {BOOT_TIMEOUT_MARK} {}s (boot timeout; raise {boot_timeout_seconds_var})", timeout.as_secs(), boot_timeout_seconds_var = env_vars::BOOT_TIMEOUT_SECONDS)),
    };
    tracing::debug!("agent answered after {} ms", began.elapsed().as_millis());
    match outcome {
        Ok(hello) if pyro_protocol::is_supported_version(hello.protocol_version) => {
            let channel = read.reunite(write).map_err(|e| e.to_string())?;
            Ok((child, hello, channel))
        }
        Ok(hello) => {
            vmm::kill_group(&mut child);
            Err(crate::guest::GuestError::ProtocolMismatch {
                agent: hello.protocol_version,
                min_supported: pyro_protocol::MIN_SUPPORTED_PROTOCOL_VERSION,
                current: PROTOCOL_VERSION,
            }
            .to_string())
        }
        Err(reason) => {
            vmm::kill_group(&mut child);
            let _ = child.wait().await;
            Err(format!("guest boot failed: {reason}; serial log: {}", serial_tail(record)))
        }
    }
}

/// A new identity for the guest: host entropy, the host's clock now, a random machine id.
fn fresh_identity() -> GuestIdentity {
    let mut bytes = [0u8; GuestIdentity::ENTROPY_BYTES + 16];
    // SAFETY: getrandom fills the buffer it is given; a short read leaves zeros, which
    // only weakens the extra seed (the guest's own pool stays as good as before).
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let (entropy, id) = bytes.split_at(GuestIdentity::ENTROPY_BYTES);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    GuestIdentity { entropy_hex: hex::encode(entropy), unix_time_ns: now.as_nanos() as u64, machine_id: hex::encode(id) }
}

/// The last lines of the guest console (and the VMM's stderr), folded into one line;
/// only the ends of the capped logs are read.
pub fn serial_tail(record: &VmRecord) -> String {
    let mut text = crate::console_log::tail(&record.launch.serial_log());
    text.push_str(&crate::console_log::tail(&record.launch.vmm_log()));
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

async fn ttl_expired(record: &VmRecord) {
    let remaining = (record.expires_at - unix_now()).max(0.0);
    // A corrupt record (huge, infinite or NaN expiry) means "never", not a panic.
    match Duration::try_from_secs_f64(remaining) {
        Ok(remaining) => tokio::time::sleep(remaining).await,
        Err(_) => std::future::pending().await,
    }
}

/// Resolves when the owner `pid` exits (never when there is no owner). The owner is
/// identified by pid and start time when the supervisor starts, so a reused pid does
/// not keep the VM alive.
async fn owner_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    let Some(owner) = crate::host_process::ProcessIdentity::of(pid) else { return };
    while owner.is_alive() {
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

/// Resolves on SIGTERM, SIGINT or SIGHUP (false: stop gracefully) or on
/// [`DISCARD_SIGNAL`] (true: the disk is being discarded, kill the VMM at once).
async fn termination_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut discard)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()), signal(SignalKind::from_raw(DISCARD_SIGNAL)))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => false,
        _ = int.recv() => false,
        _ = hup.recv() => false,
        _ = discard.recv() => true,
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
