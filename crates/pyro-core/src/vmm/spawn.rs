//! How every VMM (and the host_compat agent) is started: confined, tied to its parent,
//! with its output drained into capped logs.
//!
//! - It dies with the process that started it (`PR_SET_PDEATHSIG(SIGKILL)`, and a check
//!   that the parent did not die before the flag was set). The supervisor starts VMMs
//!   from its one runtime thread, which lives as long as the supervisor, because the
//!   death signal follows the parent *thread*.
//! - It inherits no file descriptors beyond stdio (all others are marked close-on-exec
//!   in the child) and a minimal environment.
//! - Its stdout and stderr are pipes drained into [`console_log`] files, so a guest that
//!   floods its console cannot fill the host's disk.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::process::{Child, Command};

use crate::console_log::drain_into;
use crate::error::{IoContext, Result};

/// The only environment a VMM gets.
const VMM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The one descriptor VMMs spawned by this process inherit (-1: none). A supervisor runs
/// exactly one VM, and sets it to its run lock so the lock lives as long as the VMM does.
static INHERITED_FD: AtomicI32 = AtomicI32::new(-1);

/// While alive, VMMs spawned by this process inherit `file` (an flock holder).
pub struct InheritedFd(());

impl InheritedFd {
    /// Starts passing `file` to spawned VMMs.
    pub fn new(file: &std::fs::File) -> Self {
        INHERITED_FD.store(file.as_raw_fd(), Ordering::SeqCst);
        Self(())
    }
}

impl Drop for InheritedFd {
    fn drop(&mut self) {
        INHERITED_FD.store(-1, Ordering::SeqCst);
    }
}

/// Spawns `program args…` confined as described in the module docs; its stdout goes to
/// the capped log `stdout_log` and its stderr to `stderr_log`. A VMM that will drop
/// privileges itself (`guarded`) runs under the [`super::guard`], which keeps the death
/// signal the kernel would otherwise clear.
pub(crate) fn spawn_confined(program: &Path, args: Vec<String>, guarded: bool, stdout_log: &Path, stderr_log: &Path) -> Result<Child> {
    let mut command = if guarded {
        let mut command = Command::new(crate::paths::pyro_binary()?);
        command.arg(super::guard::GUARD_SUBCOMMAND).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.args(args);
    // The guard catches SIGTERM to take its VMM along; anything else just dies.
    let death_signal = if guarded { libc::SIGTERM } else { libc::SIGKILL };
    let parent = std::process::id() as libc::pid_t;
    let inherit: RawFd = INHERITED_FD.load(Ordering::SeqCst);
    command.env_clear().env("PATH", VMM_PATH).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    // SAFETY: prctl, getppid, close_range and fcntl are async-signal-safe syscalls that
    // touch no memory of the parent; nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Mark (not close) every inherited descriptor above stdio close-on-exec, so
            // the standard library's own exec-error pipe keeps working. Kernels before
            // 5.11 lack the flag; there every descriptor pyro opens is CLOEXEC anyway.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            if inherit >= 0 && libc::fcntl(inherit, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().ctx("start", program)?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(drain_into(stdout, stdout_log.to_path_buf()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(drain_into(stderr, stderr_log.to_path_buf()));
    }
    Ok(child)
}

/// SIGKILLs `child` and its process group (a guard and its VMM share one).
pub fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: the group of our own unreaped child, which leads it (process_group(0)).
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    }
    let _ = child.start_kill();
}

/// Whether pyro runs as root, in which case VMMs drop to an unprivileged user once
/// their files are open.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The unprivileged user a VMM started by root drops to.
pub(crate) const UNPRIVILEGED_USER: &str = "nobody";
