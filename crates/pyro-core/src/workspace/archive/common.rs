//! Small helpers the archive submodules share, kept below them all so that `mod.rs` only
//! re-exports and no two archive files import each other.

use std::io::{self, Read};

use crate::error::Error;

/// Bytes (a member name, a link target) as text for messages.
pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The error of a refused or malformed archive.
pub(super) fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Reads exactly `remaining` bytes, failing if the source runs short (the header already
/// announced the size); remembers whether the failure came from the source.
pub(super) struct Exact<R> {
    inner: R,
    remaining: u64,
    /// Whether a read failed because of the source (not the destination).
    pub(super) failed: bool,
}

impl<R> Exact<R> {
    /// Reads `remaining` bytes of `inner`.
    pub(super) fn new(inner: R, remaining: u64) -> Self {
        Self { inner, remaining, failed: false }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed = true;
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being archived"))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}
