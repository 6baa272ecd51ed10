//! Offline tools for a stopped workspace's disk: export, list and read the raw ext4
//! without booting anything (pure-Rust ext4 reader).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::archive::expand_user;
use super::paths::normalize_disk_path;
use super::record::WorkspaceState;
use super::{Workspace, WorkspaceManager};
use crate::disk_image::{DiskEntry, DiskImage};
use crate::error::{Error, IoContext, Result};

/// Result of `disk export`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskExported {
    /// Id.
    pub workspace_id: String,
    /// Host path written.
    pub output_path: PathBuf,
    /// Always `ext4`.
    pub disk_format: &'static str,
    /// Apparent size.
    pub size_bytes: u64,
}

/// Result of `disk list`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskList {
    /// Id.
    pub workspace_id: String,
    /// Listed path.
    pub path: String,
    /// Recursive.
    pub recursive: bool,
    /// Entries.
    pub entries: Vec<DiskEntry>,
}

/// Result of `disk read`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskRead {
    /// Id.
    pub workspace_id: String,
    /// Path.
    pub path: String,
    /// Full size.
    pub size_bytes: u64,
    /// Limit.
    pub max_bytes: u64,
    /// Content (lossy UTF-8).
    pub content: String,
    /// More bytes exist.
    pub truncated: bool,
}

impl WorkspaceManager {
    async fn stopped(&self, id: &str) -> Result<Workspace> {
        let ws = self.open(id).await?;
        if ws.record.state != WorkspaceState::Stopped {
            return Err(Error::wrong_state(
                "stopped",
                ws.record.state.name(),
                format!("workspace disk operations require state=stopped; stop it first with `pyro workspace stop {id}`"),
            ));
        }
        if ws.record.allow_host_compat && self.backend_of(&ws.dir) == "host_compat" {
            return Err(Error::Unavailable("workspace disk operations are unavailable for host_compat workspaces".into()));
        }
        Ok(ws)
    }

    /// Copies the stopped disk as raw ext4 to a new host path.
    pub async fn export_disk(&self, id: &str, output: &Path) -> Result<DiskExported> {
        let ws = self.stopped(id).await?;
        let output = expand_user(output);
        if output.symlink_metadata().is_ok() {
            return Err(Error::Conflict(format!("output_path already exists: {}", output.display())));
        }
        let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).ctx("create", parent)?;
        // Stage in a private (0700, randomly named) directory beside the output, so nothing
        // else can plant a symlink where `cp` writes, then move into place without ever
        // replacing a path that appeared meanwhile.
        let staging = tempfile::Builder::new().prefix(".pyro-disk-export-").tempdir_in(parent).ctx("create temp dir in", parent)?;
        let tmp = staging.path().join("disk.ext4");
        let status = std::process::Command::new("cp").arg("--sparse=always").arg(ws.disk()).arg(&tmp).status().ctx("run", "cp")?;
        if !status.success() {
            return Err(Error::io("copy the disk to", &output, std::io::Error::other(format!("cp {status}"))));
        }
        rename_noreplace(&tmp, &output)?;
        Ok(DiskExported {
            workspace_id: id.into(),
            size_bytes: std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0),
            output_path: output,
            disk_format: "ext4",
        })
    }

    /// Lists a path of the stopped rootfs.
    pub async fn list_disk(&self, id: &str, path: &str, recursive: bool) -> Result<DiskList> {
        let path = normalize_disk_path(path)?;
        let ws = self.stopped(id).await?;
        let entries = DiskImage::open(&ws.disk())?.entries(&path, recursive)?;
        Ok(DiskList { workspace_id: id.into(), path, recursive, entries })
    }

    /// Reads a regular file of the stopped rootfs.
    pub async fn read_disk(&self, id: &str, path: &str, max_bytes: u64) -> Result<DiskRead> {
        if max_bytes == 0 {
            return Err(Error::InvalidArgument("max_bytes must be positive".into()));
        }
        let path = normalize_disk_path(path)?;
        let ws = self.stopped(id).await?;
        let (bytes, size_bytes) = DiskImage::open(&ws.disk())?.read_prefix(&path, max_bytes)?;
        Ok(DiskRead {
            workspace_id: id.into(),
            path,
            size_bytes,
            max_bytes,
            truncated: size_bytes > bytes.len() as u64,
            content: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// Moves the finished export into place, refusing to replace anything already there.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    crate::fsutil::rename_noreplace(from, to).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Conflict(format!("output_path already exists: {}", to.display())),
        _ => Error::io("create", to, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_moves_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "new").unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new");
        assert!(!a.exists());
        std::fs::write(&a, "newer").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err().to_string();
        assert!(err.contains("output_path already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new");
        // A dangling symlink counts as existing too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(rename_noreplace(&a, &link).is_err());
        assert!(!dir.path().join("nowhere").exists());
    }
}
