//! Bridges between request tasks and blocking worker threads (file and archive I/O):
//! a `Read` over a request's upload queue, a `Write` that emits download frames.

use std::io::{self, Read, Write};

use pyro_protocol::{DataChannel, Frame};
use tokio::sync::mpsc;

use crate::request::{CancelFlag, Out, ReqCtx, Upload, WriterMsg};

/// Download frames carry at most this many bytes.
pub const DOWNLOAD_CHUNK: usize = 256 * 1024;

/// Runs `f` on the blocking pool; a panic becomes an error message.
pub async fn run<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err("internal agent error: worker panicked".into()),
        Err(_) => Err("request cancelled".into()),
    }
}

/// Blocking `Read` over the uploaded bytes of one request; EOF at `DataEnd`.
pub struct UploadReader {
    rx: mpsc::Receiver<Upload>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    cancel: CancelFlag,
}

impl UploadReader {
    /// Takes the request's upload queue. Call only once per request.
    pub fn take(req: &mut ReqCtx, cancel: CancelFlag) -> Self {
        let (_, closed) = mpsc::channel(1);
        let rx = std::mem::replace(&mut req.upload, closed);
        Self { rx, buf: Vec::new(), pos: 0, done: false, cancel }
    }
}

impl Read for UploadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cancel.is_set() {
                return Err(io::Error::other("request cancelled"));
            }
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Upload::Data(bytes)) => {
                    self.buf = bytes;
                    self.pos = 0;
                }
                Some(Upload::End) => self.done = true,
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upload interrupted")),
            }
        }
    }
}

/// Blocking sink of `Download` data frames for one stream, buffered into
/// [`DOWNLOAD_CHUNK`]-sized frames.
pub struct DownloadWriter {
    out: Out,
    stream: u32,
    cancel: CancelFlag,
    buf: Vec<u8>,
}

impl DownloadWriter {
    /// A sink for `req`'s stream that stops once `cancel` is set.
    pub fn new(req: &ReqCtx, cancel: CancelFlag) -> Self {
        Self { out: req.out.clone(), stream: req.stream, cancel, buf: Vec::with_capacity(DOWNLOAD_CHUNK) }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.cancel.is_set() {
            return Err(io::Error::other("request cancelled"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = Frame::data(self.stream, DataChannel::Download, &self.buf);
        self.buf.clear();
        self.out.blocking_send(WriterMsg::Frame(frame)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "session closed"))
    }
}

impl Write for DownloadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(DOWNLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == DOWNLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
