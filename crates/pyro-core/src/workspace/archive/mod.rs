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
//! Every archive member goes through the rules the agent's importer uses, one shared
//! implementation (`pyro_protocol::archive_rules`, read from tar entries in `rules.rs`):
//! `.`/`./` entries are dropped, a leading `./` is
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

mod common;
mod extract;
pub mod limits;
mod pack;
mod rules;
mod spool;
#[cfg(test)]
mod tests;

pub use extract::{extract_export, extract_export_with, ExportSummary};
pub use limits::{Refused, TarGuard, TarLimits, TarScanner};
pub use pack::{expand_user, prepare_source, PreparedArchive, SeedMode};
pub(crate) use rules::{check_entry, Member, MemberKind};
pub use spool::{spool_tar, SpoolWriter};

/// Sets the modification time without following symlinks (access time untouched).
#[cfg(test)]
fn set_mtime(path: &std::path::Path, mtime: u64) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: mtime.min(i64::MAX as u64) as _, tv_nsec: 0 }];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
