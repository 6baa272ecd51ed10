//! PID 1 duties: mount the pseudo filesystems, name the host, bring up `lo`, then fork the
//! server and reap every orphan until the server exits, then power the VM off. PID 1
//! itself never exits (the kernel would panic).

use std::ffi::CString;
use std::io;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in static strings")
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    let (source, target_c, fstype) = (cstr(source), cstr(target), cstr(fstype));
    let data = data.map(cstr);
    let data_ptr = data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: valid C strings; mount has no memory-safety preconditions beyond that.
    let rc = unsafe { libc::mount(source.as_ptr(), target_c.as_ptr(), fstype.as_ptr(), flags, data_ptr) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            eprintln!("pyro-agent: mounting {target} failed: {err}");
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open (the kernel leaves them closed when the root
/// filesystem has no /dev/console), so later files never land on them.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl/open/dup2 on small integers; failures are handled.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) != -1 {
                continue;
            }
            let mut new = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            if new < 0 {
                new = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
            if new >= 0 && new != fd {
                libc::dup2(new, fd);
                libc::close(new);
            }
        }
    }
}

fn set_hostname(name: &str) {
    // SAFETY: pointer and length describe a valid buffer.
    if unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) } != 0 {
        eprintln!("pyro-agent: sethostname failed: {}", io::Error::last_os_error());
    }
}

/// Mounts, hostname, loopback and the environment every command inherits.
pub fn setup_guest() {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, Some("mode=0755"));
    ensure_std_fds();
    mount("proc", "/proc", "proc", nosuid_nodev | libc::MS_NOEXEC, None);
    mount("sysfs", "/sys", "sysfs", nosuid_nodev | libc::MS_NOEXEC, None);
    mount("devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, Some("ptmxmode=0666,mode=0620,gid=5"));
    mount("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, Some("mode=1777"));
    mount("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=0755"));
    mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777"));
    set_hostname("pyro");
    if let Err(e) = crate::network::loopback_up() {
        eprintln!("pyro-agent: bringing up lo failed: {e}");
    }
    // SAFETY: still single-threaded (no runtime yet), so mutating the environment is sound.
    unsafe { libc::umask(0o022) };
    std::env::set_var("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    std::env::set_var("LANG", "C.UTF-8");
    std::env::set_current_dir("/").ok();
}

/// Whether the kernel can really power off. Without an ACPI `_S5_` sleep state (QEMU
/// microvm with `acpi=off`, Firecracker) `RB_POWER_OFF` degrades to a halt that leaves the
/// VMM running forever, while a reboot makes Firecracker exit and QEMU `-no-reboot` too.
fn can_power_off() -> bool {
    std::fs::read("/sys/firmware/acpi/tables/DSDT").is_ok_and(|dsdt| dsdt.windows(4).any(|w| w == b"_S5_"))
}

/// Flushes filesystems and ends the VM. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot are plain syscalls.
    unsafe {
        libc::sync();
        if can_power_off() {
            libc::reboot(libc::RB_POWER_OFF);
        }
        libc::reboot(libc::RB_AUTOBOOT);
    }
    eprintln!("pyro-agent: reboot failed: {}", io::Error::last_os_error());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Runs as PID 1: sets the guest up, forks `server` into a child and reaps until that
/// child exits, then powers off.
pub fn run_as_pid1(server: fn() -> i32) -> ! {
    setup_guest();
    // SAFETY: no threads exist yet, so fork is safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscall in the fresh child.
        unsafe { libc::setsid() };
        std::process::exit(server());
    }
    if pid < 0 {
        eprintln!("pyro-agent: fork failed: {}", io::Error::last_os_error());
        power_off();
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid {
            if status != 0 {
                eprintln!("pyro-agent: server exited with wait status {status:#x}");
            }
            break;
        }
        if reaped < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ECHILD) {
                break;
            }
        }
    }
    eprintln!("pyro-agent: powering off");
    power_off()
}
