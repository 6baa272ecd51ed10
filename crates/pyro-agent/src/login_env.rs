//! The login environment: what a command would see in its environment had it been started
//! by a login shell (`/bin/sh -lc`), computed by running that login shell once and cached
//! until one of the files a login shell reads changes.
//!
//! The agent runs the login shell with `exec <this binary> --print-env`, which prints the
//! environment the profile scripts left behind ([`print_env`]). Per-shell variables
//! (`PWD`, `OLDPWD`, `SHLVL`, `_`) are dropped: the shell that runs a command sets its own.
//! Every use re-checks a fingerprint of the profile files (path, device, inode, size,
//! mtime and ctime of `/etc/profile`, `/etc/profile.d` and its entries, `$HOME/.profile`,
//! `/etc/environment`), a few `stat`s, so an edited `~/.profile` is seen by the next command.
//!
//! Bottom floor: imports nothing from the agent.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

/// The hidden agent flag that prints the environment NUL-separated ([`print_env`]).
pub const PRINT_ENV_FLAG: &str = "--print-env";

/// Variables a shell sets for itself; never taken from the login shell's output.
const PER_SHELL: [&str; 4] = ["PWD", "OLDPWD", "SHLVL", "_"];

/// How long the login shell may take before the agent gives up on it (and commands fall
/// back to a login shell of their own).
const COMPUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables in the order they are applied.
pub type Env = Vec<(OsString, OsString)>;

/// `--print-env`: writes every variable of this process's environment as `KEY=VALUE\0`.
pub fn print_env() {
    let mut out = Vec::new();
    for (key, value) in std::env::vars_os() {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&out).and_then(|()| stdout.flush()).is_err() {
        std::process::exit(1);
    }
}

/// What identifies one file a login shell may read: absent files count too (creating one
/// changes the fingerprint).
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// (device, inode, size, mtime ns, ctime ns), or `None` when the path does not exist.
    stat: Option<(u64, u64, u64, i128, i128)>,
}

fn stamp(path: PathBuf) -> FileStamp {
    let stat = std::fs::metadata(&path).ok().map(|m| {
        let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        (m.dev(), m.ino(), m.size(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))
    });
    FileStamp { path, stat }
}

/// The files a login `/bin/sh` reads (plus `/etc/environment`), stamped now. `homes` are
/// the home directories whose `.profile` counts.
fn fingerprint(homes: &[OsString]) -> Vec<FileStamp> {
    let mut stamps = vec![stamp("/etc/profile".into()), stamp("/etc/environment".into()), stamp("/etc/profile.d".into())];
    if let Ok(entries) = std::fs::read_dir("/etc/profile.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        stamps.extend(paths.into_iter().map(stamp));
    }
    stamps.extend(homes.iter().map(profile_stamp));
    stamps
}

fn profile_stamp(home: &OsString) -> FileStamp {
    stamp(Path::new(home).join(".profile"))
}

/// The home directories whose `.profile` a login shell may read: the agent's `$HOME` (the
/// login shell starts with it) and the one the profile scripts left, when they changed it.
fn homes(env: Option<&Env>) -> Vec<OsString> {
    let mut homes: Vec<OsString> = std::env::var_os("HOME").into_iter().collect();
    if let Some(home) = env.and_then(|env| env.iter().find(|(k, _)| k == "HOME")).map(|(_, v)| v.clone()) {
        if !homes.contains(&home) {
            homes.push(home);
        }
    }
    homes
}

/// Splits `--print-env` output into variables, without the per-shell ones.
fn parse(output: &[u8]) -> Env {
    output
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            let (key, value) = (&entry[..eq], &entry[eq + 1..]);
            (!key.is_empty() && !PER_SHELL.iter().any(|p| p.as_bytes() == key)).then(|| (OsString::from_vec(key.to_vec()), OsString::from_vec(value.to_vec())))
        })
        .collect()
}

/// Runs the login shell once and reads the environment it leaves; `None` when that fails.
async fn compute() -> Option<Env> {
    let exe = std::env::current_exe().ok()?;
    let exe = exe.to_str()?;
    let script = format!("exec '{}' {PRINT_ENV_FLAG}", exe.replace('\'', r"'\''"));
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-lc")
        .arg(script)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let output = tokio::time::timeout(COMPUTE_TIMEOUT, child.wait_with_output()).await.ok()?.ok()?;
    if !output.status.success() {
        return None;
    }
    Some(parse(&output.stdout))
}

/// The last computation and the fingerprint it was made under.
struct Cached {
    stamps: Vec<FileStamp>,
    /// `None` when the login shell failed (commands then use their own login shell).
    env: Option<Arc<Env>>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::const_new(None);

/// The login environment, recomputed when the profile files changed since the last time;
/// `None` when it cannot be computed.
pub async fn get() -> Option<Arc<Env>> {
    // Held across the computation: concurrent first commands run one login shell, not many.
    let mut cache = CACHE.lock().await;
    if let Some(cached) = cache.as_ref() {
        if cached.stamps == fingerprint(&homes(cached.env.as_deref())) {
            return cached.env.clone();
        }
    }
    // Stamped before the login shell runs: an edit made while it runs is seen next time.
    let agent_homes = homes(None);
    let mut stamps = fingerprint(&agent_homes);
    let env = compute().await.map(Arc::new);
    // A `$HOME` the profile scripts moved adds that home's `.profile`.
    stamps.extend(homes(env.as_deref()).iter().skip(agent_homes.len()).map(profile_stamp));
    *cache = Some(Cached { stamps, env: env.clone() });
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_per_shell_variables_and_keeps_odd_values() {
        let env = parse(b"PATH=/bin\0PWD=/x\0SHLVL=1\0_=/usr/bin/env\0OLDPWD=/\0EMPTY=\0EQ=a=b\0NL=a\nb\0\0=bad\0noequals\0");
        let keys: Vec<_> = env.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
        assert_eq!(keys, ["PATH=/bin", "EMPTY=", "EQ=a=b", "NL=a\nb"]);
    }

    #[test]
    fn fingerprint_sees_a_changed_profile() {
        let dir = std::env::temp_dir().join(format!("pyro-login-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let home = vec![dir.clone().into_os_string()];
        let absent = fingerprint(&home);
        std::fs::write(dir.join(".profile"), "export A=1\n").unwrap();
        let created = fingerprint(&home);
        assert_ne!(absent, created);
        std::fs::write(dir.join(".profile"), "export A=12\n").unwrap();
        assert_ne!(created, fingerprint(&home));
        assert_eq!(fingerprint(&home), fingerprint(&home));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
