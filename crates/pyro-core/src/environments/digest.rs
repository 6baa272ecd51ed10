//! sha256 digests and cheap change detection for cached artifacts.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Hex sha256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).ctx("open", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the install recorded about one artifact file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Inode and modification time at install; when both still match, the content is
    /// trusted without re-hashing (a later edit changes the mtime).
    pub inode: u64,
    /// Modification time (ns since the epoch) at install.
    pub mtime_ns: i128,
}

impl ArtifactRecord {
    /// Hashes `path` and records its identity.
    pub fn of(path: &Path) -> Result<Self> {
        let sha256 = sha256_file(path)?;
        let meta = std::fs::metadata(path).ctx("stat", path)?;
        Ok(Self { sha256, size_bytes: meta.len(), inode: meta.ino(), mtime_ns: mtime_ns(&meta) })
    }

    /// Whether `path` still looks exactly like the recorded file without reading it.
    pub fn unchanged(&self, path: &Path) -> bool {
        std::fs::metadata(path).map(|m| m.is_file() && m.len() == self.size_bytes && m.ino() == self.inode && mtime_ns(&m) == self.mtime_ns).unwrap_or(false)
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_bytes(b"abc"));
    }

    #[test]
    fn edits_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let rec = ArtifactRecord::of(&p).unwrap();
        assert!(rec.unchanged(&p));
        std::fs::write(&p, b"abd").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert!(!rec.unchanged(&p));
    }
}
