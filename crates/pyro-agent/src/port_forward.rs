//! [`pyro_protocol::Request::PortConnect`]: one TCP connection to guest loopback carried
//! over the channel, the guest half of a published port. Bytes from the host go to the
//! socket as they arrive. The session's upload queue is bounded and shared by the whole
//! session, so a service that stops reading would hold every other request up: a write
//! that makes no progress for [`STALL_TIMEOUT`] ends the connection. What the socket
//! sends goes back in data frames of at most [`CHUNK`] bytes through the bounded writer
//! queue.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use pyro_protocol::{DataChannel, Frame, FrameKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::request::{ReqCtx, Upload, WriterMsg};

/// Largest data frame sent back.
const CHUNK: usize = 64 << 10;
/// How long the guest service gets to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write to a service that does not read may block the session.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `127.0.0.1:port` and relays until both directions have ended.
pub async fn run(port: u16, req: &mut ReqCtx) -> Result<(), String> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let socket = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => return Err(format!("cannot connect to {target} in the guest: {e}")),
        Err(_) => return Err(format!("connecting to {target} in the guest timed out")),
    };
    let _ = socket.set_nodelay(true);
    let (mut from_service, mut to_service) = socket.into_split();
    let upstream = async {
        while let Some(upload) = req.upload.recv().await {
            match upload {
                Upload::Data(bytes) => match tokio::time::timeout(STALL_TIMEOUT, to_service.write_all(&bytes)).await {
                    Ok(written) => written.map_err(|e| format!("writing to {target}: {e}"))?,
                    Err(_) => return Err(format!("{target} stopped reading; connection closed")),
                },
                Upload::End => break,
            }
        }
        // The host is done (or gone): half-close, the service sees EOF.
        let _ = to_service.shutdown().await;
        Ok::<(), String>(())
    };
    let stream = req.stream;
    let out = req.out.clone();
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from_service.read(&mut buf).await.map_err(|e| format!("reading from {target}: {e}"))?;
            if n == 0 {
                break;
            }
            out.send(WriterMsg::Frame(Frame::data(stream, DataChannel::Download, &buf[..n]))).await.map_err(|_| "session closed".to_string())?;
        }
        out.send(WriterMsg::Frame(Frame::empty(stream, FrameKind::DataEnd))).await.map_err(|_| "session closed".to_string())
    };
    tokio::try_join!(upstream, downstream).map(|_| ())
}
