//! Where pyro keeps things on the host: cache (environment images, kernel build), state
//! (VMs and workspaces) and the guest agent binary it bakes into images.

use crate::env_vars;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The host directories pyro uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Root of cached, re-creatable artifacts (`$PYRO_CACHE_DIR`, else `$XDG_CACHE_HOME/pyro`).
    pub cache: PathBuf,
    /// Root of VM and workspace state (`$PYRO_STATE_DIR`, else `$XDG_STATE_HOME/pyro`).
    pub state: PathBuf,
}

impl Dirs {
    /// Resolves the directories from the environment (not creating them).
    pub fn from_env() -> Result<Self> {
        let cache = env_dir(env_vars::CACHE_DIR)
            .or_else(|| dirs::cache_dir().map(|d| d.join("pyro")))
            .ok_or_else(|| Error::InvalidArgument(format!("cannot determine a cache directory; set {cache_dir_var}", cache_dir_var = env_vars::CACHE_DIR)))?;
        let state = env_dir(env_vars::STATE_DIR)
            .or_else(|| dirs::state_dir().map(|d| d.join("pyro")))
            .or_else(|| dirs::home_dir().map(|d| d.join(".local/state/pyro")))
            .ok_or_else(|| Error::InvalidArgument(format!("cannot determine a state directory; set {state_dir_var}", state_dir_var = env_vars::STATE_DIR)))?;
        Ok(Self { cache, state })
    }

    /// Makes the cache and state roots private: created 0700 when missing, tightened to
    /// 0700 when looser, refused when another user owns them (a pre-created shared
    /// directory could hold another user's symlinks).
    pub fn secure(&self) -> Result<()> {
        for root in [&self.cache, &self.state] {
            secure_root(root)?;
        }
        Ok(())
    }

    /// Directory of installed environments for this platform.
    pub fn environments(&self) -> PathBuf {
        self.cache.join("environments").join(crate::catalog::PLATFORM)
    }

    /// Directory of locally built kernels and build work trees.
    pub fn build(&self) -> PathBuf {
        self.cache.join("build")
    }
}

fn secure_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(|e| Error::io("create", root, e))?;
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io("inspect", root, e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::Conflict(format!("refusing to use {}: it belongs to uid {}, not to this user (uid {me})", root.display(), meta.uid())));
    }
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("refusing to use {}: it is not a directory", root.display())));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io("restrict permissions of", root, e))?;
    }
    Ok(())
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Finds the static `pyro-agent` binary: `$PYRO_AGENT_BIN`, next to the running
/// executable, or the musl build output of this workspace.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = env_dir(env_vars::AGENT_BIN) {
        return check_static(&path);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locate", "the running executable", e))?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/"));
    let mut candidates = vec![exe_dir.join("pyro-agent")];
    // target/{debug,release}/pyro → target/x86_64-unknown-linux-musl/release/pyro-agent
    if let Some(target_dir) = exe_dir.parent() {
        for profile in ["release", "debug"] {
            candidates.push(target_dir.join("x86_64-unknown-linux-musl").join(profile).join("pyro-agent"));
        }
    }
    for candidate in &candidates {
        if candidate.is_file() && is_static_elf(candidate) {
            return Ok(candidate.clone());
        }
    }
    Err(Error::NotInstalled(format!(
        "static pyro-agent binary not found (looked in {}); build it with `cargo build --release -p pyro-agent --target x86_64-unknown-linux-musl` or set {agent_bin_var}",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    , agent_bin_var = env_vars::AGENT_BIN)))
}

fn check_static(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        return Err(Error::NotInstalled(format!("{agent_bin_var} points to {}, which is not a file", path.display(), agent_bin_var = env_vars::AGENT_BIN)));
    }
    if !is_static_elf(path) {
        return Err(Error::NotInstalled(format!(
            "{} is not a statically linked x86_64 ELF; build pyro-agent with --target x86_64-unknown-linux-musl",
            path.display()
        )));
    }
    Ok(path.to_path_buf())
}

/// The `pyro` executable (supervisors run as `pyro __supervise`): `$PYRO_BIN`, the running
/// executable when it is `pyro`, else a `pyro` beside it or one directory up (cargo puts
/// tests and benches in `target/<profile>/deps/`).
pub fn pyro_binary() -> Result<PathBuf> {
    if let Some(path) = env_dir(env_vars::BIN) {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locate", "the running executable", e))?;
    if exe.file_name().is_some_and(|n| n == "pyro") {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("/"));
    [dir.join("pyro"), dir.parent().unwrap_or(dir).join("pyro")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotInstalled(format!("cannot find the pyro executable next to {}; set {bin_var}", exe.display(), bin_var = env_vars::BIN)))
}

/// True when `path` is a statically linked x86_64 ELF.
pub fn is_static_elf(path: &Path) -> bool {
    std::fs::read(path).map(|bytes| crate::elf::is_static_x86_64(&bytes)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_private_and_foreign_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs { cache: tmp.path().join("cache/pyro"), state: tmp.path().join("state") };
        std::fs::create_dir(&dirs.state).unwrap();
        std::fs::set_permissions(&dirs.state, std::fs::Permissions::from_mode(0o755)).unwrap();
        dirs.secure().unwrap();
        for root in [&dirs.cache, &dirs.state] {
            assert_eq!(std::fs::metadata(root).unwrap().permissions().mode() & 0o777, 0o700, "{}", root.display());
        }
        // A symlink to a directory is not a private directory either.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dirs.state, &link).unwrap();
        assert!(Dirs { cache: dirs.cache.clone(), state: link }.secure().is_err());
    }

    #[test]
    fn env_override_wins() {
        // Only the pure helper is exercised, so parallel tests do not race on env vars.
        assert_eq!(env_dir("SURELY_UNSET_VARIABLE_0F3A9C"), None);
    }

    #[test]
    fn dynamic_executables_are_not_static() {
        // /bin/sh on any Debian host is dynamically linked.
        assert!(!is_static_elf(Path::new("/bin/sh")));
        assert!(!is_static_elf(Path::new("/nonexistent/pyro-agent")));
    }
}
