//! The guest's interfaces, by ioctl (the images carry no `ip`): `lo` up at boot, and
//! `eth0` configured from the host's knock ([`pyro_protocol::GuestNetwork`]): MAC,
//! address, netmask, up, default route, and the resolver. Applied before the knock is
//! answered, so the first command of a started (or restored) guest finds its network
//! ready; a knock repeating the configuration already applied changes nothing.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use pyro_protocol::GuestNetwork;

/// The one NIC a networked guest has.
const NIC: &str = "eth0";
/// Where the resolver configuration is written (tmpfs), then bound over
/// `/etc/resolv.conf` so the disk, and a workspace's diff, never change.
const RUNTIME_RESOLV_CONF: &str = "/run/resolv.conf";
const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The configuration applied last (knocks repeat it).
static APPLIED: Mutex<Option<GuestNetwork>> = Mutex::new(None);

/// The kernel's `struct rtentry` (x86_64 and aarch64 layout), declared here because not
/// every libc binding has it.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An `AF_INET` datagram socket, the handle interface ioctls go through.
struct IoctlSocket(libc::c_int);

impl IoctlSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// An `ifreq` naming `interface`.
    fn request(interface: &str) -> libc::ifreq {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().take(libc::IFNAMSIZ - 1).zip(interface.bytes()) {
            *dst = src as libc::c_char;
        }
        req
    }

    /// One ioctl whose argument is `arg`.
    fn call<T>(&self, what: &str, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every request used here takes a pointer to exactly the struct passed.
        if unsafe { libc::ioctl(self.0, request as _, arg as *mut T) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    }

    /// Sets IFF_UP and IFF_RUNNING on `interface`.
    fn up(&self, interface: &str) -> io::Result<()> {
        let mut req = Self::request(interface);
        self.call("get flags", libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        self.call("set flags", libc::SIOCSIFFLAGS, &mut req)
    }
}

impl Drop for IoctlSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

fn inet(address: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(address).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as the family says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

/// `ip link set lo up`.
pub fn loopback_up() -> io::Result<()> {
    IoctlSocket::open()?.up("lo")
}

/// Applies `network` to `eth0` and the resolver, unless it is what was applied last.
pub fn adopt(network: &GuestNetwork) {
    let mut applied = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
    if applied.as_ref() == Some(network) {
        return;
    }
    let first = applied.is_none();
    match configure(network, first) {
        Ok(()) => *applied = Some(network.clone()),
        Err(e) => eprintln!("pyro-agent: cannot configure {NIC}: {e}"),
    }
}

fn configure(network: &GuestNetwork, first: bool) -> io::Result<()> {
    let mac = network.mac_bytes().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed MAC address"))?;
    if network.prefix_len > 30 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "prefix length out of range"));
    }
    let sock = IoctlSocket::open()?;

    let mut req = IoctlSocket::request(NIC);
    // SAFETY: writing the hwaddr member of the union of a zeroed ifreq.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    sock.call("set MAC", libc::SIOCSIFHWADDR, &mut req)?;

    let mut req = IoctlSocket::request(NIC);
    req.ifr_ifru.ifru_addr = inet(network.address);
    sock.call("set address", libc::SIOCSIFADDR, &mut req)?;
    let mut req = IoctlSocket::request(NIC);
    req.ifr_ifru.ifru_netmask = inet(netmask(network.prefix_len));
    sock.call("set netmask", libc::SIOCSIFNETMASK, &mut req)?;
    sock.up(NIC)?;

    let mut device = *b"eth0\0";
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: inet(Ipv4Addr::UNSPECIFIED),
        rt_gateway: inet(network.gateway),
        rt_genmask: inet(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: device.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // A repeated configuration (a new MAC after a restore) finds the route in place.
    if let Err(e) = sock.call("add default route", libc::SIOCADDRT, &mut route) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    write_resolver(&network.dns, first)
}

fn write_resolver(servers: &[Ipv4Addr], first: bool) -> io::Result<()> {
    let text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
    std::fs::write(RUNTIME_RESOLV_CONF, text)?;
    if !first {
        return Ok(()); // already bound over /etc/resolv.conf
    }
    if std::fs::symlink_metadata(ETC_RESOLV_CONF).is_err() {
        std::fs::File::create(ETC_RESOLV_CONF)?;
    }
    let (source, target) = (c"/run/resolv.conf", c"/etc/resolv.conf");
    // SAFETY: valid C strings; a bind of one file over another.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn rtentry_matches_the_kernel_size() {
        // struct rtentry is 120 bytes on 64-bit Linux.
        assert_eq!(size_of::<RtEntry>(), 120);
    }
}
