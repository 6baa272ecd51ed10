//! The gateway: runs a smoltcp stack facing the guest, checks every new flow against the policy,
//! and carries allowed flows on with host sockets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::config::{GatewayAddresses, Limits};
use crate::device::QueueDevice;
use crate::dns::{self, DnsCache, Parsed};
use crate::error::NetError;
use crate::event::{unix_time, DropLimiter, NetEvent, Protocol};
use crate::frame::{self, Action};
use crate::link::StreamLink;
use crate::policy::{DenyRule, Policy, Verdict};
use crate::tcp::TcpFlow;
use crate::udp::{UdpFlow, UdpKey, UdpMsg};

/// Frames queued from the link reader, and towards the link writer.
const LINK_QUEUE: usize = 512;
/// A listening socket whose SYN never arrived is removed after this long.
const LISTEN_GRACE: Duration = Duration::from_secs(5);
/// A TCP socket whose peer stops acknowledging is aborted after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// A guest TCP flow's identity: guest source port and destination.
type TcpKey = (u16, SocketAddrV4);

/// A user-space gateway for one guest.
#[derive(Debug)]
pub struct Gateway {
    addresses: GatewayAddresses,
    policy: Policy,
    limits: Limits,
    events: mpsc::Sender<NetEvent>,
}

impl Gateway {
    /// A gateway with these addresses, policy and limits, reporting to `events` (with `try_send`:
    /// events are lost rather than the gateway slowed when the receiver lags).
    pub fn new(addresses: GatewayAddresses, policy: Policy, limits: Limits, events: mpsc::Sender<NetEvent>) -> Gateway {
        Gateway { addresses, policy, limits, events }
    }

    /// Serves the guest on `link` (QEMU stream framing) until the guest closes it.
    pub async fn run<L: AsyncRead + AsyncWrite + Send + 'static>(self, link: L) -> Result<(), NetError> {
        let (mut reader, mut writer) = StreamLink::new(link).split();
        let (frames_tx, mut frames_rx) = mpsc::channel::<Result<Vec<u8>, NetError>>(LINK_QUEUE);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
        let read_task = tokio::spawn(async move {
            loop {
                let item = match reader.read_frame().await {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let last = item.is_err();
                if frames_tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        let write_task = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if writer.write_frame(&frame).await.is_err() {
                    return;
                }
            }
        });
        let mut state = State::new(self, out_tx);
        let result = state.serve(&mut frames_rx).await;
        read_task.abort();
        write_task.abort();
        result
    }
}

/// What a DNS lookup task reports.
struct DnsDone {
    src_port: u16,
    name: String,
    response: Vec<u8>,
    addrs: Vec<Ipv4Addr>,
}

/// Everything the running gateway holds.
struct State {
    addresses: GatewayAddresses,
    gateway_mac: EthernetAddress,
    policy: Policy,
    limits: Limits,
    events: mpsc::Sender<NetEvent>,
    out: mpsc::Sender<Vec<u8>>,
    start: Instant,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    guest_mac: Option<EthernetAddress>,
    tcp: HashMap<TcpKey, (SocketHandle, Instant, TcpFlow)>,
    udp: HashMap<UdpKey, UdpFlow>,
    next_udp_id: u64,
    cache: DnsCache,
    /// One permit per host lookup in flight (held until its resolver thread returns).
    dns_slots: Arc<Semaphore>,
    drops: DropLimiter,
    wake: Arc<Notify>,
    udp_tx: mpsc::Sender<UdpMsg>,
    udp_rx: mpsc::Receiver<UdpMsg>,
    dns_tx: mpsc::Sender<DnsDone>,
    dns_rx: mpsc::Receiver<DnsDone>,
}

impl State {
    fn new(gateway: Gateway, out: mpsc::Sender<Vec<u8>>) -> State {
        let Gateway { addresses, policy, limits, events } = gateway;
        let gateway_mac = EthernetAddress(addresses.gateway_mac);
        let mut device = QueueDevice::default();
        let start = Instant::now();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(gateway_mac)), &mut device, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(addresses.gateway_ip), addresses.prefix_len));
        });
        // AnyIP: accept packets to every destination routed via our own address.
        let _ = iface.routes_mut().add_default_ipv4_route(addresses.gateway_ip);
        iface.set_any_ip(true);
        let (udp_tx, udp_rx) = mpsc::channel(256);
        let (dns_tx, dns_rx) = mpsc::channel(limits.max_dns_in_flight.max(1));
        State {
            addresses,
            gateway_mac,
            policy,
            limits,
            events,
            out,
            start,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            guest_mac: None,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            next_udp_id: 0,
            cache: DnsCache::new(limits.dns_cache_entries),
            dns_slots: Arc::new(Semaphore::new(limits.max_dns_in_flight)),
            drops: DropLimiter::new(Duration::from_secs(1)),
            wake: Arc::new(Notify::new()),
            udp_tx,
            udp_rx,
            dns_tx,
            dns_rx,
        }
    }

    async fn serve(&mut self, frames: &mut mpsc::Receiver<Result<Vec<u8>, NetError>>) -> Result<(), NetError> {
        loop {
            self.pump();
            let delay = self.iface.poll_delay(self.now(), &self.sockets).map_or(Duration::from_secs(1), |d| Duration::from_micros(d.total_micros()));
            let wake = self.wake.clone();
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(frame)) => self.guest_frame(frame),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                Some(msg) = self.udp_rx.recv() => self.udp_msg(msg),
                Some(done) = self.dns_rx.recv() => self.dns_done(done),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(delay.min(Duration::from_secs(1))) => {}
            }
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// Polls the stack, moves flow data, polls again, cleans up and sends what the stack produced.
    fn pump(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        for (handle, _, flow) in self.tcp.values_mut() {
            flow.service(self.sockets.get_mut::<tcp::Socket>(*handle));
        }
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let sockets = &mut self.sockets;
        self.tcp.retain(|_, (handle, created, _)| {
            let state = sockets.get::<tcp::Socket>(*handle).state();
            let keep = match state {
                tcp::State::Closed | tcp::State::TimeWait => false,
                tcp::State::Listen => created.elapsed() < LISTEN_GRACE,
                _ => true,
            };
            if !keep {
                sockets.remove(*handle);
            }
            keep
        });
        self.flush();
    }

    /// Sends the stack's frames to the guest, addressed to the guest's current MAC.
    fn flush(&mut self) {
        while let Some(mut frame) = self.device.tx.pop_front() {
            if let (Some(mac), Some(dst)) = (self.guest_mac, frame.get_mut(..6)) {
                if dst != [0xff; 6] {
                    dst.copy_from_slice(&mac.0);
                }
            }
            self.send_frame(frame);
        }
    }

    fn send_frame(&mut self, frame: Vec<u8>) {
        if self.out.try_send(frame).is_err() {
            self.dropped("link_queue_full");
        }
    }

    fn emit(&self, event: NetEvent) {
        let _ = self.events.try_send(event);
    }

    fn dropped(&mut self, reason: &'static str) {
        if let Some(event) = self.drops.drop_one(reason, Instant::now()) {
            self.emit(event);
        }
    }

    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.cache.names(IpAddr::V4(ip)).first().cloned()
    }

    fn denied(&self, protocol: Protocol, dst: SocketAddrV4, rule: DenyRule) {
        let name = self.name_of(*dst.ip());
        self.emit(NetEvent::Denied { unix_time: unix_time(), protocol, destination: IpAddr::V4(*dst.ip()), port: dst.port(), name, rule });
    }

    fn allowed(&self, protocol: Protocol, dst: SocketAddrV4) {
        let name = self.name_of(*dst.ip());
        self.emit(NetEvent::Allowed { unix_time: unix_time(), protocol, destination: IpAddr::V4(*dst.ip()), port: dst.port(), name });
    }

    fn verdict(&self, dst: Ipv4Addr) -> Verdict {
        self.policy.check(IpAddr::V4(dst), self.cache.names(IpAddr::V4(dst)))
    }

    fn guest_frame(&mut self, frame: Vec<u8>) {
        let a = &self.addresses;
        let (src_mac, action) = frame::classify(&frame, self.gateway_mac, a.gateway_ip, a.guest_ip);
        if let Some(mac) = src_mac {
            self.guest_mac = Some(mac);
        }
        let to_stack = match action {
            Action::Drop => false,
            Action::Stack => true,
            Action::TcpSyn { src_port, dst } => self.tcp_syn(src_port, dst),
            Action::Udp { src_port, dst, payload } => {
                self.udp_datagram(src_port, dst, payload);
                false
            }
        };
        if to_stack {
            self.device.rx.push_back(frame);
            self.iface.poll(self.now(), &mut self.device, &mut self.sockets);
        }
    }

    /// Decides a SYN; returns whether the stack should see it (it answers a SYN with no listening
    /// socket with RST, which is how a denied flow is refused).
    fn tcp_syn(&mut self, src_port: u16, dst: SocketAddrV4) -> bool {
        let key = (src_port, dst);
        if self.tcp.contains_key(&key) {
            return true;
        }
        if let Verdict::Deny(rule) = self.verdict(*dst.ip()) {
            self.denied(Protocol::Tcp, dst, rule);
            return true;
        }
        if self.tcp.len() >= self.limits.max_tcp_flows {
            self.dropped("tcp_flows");
            return false;
        }
        let buf = self.limits.socket_buffer.max(1);
        let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buf]), tcp::SocketBuffer::new(vec![0; buf]));
        sock.set_timeout(Some(smoltcp::time::Duration::from_secs(TCP_TIMEOUT.as_secs())));
        let endpoint = IpListenEndpoint { addr: Some(IpAddress::Ipv4(*dst.ip())), port: dst.port() };
        if dst.port() == 0 || sock.listen(endpoint).is_err() {
            return true;
        }
        let handle = self.sockets.add(sock);
        let flow = TcpFlow::start(SocketAddr::V4(dst), self.limits.connect_timeout, self.wake.clone());
        self.tcp.insert(key, (handle, Instant::now(), flow));
        self.allowed(Protocol::Tcp, dst);
        true
    }

    fn udp_datagram(&mut self, src_port: u16, dst: SocketAddrV4, payload: Vec<u8>) {
        if *dst.ip() == self.addresses.gateway_ip {
            if dst.port() == 53 {
                self.dns_query(src_port, &payload);
            } else {
                self.denied(Protocol::Udp, dst, DenyRule::Gateway);
            }
            return;
        }
        let key = (src_port, dst);
        if let Some(flow) = self.udp.get(&key) {
            if flow.to_host.try_send(payload).is_err() {
                self.dropped("udp_queue_full");
            }
            return;
        }
        if let Verdict::Deny(rule) = self.verdict(*dst.ip()) {
            self.denied(Protocol::Udp, dst, rule);
            return;
        }
        if self.udp.len() >= self.limits.max_udp_flows {
            self.dropped("udp_flows");
            return;
        }
        self.next_udp_id += 1;
        let flow = UdpFlow::start(key, self.next_udp_id, self.limits.udp_idle_timeout, self.udp_tx.clone());
        let _ = flow.to_host.try_send(payload);
        self.udp.insert(key, flow);
        self.allowed(Protocol::Udp, dst);
    }

    fn udp_msg(&mut self, msg: UdpMsg) {
        match msg {
            UdpMsg::Reply { key: (guest_port, remote), data } => self.send_udp(remote, guest_port, &data),
            UdpMsg::Closed { key, id } => {
                if self.udp.get(&key).is_some_and(|f| f.id == id) {
                    self.udp.remove(&key);
                }
            }
        }
    }

    fn send_udp(&mut self, from: SocketAddrV4, guest_port: u16, data: &[u8]) {
        let Some(guest_mac) = self.guest_mac else { return };
        let to = SocketAddrV4::new(self.addresses.guest_ip, guest_port);
        match frame::udp_frame(self.gateway_mac, guest_mac, from, to, data) {
            Some(frame) => self.send_frame(frame),
            None => self.dropped("udp_too_large"),
        }
    }

    fn dns_query(&mut self, src_port: u16, payload: &[u8]) {
        let server = SocketAddrV4::new(self.addresses.gateway_ip, 53);
        let query = match dns::parse_query(payload) {
            Parsed::Drop => return,
            Parsed::Reject(response) => return self.send_udp(server, src_port, &response),
            Parsed::Query(query) => query,
        };
        if !dns::needs_lookup(&query) {
            return self.send_udp(server, src_port, &dns::answer_without_lookup(&query));
        }
        // The slot is held until the host resolver's thread is done, not just until the
        // guest got its (timed-out) answer: a flood of slow names cannot pile up threads.
        let Ok(slot) = self.dns_slots.clone().try_acquire_owned() else {
            return self.dropped("dns_in_flight");
        };
        let done = self.dns_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let name = query.name.clone();
            dns::answer_with_lookup(&query, |response, addrs| {
                let _ = done.try_send(DnsDone { src_port, name, response, addrs });
            })
            .await;
        });
    }

    fn dns_done(&mut self, done: DnsDone) {
        for addr in &done.addrs {
            self.cache.insert(IpAddr::V4(*addr), &done.name);
        }
        self.send_udp(SocketAddrV4::new(self.addresses.gateway_ip, 53), done.src_port, &done.response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::SocketHandle;
    use smoltcp::socket::udp;
    use smoltcp::wire::{IpEndpoint, Ipv4Address};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
    use tokio::net::TcpListener;

    /// A second smoltcp stack acting as the guest, framed to the gateway over a duplex pipe.
    struct Guest {
        iface: Interface,
        device: QueueDevice,
        sockets: SocketSet<'static>,
        writer: StreamLink<WriteHalf<DuplexStream>>,
        frames: mpsc::Receiver<Vec<u8>>,
        start: Instant,
    }

    impl Guest {
        /// A UDP socket of the guest bound to `port`.
        fn udp_socket(&mut self, port: u16) -> SocketHandle {
            let mut sock = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            );
            sock.bind(port).unwrap();
            self.sockets.add(sock)
        }

        fn now(&self) -> smoltcp::time::Instant {
            smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64)
        }

        /// One round: poll, send, take what arrived, poll again.
        async fn step(&mut self) {
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            while let Some(frame) = self.device.tx.pop_front() {
                self.writer.write_frame(&frame).await.unwrap();
            }
            if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(5), self.frames.recv()).await {
                self.device.rx.push_back(frame);
            }
            while let Ok(frame) = self.frames.try_recv() {
                self.device.rx.push_back(frame);
            }
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }

        fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(handle)
        }

        fn connect(&mut self, dst: SocketAddrV4, local_port: u16) -> SocketHandle {
            let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
            sock.connect(self.iface.context(), IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port()), local_port).unwrap();
            self.sockets.add(sock)
        }
    }

    /// Starts a gateway with `policy` and a guest wired to it; returns the guest and the events.
    fn start(policy: Policy) -> (Guest, mpsc::Receiver<NetEvent>) {
        let (guest_io, gateway_io) = tokio::io::duplex(1 << 20);
        let (events_tx, events) = mpsc::channel(64);
        let gateway = Gateway::new(GatewayAddresses::default(), policy, Limits::default(), events_tx);
        tokio::spawn(gateway.run(gateway_io));
        let (mut reader, writer) = StreamLink::new(guest_io).split();
        let (frames_tx, frames) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.read_frame().await {
                if frames_tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let mut device = QueueDevice::default();
        let mac = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut device, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 15)), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2)).unwrap();
        (Guest { iface, device, sockets: SocketSet::new(Vec::new()), writer, frames, start: Instant::now() }, events)
    }

    fn open_policy() -> Policy {
        Policy::new(None, Vec::new(), Ipv4Addr::new(10, 0, 2, 2))
    }

    fn dns_query(name: &str) -> Vec<u8> {
        let mut out = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.extend_from_slice(&[0, 0, 1, 0, 1]);
        out
    }

    #[tokio::test]
    async fn guest_dns_query_for_localhost_is_answered() {
        let (mut guest, _events) = start(open_policy());
        let handle = guest.udp_socket(40000);
        let server = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 2)), 53);
        guest.sockets.get_mut::<udp::Socket>(handle).send_slice(&dns_query("localhost"), server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            assert!(Instant::now() < deadline, "no DNS answer");
            guest.step().await;
            if let Ok((data, meta)) = guest.sockets.get_mut::<udp::Socket>(handle).recv() {
                assert_eq!(meta.endpoint, server);
                break data.to_vec();
            }
        };
        assert_eq!(&answer[..2], &[0xab, 0xcd]);
        assert_eq!(answer[3] & 0xf, 0, "rcode");
        assert!(u16::from_be_bytes([answer[6], answer[7]]) >= 1, "no answers: {answer:?}");
        assert!(answer.windows(4).any(|w| w == [127, 0, 0, 1]), "{answer:?}");
    }

    async fn expect_refused(guest: &mut Guest, events: &mut mpsc::Receiver<NetEvent>, dst: SocketAddrV4, rule: DenyRule) {
        let handle = guest.connect(dst, 41000 + dst.port());
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(guest.tcp(handle).state(), tcp::State::SynSent);
        loop {
            assert!(Instant::now() < deadline, "connect to {dst} was not refused");
            guest.step().await;
            match guest.tcp(handle).state() {
                tcp::State::Closed => break,
                tcp::State::Established => panic!("connect to {dst} succeeded"),
                _ => {}
            }
        }
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        match event {
            NetEvent::Denied { protocol, destination, port, rule: got, .. } => {
                assert_eq!((protocol, destination, port, got), (Protocol::Tcp, IpAddr::V4(*dst.ip()), dst.port(), rule));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn denied_tcp_connects_are_reset_and_reported() {
        let (mut guest, mut events) = start(open_policy());
        expect_refused(&mut guest, &mut events, SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80), DenyRule::LinkLocal).await;
        expect_refused(&mut guest, &mut events, SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 22), DenyRule::Gateway).await;
        expect_refused(&mut guest, &mut events, SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9), DenyRule::Loopback).await;
    }

    #[tokio::test]
    async fn allowed_tcp_flow_carries_data_both_ways_with_half_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(b"pong:").await.unwrap();
            conn.write_all(&got).await.unwrap();
            conn.shutdown().await.unwrap();
            got.len()
        });
        let mut policy = open_policy();
        policy.allow_loopback_for_tests = true;
        let (mut guest, mut events) = start(policy);
        let handle = guest.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), 42000);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut sent, mut closed, mut received) = (0usize, false, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "flow stalled: sent {sent}, received {}", received.len());
            guest.step().await;
            let sock = guest.tcp(handle);
            if sock.can_send() && sent < payload.len() {
                sent += sock.send_slice(&payload[sent..]).unwrap();
            }
            if sent == payload.len() && !closed {
                sock.close();
                closed = true;
            }
            while sock.can_recv() {
                sock.recv(|b| {
                    received.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if closed && !sock.may_recv() && matches!(sock.state(), tcp::State::TimeWait | tcp::State::Closed | tcp::State::Closing) {
                break;
            }
        }
        assert_eq!(server.await.unwrap(), payload.len());
        assert_eq!(&received[..5], b"pong:");
        assert!(received[5..] == payload[..], "echo differs ({} bytes)", received.len());
        match events.recv().await.unwrap() {
            NetEvent::Allowed { protocol, destination, port: p, .. } => {
                assert_eq!((protocol, destination, p), (Protocol::Tcp, IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn failed_host_connect_resets_the_guest() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut policy = open_policy();
        policy.allow_loopback_for_tests = true;
        let (mut guest, _events) = start(policy);
        let handle = guest.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), 43000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while guest.tcp(handle).state() != tcp::State::Closed {
            assert!(Instant::now() < deadline, "not reset: {}", guest.tcp(handle).state());
            guest.step().await;
        }
    }

    #[tokio::test]
    async fn allowed_udp_flow_carries_datagrams_both_ways() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server.send_to(&reply, from).await.unwrap();
        });
        let mut policy = open_policy();
        policy.allow_loopback_for_tests = true;
        let (mut guest, mut events) = start(policy);
        let handle = guest.udp_socket(40001);
        let remote = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::LOCALHOST), port);
        guest.sockets.get_mut::<udp::Socket>(handle).send_slice(b"hi", remote).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no UDP reply");
            guest.step().await;
            if let Ok((data, meta)) = guest.sockets.get_mut::<udp::Socket>(handle).recv() {
                assert_eq!((data, meta.endpoint), (&b"re:hi"[..], remote));
                break;
            }
        }
        assert!(matches!(events.recv().await.unwrap(), NetEvent::Allowed { protocol: Protocol::Udp, .. }));
    }

    #[tokio::test]
    async fn udp_to_the_gateway_other_than_dns_is_denied() {
        let (mut guest, mut events) = start(open_policy());
        let handle = guest.udp_socket(40002);
        let remote = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 2)), 123);
        guest.sockets.get_mut::<udp::Socket>(handle).send_slice(b"ntp?", remote).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let event = loop {
            assert!(Instant::now() < deadline, "no event");
            guest.step().await;
            if let Ok(event) = events.try_recv() {
                break event;
            }
        };
        assert!(matches!(event, NetEvent::Denied { protocol: Protocol::Udp, port: 123, rule: DenyRule::Gateway, .. }), "{event:?}");
    }
}
