//! Every environment variable pyro reads, in one place with its meaning. Code reads
//! them through these constants only; the README's table lists exactly [`ALL`] (a test
//! checks it), so a variable cannot be added or dropped without the docs following.
//!
//! This module sits on the bottom floor: it depends on nothing else in the crate.

/// Cache root for environments, the kernel build and the KVM check (default
/// `~/.cache/pyro`).
pub const CACHE_DIR: &str = "PYRO_CACHE_DIR";
/// State root for VMs and workspaces (default `~/.local/state/pyro`).
pub const STATE_DIR: &str = "PYRO_STATE_DIR";
/// Forces a backend: `firecracker`, `qemu-kvm`, `qemu-tcg` or `host_compat` (like
/// `--backend`).
pub const BACKEND: &str = "PYRO_BACKEND";
/// Registry location `env pull` installs from (like `--registry`).
pub const ENV_REGISTRY: &str = "PYRO_ENV_REGISTRY";
/// Registry user name (optional).
pub const ENV_REGISTRY_USERNAME: &str = "PYRO_ENV_REGISTRY_USERNAME";
/// Registry password or token (optional).
pub const ENV_REGISTRY_PASSWORD: &str = "PYRO_ENV_REGISTRY_PASSWORD";
/// Seconds a guest may take to say hello after its VMM starts (default 90).
pub const BOOT_TIMEOUT_SECONDS: &str = "PYRO_BOOT_TIMEOUT_SECONDS";
/// Seconds of inactivity after which a workspace's guest is stopped (default 1800; 0
/// disables).
pub const WORKSPACE_IDLE_STOP_SECONDS: &str = "PYRO_WORKSPACE_IDLE_STOP_SECONDS";
/// The static `pyro-agent` binary baked into images (default: found beside `pyro`).
pub const AGENT_BIN: &str = "PYRO_AGENT_BIN";
/// The `pyro` executable supervisors are started from (default: the running one).
pub const BIN: &str = "PYRO_BIN";
/// The Firecracker binary (default: `firecracker` on `PATH` or pyro's cache).
pub const FIRECRACKER: &str = "PYRO_FIRECRACKER";
/// The `qemu-system-x86_64` binary (default: found on `PATH`).
pub const QEMU: &str = "PYRO_QEMU";
/// `0` turns warm starts off: every start boots a kernel instead of restoring a saved
/// template (default: on where the backend supports it).
pub const WARM_START: &str = "PYRO_WARM_START";
/// Log filter in `tracing` syntax, e.g. `debug` (default `warn`); logs go to stderr.
pub const LOG: &str = "PYRO_LOG";

/// Every variable above, in the README's order.
pub const ALL: &[&str] = &[
    CACHE_DIR,
    STATE_DIR,
    BACKEND,
    ENV_REGISTRY,
    ENV_REGISTRY_USERNAME,
    ENV_REGISTRY_PASSWORD,
    BOOT_TIMEOUT_SECONDS,
    WORKSPACE_IDLE_STOP_SECONDS,
    AGENT_BIN,
    BIN,
    FIRECRACKER,
    QEMU,
    WARM_START,
    LOG,
];

#[cfg(test)]
mod tests {
    /// The README's environment variable table names exactly the variables of
    /// [`super::ALL`], in order.
    #[test]
    fn readme_lists_exactly_these_variables() {
        assert_eq!(crate::readme::table_keys("env-vars"), super::ALL, "README's environment variable table differs from env_vars::ALL");
    }

    /// No source file of the core or the CLI spells a `PYRO_*` name outside this module.
    #[test]
    fn variables_are_named_only_here() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut offenders = Vec::new();
        for krate in ["pyro-core/src", "pyro-cli/src"] {
            for entry in walk(&root.join(krate)) {
                if entry.ends_with("env_vars.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&entry).unwrap();
                if text.lines().any(|l| l.contains("\"PYRO_") && !l.trim_start().starts_with("//")) {
                    offenders.push(entry.display().to_string());
                }
            }
        }
        assert!(offenders.is_empty(), "PYRO_* literals outside env_vars.rs: {offenders:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
        out
    }
}
