//! One guest TCP flow: the smoltcp socket that terminates it, the host connection that carries it
//! on, and the bounded shuttling of bytes between the two (with half-close both ways).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smoltcp::socket::tcp::{Socket, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Bytes moved per message between the gateway and a host connection.
pub(crate) const CHUNK: usize = 16 * 1024;
/// Chunks buffered each way between the gateway and a host connection.
const CHANNEL_CHUNKS: usize = 4;

/// From the host connection to the gateway.
pub(crate) enum HostMsg {
    Data(Vec<u8>),
    Eof,
    Failed,
}

/// The gateway's side of one flow.
pub(crate) struct TcpFlow {
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    from_host: mpsc::Receiver<HostMsg>,
    pending: Vec<u8>,
    pending_at: usize,
    host_eof: bool,
    fin_sent: bool,
    task: JoinHandle<()>,
}

impl TcpFlow {
    /// Starts the host connection to `dst` (it wakes `wake` whenever it moved something).
    pub(crate) fn start(dst: SocketAddr, connect_timeout: Duration, wake: Arc<Notify>) -> TcpFlow {
        let (to_host, host_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (host_tx, from_host) = mpsc::channel(CHANNEL_CHUNKS);
        let task = tokio::spawn(host_connection(dst, connect_timeout, host_rx, host_tx, wake));
        TcpFlow { to_host: Some(to_host), from_host, pending: Vec::new(), pending_at: 0, host_eof: false, fin_sent: false, task }
    }

    /// Moves what can be moved between the socket and the host connection, without waiting.
    pub(crate) fn service(&mut self, sock: &mut Socket<'_>) {
        loop {
            if self.pending_at >= self.pending.len() {
                if self.host_eof {
                    break;
                }
                match self.from_host.try_recv() {
                    Ok(HostMsg::Data(data)) => (self.pending, self.pending_at) = (data, 0),
                    Ok(HostMsg::Failed) => {
                        sock.abort();
                        return;
                    }
                    Ok(HostMsg::Eof) | Err(TryRecvError::Disconnected) => self.host_eof = true,
                    Err(TryRecvError::Empty) => break,
                }
                continue;
            }
            if !sock.can_send() {
                break;
            }
            match sock.send_slice(&self.pending[self.pending_at..]) {
                Ok(n) if n > 0 => self.pending_at += n,
                _ => break,
            }
        }
        if self.host_eof && self.pending_at >= self.pending.len() && !self.fin_sent && sock.may_send() {
            sock.close();
            self.fin_sent = true;
        }
        if let Some(tx) = &self.to_host {
            while sock.can_recv() {
                let Ok(permit) = tx.try_reserve() else { break };
                match sock.recv(|b| {
                    let n = b.len().min(CHUNK);
                    (n, b[..n].to_vec())
                }) {
                    Ok(data) => permit.send(data),
                    Err(_) => break,
                }
            }
            let guest_done = matches!(sock.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed);
            if guest_done && !sock.can_recv() {
                self.to_host = None;
            }
        }
    }

    /// Whether both sides finished cleanly, so the host connection may drain on its own.
    fn graceful(&self) -> bool {
        self.to_host.is_none() && self.fin_sent
    }
}

/// How long a cleanly closed flow's host connection may take to deliver the guest's last
/// bytes (a host that never reads them must not keep the task, or its memory, forever).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

impl Drop for TcpFlow {
    fn drop(&mut self) {
        if !self.graceful() {
            self.task.abort();
            return;
        }
        let task = self.task.abort_handle();
        if !task.is_finished() {
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN_LIMIT).await;
                task.abort();
            });
        }
    }
}

/// Connects to `dst`, then copies both ways until both directions ended.
async fn host_connection(
    dst: SocketAddr,
    connect_timeout: Duration,
    mut to_host: mpsc::Receiver<Vec<u8>>,
    from_host: mpsc::Sender<HostMsg>,
    wake: Arc<Notify>,
) {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(dst)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            let _ = from_host.send(HostMsg::Failed).await;
            wake.notify_one();
            return;
        }
    };
    let (mut read, mut write) = stream.into_split();
    let failed = from_host.clone();
    let reader = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let msg = match read.read(&mut buf).await {
                Ok(0) => HostMsg::Eof,
                Ok(n) => HostMsg::Data(buf[..n].to_vec()),
                Err(_) => HostMsg::Failed,
            };
            let last = !matches!(msg, HostMsg::Data(_));
            let sent = from_host.send(msg).await.is_ok();
            wake.notify_one();
            if last || !sent {
                return;
            }
        }
    };
    let writer = async {
        while let Some(data) = to_host.recv().await {
            wake.notify_one();
            if write.write_all(&data).await.is_err() {
                let _ = failed.send(HostMsg::Failed).await;
                wake.notify_one();
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    tokio::join!(reader, writer);
}
