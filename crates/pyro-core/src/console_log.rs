//! Capped logs of what a guest (or its VMM) prints: the supervisor drains the VMM's
//! stdout and stderr into files that never grow past a fixed size, and error messages
//! read only their tail. A guest that writes without end to its console fills nothing.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Size at which a log is rotated: the current file becomes `<name>.old` (replacing the
/// previous one), so a log takes at most twice this on disk.
pub const ROTATE_BYTES: u64 = 1 << 20;
/// How much of the end of a log is read for error messages.
pub const TAIL_BYTES: u64 = 64 << 10;

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    path.with_file_name(name)
}

/// A log file that rotates at [`ROTATE_BYTES`].
pub struct CappedLog {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
}

impl CappedLog {
    /// Creates (truncates) `path` and removes an old rotation.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(rotated(path));
        let file = std::fs::File::create(path)?;
        Ok(Self { path: path.to_path_buf(), file, written: 0 })
    }

    /// Appends `bytes`, rotating first when they would cross the cap.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > ROTATE_BYTES && self.written > 0 {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = std::fs::File::create(&self.path)?;
            self.written = 0;
        }
        // A single chunk is at most the drain buffer, far below the cap.
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Copies `source` into a [`CappedLog`] at `path` until end of file. Errors writing the
/// log stop the copy but keep draining, so the VMM never blocks on a full pipe.
pub async fn drain_into(mut source: impl AsyncRead + Unpin, path: PathBuf) {
    let mut log = CappedLog::create(&path).ok();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match source.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(l) = log.as_mut() {
                    if l.write(&buf[..n]).is_err() {
                        log = None;
                    }
                }
            }
        }
    }
}

/// The last [`TAIL_BYTES`] of the log at `path` (including its rotation), lossy UTF-8.
pub fn tail(path: &Path) -> String {
    let mut bytes = read_end(path, TAIL_BYTES);
    if (bytes.len() as u64) < TAIL_BYTES {
        let mut older = read_end(&rotated(path), TAIL_BYTES - bytes.len() as u64);
        older.extend_from_slice(&bytes);
        bytes = older;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn read_end(path: &Path, max: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((len - start) as usize);
    let _ = file.take(max).read_to_end(&mut out);
    out
}

/// The last non-empty line of a log, for one-line error messages.
pub(crate) fn last_line(log: &str) -> &str {
    log.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_stays_within_the_cap_and_the_tail_is_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let (mut tx, rx) = tokio::io::duplex(64 << 10);
        let drain = tokio::spawn(drain_into(rx, path.clone()));
        let line = [b'x'; 1023];
        for _ in 0..(8 << 10) {
            tokio::io::AsyncWriteExt::write_all(&mut tx, &line).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut tx, b"\n").await.unwrap();
        }
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"the last line\n").await.unwrap();
        drop(tx);
        drain.await.unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().len() + std::fs::metadata(rotated(&path)).map(|m| m.len()).unwrap_or(0);
        assert!(on_disk <= 2 * ROTATE_BYTES, "{on_disk} bytes on disk");
        let tail = tail(&path);
        assert!(tail.len() as u64 <= TAIL_BYTES);
        assert!(tail.ends_with("the last line\n"));
    }
}
