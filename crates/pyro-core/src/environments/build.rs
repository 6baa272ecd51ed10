//! Local image builds: our kernel from Debian's `linux-source`, and one ext4 rootfs per
//! environment from `mmdebstrap`, with the static pyro agent as `/opt/pyro/bin/pyro-agent`.
//!
//! The build recipes are shell scripts kept in `images/` and compiled into the binary,
//! so an installed `pyro` can build images without the source tree.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::digest::sha256_bytes;
use super::manifest::{KERNEL_FILE, ROOTFS_FILE};
use crate::catalog::EnvironmentSpec;
use crate::disk_image::DiskImage;
use crate::error::{Error, IoContext, Result};
use crate::events::{Event, Progress};
use crate::fsutil::lock_file;
use crate::paths::{self, Dirs};

const KERNEL_SCRIPT: &str = include_str!("../../../../images/kernel/build-kernel.sh");
const KERNEL_CONFIG: &str = include_str!("../../../../images/kernel/microvm.config");
const ROOTFS_SCRIPT: &str = include_str!("../../../../images/rootfs/build-rootfs.sh");

/// `source` recorded for locally built installs.
pub const LOCAL_BUILD_SOURCE: &str = "local-build";

/// Where the agent lives inside every rootfs.
pub const GUEST_AGENT_PATH: &str = "/opt/pyro/bin/pyro-agent";

/// Builds `vmlinux` and `rootfs.ext4` for `spec` into `staging`. The rootfs bootstrap
/// (network- and disk-bound) runs while the kernel compiles (CPU-bound); the first
/// failure cancels the other.
pub async fn build_into(dirs: &Dirs, spec: &EnvironmentSpec, staging: &Path, progress: Progress<'_>) -> Result<()> {
    let agent = paths::agent_binary()?;
    let kernel = async {
        let kernel = ensure_kernel(dirs, progress).await?;
        let staged_kernel = staging.join(KERNEL_FILE);
        std::fs::copy(&kernel, &staged_kernel).ctx("copy kernel to", &staged_kernel)?;
        Ok::<_, Error>(())
    };
    let work = tempfile::Builder::new()
        .prefix(&format!("rootfs-{}-", spec.install_dir_name()))
        .tempdir_in(ensure_dir(&dirs.build())?)
        .ctx("create build directory in", dirs.build())?;
    let output = staging.join(ROOTFS_FILE);
    let mut args = vec![output.display().to_string(), agent.display().to_string(), work.path().display().to_string()];
    args.extend(spec.default_packages.iter().map(|p| p.to_string()));
    let rootfs = run_script("build-rootfs", ROOTFS_SCRIPT, &args, progress);
    tokio::try_join!(kernel, rootfs)?;
    Ok(())
}

/// Returns the cached kernel for the current config, building it first when needed.
/// The cache key covers the config fragment, the build script and the kernel source.
async fn ensure_kernel(dirs: &Dirs, progress: Progress<'_>) -> Result<PathBuf> {
    let source = kernel_source()?;
    let source_meta = std::fs::metadata(&source).ctx("stat", &source)?;
    let key = sha256_bytes(format!("{KERNEL_SCRIPT}\0{KERNEL_CONFIG}\0{}\0{}", source.display(), source_meta.len()).as_bytes());
    let dir = ensure_dir(&dirs.build().join(format!("kernel-{}", &key[..16])))?;
    let vmlinux = dir.join(KERNEL_FILE);
    // Another pull may be compiling this kernel; wait for it off the async thread, so
    // this pull's rootfs bootstrap keeps being driven meanwhile.
    let lock_path = dir.join(".lock");
    let _lock = tokio::task::spawn_blocking(move || lock_file(&lock_path)).await.map_err(|e| Error::Build(format!("kernel lock wait failed: {e}")))??;
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let config = dir.join("microvm.config");
    std::fs::write(&config, KERNEL_CONFIG).ctx("write", &config)?;
    progress(&Event::KernelBuild { source: source.clone() });
    let args = [config.display().to_string(), vmlinux.display().to_string(), dirs.build().join("linux-src").display().to_string()];
    run_script("build-kernel", KERNEL_SCRIPT, &args, progress).await?;
    let built = std::fs::read(&vmlinux).map_err(|e| Error::Build(format!("kernel build finished without producing {}: {e}", vmlinux.display())))?;
    if !crate::elf::has_pvh_entry_note(&built) {
        let _ = std::fs::remove_file(&vmlinux);
        return Err(Error::Build("the built kernel has no PVH entry note (CONFIG_PVH); QEMU microvm and Firecracker could not boot it".into()));
    }
    Ok(vmlinux)
}

/// The Debian kernel source tarball (`apt-get install linux-source`).
fn kernel_source() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/src").map(|entries| entries.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    found.retain(|p| p.file_name().map(|n| n.to_string_lossy().starts_with("linux-source-") && n.to_string_lossy().ends_with(".tar.xz")).unwrap_or(false));
    found.sort();
    found
        .pop()
        .ok_or_else(|| Error::Build("kernel source not found in /usr/src; install it with `apt-get install linux-source` (scripts/setup.sh does)".into()))
}

/// Runs an embedded bash script, forwarding its stderr lines as progress; on failure the
/// error carries the last lines it printed.
async fn run_script(name: &'static str, script: &str, args: &[String], progress: Progress<'_>) -> Result<()> {
    let mut command = tokio::process::Command::new("bash");
    command.arg("-c").arg(script).arg(name).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    // SAFETY: prctl and umask only set attributes of the child; if pyro is killed mid-build the
    // script gets SIGTERM and its trap removes its half-built work.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // Files inside the guest image keep the usual modes (pyro itself runs with
            // umask 077); the image sits in the private cache either way.
            libc::umask(0o022);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| Error::Build(format!("cannot run bash for {name}: {e}")))?;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = lines.next_line().await.map_err(|e| Error::Build(format!("{name}: {e}")))? {
        progress(&Event::BuildLog { step: name, line: line.clone() });
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = child.wait().await.map_err(|e| Error::Build(format!("{name}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        let last = tail.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
        Err(Error::Build(format!("{name} failed ({status}): {last}")))
    }
}

fn ensure_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    Ok(dir.to_path_buf())
}

/// sha256 of the agent baked into the rootfs in `install_dir`.
pub fn agent_digest_in(install_dir: &Path) -> Result<String> {
    let image = DiskImage::open(&install_dir.join(ROOTFS_FILE))?;
    Ok(sha256_bytes(&image.read(GUEST_AGENT_PATH)?))
}
