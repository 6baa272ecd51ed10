//! QEMU `-M microvm` backend: KVM when it boots guests, TCG software emulation otherwise.
//!
//! The per-VM disk is a qcow2 overlay on the read-only base rootfs (≈10 ms to create).
//! The agent channel is a virtio-serial port named `pyro.0` whose host end is a unix
//! socket QEMU serves; QEMU waits for us to connect before it starts the guest, so the
//! agent's hello is never lost.

use crate::env_vars;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use super::spawn::{kill_group, running_as_root, spawn_confined, UNPRIVILEGED_USER};
use super::{connect_when_listening, kernel_cmdline, remove_stale, saved_state, LaunchSpec, Launched, RebootMethod, RestoreFrom};
use crate::error::{Error, IoContext, Result};

/// The NIC's MAC as the VMM creates it; the agent sets a fresh one at every start.
const TEMPLATE_MAC: &str = "02:00:00:00:00:01";

/// QEMU's seccomp sandbox: no obsolete syscalls, no new processes, no scheduler or
/// resource changes, and no set*id calls — except that a VMM started by root must drop
/// to [`UNPRIVILEGED_USER`] once its files are open (`-runas`, which runs after the
/// filter is installed); as that user, with no capabilities left, it cannot regain root.
fn sandbox_option(as_root: bool) -> String {
    let elevate = if as_root { "allow" } else { "deny" };
    format!("on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny")
}

/// A path inside a QEMU option string: commas are doubled, so a directory name with a
/// comma cannot end the value and inject options.
fn opt_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// QEMU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// A QEMU binary and the acceleration to use.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    accel: Accel,
    /// pyro runs as root: QEMU drops to an unprivileged user.
    as_root: bool,
}

/// Finds `qemu-system-x86_64` (`$PYRO_QEMU`, else PATH).
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_vars::QEMU).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    find_in_path("qemu-system-x86_64")
}

/// Looks `name` up on `$PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())).unwrap_or(None)
}

impl Qemu {
    /// A QEMU backend using `binary` with `accel`.
    pub fn new(binary: PathBuf, accel: Accel) -> Self {
        Self { binary, accel, as_root: running_as_root() }
    }

    /// The QEMU binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `QEMU emulator version X` first line of `--version`.
    pub fn version(&self) -> Result<String> {
        let out = std::process::Command::new(&self.binary).arg("--version").output().ctx("run", &self.binary)?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string())
    }

    /// Creates the VM's copy-on-write disk over `base` (never modified).
    pub fn prepare_disk(&self, base: &Path, vm_dir: &Path) -> Result<PathBuf> {
        let disk = vm_dir.join("disk.qcow2");
        let qemu_img = self.binary.with_file_name("qemu-img");
        let qemu_img = if qemu_img.is_file() { qemu_img } else { PathBuf::from("qemu-img") };
        let out = std::process::Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(&disk)
            .output()
            .ctx("run", &qemu_img)?;
        if !out.status.success() {
            return Err(Error::Vmm(format!("qemu-img could not create the VM disk: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(disk)
    }

    /// The full QEMU argument list for `spec`.
    pub fn args(&self, spec: &LaunchSpec) -> Vec<String> {
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        };
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        // rtc=on: without the RTC our kernel spends ~1 s probing for it under TCG
        // (measured: `pyro run -- true` median 2.00 s with rtc=off, 0.83 s with rtc=on).
        let (console, serial) = if spec.debug_console { ("ttyS0", "on") } else { ("hvc0", "off") };
        let mut cmdline = kernel_cmdline(console, spec.debug_console, RebootMethod::TripleFault);
        if !spec.debug_console {
            cmdline.push_str(" 8250.nr_uarts=0");
        }
        // Ephemeral VMs run on qcow2 overlays (disposable: no flushes needed); workspaces
        // on their own raw ext4, whose flushes must reach the host disk.
        let (disk_format, cache) = if spec.disk.extension().is_some_and(|e| e == "qcow2") { ("qcow2", "unsafe") } else { ("raw", "writeback") };
        let mut args: Vec<String> = vec![
            "-M".into(),
            format!("microvm,acpi=off,rtc=on,x-option-roms=off,isa-serial={serial}"),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpu_count.to_string(),
            "-m".into(),
            format!("{}M", spec.mem_mib),
            "-nodefaults".into(),
            "-sandbox".into(),
            sandbox_option(self.as_root),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            spec.kernel.display().to_string(),
            "-append".into(),
            cmdline,
            "-drive".into(),
            // auto-read-only=off: saving a warm template drops the disk's write permission;
            // with auto-read-only QEMU would reopen the file by name, which a VMM that
            // dropped its privileges cannot.
            format!("id=root,file={},format={disk_format},if=none,cache={cache},discard=unmap,file.auto-read-only=off", opt_path(&spec.disk)),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-device".into(),
            "virtio-rng-device".into(),
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-chardev".into(),
            // The console goes to QEMU's stdout, a pipe the supervisor drains into a
            // capped log.
            "stdio,id=console,signal=off".into(),
            "-chardev".into(),
            format!("socket,id=agent,path={},server=on,wait=on", opt_path(&spec.channel_socket())),
            "-device".into(),
            "virtserialport,chardev=agent,name=pyro.0,nr=1".into(),
            // The monitor saves warm templates; the state dir holding it is private.
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", opt_path(&spec.monitor_socket())),
        ];
        if spec.network {
            // The guest NIC's frames go to the supervisor's user-space gateway, which
            // connects to this socket (QEMU listens; frames before that are dropped).
            args.extend([
                "-netdev".into(),
                format!("stream,id=net0,server=on,addr.type=unix,addr.path={}", opt_path(&spec.network_socket())),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={TEMPLATE_MAC}"),
            ]);
        }
        if self.as_root {
            args.extend(["-runas".into(), UNPRIVILEGED_USER.into()]);
        }
        if spec.debug_console {
            args.extend(["-serial".into(), "chardev:console".into()]);
        } else {
            args.extend(["-device".into(), "virtconsole,chardev=console,nr=0".into()]);
        }
        args
    }

    /// Starts QEMU and connects to the agent channel (QEMU starts the guest only once we
    /// are connected).
    pub async fn launch(&self, spec: &LaunchSpec, connect_timeout: Duration) -> Result<Launched> {
        let (child, channel) = self.spawn_connected(spec, self.args(spec), connect_timeout).await?;
        Ok(self.launched(child, channel))
    }

    /// Starts QEMU waiting for an incoming state, connects the agent channel (a restored
    /// guest answers only on a channel connected before its state loads), then streams
    /// the saved state in; the guest runs once all of it has loaded.
    pub async fn launch_restored(&self, spec: &LaunchSpec, from: &RestoreFrom, connect_timeout: Duration) -> Result<Launched> {
        let incoming = spec.incoming_socket();
        remove_stale(&incoming);
        let mut args = self.args(spec);
        args.extend(["-incoming".into(), format!("unix:{}", incoming.display())]);
        let (mut child, channel) = self.spawn_connected(spec, args, connect_timeout).await?;
        let fed = async {
            let sink = connect_when_listening(&mut child, &incoming, connect_timeout, "qemu", &spec.vmm_log()).await?;
            saved_state::feed(&from.state, &from.state_sha256, from.state_bytes, sink).await
        };
        if let Err(e) = fed.await {
            kill_group(&mut child);
            let _ = child.wait().await;
            return Err(e);
        }
        let _ = std::fs::remove_file(&incoming);
        Ok(self.launched(child, channel))
    }

    async fn spawn_connected(&self, spec: &LaunchSpec, args: Vec<String>, connect_timeout: Duration) -> Result<(tokio::process::Child, UnixStream)> {
        remove_stale(&spec.channel_socket());
        remove_stale(&spec.monitor_socket());
        // Dropping privileges (-runas) clears QEMU's death signal; a guard keeps it.
        let mut child = spawn_confined(&self.binary, args, self.as_root, &spec.serial_log(), &spec.vmm_log())?;
        let channel = connect_when_listening(&mut child, &spec.channel_socket(), connect_timeout, "qemu", &spec.vmm_log()).await?;
        Ok((child, channel))
    }

    fn launched(&self, child: tokio::process::Child, channel: UnixStream) -> Launched {
        let vmm_pid = if self.as_root { child.id().and_then(super::guard::vmm_of) } else { child.id() };
        Launched { child, vmm_pid, channel }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            vm_dir: "/vm".into(),
            kernel: "/k/vmlinux".into(),
            disk: "/vm/disk.qcow2".into(),
            vcpu_count: 2,
            mem_mib: 512,
            debug_console: false,
            restore: None,
            network: false,
        }
    }

    #[test]
    fn a_network_is_a_nic_on_a_socket_and_nothing_else() {
        let q = Qemu::new("q".into(), Accel::Tcg);
        assert!(!q.args(&spec()).join(" ").contains("netdev"), "no network, no NIC");
        let joined = q.args(&LaunchSpec { network: true, ..spec() }).join(" ");
        assert!(joined.contains("-netdev stream,id=net0,server=on,addr.type=unix,addr.path=/vm/net.sock"), "{joined}");
        assert!(joined.contains("-device virtio-net-device,netdev=net0,mac="), "{joined}");
        assert!(!joined.contains("tap") && !joined.contains("user,"), "never a host TAP or slirp: {joined}");
    }

    #[test]
    fn tcg_command_line() {
        let args = Qemu::new("/usr/bin/qemu-system-x86_64".into(), Accel::Tcg).args(&spec());
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"));
        assert!(joined.contains("-smp 2 -m 512M"));
        assert!(joined.contains("name=pyro.0"));
        assert!(joined.contains("path=/vm/agent.sock,server=on,wait=on"));
        let cmdline = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(cmdline.contains("console=hvc0"));
        assert!(cmdline.contains("init=/opt/pyro/bin/pyro-agent"));
        assert!(cmdline.contains("8250.nr_uarts=0"));
        assert!(cmdline.contains("i8042.noaux"));
        assert!(joined.contains("-sandbox on,obsolete=deny,elevateprivileges="));
        assert!(joined.contains("spawn=deny,resourcecontrol=deny"));
        assert!(joined.contains("-chardev stdio,id=console"), "the console is a drained pipe, not a file");
        assert!(joined.contains("-qmp unix:/vm/qmp.sock,server=on,wait=off"));
    }

    #[test]
    fn root_drops_privileges_and_others_deny_them() {
        let mut q = Qemu::new("q".into(), Accel::Tcg);
        q.as_root = true;
        let joined = q.args(&spec()).join(" ");
        assert!(joined.contains("elevateprivileges=allow") && joined.contains("-runas nobody"));
        q.as_root = false;
        let joined = q.args(&spec()).join(" ");
        assert!(joined.contains("elevateprivileges=deny") && !joined.contains("-runas"));
    }

    #[test]
    fn commas_in_paths_cannot_inject_options() {
        let mut s = spec();
        s.vm_dir = "/state,x=y/vm".into();
        s.disk = "/state,x=y/vm/rootfs.ext4".into();
        let joined = Qemu::new("q".into(), Accel::Tcg).args(&s).join(" ");
        assert!(joined.contains("file=/state,,x=y/vm/rootfs.ext4,format=raw,if=none,cache=writeback"));
        assert!(joined.contains("path=/state,,x=y/vm/agent.sock,server=on"));
    }

    #[test]
    fn debug_console_uses_the_uart() {
        let mut s = spec();
        s.debug_console = true;
        let args = Qemu::new("q".into(), Accel::Kvm).args(&s);
        let cmdline = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(cmdline.contains("console=ttyS0"));
        assert!(!cmdline.contains("nr_uarts=0"));
        assert!(args.join(" ").contains("-accel kvm"));
    }
}
