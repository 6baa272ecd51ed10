//! A user-space network gateway for one guest VM.
//!
//! The guest's NIC sends raw Ethernet frames over a [`link::StreamLink`] (QEMU's `-netdev stream`
//! framing). The [`Gateway`] terminates the guest's TCP with a smoltcp stack that accepts
//! connections to any address, answers the guest's DNS itself, and checks every new TCP or UDP
//! flow against a [`Policy`] before any host socket exists. Allowed flows are re-originated from
//! the host with ordinary tokio sockets; denied TCP flows get a RST. No routing, NAT, firewall
//! rules or privileges are needed on the host. Every decision is reported as a [`NetEvent`].

mod config;
mod device;
pub mod dns;
mod error;
mod event;
mod frame;
mod gateway;
pub mod link;
pub mod policy;
mod tcp;
mod udp;

pub use config::{GatewayAddresses, Limits};
pub use error::NetError;
pub use event::{unix_time, NetEvent, Protocol};
pub use gateway::Gateway;
pub use link::StreamLink;
pub use policy::{host_interface_addresses, AllowRule, Cidr, DenyRule, Policy, Verdict};
