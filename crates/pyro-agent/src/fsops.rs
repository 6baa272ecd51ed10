//! `ReadFile`, `WriteFile` and `List`.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pyro_protocol::{DirEntry, EntryKind, ListResult, ReadResult, WriteResult};

use crate::blocking::{self, DownloadWriter, UploadReader};
use crate::fsinfo::{describe, kind_of};
use crate::paths::normalize_absolute;
use crate::request::{CancelFlag, ReqCtx};

/// `ReadFile`: streams at most `max_bytes` of a regular file as download data.
pub async fn read_file(path: &str, max_bytes: u64, req: &ReqCtx) -> Result<ReadResult, String> {
    let full = req.ctx.resolve(path)?;
    let display = path.to_string();
    let cancel = CancelFlag::default();
    let _cancel_on_drop = cancel.guard();
    let mut sink = DownloadWriter::new(req, cancel);
    blocking::run(move || {
        let not_regular = || format!("not a regular file: {display}");
        let meta = fs::metadata(&full).map_err(|e| describe(&display, e))?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(&full).map_err(|e| describe(&display, e))?;
        let meta = file.metadata().map_err(|e| describe(&display, e))?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        let mut limited = (&mut file).take(max_bytes);
        let sent = io::copy(&mut limited, &mut sink).map_err(|e| format!("reading {display} failed: {e}"))?;
        sink.flush().map_err(|e| format!("reading {display} failed: {e}"))?;
        Ok(ReadResult { size_bytes: meta.len().max(sent), truncated: sent < meta.len() })
    })
    .await
}

/// Checks every existing ancestor of `target` (a normalised absolute path): none may be a
/// symlink and each must be a directory. Returns whether the parent directory exists.
pub fn check_parents(display: &str, target: &Path) -> Result<bool, String> {
    let Some(parent) = target.parent() else { return Ok(true) };
    let mut prefix = PathBuf::from("/");
    for component in parent.components().skip(1) {
        prefix.push(component);
        match fs::symlink_metadata(&prefix) {
            Ok(m) if m.file_type().is_symlink() => return Err(format!("path would traverse through a symlinked parent: {display}")),
            Ok(m) if !m.is_dir() => return Err(format!("parent is not a directory: {}", prefix.display())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("cannot access {}: {e}", prefix.display())),
        }
    }
    Ok(true)
}

/// A temporary file that is removed unless [`TempFile::persist`] renames it into place.
pub struct TempFile {
    path: Option<PathBuf>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Creates a new, empty, private file in `dir`.
    pub fn create_in(dir: &Path, prefix: &str) -> io::Result<(Self, File)> {
        loop {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}{}-{n}-{nanos:x}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(&path) {
                Ok(file) => return Ok((Self { path: Some(path) }, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Atomically renames the file to `target`.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        let path = self.path.take().expect("temp file path");
        fs::rename(&path, target).inspect_err(|_| {
            let _ = fs::remove_file(&path);
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// `WriteFile`: replaces (or creates) a regular file atomically with the uploaded bytes,
/// never through a symlinked parent; an existing file keeps its mode and owner. When the
/// agent is durable, the file and its directory are flushed before the answer (the
/// whole guest when parent directories had to be created), so a killed VMM keeps it.
pub async fn write_file(path: &str, mode: Option<u32>, create_parents: bool, req: &mut ReqCtx) -> Result<WriteResult, String> {
    let target = normalize_absolute(&req.ctx.resolve(path)?);
    let display = path.to_string();
    let durable = req.ctx.durable;
    let cancel = CancelFlag::default();
    let _cancel_on_drop = cancel.guard();
    let mut source = UploadReader::take(req, cancel);
    blocking::run(move || {
        let parent = match target.parent() {
            Some(parent) => parent.to_path_buf(),
            None => return Err(format!("not a regular file: {display}")),
        };
        let created_parents = !check_parents(&display, &target)?;
        if created_parents {
            if !create_parents {
                return Err(format!("parent directory does not exist: {}", parent.display()));
            }
            fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let existing = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => Some(m),
            Ok(_) => return Err(format!("not a regular file: {display}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot access {display}: {e}")),
        };
        let (temp, mut file) =
            TempFile::create_in(&parent, ".pyro-write-").map_err(|e| format!("cannot create a temporary file in {}: {e}", parent.display()))?;
        let written = io::copy(&mut source, &mut file).map_err(|e| format!("writing {display} failed: {e}"))?;
        let final_mode = match &existing {
            Some(m) => m.mode() & 0o7777,
            None => mode.map(|m| m & 0o7777).unwrap_or(0o644),
        };
        if let Some(m) = &existing {
            // Keep the owner (best effort: only root may give files away).
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.set_permissions(fs::Permissions::from_mode(final_mode)).map_err(|e| format!("cannot set the mode of {display}: {e}"))?;
        temp.persist(&target).map_err(|e| format!("cannot replace {display}: {e}"))?;
        // Flushed after the rename, as the guest-wide sync used to be (one journal commit
        // covers the data and the rename; flushing first would cost a second one).
        if durable {
            flush_written(&file, &parent, created_parents).map_err(|e| format!("flushing {display} failed: {e}"))?;
        }
        Ok(WriteResult { bytes_written: written, mode: final_mode })
    })
    .await
}

/// Makes a file just renamed into `dir` durable: an `fsync` of the file and of the
/// directory, or a guest-wide `sync(2)` when directories above it were just created too
/// (their entries are in their own parents).
fn flush_written(file: &File, dir: &Path, created_parents: bool) -> io::Result<()> {
    if created_parents {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        return Ok(());
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()
}

fn dir_entry(path: &Path, meta: &Metadata) -> DirEntry {
    let kind = kind_of(meta);
    let link_target = match kind {
        EntryKind::Symlink => fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned()),
        _ => None,
    };
    DirEntry {
        path: path.to_string_lossy().into_owned(),
        kind,
        size_bytes: match kind {
            EntryKind::File | EntryKind::Symlink => meta.len(),
            _ => 0,
        },
        mode: meta.mode() & 0o7777,
        link_target,
    }
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<DirEntry>) -> Result<(), String> {
    let mut names: Vec<_> =
        fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?.filter_map(|entry| entry.ok().map(|e| e.file_name())).collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // vanished meanwhile
            Err(e) => return Err(format!("cannot access {}: {e}", path.display())),
        };
        out.push(dir_entry(&path, &meta));
        if recursive && meta.is_dir() {
            walk(&path, true, out)?;
        }
    }
    Ok(())
}

/// `List`: the entry at `path` and, for a directory, its entries (sorted, optionally
/// recursive, symlinks not followed).
pub async fn list(path: &str, recursive: bool, req: &ReqCtx) -> Result<ListResult, String> {
    let full = req.ctx.resolve(path)?;
    let display = path.to_string();
    blocking::run(move || {
        let meta = fs::symlink_metadata(&full).map_err(|e| describe(&display, e))?;
        let root = dir_entry(&full, &meta);
        let mut entries = Vec::new();
        if meta.is_dir() {
            walk(&full, recursive, &mut entries)?;
        }
        Ok(ListResult { root, entries })
    })
    .await
}
