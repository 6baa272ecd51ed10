//! Writable guest disks made from an environment's read-only rootfs: a workspace's own
//! grown raw ext4, and plain sparse copies of a prepared disk (a warm template's).

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Apparent size of a workspace disk (sparse: only what is written takes space).
pub const WORKSPACE_DISK_BYTES: u64 = 8 << 30;

/// Copies `rootfs` to `dest` as a raw ext4 grown to [`WORKSPACE_DISK_BYTES`] (checked,
/// then resized), staged beside `dest` and renamed into place.
pub fn grown_copy(rootfs: &Path, dest: &Path) -> Result<()> {
    let tmp = staging_path(dest);
    run_tool("cp", &["--sparse=always", "--reflink=auto", &rootfs.display().to_string(), &tmp.display().to_string()])?;
    let file = std::fs::OpenOptions::new().write(true).open(&tmp).ctx("open", &tmp)?;
    file.set_len(WORKSPACE_DISK_BYTES).ctx("grow", &tmp)?;
    drop(file);
    run_tool("e2fsck", &["-f", "-p", &tmp.display().to_string()])?;
    run_tool("resize2fs", &["-f", &tmp.display().to_string()])?;
    std::fs::rename(&tmp, dest).ctx("install", dest)
}

/// Below this size a disk (an overlay) is copied in-process; above it by `cp`, which
/// keeps a sparse image sparse.
const SMALL_DISK_BYTES: u64 = 64 << 20;

/// Copies the disk `source` to `dest` (sparse, reflinked where the filesystem can),
/// writable by its owner only whatever `source`'s mode, staged and renamed into place.
pub fn copy(source: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = staging_path(dest);
    if std::fs::metadata(source).ctx("inspect", source)?.len() < SMALL_DISK_BYTES {
        std::fs::copy(source, &tmp).ctx("copy", source)?;
    } else {
        run_tool("cp", &["--sparse=always", "--reflink=auto", &source.display().to_string(), &tmp.display().to_string()])?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).ctx("set permissions of", &tmp)?;
    std::fs::rename(&tmp, dest).ctx("install", dest)
}

fn staging_path(dest: &Path) -> std::path::PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    dest.with_file_name(name)
}

/// Runs a host tool to completion; a failure carries its stderr.
pub(crate) fn run_tool(tool: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(tool).args(args).output().map_err(|e| Error::Vmm(format!("cannot run {tool}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Vmm(format!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}
