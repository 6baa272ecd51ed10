//! The request context every handler gets, at the bottom of the agent's modules: what the
//! sessions share ([`Ctx`]), the writer queue ([`Out`]), uploads and cancellation. It
//! imports nothing from the agent, so handlers, dispatch and the frame loop can all
//! build on it without importing each other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyro_protocol::{DataChannel, Frame};
use tokio::sync::{mpsc, oneshot};

/// What every session of this agent shares.
pub struct Ctx {
    /// Working directory for commands and base for relative paths.
    pub default_cwd: PathBuf,
    /// Flush filesystems after every request that may have written (in a guest), so
    /// what a request reported done survives the VMM being killed.
    pub durable: bool,
}

impl Ctx {
    /// A request path as a filesystem path: relative paths are taken from the agent's
    /// default directory.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        if path.is_empty() {
            return Err("path must not be empty".into());
        }
        if path.contains('\0') {
            return Err("path must not contain NUL bytes".into());
        }
        Ok(self.default_cwd.join(path))
    }
}

/// Something for the writer task.
pub enum WriterMsg {
    /// A frame to write.
    Frame(Frame),
    /// Acknowledged once every earlier frame has been written and flushed.
    Flush(oneshot::Sender<()>),
}

/// Sender side of the single writer task.
pub type Out = mpsc::Sender<WriterMsg>;

/// Upload data delivered to a request task.
pub enum Upload {
    /// The bytes of one `Upload` data frame.
    Data(Vec<u8>),
    /// The host sent `DataEnd`: no more bytes will come.
    End,
}

/// Set when a request is cancelled or its task is dropped; blocking workers poll it.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Whether the request has been cancelled.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that sets the flag when dropped (i.e. when the owning future goes away).
    pub fn guard(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Sets its [`CancelFlag`] when dropped.
pub struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

/// Everything a request handler gets.
pub struct ReqCtx {
    /// The stream the request arrived on; its data frames and response go there.
    pub stream: u32,
    /// The session's writer queue.
    pub out: Out,
    /// Upload data for this request (closed for requests that take none).
    pub upload: mpsc::Receiver<Upload>,
    /// What the sessions share.
    pub ctx: Arc<Ctx>,
}

impl ReqCtx {
    /// Sends a data frame on this request's stream.
    pub async fn send_data(&self, channel: DataChannel, bytes: &[u8]) -> Result<(), String> {
        self.out.send(WriterMsg::Frame(Frame::data(self.stream, channel, bytes))).await.map_err(|_| "session closed".to_string())
    }
}
