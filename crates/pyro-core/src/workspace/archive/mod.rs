//! Host side of workspace seeding, sync and export.
//!
//! * [`prepare_source`] turns a seed or sync source (nothing, a directory, or a
//!   `.tar`/`.tar.gz`/`.tgz` file) into a clean, uncompressed tar on disk that the guest
//!   agent's `TarImport` accepts member for member.
//! * [`extract_export`] recreates a file, symlink or directory tree from the archive the
//!   agent's `TarExport` streams back.
//! * [`spool_tar`] stores a tar stream from the guest in a private temporary file, within
//!   a byte budget.
//!
//! Every archive member goes through the same rules as the agent's importer
//! (`crates/pyro-agent/src/tar_import.rs`): `.`/`./` entries are dropped, a leading `./` is
//! ignored, absolute names and names whose `..` climbs out are refused, no member may sit
//! below an earlier symlink or file, symlinks must resolve (lexically, from their own
//! directory, `..` only as leading components) inside the root, hard links must name an
//! earlier non-directory member, and fifos/devices are refused. Everything is streamed:
//! no archive is ever held in memory.
//!
//! Tar streams from the guest are hostile input. Before the `tar` crate sees a byte of
//! them they pass a [`TarScanner`] (see [`limits`]) that refuses the member types the agent
//! never emits (GNU sparse files above all, which declare a real size the stream does not
//! carry), caps extension headers before the `tar` crate reads their bodies into memory,
//! and enforces [`TarLimits`] (stream bytes, file bytes, member count).

mod extract;
pub mod limits;
mod pack;
mod rules;
mod spool;
#[cfg(test)]
mod tests;

use std::io::{self, Read};

pub use extract::{extract_export, extract_export_with, ExportSummary};
pub use limits::{Refused, TarGuard, TarLimits, TarScanner};
pub use pack::{expand_user, prepare_source, PreparedArchive, SeedMode};
pub(crate) use rules::{Member, MemberKind, MemberRules};
pub use spool::{spool_tar, SpoolWriter};

use crate::error::Error;

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Reads exactly `remaining` bytes, failing if the source runs short (the header already
/// announced the size); remembers whether the failure came from the source.
struct Exact<R> {
    inner: R,
    remaining: u64,
    failed: bool,
}

impl<R> Exact<R> {
    fn new(inner: R, remaining: u64) -> Self {
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

/// Sets the modification time without following symlinks (access time untouched).
#[cfg(test)]
fn set_mtime(path: &std::path::Path, mtime: u64) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime.min(i64::MAX as u64) as _, tv_nsec: 0 },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
