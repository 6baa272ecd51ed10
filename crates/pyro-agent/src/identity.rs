//! Adopting the identity the host sends in its knock ([`pyro_protocol::HostHello`]): host
//! entropy into the kernel's random pool (then a reseed), the host's clock, a fresh
//! machine id. A VM restored from a saved state would otherwise share all three with
//! every sibling restored from the same state. Applied in the frame loop, before the
//! Hello answer, so every request after the knock sees it done.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use pyro_protocol::{Frame, GuestIdentity, HostHello};

/// Where the machine id lives (a tmpfs file bound over `/etc/machine-id`, so the disk,
/// and a workspace's diff, never change).
const RUNTIME_MACHINE_ID: &str = "/run/machine-id";
const ETC_MACHINE_ID: &str = "/etc/machine-id";

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Set by the guest server: only an agent in a guest touches the kernel's state; a
/// host_compat agent (a plain host process) ignores identities.
static IN_GUEST: AtomicBool = AtomicBool::new(false);

/// Makes [`adopt`] apply identities (called by the guest server only).
pub fn enable() {
    IN_GUEST.store(true, Ordering::SeqCst);
}

/// Applies what a knock's payload carries (in a guest only): the identity, then the
/// network configuration ([`crate::network::adopt`]).
pub fn adopt(knock: &Frame) {
    if !IN_GUEST.load(Ordering::SeqCst) {
        return;
    }
    let Ok(HostHello { identity, network }) = knock.parse_json::<HostHello>() else { return };
    if let Some(identity) = identity {
        for (what, outcome) in
            [("seed the random pool", seed_random(&identity)), ("set the clock", set_clock(&identity)), ("set the machine id", set_machine_id(&identity))]
        {
            if let Err(e) = outcome {
                eprintln!("pyro-agent: cannot {what}: {e}");
            }
        }
    }
    if let Some(network) = network {
        crate::network::adopt(&network);
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Mixes the host's bytes into the input pool, credits them, and forces the CRNG to
/// reseed so the very next read differs from a sibling's.
fn seed_random(identity: &GuestIdentity) -> io::Result<()> {
    let entropy = identity.entropy().ok_or_else(|| invalid("malformed entropy"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(&entropy);
    let random = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    use std::os::fd::AsRawFd;
    // SAFETY: the buffer is a complete rand_pool_info (header plus buf_size bytes) that
    // outlives both calls; RNDRESEEDCRNG takes no argument.
    unsafe {
        if libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_clock(identity: &GuestIdentity) -> io::Result<()> {
    let ts = libc::timespec { tv_sec: (identity.unix_time_ns / 1_000_000_000) as _, tv_nsec: (identity.unix_time_ns % 1_000_000_000) as libc::c_long };
    // SAFETY: a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes the id to tmpfs and, where the environment has an `/etc/machine-id`, binds it
/// over that file (once; later knocks rewrite the same inode).
fn set_machine_id(identity: &GuestIdentity) -> io::Result<()> {
    if !identity.machine_id_is_valid() {
        return Err(invalid("malformed machine id"));
    }
    let fresh = std::fs::metadata(RUNTIME_MACHINE_ID).is_err();
    std::fs::write(RUNTIME_MACHINE_ID, format!("{}\n", identity.machine_id))?;
    if fresh && std::fs::symlink_metadata(ETC_MACHINE_ID).is_ok_and(|m| m.is_file()) {
        let (source, target) = (c"/run/machine-id", c"/etc/machine-id");
        // SAFETY: valid C strings; a read-only bind of one file over another.
        unsafe {
            if libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::mount(std::ptr::null(), target.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, std::ptr::null());
        }
    }
    Ok(())
}
