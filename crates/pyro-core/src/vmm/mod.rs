//! VMM backends: how a guest is launched and how the host reaches its agent.
//!
//! Three backends sit behind one enum: Firecracker (KVM only), QEMU `-M microvm` (KVM or
//! TCG software emulation) and `host_compat` (the same agent as a host process, no
//! isolation, opt-in only). [`select`] decides which one this host uses.

pub mod firecracker;
pub mod guard;
pub mod host_compat;
pub mod qemu;
pub mod qmp;
pub mod saved_state;
pub mod select;
mod spawn;

pub use spawn::{kill_group, InheritedFd};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::process::Child;

use crate::error::{Error, Result};

/// Which backend runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Firecracker with KVM.
    Firecracker,
    /// QEMU `-M microvm` with KVM.
    QemuKvm,
    /// QEMU `-M microvm` with TCG software emulation.
    QemuTcg,
    /// The agent as a plain host process (no isolation).
    HostCompat,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        BackendKind::parse(name)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown backend '{name}'; expected one of: firecracker, qemu-kvm, qemu-tcg, host_compat")))
    }
}

impl BackendKind {
    /// Stable name used in flags, environment variables and output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::QemuKvm => "qemu-kvm",
            Self::QemuTcg => "qemu-tcg",
            Self::HostCompat => "host_compat",
        }
    }

    /// Parses [`BackendKind::name`].
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Firecracker, Self::QemuKvm, Self::QemuTcg, Self::HostCompat].into_iter().find(|k| k.name() == name)
    }

    /// What stands between the guest and the host, as a short token for phase lines:
    /// `kvm` (hardware virtualization), `tcg` (QEMU software emulation) or `none`.
    pub fn isolation(self) -> &'static str {
        match self {
            Self::Firecracker | Self::QemuKvm => "kvm",
            Self::QemuTcg => "tcg",
            Self::HostCompat => "none",
        }
    }

    /// [`BackendKind::isolation`] in plain words, for `pyro doctor`.
    pub fn isolation_detail(self) -> &'static str {
        match self {
            Self::Firecracker | Self::QemuKvm => "hardware virtualization (KVM): a guest kernel behind the CPU's virtualization boundary",
            Self::QemuTcg => {
                "software emulation (QEMU TCG), not KVM: a real guest kernel, but no hardware virtualization boundary, and QEMU's security policy does not cover TCG"
            }
            Self::HostCompat => "none: commands run as host processes (host compatibility mode)",
        }
    }

    /// The `execution_mode` reported in results.
    pub fn execution_mode(self) -> &'static str {
        match self {
            Self::HostCompat => "host_compat",
            _ => "guest_vsock",
        }
    }
}

/// Everything needed to launch one VM. Paths live in the VM's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The VM's directory (sockets, logs, disk).
    pub vm_dir: PathBuf,
    /// Guest kernel (ELF vmlinux with PVH note).
    pub kernel: PathBuf,
    /// Per-VM writable root disk (qcow2 overlay for QEMU, raw for Firecracker).
    pub disk: PathBuf,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Full guest console on the serial log (slower boot) instead of errors only.
    pub debug_console: bool,
    /// Restore this saved state instead of booting (the next start only; a warm
    /// template's state, on a disk copied from the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreFrom>,
    /// The guest has a NIC (its frames go to [`LaunchSpec::network_socket`]).
    #[serde(default)]
    pub network: bool,
}

/// A warm template's saved guest state, to restore instead of booting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// The template's directory (removed when its state proves unusable).
    pub template_dir: PathBuf,
    /// The saved state (a QEMU migration stream), read only by pyro, never by the VMM.
    pub state: PathBuf,
    /// Its sha256 (hex), checked while it streams: a mismatch stops the load.
    pub state_sha256: String,
    /// Its size in bytes.
    pub state_bytes: u64,
    /// For an overlay disk: the base image a cold boot re-creates the overlay on, since
    /// the overlay copied from the template is only right for the template's state.
    pub cold_base: Option<PathBuf>,
}

impl RestoreFrom {
    /// Removes the template this state came from (renamed away first, so no other start
    /// picks it up half-removed); the next warm start builds a new one.
    pub fn discard_template(&self) {
        let Some(parent) = self.template_dir.parent() else { return };
        let trash = parent.join(format!(".discarded-{}", uuid::Uuid::new_v4().simple()));
        if std::fs::rename(&self.template_dir, &trash).is_ok() {
            let _ = std::fs::remove_dir_all(&trash);
        }
    }
}

impl LaunchSpec {
    /// Guest console output (a capped log, see [`crate::console_log`]).
    pub fn serial_log(&self) -> PathBuf {
        self.vm_dir.join("serial.log")
    }

    /// The VMM's own stderr (a capped log).
    pub fn vmm_log(&self) -> PathBuf {
        self.vm_dir.join("vmm.log")
    }

    /// Host end of the agent channel.
    pub fn channel_socket(&self) -> PathBuf {
        self.vm_dir.join("agent.sock")
    }

    /// The VMM's end of the guest NIC (QEMU `-netdev stream` listens there; the
    /// supervisor's gateway connects).
    pub fn network_socket(&self) -> PathBuf {
        self.vm_dir.join("net.sock")
    }

    /// The VMM's control socket (QEMU's QMP monitor).
    pub fn monitor_socket(&self) -> PathBuf {
        self.vm_dir.join("qmp.sock")
    }

    /// Where a restoring VMM listens for the saved state.
    pub fn incoming_socket(&self) -> PathBuf {
        self.vm_dir.join("incoming.sock")
    }
}

/// How the guest's final `reboot()` makes the VMM exit: Firecracker watches the keyboard
/// controller (`reboot=k`); QEMU microvm has none and exits at once with a triple fault
/// (`reboot=t`, with `-no-reboot`), where `reboot=k` would cost ~1.5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootMethod {
    /// Keyboard-controller reset.
    Keyboard,
    /// Triple fault.
    TripleFault,
}

/// The kernel command line shared by the guest backends. It follows Firecracker's
/// boot-time gate: no legacy keyboard controller probing, no extra UARTs.
pub fn kernel_cmdline(console: &str, debug_console: bool, reboot: RebootMethod) -> String {
    let verbosity = if debug_console { "loglevel=7" } else { "quiet loglevel=1" };
    let mut args = vec![
        format!("console={console}"),
        verbosity.to_string(),
        format!("reboot={} panic=1 pci=off", if reboot == RebootMethod::Keyboard { "k" } else { "t" }),
        "root=/dev/vda rootfstype=ext4 rw".into(),
        format!("init={}", crate::environments::GUEST_AGENT_PATH),
        "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd".into(),
        "random.trust_cpu=on".into(),
    ];
    if let Some(khz) = host_tsc_khz() {
        // Without it about one TCG boot in six stalls calibrating the TSC.
        args.push(format!("tsc_early_khz={khz}"));
    }
    args.join(" ")
}

/// The host TSC frequency in kHz, from the kernel's boot log or `/proc/cpuinfo`.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

/// A launched VMM process and the connected agent channel.
pub struct Launched {
    /// The VMM (or host agent) process, or the guard in front of it.
    pub child: Child,
    /// The VMM's own pid (differs from the child's when a guard runs it).
    pub vmm_pid: Option<u32>,
    /// Connected byte stream to the guest agent.
    pub channel: UnixStream,
}

/// Connects to `socket` once the freshly spawned `child` (called `what` in errors) listens
/// on it; fails early with the last line of `log` if the child exits first.
pub(crate) async fn connect_when_listening(child: &mut Child, socket: &Path, timeout: Duration, what: &str, log: &Path) -> Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(stream) = UnixStream::connect(socket).await {
            return Ok(stream);
        }
        if let Some(status) = child.try_wait().map_err(|e| Error::Vmm(format!("cannot watch {what}: {e}")))? {
            // Give the drain a moment to flush what the child printed before exiting.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let text = crate::console_log::tail(log);
            return Err(Error::Vmm(format!("{what} exited during startup ({status}): {}", crate::console_log::last_line(&text))));
        }
        if tokio::time::Instant::now() >= deadline {
            kill_group(child);
            let name = socket.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(Error::Vmm(format!("{what} did not open its socket {name} within {}s", timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Removes a stale socket path before a VMM binds it.
pub(crate) fn remove_stale(path: &Path) {
    let _ = std::fs::remove_file(path);
}
