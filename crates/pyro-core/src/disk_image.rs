//! Offline reads of guest ext4 images with a pure-Rust reader (no mount, no debugfs).

use std::path::Path;

use ext4_view::Ext4;

use crate::error::{Error, Result};

/// An ext4 image opened read-only.
pub struct DiskImage {
    fs: Ext4,
}

impl DiskImage {
    /// Opens `image` (a raw ext4 file).
    pub fn open(image: &Path) -> Result<Self> {
        let fs = Ext4::load_from_path(image).map_err(|e| Error::InvalidArgument(format!("cannot read ext4 image {}: {e}", image.display())))?;
        Ok(Self { fs })
    }

    /// Reads a whole regular file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.fs.read(path).map_err(|e| Error::InvalidArgument(format!("cannot read {path} from disk image: {e}")))
    }

    /// Names of the entries of a directory (without `.` and `..`), sorted.
    pub fn list_names(&self, path: &str) -> Result<Vec<String>> {
        let entries = self.fs.read_dir(path).map_err(|e| Error::InvalidArgument(format!("cannot list {path} in disk image: {e}")))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::InvalidArgument(format!("cannot list {path} in disk image: {e}")))?;
            let name = entry.file_name().display().to_string();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
