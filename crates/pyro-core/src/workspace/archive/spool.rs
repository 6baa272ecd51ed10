//! Spooling a tar stream from the guest to a private temporary file, within budget.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::limits::{show_bytes, Refused, TarLimits, TarScanner};
use crate::error::{Error, IoContext, Result};

/// The sink [`spool_tar`] hands its producer: a file that refuses bytes beyond
/// [`TarLimits::max_stream_bytes`] (before writing them) and runs a [`TarScanner`] over
/// what it stores, so a sparse member, an oversized extension header or too many members
/// cancel the transfer as soon as they arrive.
pub struct SpoolWriter {
    file: tokio::fs::File,
    limits: TarLimits,
    written: u64,
    scanner: TarScanner,
    refused: Arc<Mutex<Option<Refused>>>,
}

impl SpoolWriter {
    fn refuse(&mut self, refused: Refused) -> io::Error {
        let mut slot = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(refused.clone());
        io::Error::other(refused)
    }
}

impl AsyncWrite for SpoolWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(refused) = this.scanner.failure() {
            return Poll::Ready(Err(io::Error::other(refused.clone())));
        }
        if this.written.saturating_add(buf.len() as u64) > this.limits.max_stream_bytes {
            let refused = Refused::Limit(format!(
                "archive refused: the stream from the guest is larger than {}; the transfer was cancelled",
                show_bytes(this.limits.max_stream_bytes)
            ));
            return Poll::Ready(Err(this.refuse(refused)));
        }
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                if let Err(refused) = this.scanner.feed(&buf[..n]) {
                    return Poll::Ready(Err(this.refuse(refused)));
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

/// Spools a tar stream to a new temporary file in `dir`: `produce` writes the stream
/// into the [`SpoolWriter`] it is given (e.g. `GuestClient::tar_export`, whose call is
/// cancelled in the guest when a write fails). When the stream breaks a limit the
/// refusal is the error ([`Error::LimitExceeded`] for a budget) and the partial file is
/// removed; any other failure of `produce` is returned as it is, the file removed too.
/// `produce` must flush the writer before it returns (as `tar_export` does), so that the
/// file is complete when this returns.
pub async fn spool_tar<T, F, Fut>(dir: &Path, limits: TarLimits, produce: F) -> Result<(tempfile::NamedTempFile, T)>
where
    F: FnOnce(SpoolWriter) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let temp = tempfile::Builder::new().prefix(".pyro-spool-").suffix(".tar").tempfile_in(dir).ctx("create temp file in", dir)?;
    let file = tokio::fs::File::from_std(temp.reopen().ctx("open", temp.path())?);
    let refused = Arc::new(Mutex::new(None));
    let writer = SpoolWriter { file, limits, written: 0, scanner: TarScanner::new(limits), refused: Arc::clone(&refused) };
    let outcome = produce(writer).await;
    let refusal = refused.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (refusal, outcome) {
        (Some(refusal), _) => {
            drop(temp);
            Err(Error::from(refusal))
        }
        (None, Err(e)) => {
            drop(temp);
            Err(e)
        }
        (None, Ok(value)) => Ok((temp, value)),
    }
}
