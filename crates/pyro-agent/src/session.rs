//! One framed session over a byte stream: Hello handshake, the frame loop (each request
//! in its own task, handed to [`dispatch`]), a single writer task, cancellation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyro_protocol::{read_frame, write_frame, DataChannel, Frame, FrameKind, Hello, Request, Response, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::dispatch;
use crate::request::{Ctx, Out, ReqCtx, Upload, WriterMsg};

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The host closed the stream.
    Eof,
    /// The host asked for a shutdown (already answered).
    Shutdown,
    /// The byte stream could not be decoded any more.
    Broken(String),
}

/// Capacity of a request's upload queue (frames). When it is full the session reader
/// waits, which pushes back on the host instead of buffering a whole archive in memory.
const UPLOAD_QUEUE: usize = 16;

struct Active {
    upload: mpsc::Sender<Upload>,
    /// Dropping (or firing) it cancels the request task.
    _cancel: oneshot::Sender<()>,
}

type ActiveMap = Arc<Mutex<HashMap<u32, Active>>>;

/// The agent's Hello (version and capabilities from [`crate::announce`]).
pub fn hello() -> Hello {
    crate::announce::apply(Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: kernel_release(),
        uptime_ms: uptime_ms(),
        capabilities: None,
    })
}

fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed, properly sized struct.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(uts.release.as_ptr()).to_string_lossy().into_owned()
    }
}

fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

async fn writer_loop<W: AsyncWrite + Unpin>(writer: &mut W, mut rx: mpsc::Receiver<WriterMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            WriterMsg::Frame(frame) => {
                if let Err(e) = write_frame(writer, &frame).await {
                    eprintln!("pyro-agent: writing to the host failed: {e}");
                    return;
                }
            }
            WriterMsg::Flush(ack) => {
                let _ = writer.flush().await;
                let _ = ack.send(());
            }
        }
    }
}

async fn send(out: &Out, frame: Frame) {
    // A failure means the writer is gone, i.e. the session is ending anyway.
    let _ = out.send(WriterMsg::Frame(frame)).await;
}

async fn respond(out: &Out, stream: u32, response: &Response) {
    send(out, Frame::json(stream, FrameKind::Response, response)).await;
}

fn error(message: impl Into<String>) -> Response {
    Response::Error { message: message.into() }
}

/// Serves one session until the host disconnects, the stream breaks or a shutdown is
/// requested. All requests still running when it ends are cancelled.
pub async fn serve<R, W>(reader: &mut R, writer: &mut W, ctx: Arc<Ctx>) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (out, rx) = mpsc::channel::<WriterMsg>(64);
    let active: ActiveMap = Arc::default();
    let writing = writer_loop(writer, rx);
    let reading = read_loop(reader, out, &active, &ctx);
    let end = tokio::select! {
        end = reading => end,
        () = writing => SessionEnd::Broken("writing to the host failed".into()),
    };
    if let SessionEnd::Broken(reason) = &end {
        eprintln!("pyro-agent: session ended: {reason}");
    }
    // Cancel everything still running (their guards kill processes, remove temp files).
    active.lock().unwrap().clear();
    end
}

async fn read_loop<R: AsyncRead + Unpin>(reader: &mut R, out: Out, active: &ActiveMap, ctx: &Arc<Ctx>) -> SessionEnd {
    send(&out, Frame::json(0, FrameKind::Hello, &hello())).await;
    loop {
        let frame = match read_frame(reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return SessionEnd::Eof,
            Err(e) => return SessionEnd::Broken(e.to_string()),
        };
        let stream = frame.stream;
        match frame.kind {
            // A knock: the host wants (another) Hello, after its identity is adopted.
            FrameKind::Hello => {
                crate::identity::adopt(&frame);
                send(&out, Frame::json(0, FrameKind::Hello, &hello())).await
            }
            FrameKind::Request => {
                if stream == 0 {
                    respond(&out, 0, &error("stream 0 is reserved for Hello frames")).await;
                    continue;
                }
                if active.lock().unwrap().contains_key(&stream) {
                    respond(&out, stream, &error(format!("stream {stream} is already in use"))).await;
                    continue;
                }
                // Unknown ops (a newer host) and ops outside our capabilities are answered
                // `Unsupported`; the session goes on.
                let request: Request = match crate::announce::decode(&frame.payload) {
                    Ok(r) => r,
                    Err(refusal) => {
                        respond(&out, stream, &refusal).await;
                        continue;
                    }
                };
                if request == Request::Shutdown {
                    // SAFETY: sync(2) takes no arguments and cannot fail.
                    let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
                    respond(&out, stream, &Response::Ok).await;
                    let (ack, done) = oneshot::channel();
                    if out.send(WriterMsg::Flush(ack)).await.is_ok() {
                        let _ = done.await;
                    }
                    return SessionEnd::Shutdown;
                }
                spawn_request(stream, request, active, &out, ctx);
            }
            FrameKind::Data => {
                let Some(upload) = active.lock().unwrap().get(&stream).map(|a| a.upload.clone()) else {
                    continue; // finished or cancelled stream: late data is dropped
                };
                match frame.split_data() {
                    Ok((DataChannel::Upload, bytes)) => {
                        let _ = upload.send(Upload::Data(bytes.to_vec())).await;
                    }
                    Ok((channel, _)) => eprintln!("pyro-agent: ignoring {channel:?} data from the host on stream {stream}"),
                    Err(e) => eprintln!("pyro-agent: ignoring bad data frame on stream {stream}: {e}"),
                }
            }
            FrameKind::DataEnd => {
                let upload = active.lock().unwrap().get(&stream).map(|a| a.upload.clone());
                if let Some(upload) = upload {
                    let _ = upload.send(Upload::End).await;
                }
            }
            FrameKind::Cancel => {
                // Removing the entry drops its cancel sender, which stops the task.
                let removed = active.lock().unwrap().remove(&stream);
                if removed.is_some() {
                    respond(&out, stream, &error("request cancelled")).await;
                }
            }
            FrameKind::Response => eprintln!("pyro-agent: ignoring a Response frame from the host on stream {stream}"),
        }
    }
}

fn spawn_request(stream: u32, request: Request, active: &ActiveMap, out: &Out, ctx: &Arc<Ctx>) {
    let (upload_tx, upload_rx) = mpsc::channel(UPLOAD_QUEUE);
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    active.lock().unwrap().insert(stream, Active { upload: upload_tx, _cancel: cancel_tx });
    let req = ReqCtx { stream, out: out.clone(), upload: upload_rx, ctx: ctx.clone() };
    let active = active.clone();
    let out = out.clone();
    tokio::spawn(async move {
        // The handler runs in its own task so that a panic becomes an error response.
        let mut work = tokio::spawn(dispatch::handle(request, req));
        let response = tokio::select! {
            joined = &mut work => match joined {
                Ok(response) => response,
                Err(e) if e.is_panic() => error("internal agent error: request handler panicked"),
                Err(_) => error("request cancelled"),
            },
            _ = cancel_rx => {
                // Cancelled (Cancel frame or session end): stop the work; the cancel path
                // has already answered.
                work.abort();
                return;
            }
        };
        // Exactly one response: only the side that removes the entry answers.
        let still_active = active.lock().unwrap().remove(&stream).is_some();
        if still_active {
            respond(&out, stream, &response).await;
        }
    });
}
