//! [`GuestClient`]: multiplexed requests to the guest agent over one byte stream.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyro_protocol::{
    decode_response, is_supported_version, read_frame, write_frame, DataChannel, DecodeError, ExecRequest, ExecResult, Frame, FrameKind, Hello, ListResult,
    Request, Response, ServiceInfo, ServiceLogsResult, ServiceStartRequest, ShellInfo, ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignalRequest,
    ShellState, ShellWriteRequest, TarExportResult, TarImportResult, WriteResult, MIN_SUPPORTED_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::error::GuestError;

/// Interval between Hello knocks while waiting for the agent.
const KNOCK_INTERVAL: Duration = Duration::from_millis(200);
/// Uploaded bytes per data frame.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Upload frames queued for the writer at most (flow control for large uploads).
const UPLOAD_FRAMES_IN_FLIGHT: usize = 8;
/// Stderr bytes accepted past `max_output_bytes`: room for the agent's one-line
/// "command timed out" notice, which it forwards even past the cap.
const TIMEOUT_NOTICE_ALLOWANCE: u64 = 256;
/// Longest agent error message passed on (the rest is cut off).
const MAX_AGENT_MESSAGE: usize = 4096;
const MIB: u64 = 1 << 20;
/// Largest service log accepted per stream (the agent keeps at most this much).
pub const MAX_SERVICE_LOG_BYTES: usize = 1 << 20;
/// Largest number of services accepted in a list answer (the agent holds at most 32).
const MAX_SERVICES_LISTED: usize = 1024;
/// Added to a service start's readiness timeout to form its host-side deadline: the
/// agent may spend up to 10 s stopping a service that never got ready, and a probe
/// command may run 10 s past the readiness deadline.
const SERVICE_START_GRACE: Duration = Duration::from_secs(30);
/// Added to a service stop's TERM grace: the agent waits up to 5 s more after KILL.
const SERVICE_STOP_GRACE: Duration = Duration::from_secs(15);

/// Bounds and host-side deadlines a [`GuestClient`] enforces on every call, whatever the
/// guest does. [`Default`] holds the production values; tests use small ones.
///
/// When a deadline expires the call is cancelled in the guest (a `Cancel` frame) and fails
/// with [`GuestError::Timeout`] (fixed deadline) or [`GuestError::Stalled`] (no progress).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Added to an exec's `timeout_ms` to form its host-side deadline (the guest kills the
    /// command at `timeout_ms`; the grace covers the drain, the reply and the relay). An
    /// exec with `timeout_ms == 0` (no timeout in the guest) has no host deadline either.
    pub exec_grace: Duration,
    /// Deadline of ping, list, read_file, write_file and shutdown.
    pub call_deadline: Duration,
    /// Extra deadline per MiB moved by read_file (`max_bytes`) and write_file.
    pub per_mib: Duration,
    /// tar_import/tar_export have no overall deadline (big trees take long) but fail once
    /// no frame has moved in either direction for this long.
    pub transfer_idle: Duration,
    /// Frames (each at most 1 MiB) buffered per call before the reader task waits for the
    /// call to consume them. While it waits, every call on the connection waits.
    pub call_queue_frames: usize,
    /// How long the reader task waits for a call whose queue is full before it cancels
    /// that call ([`GuestError::SlowConsumer`]) and moves on to the other calls. Keep it
    /// below the supervisor's per-client stall limit (10 s), or the supervisor drops the
    /// whole connection first.
    pub consumer_stall: Duration,
    /// Largest number of entries accepted in a list response (a response is also at most
    /// one 1 MiB frame).
    pub max_list_entries: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            exec_grace: Duration::from_secs(10),
            call_deadline: Duration::from_secs(60),
            per_mib: Duration::from_secs(1),
            transfer_idle: Duration::from_secs(60),
            call_queue_frames: 16,
            consumer_stall: Duration::from_secs(5),
            max_list_entries: 100_000,
        }
    }
}

impl ClientLimits {
    fn exec_deadline(&self, request: &ExecRequest) -> Option<Duration> {
        (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms).saturating_add(self.exec_grace))
    }

    fn transfer_deadline(&self, bytes: u64) -> Duration {
        let mib = u32::try_from(bytes.div_ceil(MIB)).unwrap_or(u32::MAX);
        self.call_deadline.saturating_add(self.per_mib.saturating_mul(mib))
    }
}

pub use crate::events::OutputChunk;

/// A finished command with its (possibly capped) output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, timing, byte counts and truncation flags.
    pub result: ExecResult,
    /// Forwarded standard output (at most `max_output_bytes`).
    pub stdout: Vec<u8>,
    /// Forwarded standard error (at most `max_output_bytes`, plus a timeout notice).
    pub stderr: Vec<u8>,
}

/// Content read from a guest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutput {
    /// Bytes read (at most the requested maximum).
    pub content: Vec<u8>,
    /// Full size of the file.
    pub size_bytes: u64,
    /// The file holds more than `content`.
    pub truncated: bool,
}

/// A service's captured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLogsOutput {
    /// The service and whether each stream was cut.
    pub result: ServiceLogsResult,
    /// Standard output (at most [`MAX_SERVICE_LOG_BYTES`]).
    pub stdout: Vec<u8>,
    /// Standard error (at most [`MAX_SERVICE_LOG_BYTES`]).
    pub stderr: Vec<u8>,
}

/// Refuses a service record whose strings are longer than any agent sends.
fn checked_service(info: ServiceInfo) -> Result<ServiceInfo, GuestError> {
    if info.name.len() > 64 || info.stop_reason.as_ref().is_some_and(|r| r.len() > 64) {
        return Err(GuestError::Protocol("the guest agent sent an oversized service record".into()));
    }
    Ok(info)
}

/// What the reader task hands to a pending call.
enum Incoming {
    Data(DataChannel, Vec<u8>),
    /// The agent has no more data for the stream.
    End,
    Response(Response),
    /// A response frame that did not decode.
    BadResponse(DecodeError),
}

/// Frame queued for the writer task; the permit (uploads only) is released once written.
struct Outgoing {
    frame: Frame,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The reader task's handle on one pending call.
#[derive(Clone)]
struct Slot {
    tx: mpsc::Sender<Incoming>,
    /// Set when the reader gave up on the call because its queue stayed full.
    abandoned: Arc<AtomicBool>,
}

/// State shared with the reader and writer tasks.
struct Shared {
    /// Pending calls by stream id; `None` once the channel is closed.
    pending: Mutex<Option<HashMap<u32, Slot>>>,
    closed: watch::Sender<bool>,
}

impl Shared {
    /// Marks the channel closed; dropping the senders fails every pending call.
    fn close(&self) {
        self.pending.lock().unwrap().take();
        self.closed.send_replace(true);
    }

    /// Picks the pending call a guest frame is for and what to hand it.
    fn classify(&self, frame: Frame) -> Option<(Slot, Incoming)> {
        let stream = frame.stream;
        let mut pending = self.pending.lock().unwrap();
        let map = pending.as_mut()?;
        match frame.kind {
            FrameKind::Data => {
                let slot = map.get(&stream)?;
                match frame.split_data() {
                    Ok((channel, bytes)) => Some((slot.clone(), Incoming::Data(channel, bytes.to_vec()))),
                    Err(e) => {
                        tracing::warn!("guest agent sent a bad data frame on stream {stream}: {e}");
                        None
                    }
                }
            }
            // Only a port connection acts on it (a half-close); the others wait for the response.
            FrameKind::DataEnd => Some((map.get(&stream)?.clone(), Incoming::End)),
            FrameKind::Response => {
                let slot = map.remove(&stream)?;
                let incoming = match decode_response(&frame.payload) {
                    Ok(response) => Incoming::Response(response),
                    Err(e) => Incoming::BadResponse(e),
                };
                Some((slot, incoming))
            }
            // Extra Hellos answer our knocks; the rest is not meant for the host.
            FrameKind::Hello => None,
            FrameKind::Request | FrameKind::Cancel => {
                tracing::warn!("guest agent sent an unexpected {:?} frame on stream {stream}", frame.kind);
                None
            }
        }
    }

    /// Gives up on a call whose consumer is too slow: it fails with
    /// [`GuestError::SlowConsumer`] once it has drained what is queued.
    fn abandon(&self, stream: u32, slot: &Slot) {
        slot.abandoned.store(true, Ordering::Release);
        if let Some(map) = self.pending.lock().unwrap().as_mut() {
            if map.get(&stream).is_some_and(|s| s.tx.same_channel(&slot.tx)) {
                map.remove(&stream);
            }
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// To the writer task. Unbounded, but everything in it is bounded by the calls in
    /// flight: one request and at most one cancel and end-of-upload per call, plus
    /// upload frames, of which `upload_permits` allows a few at a time.
    out: mpsc::UnboundedSender<Outgoing>,
    upload_permits: Arc<Semaphore>,
    next_stream: AtomicU32,
    hello: Hello,
    limits: ClientLimits,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer task ends (and shuts the stream's write side) when `out` drops.
        self.reader.abort();
    }
}

/// Handle to the guest agent over one connection. Cheap to clone; every clone shares the
/// connection, and any number of calls may run concurrently (they are multiplexed).
///
/// Dropping a call's future before it completes cancels it in the guest (an exec's process
/// group is killed). Calls are never retried or resent. When the connection dies, every
/// pending and later call fails with [`GuestError::ChannelClosed`].
///
/// The host does not trust the guest (see [`ClientLimits`]): every call has a host-side
/// deadline, exec output is capped at `max_output_bytes` per stream and read_file at
/// `max_bytes` whatever the agent sends, and at most [`ClientLimits::call_queue_frames`]
/// frames are buffered per call.
#[derive(Clone)]
pub struct GuestClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GuestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestClient").field("hello", &self.inner.hello).field("closed", &self.is_closed()).finish()
    }
}

/// One in-flight request. Sends `Cancel` when dropped before its response arrived.
struct Call {
    inner: Arc<Inner>,
    op: &'static str,
    stream: u32,
    rx: mpsc::Receiver<Incoming>,
    abandoned: Arc<AtomicBool>,
    done: bool,
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(map) = self.inner.shared.pending.lock().unwrap().as_mut() {
            map.remove(&self.stream);
        }
        let _ = self.inner.out.send(Outgoing { frame: Frame::empty(self.stream, FrameKind::Cancel), _permit: None });
    }
}

/// What a call receives next: data on its stream, its end, or its final response.
enum Next {
    Data(DataChannel, Vec<u8>),
    End,
    Response(Response),
}

impl Call {
    async fn next(&mut self) -> Result<Next, GuestError> {
        match self.rx.recv().await {
            Some(Incoming::Data(channel, bytes)) => Ok(Next::Data(channel, bytes)),
            Some(Incoming::End) => Ok(Next::End),
            Some(Incoming::Response(response)) => {
                self.done = true;
                Ok(Next::Response(response))
            }
            Some(Incoming::BadResponse(DecodeError::UnknownTag { tag, .. })) => {
                self.done = true;
                Err(GuestError::UnknownResponse { op: self.op, tag: clip(tag, 64) })
            }
            Some(Incoming::BadResponse(DecodeError::Malformed(e))) => {
                self.done = true;
                Err(GuestError::Protocol(format!("undecodable response to {}: {e}", self.op)))
            }
            None if self.abandoned.load(Ordering::Acquire) => {
                // Not done: dropping the call sends the Cancel.
                Err(GuestError::SlowConsumer { op: self.op, after: self.inner.limits.consumer_stall })
            }
            None => {
                self.done = true;
                Err(GuestError::ChannelClosed)
            }
        }
    }

    /// [`Call::next`], failing with [`GuestError::Stalled`] when nothing arrives for `idle`.
    async fn next_within(&mut self, idle: Duration) -> Result<Next, GuestError> {
        match tokio::time::timeout(idle, self.next()).await {
            Ok(next) => next,
            Err(_) => Err(GuestError::Stalled { op: self.op, idle }),
        }
    }

    /// Waits for the response, ignoring any data.
    async fn response(&mut self) -> Result<Response, GuestError> {
        loop {
            if let Next::Response(response) = self.next().await? {
                return Ok(response);
            }
        }
    }

    fn send(&self, frame: Frame, permit: Option<OwnedSemaphorePermit>) -> Result<(), GuestError> {
        self.inner.out.send(Outgoing { frame, _permit: permit }).map_err(|_| GuestError::ChannelClosed)
    }

    /// Streams `source` as upload data, then `DataEnd`. Returns early with the response if
    /// the agent answers before the upload is complete (e.g. it refused the request).
    /// With `idle`, fails with [`GuestError::Stalled`] when the guest takes no upload
    /// frame and sends nothing for that long (reading `source` does not count).
    async fn upload<R: AsyncRead + Unpin>(&mut self, mut source: R, context: &'static str, idle: Option<Duration>) -> Result<Option<Response>, GuestError> {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let permits = self.inner.upload_permits.clone();
        let op = self.op;
        loop {
            let wait = async {
                loop {
                    tokio::select! {
                        biased;
                        next = self.next() => match next? {
                            Next::Response(response) => return Ok(Err(response)),
                            Next::Data(..) | Next::End => continue,
                        },
                        permit = permits.clone().acquire_owned() => {
                            return permit.map(Ok).map_err(|_| GuestError::ChannelClosed)
                        }
                    }
                }
            };
            let waited = match idle {
                Some(idle) => tokio::time::timeout(idle, wait).await.map_err(|_| GuestError::Stalled { op, idle })?,
                None => wait.await,
            };
            let permit = match waited? {
                Ok(permit) => permit,
                Err(response) => return Ok(Some(response)),
            };
            let n = source.read(&mut buf).await.map_err(|source| GuestError::Local { context, source })?;
            if n == 0 {
                self.send(Frame::empty(self.stream, FrameKind::DataEnd), None)?;
                return Ok(None);
            }
            self.send(Frame::data(self.stream, DataChannel::Upload, &buf[..n]), Some(permit))?;
        }
    }
}

/// Cuts `text` to at most `max` bytes (on a char boundary), marking the cut with `…`.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn agent_error(hello: &Hello, response: Response, op: &str) -> GuestError {
    match response {
        Response::Unsupported { message, .. } => GuestError::Unavailable {
            op: op.to_string(),
            agent_protocol: hello.protocol_version,
            agent_version: clip(hello.agent_version.clone(), 64),
            reason: format!("it answered: {}", clip(message, MAX_AGENT_MESSAGE)),
        },
        Response::Error { message } => GuestError::Agent(clip(message, MAX_AGENT_MESSAGE)),
        other => GuestError::Protocol(format!("unexpected response to {op}: {}", clip(format!("{other:?}"), 200))),
    }
}

/// Longest shell `cwd` accepted from the agent.
const MAX_SHELL_CWD: usize = 4096;

/// A shell answer must be about the shell asked for, with a bounded cwd and a state that
/// agrees with its exit code.
fn check_shell_info(op: &str, shell_id: &str, info: ShellInfo) -> Result<ShellInfo, GuestError> {
    let exited = info.state == ShellState::Exited;
    if info.shell_id != shell_id || info.cwd.len() > MAX_SHELL_CWD || exited != info.exit_code.is_some() {
        return Err(GuestError::Protocol(format!("{op} answered an inconsistent shell record for '{}'", clip(info.shell_id, 64))));
    }
    Ok(info)
}

/// Runs `call` under a fixed deadline (none when `after` is `None`).
async fn within<T>(op: &'static str, after: Option<Duration>, call: impl Future<Output = Result<T, GuestError>>) -> Result<T, GuestError> {
    match after {
        Some(after) => tokio::time::timeout(after, call).await.unwrap_or(Err(GuestError::Timeout { op, after })),
        None => call.await,
    }
}

/// Host-side output caps of one exec, whatever the agent forwards.
struct OutputCaps {
    cap: u64,
    stdout_seen: u64,
    stderr_seen: u64,
}

impl OutputCaps {
    fn new(cap: u64) -> Self {
        Self { cap, stdout_seen: 0, stderr_seen: 0 }
    }

    /// The part of `bytes` that still fits under `limit`, counting everything in `seen`.
    fn admit<'a>(seen: &mut u64, limit: u64, bytes: &'a [u8]) -> &'a [u8] {
        let start = *seen;
        *seen = seen.saturating_add(bytes.len() as u64);
        let room = limit.saturating_sub(start);
        &bytes[..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX))]
    }

    fn stdout<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        Self::admit(&mut self.stdout_seen, self.cap, bytes)
    }

    /// Stderr may run [`TIMEOUT_NOTICE_ALLOWANCE`] past the cap (the timeout notice).
    fn stderr<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        Self::admit(&mut self.stderr_seen, self.cap.saturating_add(TIMEOUT_NOTICE_ALLOWANCE), bytes)
    }

    /// Folds what the host saw into the agent's result.
    fn finish(&self, mut result: ExecResult) -> ExecResult {
        let stderr_limit = if result.timed_out { self.cap.saturating_add(TIMEOUT_NOTICE_ALLOWANCE) } else { self.cap };
        result.stdout_truncated |= self.stdout_seen > self.cap;
        result.stderr_truncated |= self.stderr_seen > stderr_limit;
        result.stdout_bytes = result.stdout_bytes.max(self.stdout_seen);
        result.stderr_bytes = result.stderr_bytes.max(self.stderr_seen);
        result
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::UnboundedReceiver<Outgoing>, shared: Arc<Shared>) {
    while let Some(outgoing) = rx.recv().await {
        if let Err(e) = write_frame(&mut writer, &outgoing.frame).await {
            tracing::debug!("guest channel write failed: {e}");
            shared.close();
            return;
        }
    }
    // Every client handle is gone: tell the agent we are done.
    let _ = writer.shutdown().await;
}

/// Routes guest frames to the pending calls. A call whose queue is full gets up to
/// `stall` to make room (meanwhile nothing else is read: this is what slows a fast guest
/// down to a slow consumer); after that the call is abandoned and cancelled in the guest,
/// so one stuck call cannot hold up the others for longer than `stall`.
async fn read_loop<R: AsyncRead + Unpin>(mut reader: R, shared: Arc<Shared>, out: mpsc::WeakUnboundedSender<Outgoing>, stall: Duration) {
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("guest channel read failed: {e}");
                break;
            }
        };
        let stream = frame.stream;
        let is_response = frame.kind == FrameKind::Response;
        let Some((slot, incoming)) = shared.classify(frame) else { continue };
        let incoming = match slot.tx.try_send(incoming) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => continue,
            Err(mpsc::error::TrySendError::Full(incoming)) => incoming,
        };
        if tokio::time::timeout(stall, slot.tx.send(incoming)).await.is_ok() {
            continue;
        }
        tracing::warn!("guest stream {stream}: the caller did not consume its data for {stall:?}; cancelling the call");
        shared.abandon(stream, &slot);
        if !is_response {
            if let Some(out) = out.upgrade() {
                let _ = out.send(Outgoing { frame: Frame::empty(stream, FrameKind::Cancel), _permit: None });
            }
        }
    }
    shared.close();
}

/// Knocks until the agent's Hello arrives (skipping anything else, e.g. stale frames).
async fn await_hello<R, W>(reader: &mut R, writer: &mut W) -> Result<Hello, GuestError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read_hello = async {
        loop {
            match read_frame(reader).await? {
                Some(frame) if frame.kind == FrameKind::Hello => {
                    return frame.parse_json::<Hello>().map_err(|e| GuestError::Protocol(format!("bad Hello: {e}")))
                }
                Some(_) => continue,
                None => return Err(GuestError::ChannelClosed),
            }
        }
    };
    tokio::pin!(read_hello);
    let mut knocks = tokio::time::interval(KNOCK_INTERVAL);
    loop {
        tokio::select! {
            hello = &mut read_hello => return hello,
            _ = knocks.tick() => write_frame(writer, &Frame::empty(0, FrameKind::Hello)).await?,
        }
    }
}

impl GuestClient {
    /// Connects over `stream` (virtio-serial socket, vsock bridge, unix socket) with the
    /// default [`ClientLimits`]: knocks with a Hello frame every 200 ms until the agent's
    /// Hello arrives, checks the protocol version, then starts the reader and writer tasks.
    ///
    /// `hello_timeout` bounds the whole handshake; past it the call fails with
    /// [`GuestError::HelloTimeout`]. Through a supervisor, pass the boot timeout (plus a
    /// margin) while the VM may still be booting, and a few seconds once it is known to be
    /// ready: a stopped (SIGSTOP) or hung supervisor still accepts the connection (kernel
    /// backlog) but never answers.
    pub async fn connect<S>(stream: S, hello_timeout: Duration) -> Result<(GuestClient, Hello), GuestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::connect_with_limits(stream, hello_timeout, ClientLimits::default()).await
    }

    /// [`GuestClient::connect`] with explicit limits and deadlines.
    pub async fn connect_with_limits<S>(stream: S, hello_timeout: Duration, limits: ClientLimits) -> Result<(GuestClient, Hello), GuestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let hello = tokio::time::timeout(hello_timeout, await_hello(&mut reader, &mut writer)).await.map_err(|_| GuestError::HelloTimeout(hello_timeout))??;
        if !is_supported_version(hello.protocol_version) {
            return Err(GuestError::ProtocolMismatch {
                agent: hello.protocol_version,
                min_supported: MIN_SUPPORTED_PROTOCOL_VERSION,
                current: PROTOCOL_VERSION,
            });
        }
        let limits = ClientLimits { call_queue_frames: limits.call_queue_frames.max(1), ..limits };
        let shared = Arc::new(Shared { pending: Mutex::new(Some(HashMap::new())), closed: watch::channel(false).0 });
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(reader, shared.clone(), out.downgrade(), limits.consumer_stall));
        let inner = Inner {
            shared,
            out,
            upload_permits: Arc::new(Semaphore::new(UPLOAD_FRAMES_IN_FLIGHT)),
            next_stream: AtomicU32::new(1),
            hello: hello.clone(),
            limits,
            reader,
        };
        Ok((GuestClient { inner: Arc::new(inner) }, hello))
    }

    /// The agent's Hello from the handshake.
    pub fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    /// The limits and deadlines this client enforces.
    pub fn limits(&self) -> &ClientLimits {
        &self.inner.limits
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// Resolves when the connection is gone (agent exited, VM stopped).
    pub async fn closed(&self) {
        let mut rx = self.inner.shared.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Fails with [`GuestError::Unavailable`] (sending nothing) when the agent did not
    /// announce the capability `request` needs.
    fn check_capability(&self, op: &'static str, request: &Request) -> Result<(), GuestError> {
        let hello = &self.inner.hello;
        match request.capability() {
            Some(capability) if !hello.supports(capability) => Err(GuestError::Unavailable {
                op: op.to_string(),
                agent_protocol: hello.protocol_version,
                agent_version: clip(hello.agent_version.clone(), 64),
                reason: format!("it does not announce the `{capability}` capability"),
            }),
            _ => Ok(()),
        }
    }

    /// True when the agent announced (or its protocol version implies) `capability`.
    pub fn supports(&self, capability: pyro_protocol::Capability) -> bool {
        self.inner.hello.supports(capability)
    }

    fn start(&self, op: &'static str, request: &Request) -> Result<Call, GuestError> {
        self.check_capability(op, request)?;
        let mut stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        if stream == 0 {
            stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::channel(self.inner.limits.call_queue_frames);
        let abandoned = Arc::new(AtomicBool::new(false));
        match self.inner.shared.pending.lock().unwrap().as_mut() {
            Some(map) => map.insert(stream, Slot { tx, abandoned: abandoned.clone() }),
            None => return Err(GuestError::ChannelClosed),
        };
        let call = Call { inner: self.inner.clone(), op, stream, rx, abandoned, done: false };
        call.send(Frame::json(stream, FrameKind::Request, request), None)?;
        Ok(call)
    }

    /// Liveness check.
    pub async fn ping(&self) -> Result<(), GuestError> {
        within("ping", Some(self.inner.limits.call_deadline), async {
            match self.start("ping", &Request::Ping)?.response().await? {
                Response::Ok => Ok(()),
                other => Err(agent_error(&self.inner.hello, other, "ping")),
            }
        })
        .await
    }

    /// Runs a command, calling `on_output` with each stdout/stderr chunk as it arrives,
    /// without keeping the output. At most `max_output_bytes` per stream reach
    /// `on_output` (stderr may run a few hundred bytes past it for the agent's timeout
    /// notice); the rest is dropped and flagged in the result's `*_truncated`, even if the
    /// agent does not flag it. The host gives up `timeout_ms` + [`ClientLimits::exec_grace`]
    /// after the start ([`GuestError::Timeout`]; the command is cancelled in the guest).
    pub async fn exec_with<F>(&self, request: ExecRequest, mut on_output: F) -> Result<ExecResult, GuestError>
    where
        F: FnMut(OutputChunk<'_>) + Send,
    {
        let deadline = self.inner.limits.exec_deadline(&request);
        let mut caps = OutputCaps::new(request.max_output_bytes);
        within("exec", deadline, async {
            let mut call = self.start("exec", &Request::Exec(request))?;
            loop {
                match call.next().await? {
                    Next::Data(DataChannel::Stdout, bytes) => {
                        let bytes = caps.stdout(&bytes);
                        if !bytes.is_empty() {
                            on_output(OutputChunk::Stdout(bytes));
                        }
                    }
                    Next::Data(DataChannel::Stderr, bytes) => {
                        let bytes = caps.stderr(&bytes);
                        if !bytes.is_empty() {
                            on_output(OutputChunk::Stderr(bytes));
                        }
                    }
                    Next::Data(..) | Next::End => {}
                    Next::Response(Response::Exec(result)) => return Ok(caps.finish(result)),
                    Next::Response(other) => return Err(agent_error(&self.inner.hello, other, "exec")),
                }
            }
        })
        .await
    }

    /// Runs a command and collects its output (at most `max_output_bytes` per stream, plus
    /// the timeout notice on stderr; see [`GuestClient::exec_with`]), also passing each
    /// chunk to `live` (when given) as it arrives, e.g. to stream it to a terminal.
    pub async fn exec_streaming(&self, request: ExecRequest, live: Option<&(dyn Fn(OutputChunk<'_>) + Send + Sync)>) -> Result<ExecOutput, GuestError> {
        let cap = usize::try_from(request.max_output_bytes).unwrap_or(usize::MAX);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let result = self
            .exec_with(request, |chunk| {
                match chunk {
                    OutputChunk::Stdout(bytes) => stdout.extend_from_slice(bytes),
                    OutputChunk::Stderr(bytes) => stderr.extend_from_slice(bytes),
                }
                if let Some(live) = live {
                    live(chunk);
                }
            })
            .await?;
        if !result.timed_out {
            // The allowance past the cap is for the timeout notice only.
            stderr.truncate(cap);
        }
        Ok(ExecOutput { result, stdout, stderr })
    }

    /// Runs a command and collects its output.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecOutput, GuestError> {
        self.exec_streaming(request, None).await
    }

    /// Reads up to `max_bytes` of a regular file. An agent that sends more than
    /// `max_bytes` is broken or hostile: the call is cancelled and fails with
    /// [`GuestError::Protocol`] (nothing past `max_bytes` is kept).
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<ReadOutput, GuestError> {
        let deadline = self.inner.limits.transfer_deadline(max_bytes);
        within("read_file", Some(deadline), async {
            let mut call = self.start("read_file", &Request::ReadFile { path: path.to_string(), max_bytes })?;
            let mut content = Vec::new();
            loop {
                match call.next().await? {
                    Next::Data(DataChannel::Download, bytes) => {
                        if (content.len() as u64).saturating_add(bytes.len() as u64) > max_bytes {
                            return Err(GuestError::Protocol(format!("the guest agent sent more than the {max_bytes} bytes read_file asked for")));
                        }
                        content.extend_from_slice(&bytes);
                    }
                    Next::Data(..) | Next::End => {}
                    Next::Response(Response::Read(r)) => return Ok(ReadOutput { content, size_bytes: r.size_bytes, truncated: r.truncated }),
                    Next::Response(other) => return Err(agent_error(&self.inner.hello, other, "read_file")),
                }
            }
        })
        .await
    }

    /// Atomically replaces (or creates) a regular file. An existing file keeps its mode
    /// and owner; a new one gets `mode` (default 0644). Refuses symlinked parents.
    pub async fn write_file(&self, path: &str, bytes: &[u8], mode: Option<u32>, create_parents: bool) -> Result<WriteResult, GuestError> {
        let deadline = self.inner.limits.transfer_deadline(bytes.len() as u64);
        within("write_file", Some(deadline), async {
            let mut call = self.start("write_file", &Request::WriteFile { path: path.to_string(), mode, create_parents })?;
            let response = match call.upload(bytes, "reading the file content failed", None).await? {
                Some(early) => early,
                None => call.response().await?,
            };
            match response {
                Response::Write(result) => Ok(result),
                other => Err(agent_error(&self.inner.hello, other, "write_file")),
            }
        })
        .await
    }

    /// Describes a path (and its children, optionally recursively) without following
    /// symlinks. A response with more than [`ClientLimits::max_list_entries`] entries is
    /// refused ([`GuestError::Protocol`]); a response is also at most one 1 MiB frame.
    pub async fn list(&self, path: &str, recursive: bool) -> Result<ListResult, GuestError> {
        let max_entries = self.inner.limits.max_list_entries;
        within("list", Some(self.inner.limits.call_deadline), async {
            match self.start("list", &Request::List { path: path.to_string(), recursive })?.response().await? {
                Response::List(result) if result.entries.len() > max_entries => {
                    Err(GuestError::Protocol(format!("the guest agent listed {} entries, more than the {max_entries} accepted", result.entries.len())))
                }
                Response::List(result) => Ok(result),
                other => Err(agent_error(&self.inner.hello, other, "list")),
            }
        })
        .await
    }

    /// Streams a tar archive from `archive` into the guest and extracts it under
    /// `destination` (see the agent's rules on unsafe members). Fails with
    /// [`GuestError::Stalled`] when the guest takes nothing and answers nothing for
    /// [`ClientLimits::transfer_idle`].
    pub async fn tar_import<R>(&self, destination: &str, archive: R) -> Result<TarImportResult, GuestError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let idle = self.inner.limits.transfer_idle;
        let mut call = self.start("tar_import", &Request::TarImport { destination: destination.to_string() })?;
        let response = match call.upload(archive, "reading the archive failed", Some(idle)).await? {
            Some(early) => early,
            None => loop {
                if let Next::Response(response) = call.next_within(idle).await? {
                    break response;
                }
            },
        };
        match response {
            Response::TarImport(result) => Ok(result),
            other => Err(agent_error(&self.inner.hello, other, "tar_import")),
        }
    }

    /// Streams a tar archive of a guest path into `sink` (flushed at the end). On error
    /// `sink` may hold a partial archive. Fails with [`GuestError::Stalled`] when the
    /// guest sends nothing for [`ClientLimits::transfer_idle`] (time spent writing to
    /// `sink` does not count).
    pub async fn tar_export<W>(&self, path: &str, mut sink: W) -> Result<TarExportResult, GuestError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let idle = self.inner.limits.transfer_idle;
        let mut call = self.start("tar_export", &Request::TarExport { path: path.to_string() })?;
        let context = "writing the archive failed";
        loop {
            match call.next_within(idle).await? {
                Next::Data(DataChannel::Download, bytes) => sink.write_all(&bytes).await.map_err(|source| GuestError::Local { context, source })?,
                Next::Data(..) | Next::End => {}
                Next::Response(Response::TarExport(result)) => {
                    sink.flush().await.map_err(|source| GuestError::Local { context, source })?;
                    return Ok(result);
                }
                Next::Response(other) => return Err(agent_error(&self.inner.hello, other, "tar_export")),
            }
        }
    }

    /// Replaces the secrets the agent holds in memory (redacted from all output it captures).
    pub async fn install_secrets(&self, secrets: Vec<pyro_protocol::SecretValue>) -> Result<(), GuestError> {
        within("install_secrets", Some(self.inner.limits.call_deadline), async {
            match self.start("install_secrets", &Request::InstallSecrets { secrets })?.response().await? {
                Response::Ok => Ok(()),
                other => Err(agent_error(&self.inner.hello, other, "install_secrets")),
            }
        })
        .await
    }

    /// One shell request answered by one response, under the call deadline plus `extra`.
    async fn shell_call(&self, op: &'static str, request: Request, extra: Duration) -> Result<Response, GuestError> {
        within(op, Some(self.inner.limits.call_deadline.saturating_add(extra)), async { self.start(op, &request)?.response().await }).await
    }

    /// The [`ShellInfo`] answer of a shell call, checked against what was asked.
    fn shell_info(&self, op: &'static str, shell_id: &str, response: Response) -> Result<ShellInfo, GuestError> {
        match response {
            Response::Shell(info) => check_shell_info(op, shell_id, info),
            other => Err(agent_error(&self.inner.hello, other, op)),
        }
    }

    /// Starts a persistent PTY shell in the guest.
    pub async fn shell_open(&self, request: ShellOpenRequest) -> Result<ShellInfo, GuestError> {
        let id = request.shell_id.clone();
        let response = self.shell_call("shell_open", Request::ShellOpen(request), Duration::ZERO).await?;
        self.shell_info("shell_open", &id, response)
    }

    /// Reads a shell's output from `request.cursor`, waiting for idle output first when
    /// asked. The answer is checked: its cursors must be consistent with its text, with
    /// what was asked, and with each other.
    pub async fn shell_read(&self, request: ShellReadRequest) -> Result<ShellReadResult, GuestError> {
        let (id, asked, max) = (request.shell_id.clone(), request.cursor, request.max_chars);
        let wait = Duration::from_millis(request.wait_for_idle_ms.unwrap_or(0));
        match self.shell_call("shell_read", Request::ShellRead(request), wait).await? {
            Response::ShellRead(result) => {
                let result = *result;
                let shell = check_shell_info("shell_read", &id, result.shell)?;
                let chars = result.output.chars().count() as u64;
                let consistent = result.next_cursor.checked_sub(result.cursor) == Some(chars)
                    && chars <= max
                    && result.next_cursor <= shell.end_cursor
                    && (result.cursor >= asked || result.cursor == shell.end_cursor);
                if !consistent {
                    return Err(GuestError::Protocol(format!(
                        "shell_read answered inconsistent cursors (asked {asked}, got {}..{} with {chars} characters, end {})",
                        result.cursor, result.next_cursor, shell.end_cursor
                    )));
                }
                Ok(ShellReadResult { shell, ..result })
            }
            other => Err(agent_error(&self.inner.hello, other, "shell_read")),
        }
    }

    /// Types into a shell.
    pub async fn shell_write(&self, request: ShellWriteRequest) -> Result<ShellInfo, GuestError> {
        let id = request.shell_id.clone();
        let response = self.shell_call("shell_write", Request::ShellWrite(request), Duration::ZERO).await?;
        self.shell_info("shell_write", &id, response)
    }

    /// Signals a shell's foreground process group.
    pub async fn shell_signal(&self, request: ShellSignalRequest) -> Result<ShellInfo, GuestError> {
        let id = request.shell_id.clone();
        let response = self.shell_call("shell_signal", Request::ShellSignal(request), Duration::ZERO).await?;
        self.shell_info("shell_signal", &id, response)
    }

    /// Ends a shell and frees its scrollback; returns its last state.
    pub async fn shell_close(&self, shell_id: &str) -> Result<ShellInfo, GuestError> {
        let response = self.shell_call("shell_close", Request::ShellClose { shell_id: shell_id.to_string() }, Duration::ZERO).await?;
        self.shell_info("shell_close", shell_id, response)
    }

    /// Starts a service in the guest and waits for its readiness: the answer is the
    /// service as it stands then (`failed` when it never got ready). The host gives up
    /// `ready_timeout_ms` + 30 s after the start.
    pub async fn service_start(&self, request: ServiceStartRequest) -> Result<ServiceInfo, GuestError> {
        let deadline = Duration::from_millis(request.ready_timeout_ms).saturating_add(SERVICE_START_GRACE);
        within("service_start", Some(deadline), async {
            match self.start("service_start", &Request::ServiceStart(request))?.response().await? {
                Response::Service(info) => checked_service(*info),
                other => Err(agent_error(&self.inner.hello, other, "service_start")),
            }
        })
        .await
    }

    /// Every service the agent holds.
    pub async fn service_list(&self) -> Result<Vec<ServiceInfo>, GuestError> {
        within("service_list", Some(self.inner.limits.call_deadline), async {
            match self.start("service_list", &Request::ServiceList)?.response().await? {
                Response::ServiceList(list) if list.services.len() > MAX_SERVICES_LISTED => {
                    Err(GuestError::Protocol(format!("the guest agent listed {} services, more than the {MAX_SERVICES_LISTED} accepted", list.services.len())))
                }
                Response::ServiceList(list) => list.services.into_iter().map(checked_service).collect(),
                other => Err(agent_error(&self.inner.hello, other, "service_list")),
            }
        })
        .await
    }

    /// A service's logs (the last `tail_lines` lines of each stream, or all it holds).
    /// More than [`MAX_SERVICE_LOG_BYTES`] on a stream fails with [`GuestError::Protocol`].
    pub async fn service_logs(&self, name: &str, tail_lines: Option<u64>) -> Result<ServiceLogsOutput, GuestError> {
        let deadline = self.inner.limits.transfer_deadline(2 * MAX_SERVICE_LOG_BYTES as u64);
        within("service_logs", Some(deadline), async {
            let mut call = self.start("service_logs", &Request::ServiceLogs { name: name.to_string(), tail_lines })?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            loop {
                match call.next().await? {
                    Next::Data(channel @ (DataChannel::Stdout | DataChannel::Stderr), bytes) => {
                        let sink = if channel == DataChannel::Stdout { &mut stdout } else { &mut stderr };
                        if sink.len().saturating_add(bytes.len()) > MAX_SERVICE_LOG_BYTES {
                            return Err(GuestError::Protocol(format!("the guest agent sent more than {MAX_SERVICE_LOG_BYTES} bytes of one service log")));
                        }
                        sink.extend_from_slice(&bytes);
                    }
                    Next::Data(..) | Next::End => {}
                    Next::Response(Response::ServiceLogs(result)) => {
                        let service = checked_service(result.service)?;
                        return Ok(ServiceLogsOutput { result: ServiceLogsResult { service, ..*result }, stdout, stderr });
                    }
                    Next::Response(other) => return Err(agent_error(&self.inner.hello, other, "service_logs")),
                }
            }
        })
        .await
    }

    /// Stops a service: SIGTERM to its process group, `grace`, then SIGKILL. A service
    /// that already ended is returned unchanged.
    pub async fn service_stop(&self, name: &str, grace: Duration) -> Result<ServiceInfo, GuestError> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        within("service_stop", Some(grace.saturating_add(SERVICE_STOP_GRACE)), async {
            match self.start("service_stop", &Request::ServiceStop { name: name.to_string(), grace_ms })?.response().await? {
                Response::Service(info) => checked_service(*info),
                other => Err(agent_error(&self.inner.hello, other, "service_stop")),
            }
        })
        .await
    }

    /// Carries one TCP connection to `127.0.0.1:port` inside the guest (a published
    /// port): what `socket` sends goes to the guest service, what the service sends comes
    /// back, each direction half-closed on its own. Ends when both directions have ended
    /// or either side fails; dropping the future cancels the guest's half.
    pub async fn port_connect(&self, port: u16, socket: tokio::net::TcpStream) -> Result<(), GuestError> {
        let mut call = self.start("port_connect", &Request::PortConnect { port })?;
        let (mut from_client, mut to_client) = socket.into_split();
        let context = "relaying a published-port connection";
        let (stream, inner) = (call.stream, self.inner.clone());
        // An upload permit before each read, so a guest that does not take the bytes
        // slows this client down instead of queueing them.
        let upstream = async move {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            loop {
                let permit = inner.upload_permits.clone().acquire_owned().await.map_err(|_| GuestError::ChannelClosed)?;
                let n = from_client.read(&mut buf).await.map_err(|source| GuestError::Local { context, source })?;
                let frame = if n == 0 { Frame::empty(stream, FrameKind::DataEnd) } else { Frame::data(stream, DataChannel::Upload, &buf[..n]) };
                inner.out.send(Outgoing { frame, _permit: Some(permit) }).map_err(|_| GuestError::ChannelClosed)?;
                if n == 0 {
                    // Half-closed: the other direction decides when the connection ends.
                    return std::future::pending::<Result<(), GuestError>>().await;
                }
            }
        };
        let downstream = async {
            loop {
                match call.next().await? {
                    Next::Data(DataChannel::Download, bytes) => to_client.write_all(&bytes).await.map_err(|source| GuestError::Local { context, source })?,
                    Next::Data(..) => {}
                    Next::End => {
                        let _ = to_client.shutdown().await;
                    }
                    Next::Response(Response::Ok) => return Ok(()),
                    Next::Response(other) => return Err(agent_error(&self.inner.hello, other, "port_connect")),
                }
            }
        };
        tokio::select! {
            ended = downstream => ended,
            failed = upstream => failed,
        }
    }

    /// Asks the agent to flush filesystems and power the guest off (in `host_compat`, to
    /// end this session). A channel that closes right after the request counts as success.
    pub async fn shutdown(&self) -> Result<(), GuestError> {
        within("shutdown", Some(self.inner.limits.call_deadline), async {
            match self.start("shutdown", &Request::Shutdown)?.response().await {
                Ok(Response::Ok) | Err(GuestError::ChannelClosed) => Ok(()),
                Ok(other) => Err(agent_error(&self.inner.hello, other, "shutdown")),
                Err(e) => Err(e),
            }
        })
        .await
    }
}
