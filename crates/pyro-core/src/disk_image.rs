//! Offline reads of guest ext4 images with a pure-Rust reader (no mount, no debugfs).

use std::io::Read;
use std::path::Path;

use ext4_view::{Ext4, Metadata};
use serde::Serialize;

use crate::error::{Error, Result};

/// An ext4 image opened read-only.
pub struct DiskImage {
    fs: Ext4,
}

/// One entry of an offline listing.
#[derive(Debug, Clone, Serialize)]
pub struct DiskEntry {
    /// Absolute path inside the image.
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub artifact_type: &'static str,
    /// Size (0 for directories).
    pub size_bytes: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Symlink target.
    pub link_target: Option<String>,
}

fn failed(action: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("cannot {action} {path} in the disk image: {e}"))
}

impl DiskImage {
    /// Opens `image` (a raw ext4 file).
    pub fn open(image: &Path) -> Result<Self> {
        let fs = Ext4::load_from_path(image).map_err(|e| Error::InvalidArgument(format!("cannot read ext4 image {}: {e}", image.display())))?;
        Ok(Self { fs })
    }

    /// Reads a whole regular file (following symlinks).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.fs.read(path).map_err(|e| failed("read", path, e))
    }

    /// Reads at most `max` bytes of a regular file (not following a final symlink);
    /// returns the bytes and the full size.
    pub fn read_prefix(&self, path: &str, max: u64) -> Result<(Vec<u8>, u64)> {
        let meta = self.fs.symlink_metadata(path).map_err(|e| failed("read", path, e))?;
        if !meta.file_type().is_regular_file() {
            return Err(Error::InvalidArgument(format!("disk read only supports regular files: {path}")));
        }
        let file = self.fs.open(path).map_err(|e| failed("read", path, e))?;
        let mut bytes = Vec::new();
        file.take(max).read_to_end(&mut bytes).map_err(|e| failed("read", path, e))?;
        Ok((bytes, meta.len()))
    }

    /// Names of the entries of a directory (without `.` and `..`), sorted.
    pub fn list_names(&self, path: &str) -> Result<Vec<String>> {
        Ok(self.children(path)?.into_iter().map(|(name, _)| name).collect())
    }

    fn children(&self, path: &str) -> Result<Vec<(String, Metadata)>> {
        let entries = self.fs.read_dir(path).map_err(|e| failed("list", path, e))?;
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| failed("list", path, e))?;
            let name = entry.file_name().display().to_string();
            if name != "." && name != ".." {
                children.push((name, entry.metadata().map_err(|e| failed("list", path, e))?));
            }
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(children)
    }

    /// Describes `path` (never following symlinks): a directory's children (depth-first
    /// when `recursive`), or the path itself otherwise.
    pub fn entries(&self, path: &str, recursive: bool) -> Result<Vec<DiskEntry>> {
        let meta = self.fs.symlink_metadata(path).map_err(|_| Error::InvalidArgument(format!("disk path does not exist: {path}")))?;
        if !meta.is_dir() {
            return Ok(vec![self.entry(path, &meta)]);
        }
        let mut out = Vec::new();
        self.walk(path, recursive, &mut out)?;
        Ok(out)
    }

    fn walk(&self, dir: &str, recursive: bool, out: &mut Vec<DiskEntry>) -> Result<()> {
        for (name, meta) in self.children(dir)? {
            let path = if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") };
            out.push(self.entry(&path, &meta));
            if recursive && meta.is_dir() {
                self.walk(&path, true, out)?;
            }
        }
        Ok(())
    }

    fn entry(&self, path: &str, meta: &Metadata) -> DiskEntry {
        let kind = meta.file_type();
        let artifact_type = if kind.is_regular_file() {
            "file"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        DiskEntry {
            path: path.to_string(),
            artifact_type,
            size_bytes: if kind.is_dir() { 0 } else { meta.len() },
            mode: format!("{:04o}", meta.mode() & 0o7777),
            link_target: kind.is_symlink().then(|| self.fs.read_link(path).map(|t| t.display().to_string()).unwrap_or_default()),
        }
    }
}
