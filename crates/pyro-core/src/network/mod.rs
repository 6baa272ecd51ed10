//! Guest networking, host side. A networked guest has one virtio-net NIC whose Ethernet
//! frames reach its supervisor over a unix socket (`net.sock`, QEMU `-netdev stream`);
//! there the user-space gateway of `pyro-net` terminates every flow, checks it against
//! the VM's policy before any host socket exists, and re-originates what is allowed
//! ([`gateway`]). Refused flows go to a bounded per-VM log ([`log`]). Published ports
//! are loopback listeners of the supervisor that carry each connection to guest
//! loopback over the agent channel ([`publish`]). No host routes, NAT, firewall rules or
//! root are involved.

pub mod gateway;
pub mod log;
pub mod publish;

use pyro_net::{AllowRule, GatewayAddresses};
use pyro_protocol::GuestNetwork;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::NetworkPolicy;

/// A VM's network, fixed when it is created (kept in its record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// When not empty, egress is narrowed to these host names and CIDRs (canonical form).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Services may publish guest ports on the host's loopback.
    #[serde(default)]
    pub publish_ports: bool,
}

impl NetworkSettings {
    /// The network a guest has under `policy` (`None` for `off`), with an allow-list
    /// already in canonical form ([`canonical_allow_hosts`]).
    pub fn under(policy: NetworkPolicy, allow_hosts: &[String]) -> Option<Self> {
        let publish_ports = match policy {
            NetworkPolicy::Off => return None,
            NetworkPolicy::Egress => false,
            NetworkPolicy::EgressPublishedPorts => true,
        };
        Some(Self { allow_hosts: allow_hosts.to_vec(), publish_ports })
    }

    /// The policy these settings stand for (the inverse of [`NetworkSettings::under`]).
    pub fn network_policy(&self) -> NetworkPolicy {
        if self.publish_ports {
            NetworkPolicy::EgressPublishedPorts
        } else {
            NetworkPolicy::Egress
        }
    }

    /// The gateway's policy: the allow-list (if any), this host's own addresses.
    pub fn policy(&self) -> pyro_net::Policy {
        let allow = (!self.allow_hosts.is_empty()).then(|| self.allow_hosts.iter().filter_map(|e| AllowRule::parse(e).ok()).collect());
        pyro_net::Policy::new(allow, pyro_net::host_interface_addresses(), addresses().gateway_ip)
    }
}

/// A checked allow-list: every entry a host name, an address or a CIDR, in canonical
/// form, duplicates dropped.
pub fn canonical_allow_hosts(entries: &[String]) -> Result<Vec<String>> {
    let mut canonical: Vec<String> = Vec::new();
    for entry in entries {
        let text = AllowRule::parse(entry.trim()).map_err(|e| Error::InvalidArgument(e.to_string()))?.to_string();
        if !canonical.contains(&text) {
            canonical.push(text);
        }
    }
    Ok(canonical)
}

/// The addresses of every guest network (each VM has its own gateway, so all use the same).
pub fn addresses() -> GatewayAddresses {
    GatewayAddresses::default()
}

/// A fresh locally administered unicast MAC address (a restored guest gets a new one):
/// `02:` and five random bytes (from the same source as pyro's ids).
pub fn fresh_mac() -> String {
    let random = uuid::Uuid::new_v4();
    let mut mac = String::from("02");
    for b in &random.as_bytes()[..5] {
        mac.push_str(&format!(":{b:02x}"));
    }
    mac
}

/// What the agent configures `eth0` and the resolver with.
pub fn guest_config(mac: String) -> GuestNetwork {
    let a = addresses();
    GuestNetwork { mac, address: a.guest_ip, prefix_len: a.prefix_len, gateway: a.gateway_ip, dns: vec![a.dns] }
}

/// A guest network as status and `network_info` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkDetails {
    /// The guest's address.
    pub guest_ip: String,
    /// Its gateway (the supervisor's user-space stack).
    pub gateway_ip: String,
    /// Prefix length of the guest's subnet.
    pub prefix_len: u8,
    /// Name servers the guest uses (the gateway answers them itself).
    pub dns_servers: Vec<String>,
    /// The egress allow-list; empty means every public destination.
    pub allow_hosts: Vec<String>,
    /// Whether services may publish ports.
    pub published_ports_allowed: bool,
}

impl NetworkDetails {
    /// The details of a VM with `settings`.
    pub fn of(settings: &NetworkSettings) -> Self {
        let a = addresses();
        Self {
            guest_ip: a.guest_ip.to_string(),
            gateway_ip: a.gateway_ip.to_string(),
            prefix_len: a.prefix_len,
            dns_servers: vec![a.dns.to_string()],
            allow_hosts: settings.allow_hosts.clone(),
            published_ports_allowed: settings.publish_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_are_checked_and_canonical() {
        let hosts = canonical_allow_hosts(&["Example.COM.".into(), "203.0.113.7".into(), "example.com".into(), "10.0.0.0/8".into()]).unwrap();
        assert_eq!(hosts, ["example.com", "203.0.113.7/32", "10.0.0.0/8"]);
        for policy in [NetworkPolicy::Egress, NetworkPolicy::EgressPublishedPorts] {
            assert_eq!(NetworkSettings::under(policy, &hosts).unwrap().network_policy(), policy);
        }
        assert_eq!(NetworkSettings::under(NetworkPolicy::Off, &hosts), None);
        let e = canonical_allow_hosts(&["not a host!".into()]).unwrap_err();
        assert_eq!(e.to_string(), "allow-host entry 'not a host!' is neither a host name nor a CIDR");
    }

    #[test]
    fn macs_are_fresh_unicast_and_local() {
        let (a, b) = (fresh_mac(), fresh_mac());
        assert_ne!(a, b);
        let config = guest_config(a);
        let bytes = config.mac_bytes().unwrap();
        assert_eq!(bytes[0] & 0b11, 0b10);
    }
}
