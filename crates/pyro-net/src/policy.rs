//! Which destinations a guest may reach: fixed deny rules, the host's own addresses, and an
//! optional allow-list of host names and CIDRs. Checked for every new flow before any host socket
//! exists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::error::NetError;

/// An address prefix, IPv4 or IPv6 (`addr/prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits are ignored when matching).
    pub addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr.parse::<IpAddr>().ok()?, Some(prefix)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().ok()?,
            Some(_) => return None,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_match(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    /// `addr/prefix`, always with the prefix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether the top `prefix` of `width` bits of `a` and `b` agree.
fn prefix_match(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

/// One entry of an allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// A DNS host name, lowercase, without a trailing dot.
    Name(String),
    /// An address prefix.
    Cidr(Cidr),
}

impl std::fmt::Display for AllowRule {
    /// The canonical text: the lowercase name, or `addr/prefix`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowRule::Name(name) => f.write_str(name),
            AllowRule::Cidr(cidr) => cidr.fmt(f),
        }
    }
}

impl AllowRule {
    /// Parses a host name, an address or a CIDR.
    pub fn parse(text: &str) -> Result<AllowRule, NetError> {
        if let Some(cidr) = Cidr::parse(text) {
            return Ok(AllowRule::Cidr(cidr));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        if is_host_name(name) {
            return Ok(AllowRule::Name(name.to_ascii_lowercase()));
        }
        Err(NetError::BadAllowRule(text.to_string()))
    }
}

/// A valid DNS host name: labels of 1-63 `[A-Za-z0-9-]` not starting or ending with `-`, at most
/// 253 characters, and at least one letter (so that a malformed address is not taken for a name).
fn is_host_name(name: &str) -> bool {
    let label_ok =
        |l: &str| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-');
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) && name.bytes().any(|b| b.is_ascii_alphabetic())
}

/// The rule that denied a flow; its snake_case name is stable and appears in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyRule {
    /// 127.0.0.0/8 and ::1.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT).
    Cgnat,
    /// 169.254.0.0/16 (including the cloud metadata address) and fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8 and ::.
    Unspecified,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255 and the reserved 240.0.0.0/4.
    Broadcast,
    /// One of the host's own interface addresses.
    HostAddress,
    /// The gateway's own address, which serves only DNS.
    Gateway,
    /// An allow-list is set and the destination matches none of its entries.
    NotAllowed,
}

impl DenyRule {
    /// The stable snake_case name of the rule.
    pub fn name(&self) -> &'static str {
        match self {
            DenyRule::Loopback => "loopback",
            DenyRule::Private => "private",
            DenyRule::Cgnat => "cgnat",
            DenyRule::LinkLocal => "link_local",
            DenyRule::UniqueLocal => "unique_local",
            DenyRule::Unspecified => "unspecified",
            DenyRule::Multicast => "multicast",
            DenyRule::Broadcast => "broadcast",
            DenyRule::HostAddress => "host_address",
            DenyRule::Gateway => "gateway",
            DenyRule::NotAllowed => "not_allowed",
        }
    }
}

/// The outcome of [`Policy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The flow may be opened from the host.
    Allow,
    /// The flow is refused, by this rule.
    Deny(DenyRule),
}

/// What a guest may reach.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: every destination not denied by the fixed rules; `Some`: only these.
    pub allow: Option<Vec<AllowRule>>,
    /// The host's own addresses (see [`host_interface_addresses`]), always denied.
    pub host_addresses: Vec<IpAddr>,
    /// The gateway's address, which answers DNS only.
    pub gateway: Ipv4Addr,
    /// Tests only: let flows to loopback through, to reach servers on 127.0.0.1.
    #[cfg(test)]
    pub(crate) allow_loopback_for_tests: bool,
}

impl Policy {
    /// A policy with the given allow-list, host addresses and gateway address.
    pub fn new(allow: Option<Vec<AllowRule>>, host_addresses: Vec<IpAddr>, gateway: Ipv4Addr) -> Policy {
        Policy {
            allow,
            host_addresses,
            gateway,
            #[cfg(test)]
            allow_loopback_for_tests: false,
        }
    }

    /// Decides a flow to `dst`, given `names`, the DNS names known to resolve to `dst`.
    pub fn check(&self, dst: IpAddr, names: &[String]) -> Verdict {
        let dst = canonical(dst);
        if dst == IpAddr::V4(self.gateway) {
            return Verdict::Deny(DenyRule::Gateway);
        }
        if let Some(rule) = fixed_rule(dst) {
            #[cfg(test)]
            if rule == DenyRule::Loopback && self.allow_loopback_for_tests {
                return Verdict::Allow;
            }
            return Verdict::Deny(rule);
        }
        if self.host_addresses.iter().any(|h| canonical(*h) == dst) {
            return Verdict::Deny(DenyRule::HostAddress);
        }
        if let Some(allow) = &self.allow {
            let allowed = allow.iter().any(|rule| match rule {
                AllowRule::Cidr(cidr) => cidr.contains(dst),
                AllowRule::Name(name) => names.iter().any(|n| n.strip_suffix('.').unwrap_or(n).eq_ignore_ascii_case(name)),
            });
            if !allowed {
                return Verdict::Deny(DenyRule::NotAllowed);
            }
        }
        Verdict::Allow
    }
}

/// An IPv4-mapped IPv6 address as its IPv4; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The always-denied ranges.
fn fixed_rule(ip: IpAddr) -> Option<DenyRule> {
    match ip {
        IpAddr::V4(v4) => fixed_rule_v4(v4),
        IpAddr::V6(v6) => fixed_rule_v6(v6),
    }
}

fn fixed_rule_v4(ip: Ipv4Addr) -> Option<DenyRule> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (127, _) => DenyRule::Loopback,
        (10, _) | (192, 168) => DenyRule::Private,
        (172, b) if (16..32).contains(&b) => DenyRule::Private,
        (100, b) if (64..128).contains(&b) => DenyRule::Cgnat,
        (169, 254) => DenyRule::LinkLocal,
        (0, _) => DenyRule::Unspecified,
        (224..=239, _) => DenyRule::Multicast,
        (240..=255, _) => DenyRule::Broadcast,
        _ => return None,
    })
}

fn fixed_rule_v6(ip: Ipv6Addr) -> Option<DenyRule> {
    let first = ip.segments()[0];
    Some(if ip == Ipv6Addr::LOCALHOST {
        DenyRule::Loopback
    } else if ip.is_unspecified() {
        DenyRule::Unspecified
    } else if first & 0xffc0 == 0xfe80 {
        DenyRule::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        DenyRule::UniqueLocal
    } else if first & 0xff00 == 0xff00 {
        DenyRule::Multicast
    } else {
        return None;
    })
}

/// Every address of every interface of this host, IPv4 and IPv6 (empty if `getifaddrs` fails).
pub fn host_interface_addresses() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `getifaddrs` writes a pointer to a list it allocates into `head`, a valid out-pointer.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a non-null node of the list `getifaddrs` returned, not yet freed.
        let entry = unsafe { &*cursor };
        if let Some(ip) = sockaddr_ip(entry.ifa_addr) {
            out.push(ip);
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `head` came from a successful `getifaddrs` and is freed exactly once, after the last use.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

/// The IP address in a `sockaddr`, if it is `AF_INET` or `AF_INET6`.
fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: `addr` is non-null and points to a sockaddr from `getifaddrs`, which has at least `sa_family`.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr from `getifaddrs` is a full `sockaddr_in`.
            let sin = unsafe { &*(addr as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr from `getifaddrs` is a full `sockaddr_in6`.
            let sin6 = unsafe { &*(addr as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open() -> Policy {
        Policy::new(None, vec!["192.0.2.77".parse().unwrap(), "2001:db8::5".parse().unwrap()], Ipv4Addr::new(10, 0, 2, 2))
    }

    fn deny(policy: &Policy, ip: &str) -> Option<&'static str> {
        match policy.check(ip.parse().unwrap(), &[]) {
            Verdict::Allow => None,
            Verdict::Deny(rule) => Some(rule.name()),
        }
    }

    #[test]
    fn every_fixed_rule() {
        let p = open();
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.1.2", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("169.254.169.254", "link_local"),
            ("169.254.0.1", "link_local"),
            ("fe80::1", "link_local"),
            ("febf::1", "link_local"),
            ("fc00::1", "unique_local"),
            ("fdff::1", "unique_local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "broadcast"),
            ("192.0.2.77", "host_address"),
            ("2001:db8::5", "host_address"),
            ("10.0.2.2", "gateway"),
        ];
        for (ip, rule) in cases {
            assert_eq!(deny(&p, ip), Some(rule), "{ip}");
        }
    }

    #[test]
    fn neighbours_of_denied_ranges_and_documentation_ranges_pass() {
        let p = open();
        for ip in [
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "223.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "1.1.1.1",
            "2001:db8::1",
            "2606:4700::1111",
            "fec0::1",
        ] {
            assert_eq!(deny(&p, ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_v6_is_checked_as_v4() {
        let p = open();
        assert_eq!(deny(&p, "::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(deny(&p, "::ffff:169.254.169.254"), Some("link_local"));
        assert_eq!(deny(&p, "::ffff:10.0.2.2"), Some("gateway"));
        assert_eq!(deny(&p, "::ffff:192.0.2.77"), Some("host_address"));
        assert_eq!(deny(&p, "::ffff:203.0.113.9"), None);
    }

    #[test]
    fn allow_list_by_cidr_and_by_name() {
        let mut p = open();
        p.allow = Some(vec![AllowRule::parse("203.0.113.0/24").unwrap(), AllowRule::parse("Example.COM.").unwrap()]);
        assert_eq!(p.check("203.0.113.200".parse().unwrap(), &[]), Verdict::Allow);
        assert_eq!(p.check("198.51.100.1".parse().unwrap(), &[]), Verdict::Deny(DenyRule::NotAllowed));
        assert_eq!(p.check("198.51.100.1".parse().unwrap(), &["other.org".into()]), Verdict::Deny(DenyRule::NotAllowed));
        assert_eq!(p.check("198.51.100.1".parse().unwrap(), &["example.com".into()]), Verdict::Allow);
        assert_eq!(p.check("198.51.100.1".parse().unwrap(), &["EXAMPLE.com.".into()]), Verdict::Allow);
        // Fixed rules and host addresses come before the allow-list.
        p.allow = Some(vec![AllowRule::parse("0.0.0.0/0").unwrap()]);
        assert_eq!(deny(&p, "10.0.0.1"), Some("private"));
        assert_eq!(deny(&p, "192.0.2.77"), Some("host_address"));
        assert_eq!(p.check("127.0.0.1".parse().unwrap(), &["localhost".into()]), Verdict::Deny(DenyRule::Loopback));
    }

    #[test]
    fn parse_valid_rules() {
        assert_eq!(AllowRule::parse("1.2.3.4").unwrap(), AllowRule::Cidr(Cidr { addr: "1.2.3.4".parse().unwrap(), prefix: 32 }));
        assert_eq!(AllowRule::parse("2001:db8::/32").unwrap(), AllowRule::Cidr(Cidr { addr: "2001:db8::".parse().unwrap(), prefix: 32 }));
        assert_eq!(AllowRule::parse("::1").unwrap(), AllowRule::Cidr(Cidr { addr: "::1".parse().unwrap(), prefix: 128 }));
        assert_eq!(AllowRule::parse("10.0.0.0/0").unwrap(), AllowRule::Cidr(Cidr { addr: "10.0.0.0".parse().unwrap(), prefix: 0 }));
        assert_eq!(AllowRule::parse("PyPI.org.").unwrap(), AllowRule::Name("pypi.org".into()));
        assert_eq!(AllowRule::parse("a-b.c9").unwrap(), AllowRule::Name("a-b.c9".into()));
        assert_eq!(AllowRule::parse("localhost").unwrap(), AllowRule::Name("localhost".into()));
        let long = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(long.len(), 253);
        assert!(AllowRule::parse(&long).is_ok());
    }

    #[test]
    fn parse_invalid_rules() {
        let long = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62));
        let label64 = format!("{}.com", "a".repeat(64));
        for bad in [
            "",
            ".",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3",
            "1.2.3.4.5",
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            "a b",
            "*.com",
            "..",
            &long,
            &label64,
            "1.2.3.4/8/8",
            "http://x.com",
        ] {
            let err = AllowRule::parse(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("allow-host entry '{bad}' is neither a host name nor a CIDR"));
            assert_eq!(err.kind(), "bad_allow_rule");
        }
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.255".parse().unwrap()));
        assert!(!c.contains("203.0.114.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        assert!(!all6.contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn host_addresses_include_loopback() {
        let addrs = host_interface_addresses();
        assert!(addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{addrs:?}");
    }

    #[test]
    fn deny_rule_serializes_as_its_name() {
        for rule in [DenyRule::LinkLocal, DenyRule::HostAddress, DenyRule::NotAllowed, DenyRule::Cgnat] {
            assert_eq!(serde_json::to_string(&rule).unwrap(), format!("\"{}\"", rule.name()));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = AllowRule::parse(&s);
        }
    }
}
