//! The gateway's fixed addressing and its resource limits.

use std::net::Ipv4Addr;
use std::time::Duration;

/// The addresses of a guest's private network; every VM can use the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayAddresses {
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// The gateway's address (the guest's default route).
    pub gateway_ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The DNS server the guest should use (the gateway itself).
    pub dns: Ipv4Addr,
    /// The gateway's MAC address.
    pub gateway_mac: [u8; 6],
}

impl Default for GatewayAddresses {
    fn default() -> Self {
        GatewayAddresses {
            guest_ip: Ipv4Addr::new(10, 0, 2, 15),
            gateway_ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix_len: 24,
            dns: Ipv4Addr::new(10, 0, 2, 2),
            gateway_mac: [0x52, 0x54, 0x00, 0x00, 0x00, 0x02],
        }
    }
}

/// Bounds on what one guest can make the gateway hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open guest TCP flows at once; further SYNs are dropped.
    pub max_tcp_flows: usize,
    /// Open guest UDP flows at once; further datagrams to new destinations are dropped.
    pub max_udp_flows: usize,
    /// Host DNS lookups in flight at once; further queries are dropped.
    pub max_dns_in_flight: usize,
    /// Bytes of each TCP socket buffer, each way.
    pub socket_buffer: usize,
    /// How long a host TCP connect may take.
    pub connect_timeout: Duration,
    /// How long a UDP flow may stay idle before it is closed.
    pub udp_idle_timeout: Duration,
    /// (address, name) pairs remembered from DNS answers.
    pub dns_cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tcp_flows: 256,
            max_udp_flows: 64,
            max_dns_in_flight: 32,
            socket_buffer: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            udp_idle_timeout: Duration::from_secs(30),
            dns_cache_entries: 4096,
        }
    }
}
