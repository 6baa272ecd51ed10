//! Live file operations on a started workspace: list, read, write, patch, export, sync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::archive::{self, extract_export_with, ExportSummary};
use super::patch::{apply_all, parse_patch, FileChangeKind};
use super::paths::{normalize_destination, normalize_workspace_path};
use super::{guest_error, WorkspaceManager};
use crate::error::{Error, IoContext, Result};
use crate::guest::{shell_quote, DirEntry, EntryKind, GuestClient, GuestError};

/// Largest file `read`, `write` and `patch` handle.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// One listed entry.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// Absolute guest path.
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub artifact_type: &'static str,
    /// Size (0 for directories, target length for symlinks).
    pub size_bytes: u64,
    /// Permission bits, octal string.
    pub mode: String,
    /// Symlink target.
    pub link_target: Option<String>,
}

impl From<&DirEntry> for FileEntry {
    fn from(e: &DirEntry) -> Self {
        Self {
            path: e.path.clone(),
            artifact_type: kind_name(e.kind),
            size_bytes: e.size_bytes,
            mode: format!("{:04o}", e.mode & 0o7777),
            link_target: e.link_target.clone(),
        }
    }
}

/// The word used in results for an entry kind.
pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

/// Result of `file list`.
#[derive(Debug, Clone, Serialize)]
pub struct FileList {
    /// Id.
    pub workspace_id: String,
    /// Listed path.
    pub path: String,
    /// Recursive listing.
    pub recursive: bool,
    /// The path itself first for non-directories, else its children.
    pub entries: Vec<FileEntry>,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// Result of `file read`.
#[derive(Debug, Clone, Serialize)]
pub struct FileRead {
    /// Id.
    pub workspace_id: String,
    /// Path.
    pub path: String,
    /// Full size.
    pub size_bytes: u64,
    /// Limit asked for.
    pub max_bytes: u64,
    /// UTF-8 text.
    pub content: String,
    /// More bytes exist.
    pub truncated: bool,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// Result of `file write`.
#[derive(Debug, Clone, Serialize)]
pub struct FileWrite {
    /// Id.
    pub workspace_id: String,
    /// Path.
    pub path: String,
    /// Size now.
    pub size_bytes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Mode the file has (kept for existing files).
    pub mode: String,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// One file a patch touched.
#[derive(Debug, Clone, Serialize)]
pub struct PatchEntry {
    /// Path.
    pub path: String,
    /// `added`, `modified` or `deleted`.
    pub status: &'static str,
}

/// Counts of a patch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PatchSummary {
    /// Files.
    pub total: usize,
    /// Added.
    pub added: usize,
    /// Modified.
    pub modified: usize,
    /// Deleted.
    pub deleted: usize,
}

/// Result of `patch apply`.
#[derive(Debug, Clone, Serialize)]
pub struct PatchApplied {
    /// Id.
    pub workspace_id: String,
    /// Something changed.
    pub changed: bool,
    /// Counts.
    pub summary: PatchSummary,
    /// Files.
    pub entries: Vec<PatchEntry>,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// Result of `workspace export`.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// Id.
    pub workspace_id: String,
    /// Guest path exported.
    pub workspace_path: String,
    /// Host path created.
    pub output_path: PathBuf,
    /// `file`, `directory` or `symlink`.
    pub artifact_type: &'static str,
    /// Counts.
    #[serde(flatten)]
    pub summary: ExportSummary,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// What `sync push` imported.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// `directory` or `tar_archive`.
    pub mode: String,
    /// Host source.
    pub source_path: Option<PathBuf>,
    /// Guest destination.
    pub destination: String,
    /// Members imported.
    pub entry_count: u64,
    /// Bytes imported.
    pub bytes_written: u64,
}

/// Result of `sync push`.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    /// Id.
    pub workspace_id: String,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
    /// Details.
    pub workspace_sync: SyncReport,
}

impl WorkspaceManager {
    /// Lists a path under `/workspace` (never following symlinks).
    pub async fn list_files(&self, id: &str, path: &str, recursive: bool) -> Result<FileList> {
        let path = normalize_workspace_path(path)?;
        let ws = self.open(id).await?;
        let listing = self.guest(&ws, "workspace_file_list").await?.list(&path, recursive).await.map_err(guest_error)?;
        let entries = if listing.root.kind == EntryKind::Directory {
            listing.entries.iter().map(FileEntry::from).collect()
        } else {
            vec![FileEntry::from(&listing.root)]
        };
        Ok(FileList { workspace_id: id.into(), path, recursive, entries, execution_mode: "guest_vsock" })
    }

    /// Reads a regular UTF-8 text file (up to `max_bytes`).
    pub async fn read_file(&self, id: &str, path: &str, max_bytes: u64) -> Result<FileRead> {
        if max_bytes == 0 {
            return Err(Error::InvalidArgument("max_bytes must be positive".into()));
        }
        if max_bytes > MAX_TEXT_BYTES {
            return Err(Error::InvalidArgument(format!("max_bytes must be at most {MAX_TEXT_BYTES} bytes")));
        }
        let path = normalize_workspace_path(path)?;
        let ws = self.open(id).await?;
        let out = self.guest(&ws, "workspace_file_read").await?.read_file(&path, max_bytes).await.map_err(guest_error)?;
        let content = utf8_text(&out.content, out.truncated)
            .ok_or_else(|| Error::InvalidArgument(format!("{path} is not UTF-8 text; use `pyro workspace export` for binary files")))?;
        Ok(FileRead { workspace_id: id.into(), path, size_bytes: out.size_bytes, max_bytes, content, truncated: out.truncated, execution_mode: "guest_vsock" })
    }

    /// Creates or replaces a regular text file (parents created, mode kept).
    pub async fn write_file(&self, id: &str, path: &str, text: &str) -> Result<FileWrite> {
        if text.len() as u64 > MAX_TEXT_BYTES {
            return Err(Error::InvalidArgument(format!("text must be at most {MAX_TEXT_BYTES} bytes when encoded as UTF-8")));
        }
        let path = normalize_workspace_path(path)?;
        if path == super::WORKSPACE_ROOT {
            return Err(Error::InvalidArgument("workspace file write needs a file path, not /workspace itself".into()));
        }
        let ws = self.open(id).await?;
        let written = self.guest(&ws, "workspace_file_write").await?.write_file(&path, text.as_bytes(), None, true).await.map_err(guest_error)?;
        self.touch(id)?;
        Ok(FileWrite {
            workspace_id: id.into(),
            path,
            size_bytes: written.bytes_written,
            bytes_written: written.bytes_written,
            mode: format!("{:04o}", written.mode & 0o7777),
            execution_mode: "guest_vsock",
        })
    }

    /// Applies a unified diff; every file is computed before anything is written, so a
    /// patch that does not apply changes nothing.
    pub async fn apply_patch(&self, id: &str, patch: &str) -> Result<PatchApplied> {
        let patches = parse_patch(patch)?;
        let ws = self.open(id).await?;
        let client = self.guest(&ws, "workspace_patch_apply").await?;
        let mut current: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        for file in &patches {
            current.insert(file.path.clone(), read_for_patch(&client, &file.path).await?);
        }
        let applied = apply_all(&patches, |path| {
            let content = current.get(path).cloned().flatten();
            if content.as_ref().is_some_and(|c| std::str::from_utf8(c).is_err()) {
                return Err(Error::InvalidArgument(format!("workspace patch only supports UTF-8 text files: {path}")));
            }
            Ok(content)
        })?;
        let mut summary = PatchSummary { total: applied.len(), ..Default::default() };
        let mut removals = Vec::new();
        for file in &applied {
            match file.kind {
                FileChangeKind::Added => summary.added += 1,
                FileChangeKind::Modified => summary.modified += 1,
                FileChangeKind::Deleted => summary.deleted += 1,
            }
            match &file.content {
                Some(content) => {
                    let written = client.write_file(&file.path, content, file.new_mode.or(Some(0o644)), true).await.map_err(guest_error)?;
                    if let Some(mode) = file.new_mode.filter(|m| *m != written.mode & 0o7777) {
                        chmod(&client, &file.path, mode).await?;
                    }
                }
                None => removals.push(file.path.clone()),
            }
        }
        if !removals.is_empty() {
            let quoted: Vec<String> = removals.iter().map(|p| shell_quote(p)).collect();
            run_checked(&client, &format!("rm -f -- {}", quoted.join(" "))).await?;
        }
        self.touch(id)?;
        Ok(PatchApplied {
            workspace_id: id.into(),
            changed: !applied.is_empty(),
            entries: applied.iter().map(|f| PatchEntry { path: f.path.clone(), status: f.kind.as_str() }).collect(),
            summary,
            execution_mode: "guest_vsock",
        })
    }

    /// Exports a file, symlink or directory from `/workspace` to a new host path.
    pub async fn export(&self, id: &str, path: &str, output: &Path) -> Result<Exported> {
        let path = normalize_workspace_path(path)?;
        let output = archive::expand_user(output);
        if output.as_os_str().is_empty() {
            return Err(Error::InvalidArgument("output_path must not be empty".into()));
        }
        if output.symlink_metadata().is_ok() {
            return Err(Error::Conflict(format!("output_path already exists: {}", output.display())));
        }
        let ws = self.open(id).await?;
        let client = self.guest(&ws, "workspace_export").await?;
        let limits = super::workspace_limits();
        let (staging, exported) = archive::spool_tar(&ws.dir, limits, |sink| async { client.tar_export(&path, sink).await.map_err(guest_error) }).await?;
        let archive = std::fs::File::open(staging.path()).ctx("open", staging.path())?;
        let summary = extract_export_with(std::io::BufReader::new(archive), &output, exported.kind, limits)?;
        Ok(Exported {
            workspace_id: id.into(),
            workspace_path: path,
            output_path: output,
            artifact_type: kind_name(exported.kind),
            summary,
            execution_mode: "guest_vsock",
        })
    }

    /// Imports a host directory or archive under `dest` (merging over what is there).
    pub async fn sync_push(&self, id: &str, source: &Path, dest: &str) -> Result<Synced> {
        let dest = normalize_destination(dest)?;
        let ws = self.open(id).await?;
        let prepared = archive::prepare_source(Some(source), &ws.dir)?;
        let client = self.guest(&ws, "workspace_sync_push").await?;
        run_checked(&client, &format!("mkdir -p -- {}", shell_quote(&dest))).await?;
        let file = tokio::fs::File::open(&prepared.archive).await.ctx("open", &prepared.archive)?;
        let imported = client.tar_import(&dest, file).await.map_err(guest_error)?;
        self.touch(id)?;
        Ok(Synced {
            workspace_id: id.into(),
            execution_mode: "guest_vsock",
            workspace_sync: SyncReport {
                mode: prepared.mode.name().into(),
                source_path: prepared.source_path.clone(),
                destination: dest,
                entry_count: imported.entry_count,
                bytes_written: imported.bytes_written,
            },
        })
    }
}

/// Current content of a patch target: `None` when absent, an error for non-files.
async fn read_for_patch(client: &GuestClient, path: &str) -> Result<Option<Vec<u8>>> {
    match client.list(path, false).await {
        Ok(listing) if listing.root.kind == EntryKind::File => {}
        Ok(_) => return Err(Error::InvalidArgument(format!("workspace patch only supports regular files: {path}"))),
        Err(GuestError::Agent(message)) if message.contains("does not exist") => return Ok(None),
        Err(e) => return Err(guest_error(e)),
    }
    let out = client.read_file(path, MAX_TEXT_BYTES + 1).await.map_err(guest_error)?;
    if out.truncated {
        return Err(Error::InvalidArgument(format!("workspace patch only supports files up to {MAX_TEXT_BYTES} bytes: {path}")));
    }
    Ok(Some(out.content))
}

async fn chmod(client: &GuestClient, path: &str, mode: u32) -> Result<()> {
    run_checked(client, &format!("chmod {mode:o} -- {}", shell_quote(path))).await
}

/// Runs a small internal command in the guest; a failure is an error with its stderr.
pub(crate) async fn run_checked(client: &GuestClient, command: &str) -> Result<()> {
    let request = crate::guest::ExecRequest {
        command: command.into(),
        env: Default::default(),
        secret_env: Default::default(),
        cwd: Some("/".into()),
        timeout_ms: 60_000,
        max_output_bytes: 64 << 10,
    };
    let out = client.exec(request).await.map_err(guest_error)?;
    if out.result.exit_code == 0 {
        Ok(())
    } else {
        Err(Error::Vmm(format!("guest command failed ({}): {}", out.result.exit_code, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// `bytes` as UTF-8; when the read was cut, an incomplete last character is dropped.
fn utf8_text(bytes: &[u8], truncated: bool) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text.to_string()),
        Err(e) if truncated && e.error_len().is_none() => Some(String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_characters_are_dropped_only_when_truncated() {
        let text = "héllo".as_bytes();
        assert_eq!(utf8_text(&text[..2], true).unwrap(), "h");
        assert!(utf8_text(&text[..2], false).is_none());
        assert!(utf8_text(b"\xff\xfe", true).is_none());
    }
}
