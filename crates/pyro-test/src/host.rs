//! Probes of the host: processes, logs, prerequisites and ext4 images.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The pid of a VMM (QEMU or Firecracker) whose command line names `state` (not the
/// guard pyro may run in front of it).
pub fn vmm_pid(state: &Path) -> Option<i32> {
    let mut vmms = processes_with(state, "qemu-system");
    vmms.extend(processes_with(state, "firecracker"));
    vmms.into_iter().next()
}

/// Every live process whose command line names `state` and contains `what`; the VMM
/// guard (`pyro __vmm-guard qemu-system…`) counts only when `what` names it.
pub fn processes_with(state: &Path, what: &str) -> Vec<i32> {
    let needle = state.to_string_lossy().into_owned();
    pids()
        .into_iter()
        .filter(|pid| {
            let text = cmdline(*pid);
            let guard = text.contains("__vmm-guard") && !what.contains("__vmm-guard");
            text.contains(what) && text.contains(&needle) && !guard && !process_gone(*pid)
        })
        .collect()
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).collect()
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

/// True when `pid` no longer runs: gone, or a zombie (or dead task) nobody reaped yet.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Polls `probe` every 200 ms until it returns a value or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read), for a
/// failure message.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A setting under which a missing prerequisite fails the test instead of skipping it,
/// so that CI never passes by skipping.
pub struct Required {
    /// The environment variable.
    pub var: &'static str,
    /// The value that makes prerequisites mandatory.
    pub value: &'static str,
}

impl Required {
    /// `CI=true`.
    pub const IN_CI: Required = Required { var: "CI", value: "true" };
    /// `PYRO_REQUIRE_FIRECRACKER=1` (scripts/test.sh sets it in CI).
    pub const FIRECRACKER: Required = Required { var: "PYRO_REQUIRE_FIRECRACKER", value: "1" };

    /// Whether the setting is on.
    pub fn is_set(&self) -> bool {
        std::env::var(self.var).is_ok_and(|v| v == self.value)
    }

    /// Skips: prints `SKIP: {reason}` and returns `None`; panics instead when the setting
    /// is on.
    pub fn skip<T>(&self, reason: &str) -> Option<T> {
        if self.is_set() {
            panic!("{}={} but {reason}", self.var, self.value);
        }
        eprintln!("SKIP: {reason}");
        None
    }

    /// `present`; when it is false, first [`Required::skip`]s with "`what` is not
    /// available".
    pub fn check(&self, present: bool, what: &str) -> bool {
        if !present {
            self.skip::<()>(&format!("{what} is not available"));
        }
        present
    }
}

/// `mkfs.ext4` from e2fsprogs, if installed (`/usr/sbin`, `/sbin`, or on `PATH`).
pub fn mkfs_ext4() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/sbin".into(), "/sbin".into()].into_iter().chain(std::env::split_paths(&path)).map(|dir: PathBuf| dir.join("mkfs.ext4")).find(|p| p.is_file())
}

/// Makes an ext4 image of `size` (`16M`) at `image`, holding the files of `tree` if
/// given, without the features old readers lack (`^inline_data,^large_dir`). Panics
/// with mkfs's output when it fails or [`mkfs_ext4`] finds none.
pub fn make_ext4(image: &Path, size: &str, tree: Option<&Path>) {
    let mkfs = mkfs_ext4().expect("mkfs.ext4 (e2fsprogs) is installed");
    let mut cmd = Command::new(mkfs);
    cmd.args(["-q", "-F"]);
    if let Some(tree) = tree {
        cmd.arg("-d").arg(tree);
    }
    let out = cmd.args(["-O", "^inline_data,^large_dir"]).arg(image).arg(size).output().expect("mkfs.ext4 runs");
    assert!(out.status.success(), "mkfs.ext4 {}: {}", image.display(), crate::home::describe(&out));
}
