//! Small filesystem helpers shared by the stores: atomic writes and advisory locks.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Blocks until an exclusive lock on `path` is held; released when the file is dropped.
pub fn lock_file(path: &Path) -> Result<File> {
    let file = File::options().create(true).truncate(false).write(true).open(path).ctx("open lock", path)?;
    file.lock().ctx("lock", path)?;
    Ok(file)
}

/// Takes the lock on `path` if nobody holds it.
pub fn try_lock_file(path: &Path) -> Result<Option<File>> {
    let file = File::options().create(true).truncate(false).write(true).open(path).ctx("open lock", path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
    }
}

/// Writes `bytes` to `path` via a temp file in the same directory, a rename and a sync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx("create temp file in", dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path().to_path_buf())?;
    tmp.persist(path).map_err(|e| Error::io("write", path, e.error))?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// Current Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Renames `from` to `to` unless `to` exists, even as a dangling symlink; an existing `to`
/// is an [`std::io::ErrorKind::AlreadyExists`] error. Atomic through
/// `renameat2(RENAME_NOREPLACE)`, called as a raw syscall (musl's libc has no wrapper);
/// where the kernel or file system lacks it, a file is hard-linked then unlinked, and a
/// directory renamed after an existence check.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    let (src, dst) = (c(from)?, c(to)?);
    // SAFETY: renameat2 takes two directory descriptors (AT_FDCWD), two valid NUL-terminated
    // paths that outlive the call, and a flags word.
    let rc = unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) {
        return Err(err);
    }
    if std::fs::symlink_metadata(from)?.is_dir() {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        std::fs::rename(from, to)
    } else {
        std::fs::hard_link(from, to)?;
        std::fs::remove_file(from)
    }
}
