//! One guest UDP flow (guest port to one destination) carried by a host UDP socket that closes
//! after an idle time.

use std::net::SocketAddrV4;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Datagrams queued from the guest to one host socket.
const QUEUE: usize = 32;

/// A flow's identity: guest source port and destination.
pub(crate) type UdpKey = (u16, SocketAddrV4);

/// From a host UDP socket to the gateway.
pub(crate) enum UdpMsg {
    /// A datagram for the guest.
    Reply { key: UdpKey, data: Vec<u8> },
    /// The flow with this id ended (idle or failed).
    Closed { key: UdpKey, id: u64 },
}

/// The gateway's side of one UDP flow.
pub(crate) struct UdpFlow {
    pub(crate) id: u64,
    pub(crate) to_host: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

impl UdpFlow {
    /// Starts a host socket for `key`, reporting to `report`.
    pub(crate) fn start(key: UdpKey, id: u64, idle: Duration, report: mpsc::Sender<UdpMsg>) -> UdpFlow {
        let (to_host, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(host_socket(key, id, idle, rx, report));
        UdpFlow { id, to_host, task }
    }
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn host_socket(key: UdpKey, id: u64, idle: Duration, mut from_guest: mpsc::Receiver<Vec<u8>>, report: mpsc::Sender<UdpMsg>) {
    if let Ok(sock) = UdpSocket::bind(("0.0.0.0", 0)).await {
        if sock.connect(key.1).await.is_ok() {
            let mut buf = vec![0u8; 65536];
            loop {
                tokio::select! {
                    got = sock.recv(&mut buf) => match got {
                        Ok(n) => if report.send(UdpMsg::Reply { key, data: buf[..n].to_vec() }).await.is_err() { return },
                        Err(_) => break,
                    },
                    datagram = from_guest.recv() => match datagram {
                        Some(d) => { let _ = sock.send(&d).await; }
                        None => break,
                    },
                    _ = tokio::time::sleep(idle) => break,
                }
            }
        }
    }
    let _ = report.send(UdpMsg::Closed { key, id }).await;
}
