//! The supervisor's relay: routes frames between any number of CLI clients and the one
//! guest channel, remapping stream ids so clients never see each other, and cancelling a
//! client's open requests in the guest when it disconnects.
//!
//! Bounds (the guest and the clients are both untrusted here):
//! - Each client has a queue of at most [`RelayLimits::client_queue_bytes`] bytes and
//!   [`RelayLimits::client_queue_frames`] frames. When it is full, the guest pump waits
//!   for room (which slows the guest down to the client's pace, as a single byte stream
//!   without per-stream credits must); a client whose queue stays full for
//!   [`RelayLimits::client_stall`] is disconnected and its open requests are cancelled in
//!   the guest. Meanwhile other clients wait too, at most that long.
//! - Cancels to the guest are never dropped: they go through their own queue, drained
//!   into the guest writer by a task of their own, so neither the guest pump nor a
//!   client's task ever waits on the guest for them. That queue holds at most one cancel
//!   per stream ever routed to the guest (a stream's route is removed when its cancel is
//!   queued), and routing needs the guest to take requests, so it stays tiny.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyro_protocol::{read_frame, write_frame, Frame, FrameKind, Hello, MAX_FRAME_PAYLOAD};
use tokio::io::AsyncRead;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Bytes a queued frame is charged beyond its payload (header, bookkeeping), so that
/// empty frames count too.
const FRAME_OVERHEAD: usize = 64;

/// Queue bounds of the relay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayLimits {
    /// Bytes (payloads plus [`FRAME_OVERHEAD`] each) queued for one client at most.
    /// Raised to one maximal frame if smaller.
    pub client_queue_bytes: usize,
    /// Frames queued for one client at most.
    pub client_queue_frames: usize,
    /// How long a client's queue may stay full before the client is disconnected. Longer
    /// than the client's own slow-consumer limit (`ClientLimits::consumer_stall`, 5 s),
    /// so a client can cancel one slow call before it loses its whole connection.
    pub client_stall: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self { client_queue_bytes: 32 << 20, client_queue_frames: 4096, client_stall: Duration::from_secs(10) }
    }
}

/// A frame waiting for a client's writer; its permit holds its share of the byte budget.
struct Queued {
    frame: Frame,
    _permit: OwnedSemaphorePermit,
}

/// The sending side of one client's queue.
#[derive(Clone)]
struct ClientQueue {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    /// Set to true to make the client's task close its connection.
    kick: Arc<watch::Sender<bool>>,
}

impl ClientQueue {
    /// Queues `frame`, waiting at most `stall` for room. False when the client is not
    /// taking its frames (or is gone).
    async fn push(&self, frame: Frame, stall: Duration) -> bool {
        let cost = u32::try_from(frame.payload.len() + FRAME_OVERHEAD).unwrap_or(u32::MAX);
        // Fast path: room right now, no timer.
        let frame = match self.budget.clone().try_acquire_many_owned(cost) {
            Ok(permit) => match self.tx.try_send(Queued { frame, _permit: permit }) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(queued)) => queued.frame,
            },
            Err(tokio::sync::TryAcquireError::Closed) => return false,
            Err(tokio::sync::TryAcquireError::NoPermits) => frame,
        };
        let wait = async {
            let permit = self.budget.clone().acquire_many_owned(cost).await.ok()?;
            self.tx.send(Queued { frame, _permit: permit }).await.ok()
        };
        matches!(tokio::time::timeout(stall, wait).await, Ok(Some(())))
    }
}

/// Routes frames between clients and the guest.
#[derive(Clone)]
pub(crate) struct Relay {
    inner: Arc<Mutex<RelayState>>,
    next_stream: Arc<AtomicU32>,
    /// Cancels for the guest (see the module docs); drained once a guest is attached.
    cancels: mpsc::UnboundedSender<Frame>,
    cancels_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Frame>>>>,
    limits: RelayLimits,
}

struct RelayState {
    /// Last time a client sent a frame or a request was open.
    last_activity: Instant,
    guest: Option<mpsc::Sender<Frame>>,
    clients: HashMap<u64, ClientQueue>,
    /// guest stream → (client, client stream)
    routes: HashMap<u32, (u64, u32)>,
    /// (client, client stream) → guest stream
    reverse: HashMap<(u64, u32), u32>,
    next_client: u64,
}

impl Default for RelayState {
    fn default() -> Self {
        Self { last_activity: Instant::now(), guest: None, clients: HashMap::new(), routes: HashMap::new(), reverse: HashMap::new(), next_client: 0 }
    }
}

impl Relay {
    pub(crate) fn new() -> Self {
        Self::with_limits(RelayLimits::default())
    }

    pub(crate) fn with_limits(limits: RelayLimits) -> Self {
        let limits = RelayLimits {
            client_queue_bytes: limits.client_queue_bytes.max(MAX_FRAME_PAYLOAD + 1 + FRAME_OVERHEAD).min(u32::MAX as usize),
            client_queue_frames: limits.client_queue_frames.max(1),
            ..limits
        };
        let (cancels, cancels_rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Mutex::new(RelayState::default())),
            next_stream: Arc::new(AtomicU32::new(1)),
            cancels,
            cancels_rx: Arc::new(Mutex::new(Some(cancels_rx))),
            limits,
        }
    }

    pub(crate) fn next_stream(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// How long nothing has happened: zero while any request is open.
    pub(crate) fn idle_time(&self) -> Duration {
        let mut state = self.inner.lock().expect("relay lock");
        if !state.routes.is_empty() {
            state.last_activity = Instant::now();
        }
        state.last_activity.elapsed()
    }

    /// Attaches the guest writer and starts draining cancels into it (must run inside
    /// the runtime).
    pub(crate) fn attach_guest(&self, tx: mpsc::Sender<Frame>) {
        self.inner.lock().expect("relay lock").guest = Some(tx.clone());
        if let Some(mut cancels) = self.cancels_rx.lock().expect("relay lock").take() {
            tokio::spawn(async move {
                while let Some(cancel) = cancels.recv().await {
                    if tx.send(cancel).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// Registers a client; returns its id, its queue and the receiving end of it.
    fn add_client(&self) -> (u64, ClientQueue, mpsc::Receiver<Queued>, watch::Receiver<bool>) {
        let (tx, rx) = mpsc::channel(self.limits.client_queue_frames);
        let (kick, kicked) = watch::channel(false);
        let queue = ClientQueue { tx, budget: Arc::new(Semaphore::new(self.limits.client_queue_bytes)), kick: Arc::new(kick) };
        let mut state = self.inner.lock().expect("relay lock");
        state.next_client += 1;
        let id = state.next_client;
        state.clients.insert(id, queue.clone());
        (id, queue, rx, kicked)
    }

    /// Drops a client (if still there), cancels whatever it still had running in the
    /// guest and tells its task to close the connection.
    fn disconnect(&self, client: u64) {
        let mut state = self.inner.lock().expect("relay lock");
        let queue = state.clients.remove(&client);
        let open: Vec<(u32, u32)> = state.reverse.iter().filter(|((c, _), _)| *c == client).map(|((_, s), g)| (*s, *g)).collect();
        for (client_stream, guest_stream) in open {
            state.reverse.remove(&(client, client_stream));
            state.routes.remove(&guest_stream);
            // Unbounded but tiny: one cancel per route, and the route is gone now.
            let _ = self.cancels.send(Frame::empty(guest_stream, FrameKind::Cancel));
        }
        drop(state);
        if let Some(queue) = queue {
            queue.kick.send_replace(true);
        }
    }

    /// Rewrites a client frame for the guest.
    fn to_guest(&self, client: u64, mut frame: Frame) -> Option<(mpsc::Sender<Frame>, Frame)> {
        let mut state = self.inner.lock().expect("relay lock");
        state.last_activity = Instant::now();
        let guest = state.guest.clone()?;
        let guest_stream = match frame.kind {
            FrameKind::Request => {
                let id = self.next_stream();
                state.routes.insert(id, (client, frame.stream));
                if let Some(stale) = state.reverse.insert((client, frame.stream), id) {
                    // The client reused a stream id that is still open: forget the old one.
                    state.routes.remove(&stale);
                }
                id
            }
            // The client gave up on the stream: nothing more goes to it (the agent's
            // "cancelled" answer is dropped), and it no longer holds off the idle stop.
            FrameKind::Cancel => {
                let id = state.reverse.remove(&(client, frame.stream))?;
                state.routes.remove(&id);
                id
            }
            _ => *state.reverse.get(&(client, frame.stream))?,
        };
        frame.stream = guest_stream;
        Some((guest, frame))
    }

    /// Delivers a guest frame to the client that owns its stream, waiting (bounded) for
    /// room in the client's queue; a client that takes nothing for too long is
    /// disconnected.
    async fn to_client(&self, mut frame: Frame) {
        let (client, queue) = {
            let mut state = self.inner.lock().expect("relay lock");
            let Some(&(client, client_stream)) = state.routes.get(&frame.stream) else { return };
            if frame.kind == FrameKind::Response {
                state.routes.remove(&frame.stream);
                state.reverse.remove(&(client, client_stream));
            }
            frame.stream = client_stream;
            let Some(queue) = state.clients.get(&client).cloned() else { return };
            (client, queue)
        };
        if !queue.push(frame, self.limits.client_stall).await {
            tracing::warn!("client {client} took no frames for {:?}; disconnecting it", self.limits.client_stall);
            self.disconnect(client);
        }
    }

    pub(crate) fn close_all(&self) {
        let mut state = self.inner.lock().expect("relay lock");
        for (_, queue) in state.clients.drain() {
            queue.kick.send_replace(true);
        }
        state.guest = None;
    }
}

pub(crate) async fn pump_guest<R: AsyncRead + Unpin>(mut read: R, relay: Relay) {
    while let Ok(Some(frame)) = read_frame(&mut read).await {
        if frame.kind != FrameKind::Hello {
            relay.to_client(frame).await;
        }
    }
}

pub(crate) async fn accept_clients(listener: UnixListener, relay: Relay, ready: watch::Receiver<Option<Result<Hello, String>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        // The socket is 0600 in a 0700 directory; the peer check holds even if a looser
        // umask or a shared state directory ever made it reachable.
        if !crate::host_process::same_user(&stream) {
            tracing::warn!("refused a control connection from another user");
            continue;
        }
        tokio::spawn(serve_client(stream, relay.clone(), ready.clone()));
    }
}

async fn serve_client(stream: UnixStream, relay: Relay, mut ready: watch::Receiver<Option<Result<Hello, String>>>) {
    let hello = match ready.wait_for(|state| state.is_some()).await {
        Ok(state) => match state.as_ref() {
            Some(Ok(hello)) => hello.clone(),
            _ => return, // boot failed: closing tells the client to read supervisor.json
        },
        Err(_) => return,
    };
    let (mut read, mut write) = stream.into_split();
    let (client, queue, mut rx, mut kicked) = relay.add_client();
    let writer = tokio::spawn(async move {
        while let Some(queued) = rx.recv().await {
            if write_frame(&mut write, &queued.frame).await.is_err() {
                break;
            }
        }
    });
    let stall = relay.limits.client_stall;
    if queue.push(Frame::json(0, FrameKind::Hello, &hello), stall).await {
        loop {
            let frame = tokio::select! {
                _ = kicked.wait_for(|kicked| *kicked) => break,
                frame = read_frame(&mut read) => match frame {
                    Ok(Some(frame)) => frame,
                    _ => break,
                },
            };
            if frame.kind == FrameKind::Hello {
                // Knocks are answered through the same bounded queue: a client that
                // knocks without reading is disconnected like any other.
                if !queue.push(Frame::json(0, FrameKind::Hello, &hello), stall).await {
                    break;
                }
                continue;
            }
            if let Some((guest, frame)) = relay.to_guest(client, frame) {
                tokio::select! {
                    _ = kicked.wait_for(|kicked| *kicked) => break,
                    sent = guest.send(frame) => if sent.is_err() { break },
                }
            }
        }
    }
    relay.disconnect(client);
    drop(queue);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_protocol::{DataChannel, Request, Response};

    fn hello() -> Hello {
        Hello {
            protocol_version: pyro_protocol::PROTOCOL_VERSION,
            agent_version: "test".into(),
            kernel_release: "test".into(),
            uptime_ms: None,
            capabilities: None,
        }
    }

    fn small_limits() -> RelayLimits {
        RelayLimits { client_queue_bytes: 0, client_queue_frames: 64, client_stall: Duration::from_millis(300) }
    }

    async fn serve(relay: &Relay) -> UnixStream {
        let (ready_tx, ready_rx) = watch::channel(Some(Ok(hello())));
        let (client_end, relay_end) = UnixStream::pair().unwrap();
        let relay = relay.clone();
        tokio::spawn(async move {
            let _keep = ready_tx;
            serve_client(relay_end, relay, ready_rx).await;
        });
        client_end
    }

    async fn read_one(stream: &mut UnixStream) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), read_frame(stream)).await.expect("frame in time").unwrap().expect("a frame")
    }

    /// Sends a request as the client and returns the guest stream id it was mapped to.
    async fn open_request(client: &mut UnixStream, guest: &mut mpsc::Receiver<Frame>, client_stream: u32) -> u32 {
        write_frame(client, &Frame::json(client_stream, FrameKind::Request, &Request::Ping)).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), guest.recv()).await.unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Request);
        frame.stream
    }

    #[tokio::test]
    async fn routes_requests_and_responses() {
        let relay = Relay::with_limits(small_limits());
        let (guest_tx, mut guest_rx) = mpsc::channel(256);
        relay.attach_guest(guest_tx);
        let mut client = serve(&relay).await;
        assert_eq!(read_one(&mut client).await.kind, FrameKind::Hello);
        let guest_stream = open_request(&mut client, &mut guest_rx, 7).await;
        relay.to_client(Frame::data(guest_stream, DataChannel::Stdout, b"hi")).await;
        relay.to_client(Frame::json(guest_stream, FrameKind::Response, &Response::Ok)).await;
        let data = read_one(&mut client).await;
        assert_eq!((data.stream, data.kind), (7, FrameKind::Data));
        let response = read_one(&mut client).await;
        assert_eq!((response.stream, response.kind), (7, FrameKind::Response));
        assert!(relay.inner.lock().unwrap().routes.is_empty());
    }

    /// A client that never reads while the guest floods it is disconnected, its request
    /// is cancelled in the guest, and no more than the queue budget is ever held for it.
    #[tokio::test]
    async fn a_client_that_does_not_read_is_disconnected_with_bounded_memory() {
        let limits = small_limits();
        let relay = Relay::with_limits(limits);
        let budget = relay.limits.client_queue_bytes;
        let (guest_tx, mut guest_rx) = mpsc::channel(256);
        relay.attach_guest(guest_tx);
        let mut client = serve(&relay).await;
        assert_eq!(read_one(&mut client).await.kind, FrameKind::Hello);
        let guest_stream = open_request(&mut client, &mut guest_rx, 1).await;

        // The hostile guest: 256 KiB frames as fast as the relay takes them, far more than
        // the budget plus any socket buffer (at most 1 GiB, stopping once disconnected).
        let chunk = vec![0x55u8; 256 * 1024];
        let started = Instant::now();
        let mut sent = 0usize;
        let mut max_queued = 0usize;
        let flood = async {
            while sent < (1 << 30) {
                relay.to_client(Frame::data(guest_stream, DataChannel::Stdout, &chunk)).await;
                sent += chunk.len();
                let state = relay.inner.lock().unwrap();
                let Some(queue) = state.clients.values().next() else { break };
                max_queued = max_queued.max(budget - queue.budget.available_permits());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), flood).await.expect("the relay never gave up on the client");
        assert!(sent < (1 << 30), "the relay never disconnected the client");
        assert!(max_queued <= budget, "queued {max_queued} bytes, budget {budget}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The route is gone and the guest got a Cancel for the stream.
        assert!(relay.inner.lock().unwrap().routes.is_empty());
        let cancel = tokio::time::timeout(Duration::from_secs(5), guest_rx.recv()).await.unwrap().unwrap();
        assert_eq!((cancel.stream, cancel.kind), (guest_stream, FrameKind::Cancel));

        // The client's connection is closed: what it can still read is bounded by the
        // budget plus the kernel socket buffers, then EOF.
        let mut buffered = 0usize;
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut client)).await.expect("EOF in time") {
            buffered += frame.payload.len();
        }
        assert!(buffered <= budget + (8 << 20), "client could read {buffered} bytes after the flood");
    }

    /// A slow client that keeps reading is throttled, not disconnected.
    #[tokio::test]
    async fn a_slow_reader_is_throttled_not_disconnected() {
        let relay = Relay::with_limits(small_limits());
        let (guest_tx, mut guest_rx) = mpsc::channel(256);
        relay.attach_guest(guest_tx);
        let mut client = serve(&relay).await;
        assert_eq!(read_one(&mut client).await.kind, FrameKind::Hello);
        let guest_stream = open_request(&mut client, &mut guest_rx, 1).await;
        let total = 16usize << 20; // well past the ~1 MiB budget
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            while got < total {
                let frame = read_one(&mut client).await;
                assert_eq!(frame.kind, FrameKind::Data);
                got += frame.payload.len() - 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            got
        });
        let chunk = vec![1u8; 256 * 1024];
        let feed = async {
            for _ in 0..total / chunk.len() {
                relay.to_client(Frame::data(guest_stream, DataChannel::Stdout, &chunk)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), feed).await.expect("feeding the slow client took too long");
        assert_eq!(reader.await.unwrap(), total);
        assert!(relay.inner.lock().unwrap().routes.contains_key(&guest_stream), "the slow client was disconnected");
    }

    /// Cancels reach the guest even when its queue is full (they used to be dropped by
    /// `try_send`).
    #[tokio::test]
    async fn cancels_are_not_dropped_when_the_guest_queue_is_full() {
        let relay = Relay::with_limits(small_limits());
        let (guest_tx, mut guest_rx) = mpsc::channel(1);
        relay.attach_guest(guest_tx.clone());
        let mut client = serve(&relay).await;
        assert_eq!(read_one(&mut client).await.kind, FrameKind::Hello);
        let mut streams = Vec::new();
        for s in 1..=5 {
            streams.push(open_request(&mut client, &mut guest_rx, s).await);
        }
        // Fill the guest queue, then drop the client.
        guest_tx.send(Frame::empty(999, FrameKind::DataEnd)).await.unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut cancelled = Vec::new();
        while cancelled.len() < streams.len() {
            let frame = tokio::time::timeout(Duration::from_secs(5), guest_rx.recv()).await.expect("cancel in time").unwrap();
            if frame.kind == FrameKind::Cancel {
                cancelled.push(frame.stream);
            }
        }
        cancelled.sort();
        assert_eq!(cancelled, streams);
    }

    /// A client cancel removes the route at once (so a guest that never answers the
    /// cancel does not hold off the idle stop).
    #[tokio::test]
    async fn client_cancel_removes_the_route() {
        let relay = Relay::with_limits(small_limits());
        let (guest_tx, mut guest_rx) = mpsc::channel(256);
        relay.attach_guest(guest_tx);
        let mut client = serve(&relay).await;
        assert_eq!(read_one(&mut client).await.kind, FrameKind::Hello);
        let guest_stream = open_request(&mut client, &mut guest_rx, 3).await;
        write_frame(&mut client, &Frame::empty(3, FrameKind::Cancel)).await.unwrap();
        let cancel = tokio::time::timeout(Duration::from_secs(5), guest_rx.recv()).await.unwrap().unwrap();
        assert_eq!((cancel.stream, cancel.kind), (guest_stream, FrameKind::Cancel));
        assert!(relay.inner.lock().unwrap().routes.is_empty());
    }
}
