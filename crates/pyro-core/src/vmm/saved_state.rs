//! Saved guest state on disk: written from a VMM's outgoing migration stream, and fed
//! back into a restoring VMM. The VMM never opens the file itself (a private mapping of
//! it would see later writes); pyro streams it, checking its digest on the way: the
//! last bytes are held back until the digest matches, so a corrupt state is never
//! completely loaded and the guest never runs from it.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, IoContext, Result};

const CHUNK: usize = 1 << 20;

/// Copies `stream` into a new file at `path` until end of stream, syncs it, and returns
/// its sha256 (hex) and size.
pub async fn save<R: AsyncRead + Unpin>(mut stream: R, path: &Path) -> Result<(String, u64)> {
    let mut file = tokio::fs::File::create(path).await.ctx("create", path)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| Error::Vmm(format!("reading the VMM's saved state failed: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.ctx("write", path)?;
        total += n as u64;
    }
    file.sync_all().await.ctx("sync", path)?;
    Ok((hex::encode(hasher.finalize()), total))
}

/// Streams the state at `path` into `sink`, holding back the final chunk until the
/// whole file is known to have `expected_bytes` bytes and sha256 `expected_sha256`.
/// A mismatch is [`Error::Corrupt`] and the sink never sees the end of the state. The
/// digest is computed on a thread of its own, reading the file beside the stream, so
/// the VMM loads while pyro hashes.
pub async fn feed<W: AsyncWrite + Unpin>(path: &Path, expected_sha256: &str, expected_bytes: u64, mut sink: W) -> Result<()> {
    let digest = tokio::task::spawn_blocking({
        let path = path.to_path_buf();
        move || digest_file(&path)
    });
    let mut file = tokio::fs::File::open(path).await.ctx("open", path)?;
    let mut total = 0u64;
    let mut held: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let sink_failed = |e: std::io::Error| Error::Vmm(format!("the VMM stopped taking the saved state: {e}"));
    loop {
        let n = file.read(&mut buf).await.ctx("read", path)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > expected_bytes {
            break;
        }
        if !held.is_empty() {
            sink.write_all(&held).await.map_err(sink_failed)?;
        }
        held.clear();
        held.extend_from_slice(&buf[..n]);
    }
    let (actual, hashed) = digest.await.map_err(|e| Error::Vmm(format!("hashing the saved state failed: {e}")))??;
    if total != expected_bytes || hashed != expected_bytes || actual != expected_sha256 {
        return Err(Error::Corrupt(format!("the saved state {} does not match its record ({hashed} bytes, sha256 {actual})", path.display())));
    }
    sink.write_all(&held).await.map_err(sink_failed)?;
    sink.shutdown().await.map_err(sink_failed)?;
    Ok(())
}

/// The sha256 (hex) and size of the file at `path`.
fn digest_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ctx("open", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), total));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn saved(bytes: &[u8], dir: &Path) -> (std::path::PathBuf, String, u64) {
        let path = dir.join("state");
        let (sha, size) = save(bytes, &path).await.unwrap();
        (path, sha, size)
    }

    #[tokio::test]
    async fn a_saved_state_feeds_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let (path, sha, size) = saved(&data, dir.path()).await;
        assert_eq!(size, data.len() as u64);
        let mut out = Vec::new();
        feed(&path, &sha, size, &mut out).await.unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn a_corrupt_state_never_reaches_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 2 * CHUNK + 5];
        let (path, sha, size) = saved(&data, dir.path()).await;
        let mut bad = data.clone();
        bad[CHUNK + 3] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let mut out = Vec::new();
        let err = feed(&path, &sha, size, &mut out).await.unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
        assert!(out.len() < data.len(), "the end of a corrupt state was held back");
        // A truncated or extended file is refused too.
        std::fs::write(&path, &data[..data.len() - 1]).unwrap();
        assert!(feed(&path, &sha, size, &mut Vec::new()).await.is_err());
        std::fs::write(&path, [data.as_slice(), b"x"].concat()).unwrap();
        assert!(feed(&path, &sha, size, &mut Vec::new()).await.is_err());
    }
}
