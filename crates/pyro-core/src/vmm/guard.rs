//! The VMM guard: a tiny parent between the supervisor and a VMM that drops privileges.
//!
//! The kernel clears a process's parent-death signal when its user id changes, so a QEMU
//! started by root that drops to an unprivileged user (`-runas`) would no longer die with
//! its supervisor. The guard keeps root's death signal for it: it is started with
//! `PR_SET_PDEATHSIG(SIGTERM)`, starts the VMM in its own process group, and when the
//! supervisor dies (SIGTERM arrives) it SIGKILLs the VMM before exiting. It exits with
//! the VMM's status otherwise. The supervisor records the VMM's own identity, so a VMM
//! whose guard was killed outright is still found and stopped.

use std::ffi::OsString;

/// The hidden subcommand that runs [`run`].
pub const GUARD_SUBCOMMAND: &str = "__vmm-guard";

/// Runs `argv` (the VMM and its arguments) under the guard; never returns.
pub fn run(argv: &[OsString]) -> ! {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let Some((program, args)) = argv.split_first() else { std::process::exit(2) };
    // SAFETY: signal-mask and prctl calls on this single-threaded process; the sets are
    // initialised by sigemptyset before use.
    let mask = unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut mask, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        mask
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    // SAFETY: sigprocmask is async-signal-safe; the VMM must not inherit the blocked mask.
    unsafe {
        command.pre_exec(move || {
            libc::sigprocmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("pyro vmm guard: cannot start {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        }
    };
    let vmm = child.id() as libc::pid_t;
    loop {
        // SAFETY: `mask` is a valid, initialised signal set; a null info pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&mask, std::ptr::null_mut()) };
        if sig == libc::SIGCHLD {
            if let Ok(Some(status)) = child.try_wait() {
                let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(9));
                std::process::exit(code);
            }
        } else if sig > 0 {
            // The supervisor died (or asked us to stop): the VMM goes with it.
            // SAFETY: `vmm` is our own unreaped child, so its pid cannot have been reused.
            unsafe { libc::kill(vmm, libc::SIGKILL) };
            let _ = child.wait();
            std::process::exit(137);
        }
    }
}

/// The VMM started under the guard `guard_pid` (its only child), once it exists.
pub fn vmm_of(guard_pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{guard_pid}/task/{guard_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}
