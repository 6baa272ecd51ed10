//! Looks at each guest frame before the stack does, and builds the UDP frames the gateway sends.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

use crate::device::ETHERNET_MTU;

/// What to do with one frame from the guest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand it to the smoltcp stack (ARP for the gateway, TCP segments, ICMP to the gateway).
    Stack,
    /// Ignore it.
    Drop,
    /// A TCP SYN opening a flow, which the policy must see first; then it goes to the stack.
    TcpSyn { src_port: u16, dst: SocketAddrV4 },
    /// A UDP datagram, handled by the gateway itself.
    Udp { src_port: u16, dst: SocketAddrV4, payload: Vec<u8> },
}

/// Classifies a frame from the guest (source MAC `src` on success), accepting only traffic from
/// the guest's address, to the gateway's MAC or broadcast, and no IP fragments.
pub(crate) fn classify(frame: &[u8], gateway_mac: EthernetAddress, gateway_ip: Ipv4Addr, guest_ip: Ipv4Addr) -> (Option<EthernetAddress>, Action) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return (None, Action::Drop) };
    let src = eth.src_addr();
    if !src.is_unicast() || (eth.dst_addr() != gateway_mac && !eth.dst_addr().is_broadcast()) {
        return (None, Action::Drop);
    }
    let action = match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload(), gateway_ip),
        EthernetProtocol::Ipv4 => classify_ipv4(eth.payload(), gateway_ip, guest_ip),
        _ => Action::Drop,
    };
    (Some(src), action)
}

fn classify_arp(payload: &[u8], gateway_ip: Ipv4Addr) -> Action {
    let Ok(packet) = ArpPacket::new_checked(payload) else { return Action::Drop };
    match ArpRepr::parse(&packet) {
        Ok(ArpRepr::EthernetIpv4 { target_protocol_addr, .. }) if target_protocol_addr == gateway_ip => Action::Stack,
        _ => Action::Drop,
    }
}

fn classify_ipv4(payload: &[u8], gateway_ip: Ipv4Addr, guest_ip: Ipv4Addr) -> Action {
    let Ok(ip) = Ipv4Packet::new_checked(payload) else { return Action::Drop };
    if ip.src_addr() != guest_ip || ip.more_frags() || ip.frag_offset() != 0 || !ip.verify_checksum() {
        return Action::Drop;
    }
    let dst = ip.dst_addr();
    match ip.next_header() {
        IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
            Ok(tcp) if tcp.syn() && !tcp.ack() && !tcp.rst() => Action::TcpSyn { src_port: tcp.src_port(), dst: SocketAddrV4::new(dst, tcp.dst_port()) },
            Ok(_) => Action::Stack,
            Err(_) => Action::Drop,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
            Ok(udp) => Action::Udp { src_port: udp.src_port(), dst: SocketAddrV4::new(dst, udp.dst_port()), payload: udp.payload().to_vec() },
            Err(_) => Action::Drop,
        },
        IpProtocol::Icmp if dst == gateway_ip => Action::Stack,
        _ => Action::Drop,
    }
}

/// An Ethernet frame carrying one UDP datagram from `src` to `dst`, or `None` if it would not fit
/// in one unfragmented frame.
pub(crate) fn udp_frame(src_mac: EthernetAddress, dst_mac: EthernetAddress, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let ip = Ipv4Repr { src_addr: *src.ip(), dst_addr: *dst.ip(), next_header: IpProtocol::Udp, payload_len: udp.header_len() + payload.len(), hop_limit: 64 };
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv4 };
    let total = eth.buffer_len() + ip.buffer_len() + ip.payload_len;
    if total > ETHERNET_MTU {
        return None;
    }
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; total];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(&mut datagram, &IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip()), payload.len(), |b| b.copy_from_slice(payload), &caps);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GW_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 2]);
    const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    #[test]
    fn udp_frames_round_trip() {
        let src = SocketAddrV4::new(GUEST, 5000);
        let dst = SocketAddrV4::new(GW, 53);
        let frame = udp_frame(GUEST_MAC, GW_MAC, src, dst, b"query").unwrap();
        assert_eq!(classify(&frame, GW_MAC, GW, GUEST), (Some(GUEST_MAC), Action::Udp { src_port: 5000, dst, payload: b"query".to_vec() }));
        // Not from the guest's address, or not to the gateway's MAC: dropped.
        let spoofed = udp_frame(GUEST_MAC, GW_MAC, SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 99), 1), dst, b"x").unwrap();
        assert_eq!(classify(&spoofed, GW_MAC, GW, GUEST).1, Action::Drop);
        let elsewhere = udp_frame(GUEST_MAC, EthernetAddress([2, 0, 0, 0, 0, 9]), src, dst, b"x").unwrap();
        assert_eq!(classify(&elsewhere, GW_MAC, GW, GUEST).1, Action::Drop);
        assert!(udp_frame(GUEST_MAC, GW_MAC, src, dst, &[0; 1473]).is_none());
        assert!(udp_frame(GUEST_MAC, GW_MAC, src, dst, &[0; 1472]).is_some());
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&bytes, GW_MAC, GW, GUEST);
        }

        #[test]
        fn classify_never_panics_on_mutated_frames(flips in proptest::collection::vec((0usize..60, any::<u8>()), 1..8), cut in 0usize..60) {
            let mut frame = udp_frame(GUEST_MAC, GW_MAC, SocketAddrV4::new(GUEST, 1), SocketAddrV4::new(GW, 53), b"0123456789abcdef").unwrap();
            for (at, byte) in flips {
                if let Some(b) = frame.get_mut(at) { *b = byte; }
            }
            frame.truncate(frame.len().saturating_sub(cut));
            let _ = classify(&frame, GW_MAC, GW, GUEST);
        }
    }
}
