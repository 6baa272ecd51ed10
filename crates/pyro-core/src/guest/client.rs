//! [`GuestClient`]: multiplexed requests to the guest agent over one byte stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyro_protocol::{
    read_frame, write_frame, DataChannel, ExecRequest, ExecResult, Frame, FrameKind, Hello, ListResult, Request,
    Response, TarExportResult, TarImportResult, WriteResult, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::GuestError;

/// Interval between Hello knocks while waiting for the agent.
const KNOCK_INTERVAL: Duration = Duration::from_millis(200);
/// Uploaded bytes per data frame.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Upload frames queued for the writer at most (flow control for large uploads).
const UPLOAD_FRAMES_IN_FLIGHT: usize = 8;

/// A chunk of live command output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputChunk<'a> {
    /// Bytes the command wrote to standard output.
    Stdout(&'a [u8]),
    /// Bytes the command wrote to standard error.
    Stderr(&'a [u8]),
}

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

/// What the reader task hands to a pending call.
enum Incoming {
    Data(DataChannel, Vec<u8>),
    DataEnd,
    Response(Response),
    /// A response frame that did not decode.
    BadResponse(String),
}

/// Frame queued for the writer task; the permit (uploads only) is released once written.
struct Outgoing {
    frame: Frame,
    _permit: Option<OwnedSemaphorePermit>,
}

/// State shared with the reader and writer tasks.
struct Shared {
    /// Pending calls by stream id; `None` once the channel is closed.
    pending: Mutex<Option<HashMap<u32, mpsc::UnboundedSender<Incoming>>>>,
    closed: watch::Sender<bool>,
}

impl Shared {
    /// Marks the channel closed; dropping the senders fails every pending call.
    fn close(&self) {
        self.pending.lock().unwrap().take();
        self.closed.send_replace(true);
    }

    fn route(&self, frame: Frame) {
        let stream = frame.stream;
        let mut pending = self.pending.lock().unwrap();
        let Some(map) = pending.as_mut() else { return };
        match frame.kind {
            FrameKind::Data => {
                if let Some(tx) = map.get(&stream) {
                    match frame.split_data() {
                        Ok((channel, bytes)) => {
                            let _ = tx.send(Incoming::Data(channel, bytes.to_vec()));
                        }
                        Err(e) => tracing::warn!("guest agent sent a bad data frame on stream {stream}: {e}"),
                    }
                }
            }
            FrameKind::DataEnd => {
                if let Some(tx) = map.get(&stream) {
                    let _ = tx.send(Incoming::DataEnd);
                }
            }
            FrameKind::Response => {
                if let Some(tx) = map.remove(&stream) {
                    let _ = tx.send(match frame.parse_json::<Response>() {
                        Ok(response) => Incoming::Response(response),
                        Err(e) => Incoming::BadResponse(e.to_string()),
                    });
                }
            }
            // Extra Hellos answer our knocks; the rest is not meant for the host.
            FrameKind::Hello => {}
            FrameKind::Request | FrameKind::Cancel => {
                tracing::warn!("guest agent sent an unexpected {:?} frame on stream {stream}", frame.kind)
            }
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Outgoing>,
    upload_permits: Arc<Semaphore>,
    next_stream: AtomicU32,
    hello: Hello,
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
/// pending and later call fails with [`GuestError::ChannelClosed`]. There is no host-side
/// deadline: wrap a call in `tokio::time::timeout` if the guest might hang.
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
    stream: u32,
    rx: mpsc::UnboundedReceiver<Incoming>,
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

/// What a call receives next: data on its stream, or its final response.
enum Next {
    Data(DataChannel, Vec<u8>),
    Response(Response),
}

impl Call {
    async fn next(&mut self) -> Result<Next, GuestError> {
        loop {
            match self.rx.recv().await {
                Some(Incoming::Data(channel, bytes)) => return Ok(Next::Data(channel, bytes)),
                Some(Incoming::DataEnd) => continue,
                Some(Incoming::Response(response)) => {
                    self.done = true;
                    return Ok(Next::Response(response));
                }
                Some(Incoming::BadResponse(e)) => {
                    self.done = true;
                    return Err(GuestError::Protocol(format!("undecodable response: {e}")));
                }
                None => {
                    self.done = true;
                    return Err(GuestError::ChannelClosed);
                }
            }
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
    async fn upload<R: AsyncRead + Unpin>(&mut self, mut source: R, context: &'static str) -> Result<Option<Response>, GuestError> {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let permits = self.inner.upload_permits.clone();
        loop {
            let permit = tokio::select! {
                biased;
                next = self.next() => match next? {
                    Next::Response(response) => return Ok(Some(response)),
                    Next::Data(..) => continue,
                },
                permit = permits.clone().acquire_owned() => permit.map_err(|_| GuestError::ChannelClosed)?,
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

fn agent_error(response: Response, op: &str) -> GuestError {
    match response {
        Response::Error { message } => GuestError::Agent(message),
        other => GuestError::Protocol(format!("unexpected response to {op}: {other:?}")),
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

async fn read_loop<R: AsyncRead + Unpin>(mut reader: R, shared: Arc<Shared>) {
    loop {
        match read_frame(&mut reader).await {
            Ok(Some(frame)) => shared.route(frame),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("guest channel read failed: {e}");
                break;
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
    /// Connects over `stream` (virtio-serial socket, vsock bridge, unix socket): knocks with
    /// a Hello frame every 200 ms until the agent's Hello arrives (at most `boot_timeout`),
    /// checks the protocol version, then starts the reader and writer tasks.
    pub async fn connect<S>(stream: S, boot_timeout: Duration) -> Result<(GuestClient, Hello), GuestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let hello = tokio::time::timeout(boot_timeout, await_hello(&mut reader, &mut writer))
            .await
            .map_err(|_| GuestError::BootTimeout(boot_timeout))??;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(GuestError::ProtocolMismatch { agent: hello.protocol_version, expected: PROTOCOL_VERSION });
        }
        let shared = Arc::new(Shared { pending: Mutex::new(Some(HashMap::new())), closed: watch::channel(false).0 });
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(reader, shared.clone()));
        let inner = Inner {
            shared,
            out,
            upload_permits: Arc::new(Semaphore::new(UPLOAD_FRAMES_IN_FLIGHT)),
            next_stream: AtomicU32::new(1),
            hello: hello.clone(),
            reader,
        };
        Ok((GuestClient { inner: Arc::new(inner) }, hello))
    }

    /// The agent's Hello from the handshake.
    pub fn hello(&self) -> &Hello {
        &self.inner.hello
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

    async fn start(&self, request: &Request) -> Result<Call, GuestError> {
        let mut stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        if stream == 0 {
            stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        match self.inner.shared.pending.lock().unwrap().as_mut() {
            Some(map) => map.insert(stream, tx),
            None => return Err(GuestError::ChannelClosed),
        };
        let call = Call { inner: self.inner.clone(), stream, rx, done: false };
        call.send(Frame::json(stream, FrameKind::Request, request), None)?;
        Ok(call)
    }

    /// Liveness check.
    pub async fn ping(&self) -> Result<(), GuestError> {
        match self.start(&Request::Ping).await?.response().await? {
            Response::Ok => Ok(()),
            other => Err(agent_error(other, "ping")),
        }
    }

    /// Runs a command, calling `on_output` with each stdout/stderr chunk as it arrives,
    /// without keeping the output.
    pub async fn exec_with<F>(&self, request: ExecRequest, mut on_output: F) -> Result<ExecResult, GuestError>
    where
        F: FnMut(OutputChunk<'_>) + Send,
    {
        let mut call = self.start(&Request::Exec(request)).await?;
        loop {
            match call.next().await? {
                Next::Data(DataChannel::Stdout, bytes) => on_output(OutputChunk::Stdout(&bytes)),
                Next::Data(DataChannel::Stderr, bytes) => on_output(OutputChunk::Stderr(&bytes)),
                Next::Data(..) => {}
                Next::Response(Response::Exec(result)) => return Ok(result),
                Next::Response(other) => return Err(agent_error(other, "exec")),
            }
        }
    }

    /// Runs a command and collects its output, also passing each chunk to `live` (when
    /// given) as it arrives, e.g. to stream it to a terminal.
    pub async fn exec_streaming(
        &self,
        request: ExecRequest,
        live: Option<&(dyn Fn(OutputChunk<'_>) + Send + Sync)>,
    ) -> Result<ExecOutput, GuestError> {
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
        Ok(ExecOutput { result, stdout, stderr })
    }

    /// Runs a command and collects its output.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecOutput, GuestError> {
        self.exec_streaming(request, None).await
    }

    /// Reads up to `max_bytes` of a regular file.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<ReadOutput, GuestError> {
        let mut call = self.start(&Request::ReadFile { path: path.to_string(), max_bytes }).await?;
        let mut content = Vec::new();
        loop {
            match call.next().await? {
                Next::Data(DataChannel::Download, bytes) => content.extend_from_slice(&bytes),
                Next::Data(..) => {}
                Next::Response(Response::Read(r)) => {
                    return Ok(ReadOutput { content, size_bytes: r.size_bytes, truncated: r.truncated })
                }
                Next::Response(other) => return Err(agent_error(other, "read_file")),
            }
        }
    }

    /// Atomically replaces (or creates) a regular file. An existing file keeps its mode
    /// and owner; a new one gets `mode` (default 0644). Refuses symlinked parents.
    pub async fn write_file(&self, path: &str, bytes: &[u8], mode: Option<u32>, create_parents: bool) -> Result<WriteResult, GuestError> {
        let mut call = self.start(&Request::WriteFile { path: path.to_string(), mode, create_parents }).await?;
        let response = match call.upload(bytes, "reading the file content failed").await? {
            Some(early) => early,
            None => call.response().await?,
        };
        match response {
            Response::Write(result) => Ok(result),
            other => Err(agent_error(other, "write_file")),
        }
    }

    /// Describes a path (and its children, optionally recursively) without following
    /// symlinks.
    pub async fn list(&self, path: &str, recursive: bool) -> Result<ListResult, GuestError> {
        match self.start(&Request::List { path: path.to_string(), recursive }).await?.response().await? {
            Response::List(result) => Ok(result),
            other => Err(agent_error(other, "list")),
        }
    }

    /// Streams a tar archive from `archive` into the guest and extracts it under
    /// `destination` (see the agent's rules on unsafe members).
    pub async fn tar_import<R>(&self, destination: &str, archive: R) -> Result<TarImportResult, GuestError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let mut call = self.start(&Request::TarImport { destination: destination.to_string() }).await?;
        let response = match call.upload(archive, "reading the archive failed").await? {
            Some(early) => early,
            None => call.response().await?,
        };
        match response {
            Response::TarImport(result) => Ok(result),
            other => Err(agent_error(other, "tar_import")),
        }
    }

    /// Streams a tar archive of a guest path into `sink` (flushed at the end). On error
    /// `sink` may hold a partial archive.
    pub async fn tar_export<W>(&self, path: &str, mut sink: W) -> Result<TarExportResult, GuestError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut call = self.start(&Request::TarExport { path: path.to_string() }).await?;
        let context = "writing the archive failed";
        loop {
            match call.next().await? {
                Next::Data(DataChannel::Download, bytes) => {
                    sink.write_all(&bytes).await.map_err(|source| GuestError::Local { context, source })?
                }
                Next::Data(..) => {}
                Next::Response(Response::TarExport(result)) => {
                    sink.flush().await.map_err(|source| GuestError::Local { context, source })?;
                    return Ok(result);
                }
                Next::Response(other) => return Err(agent_error(other, "tar_export")),
            }
        }
    }

    /// Asks the agent to flush filesystems and power the guest off (in `host_compat`, to
    /// end this session). A channel that closes right after the request counts as success.
    pub async fn shutdown(&self) -> Result<(), GuestError> {
        match self.start(&Request::Shutdown).await?.response().await {
            Ok(Response::Ok) | Err(GuestError::ChannelClosed) => Ok(()),
            Ok(other) => Err(agent_error(other, "shutdown")),
            Err(e) => Err(e),
        }
    }
}
